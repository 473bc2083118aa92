"""Time the engine's own pieces on this machine: ``seesaw profile`` -> ``profiles/measured/*.yaml``.

What is timed, always the engine's own code with the shapes one rank holds under TP
(``seesaw.engine.model.Shard``):

- the model's pieces, timed where they run: real steps through a ``LlamaShard`` (random weights,
  a paged KV cache, ``ModelRunner.run_tables`` as the driver calls it) with timers around every
  GEMM module (fused QKV, O, fused gate/up, down, LM head), ``attention.paged_attention``, each
  decoder layer, the embedding and RoPE. ``layer_misc`` is a layer minus its GEMMs and attention
  (RMSNorms, RoPE, SiLU x up, residual adds, module calls). Grid points are steps: prompts by
  tokens (GEMM rows), prefill chunks by context (several sequences a step, figures per sequence),
  decoding batches by summed context;
- collectives as ``dist.TorchComm`` and the driver's control plane call them: all_reduce,
  all_gather (+ concat), send/recv (half a ping-pong), gloo broadcast, by bytes and ranks;
- copies: host->host memcpy (``Tensor.copy_``); on CUDA also pinned host->device and back;
- step overhead: the engine's driver loop (``driver.Driver`` over a ``StepWorker``: scheduler,
  block tables, step messages, attention metadata, sampling) for decoding sequences, its model
  replaced by a stub that returns logits: an engine step minus the model's forward pass;
- Seesaw: a whole KV swap step on the replica's ranks (message, every rank's ``Prefetcher``
  copying its box between its KV cache and a shared host pool, the wait, the ranks' agreement)
  by tokens, for the box of each model under P_k and T_k; and the re-shard between them
  (``reshard.reshard`` from a host weight store, barrier, new runner) by bytes loaded per rank.
  Measured on the engine (P2->T2, tiny model, 2 CPU ranks) these steps took 8-15 ms each where
  a memcpy of their bytes takes ~0.3 ms.

Why in place: the same GEMM timed back to back runs 1.5-4x faster on this CPU than inside a
forward pass (warm caches, allocator and branch state), and an engine step is not a loop of one
op. The shard keeps as many layers as the engine streams through the last-level cache (all, or
enough to exceed it twice), so weights and KV come from memory as they do in the engine.

Method: ``dist.spawn`` starts ``ranks`` processes once (gloo on CPU, NCCL on CUDA, each with
``threads`` torch threads, as the engine's ranks run). A (model, TP) group is measured on TP ranks
at once, as the engine runs them -- on a CPU they share the cores -- each rank timing its own
shard, and the slowest rank's mean kept. Samples are taken in sweeps over a table's grid
points in shuffled order, so load from other processes on a shared machine spreads over the table
instead of spoiling a few points; ``repeats`` samples per point (a fifth as many forward passes
and driver runs, each forward pass giving one sample per layer). The whole list of tables is
measured in ``passes`` rounds, each taking its share of the samples: the speed of a shared VM
drifts over seconds to minutes (the same engine run varied 1.7x within three minutes here), and a
table measured in one stretch of ~10 s took whatever speed that stretch had, so two profiles an
hour apart predicted P2 29% apart. A point keeps the median of the passes' means, so a stall that
spoils one pass's few samples of a point is outvoted. The files keep these figures unsmoothed;
``simulator.cost`` makes them monotone.

Why a pass keeps means, not medians: an engine step is a sum of calls, so its expected time is
the sum of the calls' means. Where calls have a long tail the two differ a lot: a gloo all-reduce
between two ranks on this 2-core machine has a median of ~0.6 ms but a mean of ~1.3-1.6 ms (p90
~4 ms: the wake-ups of the waiting rank), and a profile of medians under-predicted TP steps by
~40%.

This module drives the engine, so it imports torch;
``seesaw.cli_profile`` imports it lazily.
"""

from __future__ import annotations

import functools
import math
import os
import platform
import random
import statistics
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
import yaml
from torch import nn

import seesaw.engine.model as engine_model
from seesaw.engine.attention import paged_attention
from seesaw.engine.dist import spawn
from seesaw.engine.model import LlamaShard, LocalComm, Shard
from seesaw.engine.runner import ModelRunner
from seesaw.core import MeasuredProfile, ModelSpec, ParallelConfig, SpecError

__all__ = ["Grid", "profile", "write_profile", "plan_tasks", "cuda_available"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BLOCK_SIZE = 16  # the engine's default KV block (ModelRunner, run_layout)
_STEP_PROMPT = 127  # prompt tokens of the requests that time the engine's step overhead
_STEP_FEW = 2  # output tokens of the shorter of its two runs
_COLD_FACTOR = 2  # cycle through at least this many last-level caches' worth of weights / KV
_DTYPE_BYTES_MAX = 4  # the swap grid's byte cap assumes fp32 (smaller dtypes stay under it)
_SWAP_SEQ_TOKENS = 256  # tokens of each sequence in a timed swap step
_MSG_BYTES = 1 << 15  # the control plane's message buffer (``worker.ControlPlane``)
# a prefill attention point's step (``prefill_seqs``): new tokens, context tokens, attention
# pairs (new tokens x context), sequences
_PREFILL_STEP_TOKENS, _PREFILL_STEP_CONTEXT = 1024, 16384
_PREFILL_STEP_PAIRS, _PREFILL_STEP_SEQS = 1 << 19, 16


def _center(samples: list[float]) -> float:
    """The figure a table keeps of a point's samples: their mean (see the module docstring)."""
    return statistics.fmean(samples)


def _itemsize(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _cache_bytes(device: torch.device) -> float:
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


def _pow(lo: int, hi: int, factor: int = 2) -> tuple[int, ...]:
    out, x = [], lo
    while x <= hi:
        out.append(x)
        x *= factor
    return tuple(out)


@dataclass(frozen=True)
class Grid:
    """What to measure. ``default()`` covers the ``tiny`` and ``smollm2-135m`` shapes at TP 1-3 in
    minutes on a CPU; ``quick()`` takes seconds (tiny only, for CI)."""

    models: tuple[str, ...] = ("tiny", "smollm2-135m")
    tp: tuple[int, ...] = (1, 2, 3)  # kept where the model shards evenly and ranks suffice
    # step tokens for GEMMs and per-token ops, up to the engine's default max_num_batched_tokens:
    # beyond ~2048 rows the activations leave the cache and a row costs more (tiny, one stage:
    # 2048 tokens 15 ms, 8192 tokens 73-126 ms), which a linear extrapolation would miss
    tokens: tuple[int, ...] = _pow(1, 8192)
    # new tokens of one sequence (1 = decode) by its context. Every size is also a context (a whole
    # prompt; see ``prefill_axis``), and the steps are a factor 2: prefill attention is not a power
    # law of either, and from factor-4 steps the tiny model's 256-token prompt (between 128 and 512)
    # interpolated to ~0.7 ms a call where the engine took ~0.4-0.45
    prefill_tokens: tuple[int, ...] = _pow(2, 2048)
    prefill_context: tuple[int, ...] = (*_pow(2, 2048), 4096)
    decode_batch: tuple[int, ...] = _pow(1, 256, 2)  # also the LM head's rows
    decode_context: tuple[int, ...] = _pow(16, 16384, 4)  # summed over the batch
    comm_bytes: tuple[int, ...] = _pow(4, 64 * 4**10, 4)  # 4 B .. 64 MiB
    bcast_bytes: tuple[int, ...] = _pow(8, 8 * 4096, 8)  # int64 sampled ids .. the driver's message
    copy_bytes: tuple[int, ...] = _pow(4096, 4096 * 4**8, 4)  # 4 KiB .. 256 MiB
    step_seqs: tuple[int, ...] = _pow(1, 256, 4)
    swap_tokens: tuple[int, ...] = _pow(64, 16384, 4)  # KV tokens of one Seesaw swap step
    swap_max_bytes: int = 256 * 2**20  # largest box of KV one rank copies per swap step
    busy: tuple[int, ...] = (2,)  # also time TP-1 forward passes and driver steps on this many ranks at once
    repeats: int = 15  # timed samples per point (forward passes and driver runs: a fifth)
    passes: int = 3  # the task list runs this many times, each with its share of the samples
    warmup: int = 2
    min_repeat_s: float = 2e-3
    max_calls: int = 1000  # per sample

    @classmethod
    def default(cls, **kw) -> "Grid":
        return replace(cls(), **kw)

    @classmethod
    def quick(cls, **kw) -> "Grid":
        return replace(cls(
            models=("tiny",), tp=(1, 2), tokens=(1, 4, 16, 64),
            prefill_tokens=(2, 16, 64), prefill_context=(2, 16, 64, 256), decode_batch=(1, 4, 16),
            decode_context=(16, 64, 256), comm_bytes=(4, 256, 16384, 1 << 20), bcast_bytes=(8, 512),
            copy_bytes=(4096, 1 << 16, 1 << 20, 1 << 24), step_seqs=(1, 4, 16), swap_tokens=(64, 1024),
            repeats=3, passes=1, warmup=1, min_repeat_s=3e-4, max_calls=200,
        ), **kw)

    @property
    def prefill_axis(self) -> tuple[int, ...]:
        """The prefill table's contexts: ``prefill_context`` and every size (a whole prompt of
        that size, its own context), so the table holds each size's no-past point."""
        return tuple(sorted({*self.prefill_context, *self.prefill_tokens}))

    @property
    def forward_repeats(self) -> int:
        return max(3, self.repeats // 5)

    def per_pass(self, samples: int) -> int:
        """Sweeps of one pass for ``samples`` per point in all."""
        return max(1, -(-samples // self.passes))


@dataclass(frozen=True)
class Task:
    """One group of tables to measure on ranks ``0 .. ranks-1`` (the others skip it)."""

    kind: str  # forward | step | comm | copy | swap | reshard
    ranks: int
    points: int  # grid points, for progress
    args: dict = field(default_factory=dict)


def cuda_available() -> bool:
    return torch.cuda.is_available() and torch.cuda.device_count() > 0


# --------------------------------------------------------------------------------------------
# The plan: which tables, on how many ranks


def _valid_tp(spec: ModelSpec, tp: int) -> bool:
    try:
        Shard.of(spec, ParallelConfig(tp=tp), 0)
    except SpecError:
        return False
    return True


def shard_keys(spec: ModelSpec, tp: int) -> dict:
    """What one TP rank of ``spec`` runs, as the tables key it: GEMM ``(in, out)`` per op, the
    layer_misc and embed_rope dims, and the attention heads ``(q heads, KV heads, head_dim)``."""
    shard = Shard.of(spec, ParallelConfig(tp=tp), 0)
    h, d = spec.hidden_size, spec.d_head
    hq, hkv = len(shard.q_heads(spec)), len(shard.kv_heads(spec))
    inter, cols = len(shard.mlp_cols(spec)), len(shard.vocab_rows(spec))
    return dict(
        gemms={"qkv": (h, (hq + 2 * hkv) * d), "o": (hq * d, h), "gate_up": (h, 2 * inter),
               "down": (inter, h), "head": (h, cols)},
        misc=(h, hq * d, hkv * d, inter), embed=(h, d, cols), heads=(hq, hkv, d),
    )


def plan_tasks(grid: Grid, ranks: int, specs: list[ModelSpec], device: str = "cpu") -> list[Task]:
    """Every table of ``grid`` for these models on at most ``ranks`` ranks, in measuring order."""
    tasks: list[Task] = []
    seen: set = set()
    for spec in specs:
        for tp in grid.tp:
            if tp > ranks or not _valid_tp(spec, tp) or (spec.name, tp) in seen:
                continue
            seen.add((spec.name, tp))
            points = (len(grid.tokens) + len(_attention_points(grid.prefill_tokens, grid.prefill_axis))
                      + len(_attention_points(grid.decode_batch, grid.decode_context)))
            tasks.append(Task("forward", tp, points, dict(model=spec, tp=tp, **shard_keys(spec, tp))))
        if _valid_tp(spec, 1):
            # TP-1 shards on several ranks at once (no collectives between them): pipeline stages
            # and DP replicas share the machine's cores and memory bandwidth with each other
            for busy in grid.busy:
                if 1 < busy <= ranks and (spec.name, "busy", busy) not in seen:
                    seen.add((spec.name, "busy", busy))
                    tasks.append(Task("forward", busy, points, dict(model=spec, tp=1, **shard_keys(spec, 1))))
        for busy in (1, *grid.busy):
            if busy <= ranks and ("step", spec.vocab_size, busy) not in seen:
                seen.add(("step", spec.vocab_size, busy))
                tasks.append(Task("step", busy, 2 * len(grid.step_seqs), dict(model=spec)))
        tasks += _seesaw_tasks(grid, ranks, spec, seen)
    if device == "cuda" or ranks > 1:
        for k in range(2, ranks + 1):
            for op in ("all_reduce", "all_gather"):
                tasks.append(Task("comm", k, len(grid.comm_bytes), dict(op=op, sizes=grid.comm_bytes)))
            tasks.append(Task("comm", k, len(grid.bcast_bytes), dict(op="broadcast", sizes=grid.bcast_bytes)))
        if ranks >= 2:
            tasks.append(Task("comm", 2, len(grid.comm_bytes), dict(op="send_recv", sizes=grid.comm_bytes)))
            if device == "cpu":  # async transfers need a core that busy ranks also want
                tasks.append(Task("comm", 2, len(grid.comm_bytes), dict(op="handoff", sizes=grid.comm_bytes)))
    for kind in (("h2d", "d2h", "h2h") if device == "cuda" else ("h2h",)):
        tasks.append(Task("copy", 1, len(grid.copy_bytes), dict(kind=kind, sizes=grid.copy_bytes)))
    return tasks


def _layout_if_valid(spec: ModelSpec, text: str) -> ParallelConfig | None:
    from seesaw.core import parse_parallel

    layout = parse_parallel(text)
    try:
        for rank in range(layout.world_size):
            Shard.of(spec, layout, rank)
    except SpecError:
        return None
    return layout


def swap_box(spec: ModelSpec, layout: ParallelConfig) -> tuple[int, int, int]:
    """(layers, KV heads, head_dim) of the largest KV box one rank of ``layout`` holds: what it
    copies per swapped token (the swap tables' key)."""
    shards = [Shard.of(spec, layout, rank) for rank in range(layout.gpus_per_replica)]
    return (max(len(s.layers) for s in shards), max(len(s.kv_heads(spec)) for s in shards), spec.d_head)


def _seesaw_tasks(grid: Grid, ranks: int, spec: ModelSpec, seen: set) -> list[Task]:
    """Seesaw's pieces on k = 2..ranks ranks: KV swap steps under P_k and T_k (each layout's
    box), and re-shards between them both ways."""
    tasks = []
    for k in range(2, ranks + 1):
        pp, tp = _layout_if_valid(spec, f"P{k}"), _layout_if_valid(spec, f"T{k}")
        for layout in (pp, tp):
            if layout is None:
                continue
            box = swap_box(spec, layout)
            per_token = 2 * box[0] * box[1] * box[2] * _DTYPE_BYTES_MAX
            points = [t for t in grid.swap_tokens if t * per_token <= grid.swap_max_bytes] or [grid.swap_tokens[0]]
            if ("swap", box, k) not in seen:
                seen.add(("swap", box, k))
                tasks.append(Task("swap", k, 2 * len(points), dict(model=spec, layout=layout, tokens=points)))
        if pp is not None and tp is not None:
            tasks.append(Task("reshard", k, 2, dict(model=spec, pair=(pp, tp))))
    return tasks


def _attention_points(sizes, context) -> list[tuple[int, int]]:
    """Distinct (size, context) pairs to run: a context below the size is measured at the size
    (whole prompt / one token per sequence)."""
    return sorted({(s, max(s, c)) for s in sizes for c in context})


# --------------------------------------------------------------------------------------------
# Timing


@dataclass
class _Rank:
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

    def measure(self, fns: list[Callable[[], object]], ranks: int = 1, max_calls: int | None = None,
                repeats: int | None = None, warmup: int | None = None) -> list[float]:
        """Median seconds per call of each of ``fns`` (the grid points of one table) on this rank.

        Warm-up and a timed call size each point's sample (enough calls to last ``min_repeat_s``);
        then ``repeats`` sweeps over all the points in shuffled order, so every point's samples
        spread over the whole measurement and a burst of load from other processes hits all
        points alike instead of a few. ``ranks`` > 1: ranks 0..ranks-1 run the same points
        together (same call counts, a barrier before each sample).
        """
        g = self.grid
        calls = []
        for fn in fns:
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
        samples: list[list[float]] = [[] for _ in fns]
        for sweep in range(repeats or g.per_pass(g.repeats)):
            # a fresh order each sweep (the same on every rank), so whatever the previous point
            # leaves behind (cold caches after a large one) does not always hit the same point
            order = list(range(len(fns)))
            random.Random(sweep).shuffle(order)
            for i in order:
                fn, n = fns[i], calls[i]
                if ctrl is not None:
                    dist.barrier(group=ctrl)
                start = time.perf_counter()
                for _ in range(n):
                    fn()
                self.sync()
                samples[i].append((time.perf_counter() - start) / n)
            self.tick(len(fns))
        return [_center(x) for x in samples]

    def slowest(self, times: list[float], ranks: int) -> list[float]:
        """Element-wise maximum of ``times`` over ranks 0..ranks-1."""
        if ranks <= 1:
            return times
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.ctrl[ranks])
        return t.tolist()


def _init_(module: nn.Module) -> nn.Module:
    """Finite, denormal-free values: matrices ~ N(0, 0.02), vectors (norms) ones."""
    with torch.no_grad():
        for p in module.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.02)
            else:
                p.fill_(1.0)
    return module


# --------------------------------------------------------------------------------------------
# The pieces


class _Probe:
    """Timers around the engine's own calls inside its forward pass: each GEMM module, the paged
    attention, each decoder layer, the embedding and RoPE. ``records[(point, key)]`` collects
    seconds per call while ``on``; CUDA calls are timed with events, read after the step."""

    def __init__(self, cuda: bool):
        self.on, self.point, self.cuda = False, 0, cuda
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
        wrapped = self.wrap("_noop", noop)
        self.on, point, self.point = True, self.point, -1
        start = time.perf_counter()
        for _ in range(calls):
            wrapped()
        total = time.perf_counter() - start
        self.on, self.point = False, point
        return max(0.0, (total - sum(self.records.pop((-1, "_noop")))) / calls)


def prefill_seqs(size: int, context: int) -> int:
    """Sequences in the step that times a prefill attention point (``size`` new tokens of each,
    ``context`` after the step): as many as fit ``_PREFILL_STEP_TOKENS`` new and
    ``_PREFILL_STEP_CONTEXT`` context tokens and ``_PREFILL_STEP_PAIRS`` attention pairs, at most
    ``_PREFILL_STEP_SEQS``, at least one.

    The engine's attention call of a prefill step runs one SDPA per sequence, back to back (32
    prompts of 256 tokens in an 8192-token step). Timed alone in its step, a sequence came out
    at ~0.46 ms at 256 tokens under TP 2 where the engine's took ~0.27: the step's all-reduces
    (and the other rank's traffic) crowd a lone call, not a run of them. Four such prompts a
    step read 0.25-0.28 ms, as did eight. Large points stay alone: their call dwarfs that cost,
    and every sequence adds a forward pass's worth of GEMM rows to the profile's time."""
    k = min(_PREFILL_STEP_SEQS, _PREFILL_STEP_TOKENS // size, _PREFILL_STEP_CONTEXT // context,
            _PREFILL_STEP_PAIRS // (size * context))
    return max(1, k)


def _steps_for(kind: str, size: int, context: int) -> list[tuple[int, int]]:
    """(context after the step, new tokens) per sequence of one grid point's step."""
    if kind == "tokens":  # GEMM rows: prompts of up to 64 tokens, so attention stays small
        return [(size, size)] if size <= 64 else [(64, 64)] * (size // 64)
    if kind == "prefill":  # sequences of ``size`` new tokens each, their context then ``context``
        return [(context, size)] * prefill_seqs(size, context)
    return [(max(1, context // size), 1)] * size  # ``size`` sequences decoding, ``context`` in all


def _forward_tables(r: _Rank, task: Task) -> list[tuple[str, dict]]:
    """The layer tables of one (model, TP): real steps through the engine's ``LlamaShard`` (this
    rank's TP slice, random weights, ``ModelRunner.run_tables`` over a paged KV cache, as the
    driver runs them), every GEMM, attention, layer, embedding and RoPE call timed where it runs.

    A step is a grid point: ``tokens`` (prompts of up to 64 tokens: GEMM rows, per-token ops),
    ``prefill`` (``prefill_seqs`` sequences' chunks by context) or ``decode`` (sequences by
    summed context; its logits rows time the LM head). The shard keeps as many layers as the engine would stream
    through the last-level cache (all of them, or enough to exceed it twice over) so calls
    see the cache as the engine's do. ``layer_misc`` = layer - its GEMMs and attention - the
    timers' own cost. Each call is a sample (layers x forward passes); their mean is kept. At TP
    > 1 the forward pass runs the engine's all-reduces and logits gather between the TP ranks
    (``tp_all_reduce``, ``tp_all_gather``), which layer and embedding times exclude.
    """
    a, g = task.args, r.grid
    spec, tp, busy = a["model"], a["tp"], task.ranks  # busy: ranks running forward passes at once
    t_rank = r.rank % tp
    (k_in, k_out), (_, k2) = a["gemms"]["qkv"], a["gemms"]["gate_up"]
    layer_bytes = (k_in * k_out + a["gemms"]["o"][0] * k_in + k_in * k2 + k2 // 2 * k_in) * _itemsize(r.dtype)
    layers = r.copies(layer_bytes, spec.num_hidden_layers)
    shard = Shard(spec.num_hidden_layers, 0, layers, t_rank, tp, 0, 1)  # first and last stage
    comm = _TPComm(r.groups[tp], tp) if tp > 1 else LocalComm()
    model = _init_(LlamaShard(spec, shard, comm, dtype=r.dtype, device=r.device))

    points = ([("tokens", n, n) for n in g.tokens]
              + [("prefill", q, c) for q, c in _attention_points(g.prefill_tokens, g.prefill_axis)]
              + [("decode", b, c) for b, c in _attention_points(g.decode_batch, g.decode_context)])
    plans, blocks_needed = [], 0
    for kind, size, ctx in points:
        seqs, tables, next_block = [], {}, 0
        for sid, (c, n) in enumerate(_steps_for(kind, size, ctx)):
            nb = -(-c // _BLOCK_SIZE)
            tables[sid] = list(range(next_block, next_block + nb))  # distinct blocks, as in the engine
            next_block += nb
            seqs.append((sid, c - n, [sid % spec.vocab_size] * n))
        blocks_needed = max(blocks_needed, next_block)
        plans.append((seqs, tables, [sid for sid, _, _ in seqs] if kind == "decode" else []))
    runner = ModelRunner(model, blocks_needed, _BLOCK_SIZE)

    probe = _Probe(r.device.type == "cuda")
    for layer in model.layers.values():
        layer.forward = probe.wrap("layer", layer.forward)
        for key, mod in (("qkv", layer.attn.qkv_proj), ("o", layer.attn.o_proj),
                         ("gate_up", layer.mlp.gate_up_proj), ("down", layer.mlp.down_proj)):
            mod.forward = probe.wrap(key, mod.forward)
    model.lm_head.forward = probe.wrap("head", model.lm_head.forward)
    if tp > 1:  # the collectives where the engine calls them, between the ranks' real compute
        comm.all_reduce = probe.wrap("ar", comm.all_reduce)
        comm.all_gather = probe.wrap("gather", comm.all_gather)
    model.embed = probe.wrap("embed", model.embed)
    model.rope = probe.wrap("rope", model.rope)

    def step(i: int) -> None:
        probe.point = i
        runner.run_tables(*plans[i])
        if probe.cuda:
            torch.cuda.synchronize(r.device)
            probe.collect()

    overhead = probe.overhead_s()
    fns = [functools.partial(step, i) for i in range(len(points))]
    saved = engine_model.paged_attention
    engine_model.paged_attention = probe.wrap("attn", paged_attention)  # Attention looks it up per call
    try:
        with torch.inference_mode():
            for fn in fns:  # a first pass unrecorded (allocations, lazy initialisation)
                fn()
            probe.on = True
            r.measure(fns, task.ranks, repeats=g.per_pass(g.forward_repeats), warmup=0)
            probe.on = False
    finally:
        engine_model.paged_attention = saved
    rec = probe.records

    def center_of(i: int, key: str) -> float:
        return _center(rec[(i, key)])

    def all_reduces(i: int) -> tuple[list[float], list[float]]:
        """Point ``i``'s all-reduces (TP): the embedding's, one per forward pass, and each
        layer's two (attention + MLP) summed, one per layer call; zeros at TP 1."""
        ars = rec.get((i, "ar"), [])
        if not ars:
            n = len(rec[(i, "embed")])
            return [0.0] * n, [0.0] * (n * layers)
        per = 1 + 2 * layers
        assert len(ars) % per == 0, (len(ars), per)
        layer = [a for f in range(0, len(ars), per) for a in ars[f + 1:f + per]]
        return ars[::per], [a + b for a, b in zip(layer[::2], layer[1::2])]

    tok = [i for i, p in enumerate(points) if p[0] == "tokens"]
    ar = {i: all_reduces(i) for i in tok}
    values: list[float] = []  # every figure, then one element-wise max over the TP ranks
    for key in ("qkv", "o", "gate_up", "down"):
        values += [center_of(i, key) for i in tok]
    timers = 5 if tp == 1 else 7  # wrapped calls inside a layer: 4 GEMMs, attention (+ 2 all-reduces)
    for i in tok:
        parts = zip(rec[(i, "layer")], ar[i][1], *(rec[(i, k)] for k in ("qkv", "o", "gate_up", "down", "attn")))
        values.append(_center([max(1e-9, lay - sum(ops) - timers * overhead) for lay, *ops in parts]))
    over = overhead if tp > 1 else 0.0  # the all-reduce's timer inside the embedding's
    for i in tok:
        values.append(_center([max(1e-9, e - a - over + q) for e, a, q in
                               zip(rec[(i, "embed")], ar[i][0], rec[(i, "rope")])]))
    # a prefill point's figure is per sequence: its step's call covers ``prefill_seqs`` of them
    attn = {p[:3]: center_of(i, "attn") / (prefill_seqs(p[1], p[2]) if p[0] == "prefill" else 1)
            for i, p in enumerate(points) if p[0] != "tokens"}
    values += list(attn.values())
    head = [_center([v for i, p in enumerate(points) if p[0] == "decode" and p[1] == b
                     for v in rec[(i, "head")]]) for b in g.decode_batch]
    values += head
    if tp > 1:
        # an all-reduce of n rows: the prompt step's and those of decode steps of n sequences
        # (same bytes), pooled: the call's mean is noisy (long-tailed wake-ups), more samples help
        for i in tok:
            n = points[i][1]
            same = [v for j, p in enumerate(points) if p[0] == "decode" and p[1] == n for v in rec[(j, "ar")]]
            values.append(_center(rec[(i, "ar")] + same))
        values += [_center([v for i, p in enumerate(points) if p[0] == "decode" and p[1] == b
                            for v in rec[(i, "gather")]]) for b in g.decode_batch]
    values = iter(r.slowest(values, task.ranks))

    out = []
    gemms, rows = a["gemms"], list(g.tokens)
    for key in ("qkv", "o", "gate_up", "down"):
        out.append(("ops", dict(op="linear", dims=list(gemms[key]), ranks=busy, tokens=rows,
                                time_s=[next(values) for _ in rows])))
    out.append(("ops", dict(op="layer_misc", dims=list(a["misc"]), ranks=busy, tokens=rows,
                            time_s=[next(values) for _ in rows])))
    out.append(("ops", dict(op="embed_rope", dims=list(a["embed"]), ranks=busy, tokens=rows,
                            time_s=[next(values) for _ in rows])))
    attn = {key: next(values) for key in attn}
    hq, hkv, d = a["heads"]
    for kind, sizes, context in (("prefill", g.prefill_tokens, g.prefill_axis),
                                 ("decode", g.decode_batch, g.decode_context)):
        grid = [[attn[(kind, s, max(s, c))] for c in context] for s in sizes]
        out.append(("attention", dict(kind=kind, num_heads=hq, num_kv_heads=hkv, head_dim=d, ranks=busy,
                                      sizes=list(sizes), context_tokens=list(context), time_s=grid)))
    out.insert(4, ("ops", dict(op="linear", dims=list(gemms["head"]), ranks=busy, tokens=list(g.decode_batch),
                               time_s=[next(values) for _ in g.decode_batch])))
    if tp > 1:
        out.append(("ops", dict(op="tp_all_reduce", dims=[spec.hidden_size], ranks=tp, tokens=rows,
                                time_s=[max(1e-9, next(values) - overhead) for _ in rows])))
        out.append(("ops", dict(op="tp_all_gather", dims=[gemms["head"][1]], ranks=tp, tokens=list(g.decode_batch),
                                time_s=[max(1e-9, next(values) - overhead) for _ in g.decode_batch])))
    return out


class _TPComm(LocalComm):
    """The engine's TP collectives (``dist.TorchComm.all_reduce`` / ``all_gather``) over the
    profiling group of TP ranks, so a forward pass runs and times them where the engine does."""

    def __init__(self, group, tp: int):
        self.group, self.tp_size = group, tp

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(x, group=self.group)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        return _all_gather(x, [torch.empty_like(x) for _ in range(self.tp_size)], self.group)


class _LogitsStub(nn.Module):
    """Stands in for ``LlamaShard`` inside ``ModelRunner``: no layers, forward returns logits."""

    def __init__(self, spec: ModelSpec, max_rows: int, r: _Rank):
        super().__init__()
        self.spec = spec
        self.shard = Shard(spec.num_hidden_layers, 0, 0)  # first and last stage, no layers
        self.comm = LocalComm()
        self.dtype = r.dtype
        self.hidden_size = spec.hidden_size
        self.anchor = nn.Parameter(torch.zeros(1, device=r.device), requires_grad=False)
        self.logits = torch.randn(max_rows, spec.vocab_size, device=r.device)

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, x, positions, meta, kv_cache=None, logits_indices=None):
        return self.logits[: len(x) if logits_indices is None else len(logits_indices)]


class _DriverComm(LocalComm):
    dp_rank = 0


def _driver_run(spec: ModelSpec, r: _Rank, seqs: int, new_tokens: int) -> None:
    """One whole run of the engine's driver (``seesaw.engine.driver``: scheduler, block tables,
    step messages, the worker's metadata and sampling) for ``seqs`` requests of
    ``_STEP_PROMPT`` prompt and ``new_tokens`` output tokens, on one rank, the model stubbed."""
    from seesaw.engine.batch_io import BatchItem
    from seesaw.engine.driver import ControlPlane, Driver, EngineConfig, StepWorker

    layout = ParallelConfig()
    cfg = EngineConfig(layout=layout, max_num_seqs=seqs, max_num_batched_tokens=max(8192, seqs * _STEP_PROMPT))
    num_blocks = seqs * -(-(_STEP_PROMPT + new_tokens + 1) // _BLOCK_SIZE)
    runner = ModelRunner(_LogitsStub(spec, seqs, r), num_blocks, _BLOCK_SIZE)
    worker = StepWorker(runner, _DriverComm(), ControlPlane(layout, 0, cfg.timeout_s), cfg, 0)
    items = [BatchItem(str(i), [1] * _STEP_PROMPT, new_tokens, ignore_eos=True) for i in range(seqs)]
    Driver(worker, items, cfg, num_blocks).run()


def _step(r: _Rank, task: Task) -> dict:
    """Seconds per decode step of the engine's driver loop outside the model: two whole runs,
    of ``_STEP_FEW`` output tokens per request and of that many more steps, their difference over
    the steps in between (the prefill step and the set-up cancel); fewer steps for big batches."""
    spec, seqs = task.args["model"], r.grid.step_seqs
    fns, extra = [], []
    for b in seqs:
        k = max(8, min(128, 4096 // b))
        extra.append(k)
        fns += [functools.partial(_driver_run, spec, r, b, _STEP_FEW),
                functools.partial(_driver_run, spec, r, b, _STEP_FEW + k)]
    with torch.inference_mode():
        runs = r.measure(fns, task.ranks, repeats=r.grid.per_pass(r.grid.forward_repeats), warmup=1)
    times = [max(1e-7, (many - few) / k) for few, many, k in zip(runs[::2], runs[1::2], extra)]
    return dict(vocab_size=spec.vocab_size, ranks=task.ranks, seqs=list(seqs), time_s=r.slowest(times, task.ranks))


def _comm(r: _Rank, task: Task) -> dict:
    op, k, sizes = task.args["op"], task.ranks, task.args["sizes"]
    if op == "handoff":
        return dict(op=op, ranks=k, size_bytes=list(sizes), time_s=_handoff(r, sizes))
    if op == "broadcast":  # the engine broadcasts sampled ids over a gloo group, CPU tensors
        ids = torch.zeros(max(sizes) // 8 + 1, dtype=torch.int64)
        fns = [functools.partial(dist.broadcast, ids[:max(1, n // 8)], src=k - 1, group=r.ctrl[k])
               for n in sizes]
        return dict(op=op, ranks=k, size_bytes=list(sizes), time_s=r.slowest(r.measure(fns, k), k))
    group = r.groups[k]
    data = torch.ones(max(sizes) // 4 + 1, dtype=torch.float32, device=r.device)
    fns = []
    for nbytes in sizes:
        x = data[:max(1, nbytes // 4)]
        if op == "all_reduce":
            fns.append(functools.partial(dist.all_reduce, x, group=group))
        elif op == "all_gather":
            fns.append(functools.partial(_all_gather, x, [torch.empty_like(x) for _ in range(k)], group))
        else:
            fns.append(functools.partial(_ping_pong, x, torch.empty_like(x), r.rank))
    times = r.measure(fns, k)
    if op == "send_recv":
        times = [t / 2 for t in times]  # one way = half a round trip
    return dict(op=op, ranks=k, size_bytes=list(sizes), time_s=r.slowest(times, k))


def _busy(a: torch.Tensor, seconds: float) -> None:
    """Compute for ``seconds`` (small matmuls, as a stage's layers do)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        a @ a


def _handoff(r: _Rank, sizes) -> list[float]:
    """Mean one-way hand-off of ``sizes`` bytes from rank 0 to rank 1 as pipeline stages make it:
    both compute a while (0.5-2 ms, drawn), then rank 0 ``isend``s and computes on (3 ms, longer
    than rank 1 can lag) before it waits, as a stage goes on to its next micro-batch -- traced in
    the engine, the second stage asks for its data while the first is still computing -- and
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
    means = torch.tensor([_center(s) if s else 0.0 for s in samples], dtype=torch.float64)
    dist.broadcast(means, src=1, group=r.ctrl[2])  # rank 0 reports the tables
    return [max(1e-7, v) for v in means.tolist()]


def _all_gather(x: torch.Tensor, parts: list[torch.Tensor], group) -> torch.Tensor:
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


def _copy(r: _Rank, task: Task) -> dict:
    kind, sizes = task.args["kind"], task.args["sizes"]
    cuda = r.device.type == "cuda"
    top = max(sizes)
    if kind == "h2h":
        src, dst = torch.ones(top, dtype=torch.uint8), torch.empty(top, dtype=torch.uint8)
    else:
        host = torch.ones(top, dtype=torch.uint8, pin_memory=cuda)
        dev = torch.empty(top, dtype=torch.uint8, device=r.device)
        src, dst = (host, dev) if kind == "h2d" else (dev, host)
    fns = [functools.partial(dst[:n].copy_, src[:n], non_blocking=cuda) for n in sizes]
    return dict(kind=kind, size_bytes=list(sizes), time_s=r.measure(fns, 1))


# --------------------------------------------------------------------------------------------
# Seesaw: KV swap steps and re-shards


def _swaps(r: _Rank, task: Task) -> list[tuple[str, dict]]:
    """Seconds per Seesaw swap step on ``task.ranks`` ranks, as the engine runs one
    (``seesaw_driver``): a message from rank 0, every rank queuing its box of the step's
    sequences (``_SWAP_SEQ_TOKENS`` tokens each) on its ``Prefetcher``, a second message (the
    driver's wait), the wait for the copies and the int-id agreement. The host pool is one
    named shared-memory pool for all ranks, as under torchrun. The device KV cache is allocated
    once: the engine's ``KVCache`` is zero-filled at allocation, so its pages are already touched
    when swap-ins land in it after a re-shard. Rank 0's wall time: the agreement ends together
    on every rank."""
    import uuid

    from seesaw.engine.host_kv import HostKVPool, kv_box
    from seesaw.engine.kv import KVCache, block_slots
    from seesaw.engine.prefetch import Prefetcher, ReplicaCompletions

    spec, layout, points, k = task.args["model"], task.args["layout"], task.args["tokens"], task.ranks
    ctrl, bs = r.ctrl[k], _BLOCK_SIZE
    layers, heads = kv_box(spec, Shard.of(spec, layout, r.rank))
    top = max(points)
    seq = min(top, _SWAP_SEQ_TOKENS)
    host_blocks = -(-top // bs) + top // seq + 1
    pool_name = [f"seesaw-profile-kv-{uuid.uuid4().hex[:12]}" if r.rank == 0 else None]
    dist.broadcast_object_list(pool_name, src=0, group=ctrl)
    dims = (host_blocks, spec.num_hidden_layers, spec.num_key_value_heads, bs, spec.d_head, r.dtype)
    pool = HostKVPool(*dims[:5], dtype=r.dtype, name=pool_name[0]) if r.rank == 0 else None
    try:
        dist.barrier(group=ctrl)
        if r.rank != 0:
            pool = HostKVPool.attach(pool_name[0], *dims)
        dist.barrier(group=ctrl)
    finally:
        if r.rank == 0:
            pool.unlink()  # the mappings stay; nothing is left in /dev/shm, also if a rank fails
    filled = KVCache(layers, -(-top // bs) + 1, bs, len(heads), spec.d_head, dtype=r.dtype, device=r.device)
    for x in filled.k + filled.v:
        x.normal_()
    pf = Prefetcher(pool, filled, layers, heads, name=f"seesaw-profile-prefetch-{r.rank}")
    agree = ReplicaCompletions(ctrl, int_ids=True)
    msg = torch.zeros(_MSG_BYTES, dtype=torch.uint8)

    def step(kind: str, tokens: int) -> None:
        n = min(tokens, seq)
        per_seq = -(-n // bs)
        dist.broadcast(msg, 0, group=ctrl)  # the driver's swap_in / swap_out message
        items = []
        for i in range(max(1, tokens // n)):
            blocks = list(range(i * per_seq, (i + 1) * per_seq))
            items.append((i, blocks, block_slots(blocks, 0, n, bs)))  # as the worker's _slots
        (pf.swap_in_many if kind == "in" else pf.swap_out_many)(items)
        dist.broadcast(msg, 0, group=ctrl)  # its wait for the copies
        agree.update(pf.wait())

    out = []
    try:
        for kind in ("out", "in"):
            fns = [functools.partial(step, kind, t) for t in points]
            times = r.slowest(r.measure(fns, k, max_calls=50), k)
            moved = [max(1, t // min(t, seq)) * min(t, seq) for t in points]  # whole sequences
            out.append(("swaps", dict(kind=kind, num_layers=len(layers), num_kv_heads=len(heads),
                                      head_dim=spec.d_head, ranks=k, tokens=moved, time_s=times)))
    finally:
        pf.close()
    key = swap_box(spec, layout)  # the largest box (uneven stages): every rank's table carries it
    return [(table, {**t, "num_layers": key[0], "num_kv_heads": key[1]}) for table, t in out]


class _ReplicaComm(LocalComm):
    """The ``dst`` comm of a timed re-shard: only its barrier group (``replica_group``) is used;
    the shard never runs a forward pass."""

    def __init__(self, group):
        self.replica_group = group


def _random_store(spec: ModelSpec, r: _Rank):
    from seesaw.engine.weights import WeightStore, expected_shapes

    tensors = {}
    for name, shape in expected_shapes(spec).items():
        x = torch.empty(shape, dtype=r.dtype)
        tensors[name] = x.normal_(0.0, 0.02) if len(shape) > 1 else x.fill_(1.0)
    return WeightStore(spec, {}, tensors)


def _reshards(r: _Rank, task: Task) -> dict:
    """Seconds per re-shard of ``task.args["pair"]`` both ways on ``task.ranks`` ranks, as the
    Seesaw worker runs one: the driver's message, ``reshard.reshard`` from the host weight store
    (barrier included), then a new ``ModelRunner``. Alternating A->B and B->A, slowest rank kept, keyed by the bytes
    the most loaded rank loads. The runner gets a token KV cache: zero-filling the engine's
    cache scales with the run's KV size, not the model's, and is left out (here ~28 ms per
    100 MB on a CPU; a device memset on a GPU)."""
    from seesaw.engine.reshard import reshard
    from seesaw.engine.weights import build_shard

    spec, (a, b), k = task.args["model"], task.args["pair"], task.ranks
    comm = _ReplicaComm(r.ctrl[k])
    store = _random_store(spec, r)
    model = build_shard(store, a, r.rank, comm, dtype=r.dtype, device=r.device)
    msg = torch.zeros(_MSG_BYTES, dtype=torch.uint8)
    samples: dict[str, list[float]] = {"ab": [], "ba": []}
    loaded = {"ab": 0, "ba": 0}
    g = r.grid
    sweeps = g.per_pass(g.repeats)
    with torch.inference_mode():
        for sweep in range(g.warmup + sweeps):
            for key, (src, dst) in (("ab", (a, b)), ("ba", (b, a))):
                dist.barrier(group=r.ctrl[k])
                start = time.perf_counter()
                dist.broadcast(msg, 0, group=r.ctrl[k])  # the driver's reshard message
                stats = reshard(model, store, src, dst, r.rank, comm)
                ModelRunner(model, 16, _BLOCK_SIZE)  # the worker's new runner (a token KV cache)
                r.sync()
                if sweep >= g.warmup:
                    samples[key].append(time.perf_counter() - start)
                loaded[key] = stats.bytes_loaded
            if sweep >= g.warmup:
                r.tick(2)
    times = r.slowest([_center(samples["ab"]), _center(samples["ba"])], k)
    sizes = torch.tensor([loaded["ab"], loaded["ba"]], dtype=torch.float64)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX, group=r.ctrl[k])
    points = sorted(zip((int(x) for x in sizes.tolist()), times))
    if points[0][0] == points[1][0]:  # the same bytes both ways: one point
        points = [(points[0][0], (points[0][1] + points[1][1]) / 2)]
    return dict(ranks=k, size_bytes=[p[0] for p in points], time_s=[p[1] for p in points])


# --------------------------------------------------------------------------------------------
# Ranks and the whole run


def _rank_main(rank: int, world_size: int, device: torch.device, tasks: list[Task], grid: Grid,
               dtype: str, progress):
    groups, ctrl = {}, {}
    for k in range(2, world_size + 1):  # every rank creates every group, in the same order
        groups[k] = dist.new_group(list(range(k)))
        ctrl[k] = dist.new_group(list(range(k)), backend="gloo")
    torch.manual_seed(rank)
    r = _Rank(rank, torch.device(device), _DTYPES[dtype], grid, groups, ctrl, progress,
              cache_bytes=_cache_bytes(torch.device(device)))
    passes = []
    for _ in range(grid.passes):
        out = []
        for task in tasks:
            if rank >= task.ranks:
                continue
            if task.kind == "forward":
                out.extend(_forward_tables(r, task))
            elif task.kind == "step":
                out.append(("step_overhead", _step(r, task)))
            elif task.kind == "comm":
                out.append(("collectives", _comm(r, task)))
            elif task.kind == "copy":
                out.append(("copies", _copy(r, task)))
            elif task.kind == "swap":
                out.extend(_swaps(r, task))
            elif task.kind == "reshard":
                out.append(("reshards", _reshards(r, task)))
        passes.append(out)
    if world_size > 1:
        dist.barrier(group=ctrl[world_size])
    return _merge_passes(passes) if rank == 0 else None


def _merge_passes(passes: list[list[tuple[str, dict]]]) -> list[tuple[str, dict]]:
    """One table per measured table: every pass measured the same tables in the same order, each
    point with the same number of samples. A point keeps the median of the passes' means (with
    two passes, their mean): a pass's mean keeps the calls' tail, and a stall that spoils one
    pass's few samples of a point (the tiny model's 128-token prefill attention over 512 tokens,
    2 ranks busy, once came to 6.6 ms where its neighbours took ~0.6) is outvoted. The passes'
    means differ by the machine's drift over minutes, for which their median is as fair a centre
    as their mean; it can lean a few percent faster than the mean where the passes are skewed."""
    merged = []
    for tables in zip(*passes):
        key, first = tables[0]
        merged.append((key, {**first, "time_s": _median_of([t["time_s"] for _, t in tables])}))
    return merged


def merged_as(passes: int) -> str:
    """What a profile's time per point is, for ``passes`` passes (``_merge_passes``), in words."""
    return {1: "a mean", 2: "the mean of the passes' means"}.get(passes, "the median of the passes' means")


def _median_of(values: list):
    """Element-wise median of equally shaped (nested) lists of numbers."""
    if isinstance(values[0], (list, tuple)):
        return [_median_of(list(xs)) for xs in zip(*values)]
    return statistics.median(values)


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
    if dtype not in _DTYPES:
        raise SpecError(f"unknown dtype {dtype!r}; use {', '.join(_DTYPES)}")
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
        results = spawn(_rank_main, world, (tasks, grid, dtype, queue),
                        backend="nccl" if device == "cuda" else "gloo", timeout_s=timeout_s,
                        collective_timeout_s=600.0, threads_per_rank=threads)
    finally:
        stop.set()
        watcher.join(timeout=5)
    wall_s = time.monotonic() - start
    tables: dict[str, list] = {"ops": [], "attention": [], "collectives": [], "copies": [], "step_overhead": [],
                               "swaps": [], "reshards": []}
    for key, table in results[0]:
        tables[key].append(table)
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


def _round(obj, digits: int = 4):
    """Times to ``digits`` significant digits (the noise is larger), everything else as is."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, (list, tuple)):
        return [_round(x, digits) for x in obj]
    if isinstance(obj, dict):
        return {k: _round(v, digits) for k, v in obj.items()}
    return obj


def write_profile(prof: MeasuredProfile, path: str | Path, header: str = "") -> Path:
    """Write ``prof`` as YAML with ``header`` lines as a leading comment; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = _round(prof.model_dump(mode="json"))
    for key in ("memory_bytes", "device_memory_bytes", "wall_time_s"):
        data[key] = prof.model_dump()[key]
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(comment + text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary(prof: MeasuredProfile) -> dict[str, float]:
    """Headline figures: best GEMM FLOP/s, all-reduce latency and bus bandwidth, copy bandwidth,
    per-step overhead, Seesaw swap steps and re-shards."""
    out: dict[str, float] = {}
    lin = [t for t in prof.ops if t.op == "linear"]
    if lin:
        out["gemm_gflops_best"] = max(2 * t.dims[0] * t.dims[1] * n / s / 1e9
                                      for t in lin for n, s in zip(t.tokens, t.time_s))
    for c in prof.collectives:
        key = f"{c.op}_{c.ranks}"
        out[f"{key}_latency_us"] = c.time_s[0] * 1e6
        if c.op == "all_reduce":
            out[f"{key}_busbw_gbps"] = 2 * (c.ranks - 1) / c.ranks * c.size_bytes[-1] / c.time_s[-1] / 1e9
        elif c.op == "send_recv":
            out[f"{key}_gbps"] = c.size_bytes[-1] / c.time_s[-1] / 1e9
    for c in prof.copies:
        out[f"copy_{c.kind}_gbps"] = c.size_bytes[-1] / c.time_s[-1] / 1e9
    for s in prof.step_overhead:
        busy = "" if s.ranks == 1 else f"_{s.ranks}busy"
        out[f"step_v{s.vocab_size}{busy}_1seq_ms"] = s.time_s[0] * 1e3
        out[f"step_v{s.vocab_size}{busy}_{s.seqs[-1]}seq_ms"] = s.time_s[-1] * 1e3
    for w in prof.swaps:  # the largest step of each box: layers x KV heads x head_dim per rank
        out[f"swap_{w.kind}_{w.num_layers}x{w.num_kv_heads}x{w.head_dim}_{w.ranks}r_{w.tokens[-1]}tok_ms"] = \
            w.time_s[-1] * 1e3
    for t in prof.reshards:
        for b, sec in zip(t.size_bytes, t.time_s):
            out[f"reshard_{t.ranks}r_{b / 1e6:.3g}MB_ms"] = sec * 1e3
    return out

