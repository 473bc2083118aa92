"""Background KV swaps per rank: swap-ins (host pool -> device blocks) and swap-outs (device ->
host pool) that overlap the rank's compute, and a replica-wide view of which ones are done.

``Prefetcher`` owns one worker thread. The driver enqueues requests ``(seq_id, host_blocks,
device_slots)`` with ``swap_in`` / ``swap_out`` (or a whole step's sequences at once with
``swap_in_many`` / ``swap_out_many``: one pass over the layers for all of them) and goes on computing; ``poll_completed()`` returns
the sequences whose copies finished since the last poll (in submission order) and re-raises, as
``PrefetchError``, any exception the worker hit, so a failed copy never turns into a silent hang.
On CPU the copies run on the worker thread (torch releases the GIL inside ops, so they overlap the
main thread's forward pass). On CUDA they are issued on a side stream that first waits for the
compute stream's work at submission (the prefill that wrote the KV), and a request is complete
when its event has fired; this path is written for GPUs but untested here (no GPU in CI).

A sequence loaded on one rank is not yet usable: every rank of the replica (all its TP slices and
PP stages) must have its part. ``ReplicaCompletions.update(local)`` is a collective over the
replica's (gloo) group that returns the sequences every rank has finished, in the same order on
every rank; only those become schedulable (swap-in) or have their device blocks freed (swap-out).

Assumptions: the driver never touches a sequence's device slots while a copy for it is queued
(swap-in: it is not scheduled yet; swap-out: its blocks are freed only after completion), so the
worker and the compute thread write disjoint slots of the same KV tensors. The KV cache must not be
replaced while requests are queued: re-shard only when ``num_pending == 0``, then ``rebind``.
"""

from __future__ import annotations

import queue
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass

import torch

from seesaw.engine.host_kv import HostKVPool, swap_in_many, swap_out_many
from seesaw.engine.kv import KVCache

__all__ = ["PrefetchError", "Prefetcher", "ReplicaCompletions"]

SWAP_IN, SWAP_OUT = "in", "out"


class PrefetchError(RuntimeError):
    """The prefetch worker failed; the message carries its traceback."""


@dataclass(slots=True)
class _Request:
    """Copies of one or more sequences, done in one pass (``host_kv.swap_in_many``/``swap_out_many``)."""

    seq_ids: list
    kind: str
    host_blocks: list[list[int]]
    device_slots: list[torch.Tensor]  # [n] long each: the sequence's token positions 0..n-1 on the device
    ready: object = None              # CUDA event recorded on the compute stream at submission


class Prefetcher:
    """One rank's KV copy worker for ``kv_cache`` (its global ``layers`` and KV ``heads``).

    ``write_out=False`` makes swap-outs complete without copying: for a rank whose KV heads are
    replicas of a peer's (``host_kv.kv_writer``), when a barrier separates the write from reads.
    """

    def __init__(self, host_pool: HostKVPool, kv_cache: KVCache, layers: range, heads: range,
                 write_out: bool = True, name: str = "seesaw-prefetch"):
        self.pool = host_pool
        self._bind(kv_cache, layers, heads, write_out)
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self._cond = threading.Condition()
        self._done: deque = deque()              # completed seq ids not yet polled
        self._events: deque = deque()            # CUDA: (seq_id, event) in flight on the side stream
        self._error: str | None = None
        self._cause: BaseException | None = None
        self._closed = False
        self.num_pending = 0                     # submitted, not yet returned by poll_completed
        self.bytes_in = self.bytes_out = 0
        self.busy_s = 0.0                        # worker time spent issuing copies
        self._stream = None
        if self.device.type == "cuda":
            self._stream = torch.cuda.Stream(device=self.device)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _bind(self, kv_cache: KVCache | None, layers: range, heads: range, write_out: bool) -> None:
        self.kv_cache, self.layers, self.heads, self.write_out = kv_cache, layers, heads, write_out
        if kv_cache is not None:
            self.device = kv_cache.k[0].device

    # -- driver side ------------------------------------------------------------------------
    def swap_in(self, seq_id, host_blocks: list[int], device_slots: torch.Tensor) -> None:
        """Queue a copy of ``seq_id``'s KV from ``host_blocks`` into ``device_slots`` [n]."""
        self.swap_in_many([(seq_id, host_blocks, device_slots)])

    def swap_out(self, seq_id, host_blocks: list[int], device_slots: torch.Tensor) -> None:
        """Queue a copy of ``seq_id``'s KV from ``device_slots`` [n] into ``host_blocks``."""
        self.swap_out_many([(seq_id, host_blocks, device_slots)])

    def swap_in_many(self, seqs: list[tuple[object, list[int], torch.Tensor]]) -> None:
        """Queue the copies of ``[(seq_id, host_blocks, device_slots), ...]`` into the device as
        one request: one pass over the layers for all of them (they complete together)."""
        self._submit(SWAP_IN, seqs)

    def swap_out_many(self, seqs: list[tuple[object, list[int], torch.Tensor]]) -> None:
        """Queue the copies of ``[(seq_id, host_blocks, device_slots), ...]`` to the host as one
        request (they complete together)."""
        self._submit(SWAP_OUT, seqs)

    def _submit(self, kind: str, seqs: list) -> None:
        self._raise_if_failed()
        if self._closed:
            raise RuntimeError("the prefetcher is closed")
        if not seqs:
            return
        req = _Request([s for s, _, _ in seqs], kind, [list(b) for _, b, _ in seqs], [t for _, _, t in seqs])
        if self._stream is not None:
            req.ready = torch.cuda.Event()
            req.ready.record()  # the compute stream's work so far (e.g. the prefill writing this KV)
        with self._cond:
            self.num_pending += len(req.seq_ids)
        self._queue.put(req)

    def poll_completed(self) -> list:
        """Sequences whose copies finished since the last call, in submission order. Raises
        ``PrefetchError`` if the worker failed (on every call from then on)."""
        self._raise_if_failed()
        with self._cond:
            while self._events and self._events[0][1].query():
                self._done.extend(self._events.popleft()[0])
            out = list(self._done)
            self._done.clear()
            self.num_pending -= len(out)
        return out

    def wait(self, timeout_s: float | None = None) -> list:
        """Block until every queued copy has finished; returns what ``poll_completed`` would.
        ``PrefetchError`` if the worker fails meanwhile, ``TimeoutError`` past ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        out: list = []
        while True:
            out += self.poll_completed()
            if self.num_pending == 0:
                return out
            with self._cond:
                if self._events:
                    self._events[0][1].synchronize()
                    continue
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    raise TimeoutError(f"{self.num_pending} KV copies still pending after {timeout_s} s")
                if not self._done and self._error is None:
                    self._cond.wait(timeout=0.1 if left is None else min(left, 0.1))

    def rebind(self, kv_cache: KVCache, layers: range, heads: range, write_out: bool = True) -> None:
        """Point the worker at a new device cache (after a re-shard); nothing may be pending."""
        self.release()
        self._bind(kv_cache, layers, heads, write_out)

    def release(self) -> None:
        """Drop the reference to the device cache (before a re-shard frees it); nothing may be
        pending. ``rebind`` gives the worker a cache again."""
        if self.num_pending:
            raise RuntimeError(f"{self.num_pending} KV copies pending; wait() first")
        self._bind(None, range(0), range(0), self.write_out)

    def close(self, timeout_s: float = 30.0) -> None:
        """Finish the queued copies, then stop the worker. Idempotent."""
        if not self._closed:
            self._closed = True
            self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"prefetch worker did not stop within {timeout_s} s")

    def __enter__(self) -> "Prefetcher":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise PrefetchError(f"KV prefetch worker failed:\n{self._error}") from self._cause

    # -- worker side ------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            req = self._queue.get()
            if req is None:
                return
            t0 = time.perf_counter()
            try:
                event = self._copy(req)
            except BaseException as e:  # noqa: BLE001 - surfaced by poll_completed
                with self._cond:
                    self._error, self._cause = traceback.format_exc(), e
                    self._cond.notify_all()
                return  # stop: later requests may depend on this one
            with self._cond:
                self.busy_s += time.perf_counter() - t0
                if event is None:
                    self._done.extend(req.seq_ids)
                else:
                    self._events.append((req.seq_ids, event))
                self._cond.notify_all()

    def _copy(self, req: _Request):
        if self._stream is None:
            self._copy_now(req)  # synchronous on CPU: done when it returns
            return None
        with torch.cuda.stream(self._stream):
            self._stream.wait_event(req.ready)
            self._copy_now(req, non_blocking=True)
            event = torch.cuda.Event()
            event.record(self._stream)
        return event

    def _copy_now(self, req: _Request, non_blocking: bool = False) -> None:
        if req.kind == SWAP_IN:
            self.bytes_in += swap_in_many(self.pool, list(zip(req.host_blocks, req.device_slots)), self.kv_cache,
                                          self.layers, self.heads, non_blocking=non_blocking)
        elif self.write_out:
            self.bytes_out += swap_out_many(self.kv_cache, list(zip(req.device_slots, req.host_blocks)), self.pool,
                                            self.layers, self.heads)


class ReplicaCompletions:
    """Which sequences every rank of a replica has finished copying. ``update`` is collective:
    every rank of ``group`` calls it at the same point of each step (it all-gathers the ranks'
    finished-but-unagreed ids). Without torch.distributed (or a group of one) it passes through.

    ``int_ids=True`` (every member must pass the same): the ids are ints, exchanged as one int64
    all-gather of up to ``_CHUNK`` ids per rank (more rounds only when a rank has more), instead
    of ``all_gather_object``'s pickling and two all-gathers: an agreement cost ~2 ms with
    objects on a 2-core machine and this halves the collectives."""

    _CHUNK = 254  # ids per rank per round (the buffer holds a count and a chunk size too)

    def __init__(self, group=None, int_ids: bool = False):
        self.group = group
        self.int_ids = int_ids
        self._local: list = []

    def update(self, local_new: list, observer: bool = False) -> list:
        """Add this rank's new completions; return the ids now finished on every rank, in the
        order rank 0 of the group finished them (identical on every rank). ``observer``: this
        member copies nothing (a driver in the group of a replica it is not part of); it learns
        the agreement without voting, and the order is the first voting member's."""
        import torch.distributed as dist

        if not observer:
            self._local.extend(local_new)
        if not dist.is_initialized() or dist.get_world_size(self.group) == 1:
            agreed, self._local = self._local, []
            return agreed
        if self.int_ids:
            gathered = self._gather_ints(None if observer else self._local)
        else:
            gathered = [None] * dist.get_world_size(self.group)
            dist.all_gather_object(gathered, None if observer else self._local, group=self.group)
        votes = [g for g in gathered if g is not None]
        if not votes:
            return []
        others = [set(g) for g in votes[1:]]
        agreed = [s for s in votes[0] if all(s in o for o in others)]
        done = set(agreed)
        self._local = [s for s in self._local if s not in done]
        return agreed

    def _gather_ints(self, mine: list[int] | None) -> list[list[int] | None]:
        """Every member's list (None for an observer), in group-rank order: rounds of one int64
        all-gather of ``[count, chunk length, chunk...]`` until every list is through."""
        import torch.distributed as dist

        size, c = dist.get_world_size(self.group), self._CHUNK
        ids = [] if mine is None else [int(s) for s in mine]
        out: list[list[int] | None] = [None] * size
        rounds, r = 1, 0
        while r < rounds:
            part = ids[r * c:(r + 1) * c]
            buf = torch.zeros(2 + c, dtype=torch.int64)
            buf[0], buf[1] = (-1 if mine is None else len(ids)), len(part)
            if part:
                buf[2:2 + len(part)] = torch.tensor(part, dtype=torch.int64)
            parts = [torch.empty_like(buf) for _ in range(size)]
            dist.all_gather(parts, buf, group=self.group)
            for i, got in enumerate(parts):
                n, k = int(got[0]), int(got[1])
                if n >= 0:
                    out[i] = (out[i] or []) + got[2:2 + k].tolist()
                    rounds = max(rounds, -(-n // c))
            r += 1
        return out
