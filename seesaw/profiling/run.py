"""The whole profile run: ``dist.spawn`` starts the ranks once, each measures its share of the
planned tables in ``passes`` rounds, rank 0 merges the passes, and ``profile`` returns the
``MeasuredProfile`` with the machine's description.

Assumes gloo on CPU and NCCL on CUDA, each rank with ``threads`` torch threads as the engine's
ranks run; a (model, TP) group is measured on TP ranks at once, each timing its own shard and
the slowest rank kept. Why passes (a shared VM drifts over minutes): docs/profiling.md.
"""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from seesaw.engine.attention import paged_attention
from seesaw.engine.dist import spawn
from seesaw.engine.dtypes import TORCH_DTYPES
from seesaw.engine.launch import backend_for
from seesaw.profiling.collectives import comm_table
from seesaw.profiling.copies import copy_table
from seesaw.profiling.forward import forward_tables
from seesaw.profiling.grid import Grid, Task, plan_tasks
from seesaw.profiling.records import TABLES, Table, merge_passes, merged_as
from seesaw.profiling.seesaw_steps import reshard_table, swap_tables
from seesaw.profiling.step_overhead import step_table
from seesaw.profiling.timing import Rank, cache_bytes
from seesaw.core import MeasuredProfile, ModelSpec, SpecError

__all__ = ["profile", "rank_main", "cuda_available"]



def cuda_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


def _task_tables(r: Rank, task: Task, attention: Callable) -> list[Table]:
    if task.kind == "forward":
        return forward_tables(r, task, attention)
    if task.kind == "step":
        return [step_table(r, task)]
    if task.kind == "comm":
        return [comm_table(r, task)]
    if task.kind == "copy":
        return [copy_table(r, task)]
    if task.kind == "swap":
        return swap_tables(r, task)
    if task.kind == "reshard":
        return [reshard_table(r, task)]
    raise ValueError(f"unknown task kind {task.kind!r}")


def rank_main(rank: int, world_size: int, device: torch.device, tasks: list[Task], grid: Grid,
              dtype: str, progress, attention: Callable = paged_attention) -> list[Table] | None:
    """One rank's run: every task it takes part in, ``grid.passes`` times; rank 0 returns the
    merged tables. ``attention``: the paged attention the forward passes time (the engine's)."""
    groups, ctrl = {}, {}
    for k in range(2, world_size + 1):  # every rank creates every group, in the same order
        groups[k] = dist.new_group(list(range(k)))
        ctrl[k] = dist.new_group(list(range(k)), backend="gloo")
    torch.manual_seed(rank)
    r = Rank(rank, torch.device(device), TORCH_DTYPES[dtype], grid, groups, ctrl, progress,
             cache_bytes=cache_bytes(torch.device(device)))
    passes = []
    for _ in range(grid.passes):
        out = []
        for task in tasks:
            if rank < task.ranks:
                out.extend(_task_tables(r, task, attention))
        passes.append(out)
    if world_size > 1:
        dist.barrier(group=ctrl[world_size])
    return merge_passes(passes) if rank == 0 else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_bytes() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return float(line.split()[1]) * 1024  # kB in /proc/meminfo are KiB
    except OSError:
        pass
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))


def profile(
    grid: Grid | None = None, *, device: str = "cpu", ranks: int | None = None,
    models: list[ModelSpec] | None = None, threads: int = 1, dtype: str = "float32",
    name: str = "", command: str = "", progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 7200.0, kinds: tuple[str, ...] | None = None,
) -> MeasuredProfile:
    """Measure ``grid`` on this machine and return the profile (``write_profile`` saves it).

    ``models``: the shapes to time (default: the grid's model names from the catalog).
    ``progress(done, total)`` is called from a helper thread as grid points finish.
    ``kinds``: measure only these task kinds (forward, step, comm, copy, swap, reshard).
    Raises ``SpecError`` for a device that is not there or a bad argument.
    """
    from seesaw.catalog import load_model

    grid = grid or Grid.default()
    if device not in ("cpu", "cuda"):
        raise SpecError(f"unknown device {device!r}; use cpu or cuda")
    if dtype not in TORCH_DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}; use {', '.join(TORCH_DTYPES)}")
    if device == "cuda":
        if not cuda_available():
            raise SpecError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
        count = torch.cuda.device_count()
        ranks = count if ranks is None else ranks
        if ranks > count:
            raise SpecError(f"--ranks {ranks}: only {count} CUDA devices (one rank per device)")
    ranks = ranks or 3
    if ranks < 1 or threads < 1:
        raise SpecError(f"ranks and threads must be positive (got {ranks}, {threads})")
    specs = models if models is not None else [load_model(m) for m in grid.models]
    tasks = [t for t in plan_tasks(grid, ranks, specs, device) if kinds is None or t.kind in kinds]
    # progress counts timed samples
    total = grid.passes * sum(
        t.points * grid.per_pass(grid.forward_repeats if t.kind in ("forward", "step") else grid.repeats)
        for t in tasks)
    world = max([t.ranks for t in tasks] + [1])
    ctx = get_context("forkserver")
    queue = ctx.Queue()
    stop = threading.Event()

    loads: list[float] = []

    def pump():
        done, last = 0, 0.0
        while not stop.is_set() or not queue.empty():
            if hasattr(os, "getloadavg") and time.monotonic() - last >= 5.0:
                last = time.monotonic()
                loads.append(os.getloadavg()[0])
            try:
                done += queue.get(timeout=0.1)
            except Exception:  # noqa: BLE001 - queue.Empty, or closed at shutdown
                continue
            if progress is not None:
                progress(done, total)

    watcher = threading.Thread(target=pump, daemon=True)
    watcher.start()
    start = time.monotonic()
    try:
        results = spawn(rank_main, world, (tasks, grid, dtype, queue),
                        backend=backend_for(device), timeout_s=timeout_s,
                        collective_timeout_s=600.0, threads_per_rank=threads)
    finally:
        stop.set()
        watcher.join(timeout=5)
    wall_s = time.monotonic() - start
    tables: dict[str, list] = {k: [] for k in TABLES}
    for table in results[0]:
        tables[table.name].append(table.fields)
    cuda_name = torch.cuda.get_device_name(0) if device == "cuda" else None
    repeats = grid.per_pass(grid.repeats) * grid.passes  # what the passes took in all
    return MeasuredProfile(
        name=name, device=device, device_name=cuda_name or _cpu_name(), dtype=dtype,
        torch_version=torch.__version__, threads_per_rank=threads, num_ranks=world,
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        device_memory_bytes=float(torch.cuda.get_device_properties(0).total_memory) if device == "cuda" else None,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=command,
        wall_time_s=round(wall_s, 1), repeats=repeats, passes=grid.passes,
        load_average=round(statistics.mean(loads), 2) if loads else None,
        source=f"seesaw profile on {platform.node() or 'this machine'}; {repeats} repeats in {grid.passes} "
               f"pass(es), each time {merged_as(grid.passes)}",
        **{k: tuple(v) for k, v in tables.items()},
    )
