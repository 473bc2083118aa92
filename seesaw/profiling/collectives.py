"""Collectives as ``dist.TorchComm`` and the driver's control plane call them: all_reduce,
all_gather (+ concat), send/recv (half a ping-pong), a pipeline stage's hand-off (CPU), and the
gloo broadcast of the driver's messages and sampled ids, by bytes and ranks.

Assumes ranks 0..k-1 of the profile's groups run a table together (``timing.Rank``); a table's
figure is the slowest rank's mean. Also the TP comm a timed forward pass runs (``TPComm``).
"""

from __future__ import annotations

import functools
import random
import time

import torch
import torch.distributed as dist

from seesaw.engine.model import LocalComm
from seesaw.profiling.grid import Task
from seesaw.profiling.records import Table, center
from seesaw.profiling.timing import Rank

__all__ = ["TPComm", "comm_table", "all_gather"]


class TPComm(LocalComm):
    """The engine's TP collectives (``dist.TorchComm.all_reduce`` / ``all_gather``) over the
    profiling group of TP ranks, so a forward pass runs and times them where the engine does."""

    def __init__(self, group, tp: int):
        self.group, self.tp_size = group, tp

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        return all_gather(x, [torch.empty_like(x) for _ in range(self.tp_size)], self.group)


def all_gather(x: torch.Tensor, parts: list[torch.Tensor], group) -> torch.Tensor:
    dist.all_gather(parts, x, group=group)  # as TorchComm.all_gather: gather, then concatenate
    return torch.cat(parts, dim=-1)


def _ping_pong(x: torch.Tensor, y: torch.Tensor, rank: int) -> None:
    """Rank 0 sends ``x`` to rank 1 and receives it back (TorchComm: isend / recv)."""
    peer = 1 - rank
    if rank == 0:
        dist.isend(x, dst=peer).wait()
        dist.recv(y, src=peer)
    else:
        dist.recv(y, src=peer)
        dist.isend(x, dst=peer).wait()


def comm_table(r: Rank, task: Task) -> Table:
    """The ``collectives`` table of ``task.args["op"]`` on ``task.ranks`` ranks by bytes."""
    op, k, sizes = task.args["op"], task.ranks, task.args["sizes"]
    if op == "handoff":
        return Table("collectives", dict(op=op, ranks=k, size_bytes=list(sizes), time_s=_handoff(r, sizes)))
    if op == "broadcast":  # the engine broadcasts sampled ids over a gloo group, CPU tensors
        ids = torch.zeros(max(sizes) // 8 + 1, dtype=torch.int64)
        fns = {n: functools.partial(dist.broadcast, ids[:max(1, n // 8)], src=k - 1, group=r.ctrl[k])
               for n in sizes}
        times = r.slowest(r.measure(fns, k), k)
        return Table("collectives", dict(op=op, ranks=k, size_bytes=list(sizes), time_s=[times[n] for n in sizes]))
    group = r.groups[k]
    data = torch.ones(max(sizes) // 4 + 1, dtype=torch.float32, device=r.device)
    fns = {}
    for nbytes in sizes:
        x = data[:max(1, nbytes // 4)]
        if op == "all_reduce":
            fns[nbytes] = functools.partial(dist.all_reduce, x, group=group)
        elif op == "all_gather":
            fns[nbytes] = functools.partial(all_gather, x, [torch.empty_like(x) for _ in range(k)], group)
        else:
            fns[nbytes] = functools.partial(_ping_pong, x, torch.empty_like(x), r.rank)
    times = r.measure(fns, k)
    if op == "send_recv":
        times = {n: t / 2 for n, t in times.items()}  # one way = half a round trip
    times = r.slowest(times, k)
    return Table("collectives", dict(op=op, ranks=k, size_bytes=list(sizes), time_s=[times[n] for n in sizes]))


def _busy(a: torch.Tensor, seconds: float) -> None:
    """Compute for ``seconds`` (small matmuls, as a stage's layers do)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a @ a


def _handoff(r: Rank, sizes) -> list[float]:
    """Mean one-way hand-off of ``sizes`` bytes from rank 0 to rank 1 as pipeline stages make it:
    both compute a while (0.5-2 ms, drawn), then rank 0 ``isend``s and computes on (3 ms, longer
    than rank 1 can lag) before it waits, as a stage goes on to its next micro-batch (the second
    stage asks for its data while the first is still computing: docs/profiling.md) -- and
    rank 1 ``recv``s. Seconds from the later of the two being ready until rank 1 has the data
    (``perf_counter`` is one clock for all processes of a machine). On a CPU the transfer runs on
    a gloo thread that must win a core from the busy ranks, so its mean is well above half a
    ping-pong between idle ranks."""
    g = r.grid
    a = torch.randn(64, 64)
    data = torch.ones(max(sizes) // 4 + 1, dtype=torch.float32)
    stamp = torch.zeros(1, dtype=torch.float64)
    samples: list[list[float]] = [[] for _ in sizes]
    rng = random.Random(r.rank)
    for sweep in range(g.per_pass(g.repeats) * 5):
        order = list(range(len(sizes)))
        random.Random(sweep).shuffle(order)
        for i in order:
            x = data[:max(1, sizes[i] // 4)]
            dist.barrier(group=r.ctrl[2])
            _busy(a, rng.uniform(5e-4, 2e-3))
            ready = time.perf_counter()
            if r.rank == 0:
                work = dist.isend(x, dst=1)
                _busy(a, 3e-3)
                work.wait()
                stamp[0] = ready
                dist.send(stamp, dst=1)
            else:
                dist.recv(x, src=0)
                done = time.perf_counter()
                dist.recv(stamp, src=0)
                samples[i].append(done - max(ready, stamp.item()))
        if sweep % 5 == 4:
            r.tick(len(sizes))  # progress counts ``repeats`` sweeps per table
    means = torch.tensor([center(s) if s else 0.0 for s in samples], dtype=torch.float64)
    dist.broadcast(means, src=1, group=r.ctrl[2])  # rank 0 reports the tables
    return [max(1e-7, v) for v in means.tolist()]
