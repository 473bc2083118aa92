"""How a measuring rank times a table: ``Rank.measure`` over a table's named points, and
``Rank.slowest`` over the ranks that ran them together.

Assumes the ranks of a table run the same points in the same order (the same code on every
rank builds the same named points), the caller is inside ``dist.spawn`` (groups made), and on
CUDA a ``synchronize`` ends a timed call. Samples are taken in sweeps over a table's points in
shuffled order, so load from other processes on a shared machine spreads over the table instead
of spoiling a few points (docs/profiling.md: method).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Hashable, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from seesaw.profiling.grid import Grid
from seesaw.profiling.records import center

__all__ = ["Rank", "cache_bytes", "init_weights"]

K = TypeVar("K", bound=Hashable)
_COLD_FACTOR = 2  # cycle through at least this many last-level caches' worth of weights / KV


def cache_bytes(device: torch.device) -> float:
    """Last-level cache: the GPU's L2, or the CPU's highest cache level from sysfs (32 MiB if
    unknown)."""
    if device.type == "cuda":
        return float(getattr(torch.cuda.get_device_properties(device), "L2_cache_size", 0) or 50e6)
    best = (0, 32 * 2**20)
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            size = (index / "size").read_text().strip()
            scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1)
            value = int(size.rstrip("KMG")) * scale
        except (OSError, ValueError):
            continue
        best = max(best, (level, value))
    return float(best[1])


def init_weights(module: nn.Module) -> nn.Module:
    """Finite, denormal-free values: matrices ~ N(0, 0.02), vectors (norms) ones."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)
    return module


@dataclass
class Rank:
    """What a measuring rank needs: its device, sync, groups and the grid's timing settings."""

    rank: int
    device: torch.device
    dtype: torch.dtype
    grid: Grid
    groups: dict  # ranks -> process group of ranks 0..k-1 (device backend)
    ctrl: dict  # ranks -> gloo group of ranks 0..k-1 (control, broadcast)
    progress: object = None  # a multiprocessing queue (rank 0 reports grid points done)

    cache_bytes: float = 32 * 2**20  # last-level cache (CPU L3 / GPU L2)

    def copies(self, nbytes: float, layers: int) -> int:
        """How many copies of ``nbytes`` (one layer's weights or KV) to cycle through: the
        engine's ``layers`` copies, or fewer once they exceed the last-level cache twice over
        (cycling through more than the cache holds, every call streams from memory anyway)."""
        return max(1, min(layers, math.ceil(_COLD_FACTOR * self.cache_bytes / max(nbytes, 1))))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tick(self, n: int = 1) -> None:
        if self.rank == 0 and self.progress is not None:
            self.progress.put(n)

    def measure(self, fns: dict[K, Callable[[], object]], ranks: int = 1, max_calls: int | None = None,
                repeats: int | None = None, warmup: int | None = None) -> dict[K, float]:
        """Mean seconds per call of each of ``fns`` (the named points of one table) on this rank.

        Warm-up and a timed call size each point's sample (enough calls to last ``min_repeat_s``);
        then ``repeats`` sweeps over all the points in shuffled order, so every point's samples
        spread over the whole measurement and a burst of load from other processes hits all
        points alike instead of a few. ``ranks`` > 1: ranks 0..ranks-1 run the same points
        together (same call counts, a barrier before each sample).
        """
        g = self.grid
        names = list(fns)
        calls = []
        for name in names:
            fn = fns[name]
            for _ in range(g.warmup if warmup is None else warmup):
                fn()
            self.sync()
            start = time.perf_counter()
            fn()
            self.sync()
            once = time.perf_counter() - start
            calls.append(max(1, min(max_calls or g.max_calls, math.ceil(g.min_repeat_s / max(once, 1e-7)))))
        ctrl = self.ctrl.get(ranks) if ranks > 1 else None
        if ctrl is not None:
            agreed = torch.tensor(calls, dtype=torch.int64)
            dist.all_reduce(agreed, op=dist.ReduceOp.MAX, group=ctrl)
            calls = agreed.tolist()
        samples: list[list[float]] = [[] for _ in names]
        for sweep in range(repeats or g.per_pass(g.repeats)):
            # a fresh order each sweep (the same on every rank), so whatever the previous point
            # leaves behind (cold caches after a large one) does not always hit the same point
            order = list(range(len(names)))
            random.Random(sweep).shuffle(order)
            for i in order:
                fn, n = fns[names[i]], calls[i]
                if ctrl is not None:
                    dist.barrier(group=ctrl)
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                self.sync()
                samples[i].append((time.perf_counter() - start) / n)
            self.tick(len(names))
        return {name: center(x) for name, x in zip(names, samples)}

    def slowest(self, times: dict[K, float], ranks: int) -> dict[K, float]:
        """Each named figure's maximum over ranks 0..ranks-1 (which hold the same names)."""
        if ranks <= 1:
            return dict(times)
        names = list(times)
        t = torch.tensor([times[n] for n in names], dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.ctrl[ranks])
        return dict(zip(names, t.tolist()))
