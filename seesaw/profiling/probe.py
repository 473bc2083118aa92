"""Timers around the engine's own calls inside its forward pass (each GEMM module, the paged
attention, each decoder layer, the embedding and RoPE, the TP collectives).

A wrapped call records its seconds under ``(point, key)`` while the probe is ``on``: ``point``
names the grid point whose step is running, ``key`` the call. On a CPU a call is timed with
``perf_counter`` (its timer's own cost is measured by ``overhead_s`` and taken off by the caller);
on CUDA with events, read after the step's synchronize (``collect``).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Callable, Hashable

import torch

__all__ = ["Probe"]


class Probe:
    """``records[(point, key)]`` collects seconds per call of every wrapped call while ``on``."""

    def __init__(self, cuda: bool):
        self.on, self.cuda = False, cuda
        self.point: Hashable = None
        self.records: dict[tuple, list[float]] = defaultdict(list)
        self.pending: list[tuple] = []

    def wrap(self, key: str, fn: Callable) -> Callable:
        def timed(*args, **kw):
            if not self.on:
                return fn(*args, **kw)
            if self.cuda:
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                out = fn(*args, **kw)
                end.record()
                self.pending.append(((self.point, key), start, end))
                return out
            start = time.perf_counter()
            out = fn(*args, **kw)
            self.records[(self.point, key)].append(time.perf_counter() - start)
            return out
        return timed

    def collect(self) -> None:
        """CUDA: turn the step's events into seconds (after a synchronize)."""
        for key, start, end in self.pending:
            self.records[key].append(start.elapsed_time(end) * 1e-3)
        self.pending = []

    def overhead_s(self, calls: int = 20000) -> float:
        """Seconds a wrapped call costs its caller beyond what its timer records (CPU)."""
        if self.cuda:
            return 0.0

        def noop():
            return None
        wrapped = self.wrap("noop", noop)
        self.on, point, self.point = True, self.point, "overhead"
        start = time.perf_counter()
        for _ in range(calls):
            wrapped()
        total = time.perf_counter() - start
        self.on, self.point = False, point
        return max(0.0, (total - sum(self.records.pop(("overhead", "noop")))) / calls)
