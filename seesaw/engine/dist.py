"""Multi-rank runtime on torch.distributed: process launch, groups, the ``TorchComm``, and a
forward pass of a batch under a layout across ranks.

- Launch: ``spawn(fn, world_size, args)`` starts one process per rank with a ``forkserver`` (or
  ``spawn``) context, rendezvous through a ``file://`` in a fresh temp dir (never a port), waits
  with a deadline, kills every rank as soon as one fails, and re-raises that rank's traceback as
  ``RankError``. Each rank is bound to the launcher (``lifecycle.bind_to_launcher``: it dies with
  it) and ignores SIGINT; an exception in the launcher (``Interrupted`` by a signal) stops them. Multi-node runs go through ``torchrun`` + ``init_process(..., "env://")`` instead.
- Each rank's C heap keeps the memory it frees (``keep_freed_memory``, from ``init_process``): a
  CPU step's activations otherwise come back as fresh zero-filled pages at every step.
- Backends: gloo on CPU; NCCL when the ranks own CUDA devices (guarded: needs CUDA). A gloo group
  over all ranks carries control messages; collective timeouts are set on every group.
- ``TorchComm``: TP all-reduce / all-gather over the rank's TP group (ranks ``rank(d, *, p)``),
  PP send/recv with the neighbouring stage (``rank -+ tp``), and a broadcast of sampled tokens from
  the replica's last stage over a gloo replica group.
- ``run_layout``: load a ``WeightStore`` once in the parent (shared memory), then every rank
  materializes its shard and runs the same list of steps; DP replicas take every dp-th sequence.
"""

from __future__ import annotations

import ctypes
import io
import os
import queue as queue_mod
import tempfile
import time
import traceback
from datetime import timedelta
from multiprocessing import get_context

import torch
import torch.distributed as dist

from seesaw.engine.lifecycle import bind_to_launcher
from seesaw.engine.model import Comm
from seesaw.engine.runner import ModelRunner, run_generation
from seesaw.engine.weights import WeightStore, build_shard
from seesaw.core import ParallelConfig

__all__ = [
    "RankError",
    "init_process",
    "keep_freed_memory",
    "TorchComm",
    "spawn",
    "replica_of",
    "layout_worker",
    "run_layout",
]


class RankError(RuntimeError):
    """A rank of a spawned job raised; the message carries its traceback.

    ``rank``: the rank reported; ``detail``: its traceback (or why it has none); ``exited``:
    ``{rank: exit code}`` of ranks that had died without a result when this was raised;
    ``others``: ``{rank: last line}`` of other ranks' failures reported before it."""

    def __init__(self, message: str, rank: int | None = None, detail: str = "",
                 exited: dict[int, int | None] | None = None):
        super().__init__(message)
        self.rank, self.detail, self.exited = rank, detail, dict(exited or {})
        self.others: dict[int, str] = {}

    @property
    def last_line(self) -> str:
        """The last line of the rank's traceback: ``SomeError: what went wrong``."""
        lines = [ln.strip() for ln in (self.detail or str(self)).splitlines() if ln.strip()]
        return lines[-1] if lines else "unknown error"


# --------------------------------------------------------------------------------------------
# Process group

# glibc's malloc serves big blocks (above a threshold that adapts up to 32 MiB) with mmap and
# gives the free top of its heap back to the OS, so a CPU step's activations (MiBs each) come
# back as fresh pages that the kernel zero-fills one by one, at every step: the tiny model's
# 2-layer stage took 6,000-8,000 page faults per 32 x 256-token prefill, none with the settings
# below. On the 2-core CPU box, in alternating runs of 128 requests (8 each way), 256-in/8-out
# throughput rose 13% under P2 and 7% under T2; 16-in/128-out (small steps) did not change.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> bool:
    """Have this process's C heap keep the memory it frees for the next step instead of handing it
    back to the OS (glibc ``mallopt``: blocks up to 1 GiB from the heap, no trimming). Every rank
    calls it in ``init_process``; the price is a resident set at the peak step's size, which the
    next step needs again anyway. ``SEESAW_KEEP_FREED_MEMORY=0`` leaves malloc alone. Returns
    whether the settings took (False without glibc, e.g. on macOS)."""
    if os.environ.get("SEESAW_KEEP_FREED_MEMORY", "1").strip() == "0":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the process's own symbols: libc's, without a lookup
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30) and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def init_process(rank: int, world_size: int, init_method: str | None, backend: str = "gloo",
                 timeout_s: float = 60.0, store=None) -> torch.device:
    """Join the default process group through ``init_method`` or an existing ``store`` (a
    torchrun job's); returns this rank's device (CUDA under NCCL). Sets up the process's heap
    first (``keep_freed_memory``)."""
    keep_freed_memory()
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise RuntimeError("backend nccl needs CUDA devices; use gloo on CPU")
        local = int(os.environ.get("LOCAL_RANK", rank)) % torch.cuda.device_count()
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    else:
        device = torch.device("cpu")
    dist.init_process_group(backend, init_method=init_method, store=store, world_size=world_size, rank=rank,
                            timeout=timedelta(seconds=timeout_s))
    return device


class TorchComm(Comm):
    """Collectives of global ``rank`` under ``layout``. Creating one creates every group, so all
    ranks must construct it together, in the same order."""

    def __init__(self, layout: ParallelConfig, rank: int, device: torch.device | str = "cpu",
                 timeout_s: float = 60.0):
        self.layout, self.rank, self.device = layout, rank, torch.device(device)
        d, t, p = layout.coords(rank)
        self.dp_rank, self.tp_rank, self.pp_rank = d, t, p
        self.tp_size, self.pp_size = layout.tp, layout.pp
        timeout = timedelta(seconds=timeout_s)
        self.tp_group = self.replica_group = None
        for dd in range(layout.dp):
            for pp in range(layout.pp):
                ranks = [layout.rank(dd, tt, pp) for tt in range(layout.tp)]
                g = dist.new_group(ranks, timeout=timeout) if layout.tp > 1 else None
                if (dd, pp) == (d, p):
                    self.tp_group = g
        for dd in range(layout.dp):
            ranks = list(range(dd * layout.gpus_per_replica, (dd + 1) * layout.gpus_per_replica))
            g = dist.new_group(ranks, timeout=timeout, backend="gloo")  # control: CPU tensors
            if dd == d:
                self.replica_group = g
        self.control_group = dist.new_group(list(range(layout.world_size)), timeout=timeout, backend="gloo")

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size > 1:
            dist.all_reduce(x, group=self.tp_group)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return x
        parts = [torch.empty_like(x) for _ in range(self.tp_size)]
        dist.all_gather(parts, x.contiguous(), group=self.tp_group)
        return torch.cat(parts, dim=-1)

    def send_next(self, x: torch.Tensor):
        return dist.isend(x.contiguous(), dst=self.rank + self.tp_size)

    def recv_prev(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        buf = torch.empty(shape, dtype=dtype, device=self.device)
        dist.recv(buf, src=self.rank - self.tp_size)
        return buf

    def broadcast_from_last_stage(self, x: torch.Tensor) -> torch.Tensor:
        src = self.layout.rank(self.dp_rank, 0, self.pp_size - 1)
        buf = x.detach().cpu().contiguous()
        dist.broadcast(buf, src=src, group=self.replica_group)
        return buf.to(x.device)


# --------------------------------------------------------------------------------------------
# Launch


def _rank_entry(fn, rank, world_size, init_method, backend, coll_timeout_s, threads, args, results,
                launcher_pid=None):
    if launcher_pid is not None:
        bind_to_launcher(launcher_pid)  # first: never outlive the launcher, whatever kills it
    try:
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")  # a local launch talks over loopback
        torch.set_num_threads(threads)
        device = init_process(rank, world_size, init_method, backend, coll_timeout_s)
        out = fn(rank, world_size, device, *args)
        buf = io.BytesIO()
        torch.save(out, buf)  # by value: tensors must not outlive this process via shared handles
        results.put((rank, True, buf.getvalue()))
    except BaseException:  # noqa: BLE001 - report everything, including KeyboardInterrupt
        results.put((rank, False, traceback.format_exc()))
    finally:
        if dist.is_initialized():
            try:
                dist.destroy_process_group()
            except Exception:  # noqa: BLE001 - peers may already be gone
                pass


def spawn(fn, world_size: int, args: tuple = (), *, backend: str = "gloo", timeout_s: float = 120.0,
          collective_timeout_s: float = 60.0, start_method: str = "forkserver",
          threads_per_rank: int = 1, preload: tuple[str, ...] = ("torch", "seesaw.engine.dist"),
          prefer_rank: int | None = None, grace_s: float = 3.0) -> list:
    """Run ``fn(rank, world_size, device, *args)`` on ``world_size`` new processes and return their
    results in rank order. ``fn`` must be importable (a module-level function). Raises
    ``RankError`` with the first failing rank's traceback, or ``TimeoutError`` past ``timeout_s``;
    either way every rank still running is killed. With ``prefer_rank`` (a driver that explains
    failures), another rank's failure waits up to ``grace_s`` for that rank's own report, which
    is raised instead when it comes."""
    ctx = get_context(start_method)
    if start_method == "forkserver":
        ctx.set_forkserver_preload(list(preload))
    results = ctx.Queue()
    with tempfile.TemporaryDirectory(prefix="seesaw-rdzv-") as tmp:
        init_method = "file://" + os.path.join(tmp, "rendezvous")
        procs = [
            ctx.Process(target=_rank_entry, daemon=True, name=f"seesaw-rank{r}", args=(
                fn, r, world_size, init_method, backend, collective_timeout_s, threads_per_rank,
                args, results, os.getpid()))
            for r in range(world_size)
        ]
        done: dict[int, object] = {}
        ok = False
        try:
            for p in procs:
                p.start()
            deadline = time.monotonic() + timeout_s
            dead_since: dict[int, float] = {}
            failure: tuple[float, RankError] | None = None  # first problem, held for prefer_rank
            reported: dict[int, str] = {}

            def exited() -> dict[int, int | None]:
                return {r: p.exitcode for r, p in enumerate(procs) if r not in done and not p.is_alive()}

            while len(done) < world_size:
                now = time.monotonic()
                if failure is not None and now - failure[0] > grace_s:
                    raise failure[1]
                left = deadline - now
                if left <= 0:
                    missing = [r for r in range(world_size) if r not in done]
                    raise TimeoutError(f"ranks {missing} did not finish within {timeout_s:.0f} s")
                try:
                    rank, success, payload = results.get(timeout=min(left, 0.2))
                except queue_mod.Empty:
                    now = time.monotonic()
                    for r, p in enumerate(procs):
                        if r in done or p.is_alive():
                            continue
                        # a dead rank's report may still be in the pipe; give it a moment
                        if now - dead_since.setdefault(r, now) > 2.0:
                            e = RankError(f"rank {r} exited with code {p.exitcode} without a result", r,
                                          exited=exited())
                            if prefer_rank is None or r == prefer_rank:
                                raise e
                            failure = failure or (now, e)
                    continue
                if not success:
                    e = RankError(f"rank {rank} of {world_size} failed:\n{payload}", rank, payload, exited())
                    e.others = dict(reported)
                    if prefer_rank is None or rank == prefer_rank:
                        raise e
                    reported[rank] = e.last_line
                    failure = failure or (time.monotonic(), e)
                    continue
                done[rank] = torch.load(io.BytesIO(payload), weights_only=False, map_location="cpu")
            ok = True
        finally:  # also on Interrupted (a signal to the launcher): no rank outlives this call
            procs = [p for p in procs if p.pid is not None]  # started
            for p in procs:
                if ok:
                    p.join(timeout=10)
                if p.is_alive():
                    p.terminate()
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.kill()
                    p.join()
            results.close()
    return [done[r] for r in range(world_size)]


# --------------------------------------------------------------------------------------------
# A batch under a layout


def replica_of(seq_ids, dp: int) -> dict:
    """DP assignment: the k-th distinct sequence goes to replica k mod dp."""
    out = {}
    for s in seq_ids:
        if s not in out:
            out[s] = len(out) % dp
    return out


def layout_worker(rank: int, world_size: int, device, layout: ParallelConfig, store: WeightStore,
                  steps: list[dict], mode: str = "logits", num_micro_batches: int = 1,
                  dtype: torch.dtype = torch.float32, num_blocks: int = 64, block_size: int = 16,
                  max_new_tokens: int = 0):
    """One rank of ``run_layout``: build the comm and shard, then either run ``steps`` and return
    ``{seq_id: [logits per step]}`` (mode "logits", from the last stage's TP rank 0, else None), or
    greedily generate ``max_new_tokens`` after prompts ``steps[0]`` (mode "generate": every rank
    returns ``{seq_id: tokens}`` of its replica)."""
    comm = TorchComm(layout, rank, device)
    model = build_shard(store, layout, rank, comm, dtype=dtype, device=device)
    runner = ModelRunner(model, num_blocks, block_size, num_micro_batches)
    assign = replica_of([s for step in steps for s in step], layout.dp)
    if mode == "generate":
        prompts = {s: t for s, t in steps[0].items() if assign[s] == comm.dp_rank}
        return run_generation(runner, prompts, max_new_tokens) if prompts else {}
    out: dict = {}
    for step in steps:
        mine = {s: t for s, t in step.items() if assign[s] == comm.dp_rank}
        if not mine:
            continue
        for s, logits in runner.step_logits(mine, all_tokens=True).items():
            out.setdefault(s, []).append(logits.cpu())
    dist.barrier(group=comm.control_group)
    return out if model.shard.is_last and comm.tp_rank == 0 else None


def run_layout(store: WeightStore, layout: ParallelConfig, steps: list[dict], mode: str = "logits",
               timeout_s: float = 120.0, **kw) -> dict:
    """Run ``steps`` (each ``{seq_id: [new tokens]}``) under ``layout`` on ``layout.world_size``
    local ranks (gloo, CPU); see ``layout_worker`` for ``mode`` and the keyword arguments.
    Returns per-sequence results merged over replicas: ``{seq_id: logits [n_total, V]}`` (all
    steps concatenated) or ``{seq_id: generated tokens}`` (checked equal on every rank)."""
    results = spawn(_worker_kw, layout.world_size, (layout, store, steps, mode, kw), timeout_s=timeout_s)
    merged: dict = {}
    for rank, r in enumerate(results):
        for s, v in (r or {}).items():
            if mode == "logits":
                merged[s] = torch.cat(v)
            elif merged.setdefault(s, v) != v:
                raise RuntimeError(f"rank {rank} generated {v} for {s!r}, another rank {merged[s]}")
    return merged


def _worker_kw(rank, world_size, device, layout, store, steps, mode, kw):
    return layout_worker(rank, world_size, device, layout, store, steps, mode, **kw)
