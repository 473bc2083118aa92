"""Copies by bytes: host->host memcpy (``Tensor.copy_``), and on CUDA pinned host->device and
device->host, as the engine's KV swaps and weight loads make them. One rank; on CUDA the copy is
non-blocking and a sample ends with a synchronize (``timing.Rank``).
"""

from __future__ import annotations

import functools

import torch

from seesaw.profiling.grid import Task
from seesaw.profiling.records import Table
from seesaw.profiling.timing import Rank

__all__ = ["copy_table"]


def copy_table(r: Rank, task: Task) -> Table:
    """The ``copies`` table of ``task.args["kind"]`` (h2h, h2d, d2h) by bytes."""
    kind, sizes = task.args["kind"], task.args["sizes"]
    cuda = r.device.type == "cuda"
    top = max(sizes)
    if kind == "h2h":
        src, dst = torch.ones(top, dtype=torch.uint8), torch.empty(top, dtype=torch.uint8)
    else:
        host = torch.ones(top, dtype=torch.uint8, pin_memory=cuda)
        dev = torch.empty(top, dtype=torch.uint8, device=r.device)
        src, dst = (host, dev) if kind == "h2d" else (dev, host)
    fns = {n: functools.partial(dst[:n].copy_, src[:n], non_blocking=cuda) for n in sizes}
    times = r.measure(fns, 1)
    return Table("copies", dict(kind=kind, size_bytes=list(sizes), time_s=[times[n] for n in sizes]))
