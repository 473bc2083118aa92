"""The control plane of a run: gloo groups that carry rank 0's step messages to the ranks of a
replica and the replica's sampled tokens back to rank 0.

A step message (``seesaw.engine.messages``) is pickled into a fixed-size buffer and broadcast by
rank 0 in the replica's message group; the sampling rank broadcasts the step's tokens (an int64
tensor) in a group of itself and rank 0. Every rank builds the same groups in the same order
(``dist.new_group`` is collective), so the process group must be initialised before.
"""

from __future__ import annotations

import pickle
from datetime import timedelta

import torch
import torch.distributed as dist

from seesaw.engine.messages import Message
from seesaw.core import CONTROL_MESSAGE_BYTES, ParallelConfig

__all__ = ["ControlPlane"]


class ControlPlane:
    """Gloo groups that carry the driver's step messages and the sampled tokens.

    Per replica ``d``: a message group (rank 0 plus the replica's ranks) in which rank 0
    broadcasts each message, and, unless rank 0 samples for it, a result group (rank 0 and the
    replica's sampling rank) in which the sampling rank broadcasts the tokens. Broadcasts rather
    than send/recv: on a busy CPU box a gloo point-to-point hop costs ~1.5-2.5 ms and a small
    broadcast ~0.3-0.5 ms (measured with 2 ranks at load average ~9). Every rank must build it,
    in the same order (it creates groups). A message is pickled into a fixed ``capacity``-byte
    buffer (8-byte length, then the bytes), with a second broadcast for what does not fit.

    ``layouts``: one layout, or every layout the run uses (Seesaw: prefill and decode, same DP
    and world size, so a replica's ranks are the same under both); the sampling rank (last stage,
    TP rank 0) may differ between them, so a result group is built for each, and ``use(d,
    layout)`` switches replica ``d`` after a re-shard."""

    def __init__(self, layouts, rank: int, timeout_s: float, capacity: int = CONTROL_MESSAGE_BYTES):
        layouts = [layouts] if isinstance(layouts, ParallelConfig) else list(layouts)
        layout = self.layout = layouts[0]
        self.rank, self.capacity = rank, capacity
        self.timeout = timedelta(seconds=timeout_s)
        self.replica_ranks = [[layout.rank(d, t, p) for p in range(layout.pp) for t in range(layout.tp)]
                              for d in range(layout.dp)]
        self.sampler = [self.sampler_of(layout, d) for d in range(layout.dp)]
        self.msg_groups: list = []
        self.result_groups: dict[tuple[int, int], object] = {}
        for d in range(layout.dp):
            members = sorted({0, *self.replica_ranks[d]})
            g = dist.new_group(members, timeout=self.timeout, backend="gloo") if len(members) > 1 else None
            self.msg_groups.append(g if rank in members else None)
        for lay in layouts:
            for d in range(layout.dp):
                s = self.sampler_of(lay, d)
                if s == 0 or (d, s) in self.result_groups:
                    continue
                g = dist.new_group([0, s], timeout=self.timeout, backend="gloo")
                self.result_groups[d, s] = g if rank in (0, s) else None
        self._recv_buf = torch.empty(capacity, dtype=torch.uint8)
        self.pending: list[tuple] = []   # (work, buffers) of async broadcasts still in progress

    @staticmethod
    def sampler_of(layout: ParallelConfig, d: int) -> int:
        return layout.rank(d, 0, layout.pp - 1)

    def use(self, d: int, layout: ParallelConfig) -> None:
        """Replica ``d`` now runs ``layout`` (its sampling rank may have changed)."""
        self.sampler[d] = self.sampler_of(layout, d)

    def remote(self, d: int) -> bool:
        """Does replica ``d`` have ranks other than rank 0?"""
        return self.msg_groups[d] is not None

    def _keep(self, work, *bufs) -> None:
        self.pending.append((work, bufs))
        if len(self.pending) > 64:
            self.pending = [p for p in self.pending if not p[0].is_completed()]

    def send(self, d: int, msg: Message) -> None:
        """Rank 0: broadcast ``msg`` to replica ``d`` (asynchronously)."""
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        room = self.capacity - 8
        buf = torch.zeros(self.capacity, dtype=torch.uint8)
        head = len(data).to_bytes(8, "little") + data[:room]
        buf[:len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
        group = self.msg_groups[d]
        self._keep(dist.broadcast(buf, 0, group=group, async_op=True), buf)
        if len(data) > room:
            rest = torch.frombuffer(bytearray(data[room:]), dtype=torch.uint8)
            self._keep(dist.broadcast(rest, 0, group=group, async_op=True), rest)

    def recv(self, d: int) -> Message:
        """A rank of replica ``d``: the next message from rank 0 (blocking, with the timeout)."""
        group, buf, room = self.msg_groups[d], self._recv_buf, self.capacity - 8
        dist.broadcast(buf, 0, group=group)
        n = int.from_bytes(buf[:8].numpy().tobytes(), "little")
        data = buf[8:8 + min(n, room)].numpy().tobytes()
        if n > room:
            rest = torch.empty(n - room, dtype=torch.uint8)
            dist.broadcast(rest, 0, group=group)
            data += rest.numpy().tobytes()
        return pickle.loads(data)

    def send_tokens(self, d: int, tokens: torch.Tensor) -> None:
        """The sampling rank of replica ``d``: broadcast a step's tokens to rank 0 (async)."""
        tokens = tokens.contiguous()
        group = self.result_groups[d, self.sampler[d]]
        self._keep(dist.broadcast(tokens, self.sampler[d], group=group, async_op=True), tokens)

    def recv_tokens(self, d: int, n: int):
        """Rank 0: post the receive of a step's ``n`` tokens; returns (buffer, work)."""
        buf = torch.empty(n, dtype=torch.long)
        group = self.result_groups[d, self.sampler[d]]
        return buf, dist.broadcast(buf, self.sampler[d], group=group, async_op=True)

    def gather(self, d: int, obj) -> list:
        """Every member of replica ``d``'s message group (rank 0 included, possibly with None):
        all members' ``obj`` in group-rank order (blocking). Without a group: ``[obj]``."""
        group = self.msg_groups[d]
        if group is None:
            return [obj]
        out: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(out, obj, group=group)
        return out

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait(timeout=self.timeout)
        self.pending = []
