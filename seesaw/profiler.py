"""Time the engine's own pieces on this machine: ``seesaw profile`` -> ``profiles/measured/*.yaml``.

What is timed, always through the engine's code and with the shapes one rank holds under TP
(``seesaw.engine.model.Shard``):

- ``linear``: ``model.Linear`` for the fused QKV, O, fused gate/up, down and LM head;
- ``layer_misc``: ``model.DecoderLayer.forward`` with its four GEMMs and its attention replaced by
  stubs returning ready tensors: what is left is the RMSNorms, RoPE, SiLU x up, residual adds;
- ``embed_rope``: ``LlamaShard.embed`` (vocab-parallel lookup under TP) + ``LlamaShard.rope``;
- attention: ``attention.paged_attention`` over a ``kv.KVCache`` with metadata from
  ``kv.build_metadata``: prefill of one sequence by (new tokens, context), decode by (sequences,
  context summed over them);
- collectives as ``dist.TorchComm`` calls them: all_reduce, all_gather (+ concat), send/recv
  (half a ping-pong), broadcast of sampled ids over a gloo group, by bytes and ranks;
- copies: host->host memcpy (``Tensor.copy_``); on CUDA also pinned host->device and back;
- step overhead: ``runner.ModelRunner.execute`` of decode steps, its model replaced by a stub that
  returns logits, so what is timed is KV slot allocation, metadata and sampling.

Method: ``dist.spawn`` starts ``ranks`` processes once (gloo on CPU, NCCL on CUDA, each with
``threads`` torch threads, as the engine's ranks run). A (model, TP) group's tables are measured on
TP ranks at once, as the engine runs them -- on a CPU they share the cores -- each rank timing its
own shard, and the slowest rank's median is kept. Every grid point gets warm-up calls, then
``repeats`` timed samples, each of enough back-to-back calls to last ``min_repeat_s``; the median
sample is the figure. The samples of a table's points are taken in sweeps over all its points, so
load from other processes on a shared machine spreads over the table instead of spoiling a few
points. GEMM weights and KV caches cycle through one copy per layer of the model (fewer once the
copies exceed the last-level cache four times over), as the engine's forward pass walks its
layers, so calls that stream their weights or KV from memory in the engine do so here too instead
of hitting a cache warmed by the previous call. The files keep these raw medians;
``simulator.cost`` makes them monotone.

This module drives the engine, so it imports torch; ``seesaw.cli_profile`` imports it lazily.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import platform
import random
import statistics
import threading
import time
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
from seesaw.engine.kv import BlockManager, KVCache, build_metadata
from seesaw.engine.model import DecoderLayer, LlamaShard, Linear, LocalComm, Shard
from seesaw.engine.runner import ModelRunner
from seesaw.specs import MeasuredProfile, ModelSpec, ParallelConfig, SpecError

__all__ = ["Grid", "profile", "write_profile", "plan_tasks", "cuda_available"]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_BLOCK_SIZE = 16  # the engine's default KV block (ModelRunner, run_layout)
_STEP_PROMPT = 127  # decode steps for the step-overhead table start from this context
_COLD_FACTOR = 4  # cycle through at least this many last-level caches' worth of weights / KV


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
    tokens: tuple[int, ...] = _pow(1, 4096)  # GEMM and per-token op rows
    head_rows: tuple[int, ...] = _pow(1, 512)  # LM head rows (one per sequence in a step)
    prefill_tokens: tuple[int, ...] = _pow(2, 2048, 4)  # new tokens of one sequence (1 = decode)
    prefill_context: tuple[int, ...] = (*_pow(2, 2048, 4), 4096)
    decode_batch: tuple[int, ...] = _pow(1, 256, 2)
    decode_context: tuple[int, ...] = _pow(16, 65536, 4)  # summed over the batch
    comm_bytes: tuple[int, ...] = _pow(4, 64 * 4**10, 4)  # 4 B .. 64 MiB
    bcast_bytes: tuple[int, ...] = _pow(8, 8 * 4096, 8)  # int64 sampled ids
    copy_bytes: tuple[int, ...] = _pow(4096, 4096 * 4**8, 4)  # 4 KiB .. 256 MiB
    step_seqs: tuple[int, ...] = _pow(1, 256, 4)
    repeats: int = 15
    warmup: int = 2
    min_repeat_s: float = 2e-3
    max_calls: int = 1000  # per repeat

    @classmethod
    def default(cls, **kw) -> "Grid":
        return replace(cls(), **kw)

    @classmethod
    def quick(cls, **kw) -> "Grid":
        return replace(cls(
            models=("tiny",), tp=(1, 2), tokens=(1, 4, 16, 64), head_rows=(1, 4, 16),
            prefill_tokens=(2, 16, 64), prefill_context=(2, 16, 64, 256), decode_batch=(1, 4, 16),
            decode_context=(16, 64, 256), comm_bytes=(4, 256, 16384, 1 << 20), bcast_bytes=(8, 512),
            copy_bytes=(4096, 1 << 16, 1 << 20, 1 << 24), step_seqs=(1, 4, 16),
            repeats=3, warmup=1, min_repeat_s=3e-4, max_calls=200,
        ), **kw)


@dataclass(frozen=True)
class Task:
    """One table to measure on ranks ``0 .. ranks-1`` (the others skip it)."""

    kind: str  # linear | layer_misc | embed_rope | prefill | decode | step | comm | copy
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


def plan_tasks(grid: Grid, ranks: int, specs: list[ModelSpec], device: str = "cpu") -> list[Task]:
    """Every table of ``grid`` for these models on at most ``ranks`` ranks, in measuring order."""
    tasks: list[Task] = []
    seen: set = set()
    for spec in specs:
        h, d = spec.hidden_size, spec.d_head
        for tp in grid.tp:
            if tp > ranks or not _valid_tp(spec, tp):
                continue
            shard = Shard.of(spec, ParallelConfig(tp=tp), 0)
            hq, hkv = len(shard.q_heads(spec)), len(shard.kv_heads(spec))
            inter, cols = len(shard.mlp_cols(spec)), len(shard.vocab_rows(spec))
            gemms = [(h, (hq + 2 * hkv) * d), (hq * d, h), (h, 2 * inter), (inter, h)]
            L = spec.num_hidden_layers  # weights cycle through the layers' copies, as in the engine
            for dims, rows, layers in [(g, grid.tokens, L) for g in gemms] + [((h, cols), grid.head_rows, 1)]:
                if ("linear", dims, tp) not in seen:
                    seen.add(("linear", dims, tp))
                    tasks.append(Task("linear", tp, len(rows), dict(dims=dims, tokens=rows, layers=layers)))
            misc = (h, hq * d, hkv * d, inter)
            if ("layer_misc", misc, tp) not in seen:
                seen.add(("layer_misc", misc, tp))
                tasks.append(Task("layer_misc", tp, len(grid.tokens), dict(model=spec, tp=tp, dims=misc)))
            embed = (h, d, cols)
            if ("embed_rope", embed, tp) not in seen:
                seen.add(("embed_rope", embed, tp))
                tasks.append(Task("embed_rope", tp, len(grid.tokens), dict(model=spec, tp=tp, dims=embed)))
            heads = (hq, hkv, d)
            for kind, sizes, ctx in (("prefill", grid.prefill_tokens, grid.prefill_context),
                                     ("decode", grid.decode_batch, grid.decode_context)):
                if (kind, heads, tp) not in seen:
                    seen.add((kind, heads, tp))
                    pts = len(_attention_points(kind, sizes, ctx))
                    tasks.append(Task(kind, tp, pts, dict(heads=heads, sizes=sizes, context=ctx, layers=L)))
        if ("step", spec.vocab_size) not in seen:
            seen.add(("step", spec.vocab_size))
            tasks.append(Task("step", 1, len(grid.step_seqs), dict(model=spec)))
    if device == "cuda" or ranks > 1:
        for k in range(2, ranks + 1):
            for op in ("all_reduce", "all_gather"):
                tasks.append(Task("comm", k, len(grid.comm_bytes), dict(op=op, sizes=grid.comm_bytes)))
            tasks.append(Task("comm", k, len(grid.bcast_bytes), dict(op="broadcast", sizes=grid.bcast_bytes)))
        if ranks >= 2:
            tasks.append(Task("comm", 2, len(grid.comm_bytes), dict(op="send_recv", sizes=grid.comm_bytes)))
    for kind in (("h2d", "d2h", "h2h") if device == "cuda" else ("h2h",)):
        tasks.append(Task("copy", 1, len(grid.copy_bytes), dict(kind=kind, sizes=grid.copy_bytes)))
    return tasks


def _attention_points(kind: str, sizes, context) -> list[tuple[int, int]]:
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
        engine's ``layers`` copies, or fewer once they exceed the last-level cache several times
        over (from there on every call streams from memory anyway)."""
        return max(1, min(layers, math.ceil(_COLD_FACTOR * self.cache_bytes / max(nbytes, 1))))

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def tick(self, n: int = 1) -> None:
        if self.rank == 0 and self.progress is not None:
            self.progress.put(n)

    def measure(self, fns: list[Callable[[], object]], ranks: int = 1, max_calls: int | None = None) -> list[float]:
        """Median seconds per call of each of ``fns`` (the grid points of one table) on this rank.

        Warm-up and a timed call size each point's sample (enough calls to last ``min_repeat_s``);
        then ``repeats`` sweeps over all the points in shuffled order, so every point's samples
        spread over the whole measurement and a burst of load from other processes hits all
        points alike instead of a few. ``ranks`` > 1: ranks 0..ranks-1 run the same points together (same call counts,
        a barrier before each sample).
        """
        g = self.grid
        calls = []
        for fn in fns:
            for _ in range(g.warmup):
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
        for sweep in range(g.repeats):
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
        return [statistics.median(x) for x in samples]

    def slowest(self, times: list[float], ranks: int) -> list[float]:
        """Element-wise maximum of ``times`` over ranks 0..ranks-1."""
        if ranks <= 1:
            return times
        t = torch.tensor(times, dtype=torch.float64)
        dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.ctrl[ranks])
        return t.tolist()


def _randn(*shape, r: _Rank, scale: float = 1.0) -> torch.Tensor:
    return (torch.randn(*shape) * scale).to(device=r.device, dtype=r.dtype)


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


class _Cycle:
    """Calls the next of ``fns`` each time: the same op on the next layer's weights or KV, as the
    engine's forward pass walks its layers, so data that the engine streams from memory is not
    served from a cache warmed by the previous call."""

    def __init__(self, fns: list[Callable[[], object]]):
        self.fns, self.i = fns, 0

    def __call__(self):
        fn = self.fns[self.i]
        self.i = (self.i + 1) % len(self.fns)
        return fn()


def _linear(r: _Rank, task: Task) -> dict:
    k_in, k_out = task.args["dims"]
    rows = task.args["tokens"]
    copies = r.copies(k_in * k_out * _itemsize(r.dtype), task.args.get("layers", 1))
    lins = [_init_(Linear(k_in, k_out, dtype=r.dtype, device=r.device)) for _ in range(copies)]
    x = _randn(rows[-1], k_in, r=r)
    with torch.inference_mode():
        fns = [_Cycle([functools.partial(lin, x[:n]) for lin in lins]) for n in rows]
        times = r.measure(fns, task.ranks)
    return dict(op="linear", dims=[k_in, k_out], ranks=task.ranks, tokens=list(rows),
                time_s=r.slowest(times, task.ranks))


class _Fixed(nn.Module):
    """Stands in for a GEMM: returns the first rows of a ready output."""

    def __init__(self, out: torch.Tensor):
        super().__init__()
        self.out = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out[: x.shape[0]]


@contextlib.contextmanager
def _attention_stubbed():
    """``model.Attention`` looks up ``paged_attention`` in its module at call time."""
    saved = engine_model.paged_attention
    engine_model.paged_attention = lambda q, k, v, meta, kc, vc: torch.empty_like(q)
    try:
        yield
    finally:
        engine_model.paged_attention = saved


def _layer_misc(r: _Rank, task: Task, tokens) -> dict:
    spec, tp = task.args["model"], task.args["tp"]
    shard = Shard.of(spec, ParallelConfig(tp=tp), r.rank % tp)
    layer = _init_(DecoderLayer(spec, shard, LocalComm(), dtype=r.dtype, device=r.device))
    n_max = tokens[-1]
    a, m = layer.attn, layer.mlp
    a.qkv_proj = _Fixed(_randn(n_max, (a.h_q + 2 * a.h_kv) * a.d, r=r))
    a.o_proj = _Fixed(_randn(n_max, spec.hidden_size, r=r))
    m.gate_up_proj = _Fixed(_randn(n_max, 2 * m.inter, r=r))
    m.down_proj = _Fixed(_randn(n_max, spec.hidden_size, r=r))
    # a middle stage with no layers holds nothing but the RoPE frequencies
    middle = Shard(spec.num_hidden_layers, 0, 0, pp_rank=1, pp_size=3)
    rope = LlamaShard(spec, middle, LocalComm(), dtype=r.dtype, device=r.device).rope(
        torch.arange(n_max, device=r.device))
    x = _randn(n_max, spec.hidden_size, r=r)
    with torch.inference_mode(), _attention_stubbed():
        fns = [functools.partial(layer, x[:n], rope[0][:n], rope[1][:n], None, None, None) for n in tokens]
        times = r.measure(fns, task.ranks)
    return dict(op="layer_misc", dims=list(task.args["dims"]), ranks=task.ranks, tokens=list(tokens),
                time_s=r.slowest(times, task.ranks))


def _embed_rope(r: _Rank, task: Task, tokens) -> dict:
    spec, tp = task.args["model"], task.args["tp"]
    # a first, not last, stage with no layers: just the vocab-parallel embedding
    shard = Shard(spec.num_hidden_layers, 0, 0, r.rank % tp, tp, 0, 2)
    model = _init_(LlamaShard(spec, shard, LocalComm(), dtype=r.dtype, device=r.device))
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, spec.vocab_size, (tokens[-1],), generator=g).to(r.device)
    pos = torch.arange(tokens[-1], device=r.device)
    def call(idn, pn):
        return model.embed(idn), model.rope(pn)

    with torch.inference_mode():
        times = r.measure([functools.partial(call, ids[:n], pos[:n]) for n in tokens], task.ranks)
    return dict(op="embed_rope", dims=list(task.args["dims"]), ranks=task.ranks, tokens=list(tokens),
                time_s=r.slowest(times, task.ranks))


def _attention_layout(kind: str, size: int, context: int) -> list[tuple[int, int]]:
    """(context, new tokens) per sequence: a prefill chunk of ``size`` tokens of one sequence
    whose context becomes ``context``, or ``size`` decoding sequences of ``context // size``."""
    if kind == "prefill":
        return [(context, size)]
    return [(max(1, context // size), 1)] * size


def _attention(r: _Rank, task: Task) -> dict:
    """paged_attention of one layer per call, on the next of several layers' KV caches (views of
    one shared buffer, so all grid points can stay alive for the interleaved sweeps)."""
    kind, heads = task.kind, task.args["heads"]
    hq, hkv, d = heads
    sizes, context = task.args["sizes"], task.args["context"]
    points = _attention_points(kind, sizes, context)
    block_bytes = _BLOCK_SIZE * hkv * d * _itemsize(r.dtype)
    plans = []
    for size, ctx in points:
        lens = _attention_layout(kind, size, ctx)
        num_blocks = sum(-(-c // _BLOCK_SIZE) for c, _ in lens)
        plans.append((lens, num_blocks, r.copies(2 * num_blocks * block_bytes, task.args.get("layers", 1))))
    elems = max(n * c for _, n, c in plans) * _BLOCK_SIZE * hkv * d
    k_pool = torch.zeros(elems, dtype=r.dtype, device=r.device)
    v_pool = torch.zeros(elems, dtype=r.dtype, device=r.device)
    fns = []
    for lens, num_blocks, copies in plans:
        blocks = BlockManager(num_blocks, _BLOCK_SIZE)
        slots = []
        for s, (ctx, n) in enumerate(lens):
            if ctx > n:
                blocks.allocate(s, ctx - n)
            slots.append(blocks.allocate(s, n))
        meta = build_metadata(blocks, list(range(len(lens))), [n for _, n in lens], torch.cat(slots), r.device)
        T = sum(n for _, n in lens)
        q, k, v = _randn(T, hq, d, r=r), _randn(T, hkv, d, r=r), _randn(T, hkv, d, r=r)
        per = num_blocks * _BLOCK_SIZE * hkv * d
        layers = [(k_pool[i * per:(i + 1) * per].view(num_blocks, _BLOCK_SIZE, hkv, d),
                   v_pool[i * per:(i + 1) * per].view(num_blocks, _BLOCK_SIZE, hkv, d)) for i in range(copies)]
        fns.append(_Cycle([functools.partial(paged_attention, q, k, v, meta, kc, vc) for kc, vc in layers]))
    with torch.inference_mode():
        times = r.measure(fns, task.ranks)
    by_point = dict(zip(points, r.slowest(times, task.ranks)))
    grid = [[by_point[(s, max(s, c))] for c in context] for s in sizes]
    return dict(kind=kind, num_heads=hq, num_kv_heads=hkv, head_dim=d,
                ranks=task.ranks, sizes=list(sizes), context_tokens=list(context), time_s=grid)


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
        return self.logits[: len(logits_indices)]


def _step(r: _Rank, task: Task) -> dict:
    spec, seqs = task.args["model"], r.grid.step_seqs
    g = r.grid
    max_calls = 50
    steps = g.warmup + 1 + g.repeats * max_calls
    fns = []
    for b in seqs:
        stub = _LogitsStub(spec, b, r)
        runner = ModelRunner(stub, b * -(-(_STEP_PROMPT + steps + 1) // _BLOCK_SIZE), _BLOCK_SIZE)
        runner.execute({s: [1] * _STEP_PROMPT for s in range(b)})
        fns.append(functools.partial(runner.execute, {s: [1] for s in range(b)}))
    times = r.measure(fns, 1, max_calls=max_calls)
    return dict(vocab_size=spec.vocab_size, seqs=list(seqs), time_s=times)


def _comm(r: _Rank, task: Task) -> dict:
    op, k, sizes = task.args["op"], task.ranks, task.args["sizes"]
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
    out = []
    for task in tasks:
        if rank >= task.ranks:
            continue
        if task.kind == "linear":
            out.append(("ops", _linear(r, task)))
        elif task.kind == "layer_misc":
            out.append(("ops", _layer_misc(r, task, grid.tokens)))
        elif task.kind == "embed_rope":
            out.append(("ops", _embed_rope(r, task, grid.tokens)))
        elif task.kind in ("prefill", "decode"):
            out.append(("attention", _attention(r, task)))
        elif task.kind == "step":
            out.append(("step_overhead", _step(r, task)))
        elif task.kind == "comm":
            out.append(("collectives", _comm(r, task)))
        elif task.kind == "copy":
            out.append(("copies", _copy(r, task)))
    if world_size > 1:
        dist.barrier(group=ctrl[world_size])
    return out if rank == 0 else None


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
    timeout_s: float = 7200.0,
) -> MeasuredProfile:
    """Measure ``grid`` on this machine and return the profile (``write_profile`` saves it).

    ``models``: the shapes to time (default: the grid's model names from the catalog).
    ``progress(done, total)`` is called from a helper thread as grid points finish.
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
    tasks = plan_tasks(grid, ranks, specs, device)
    total = sum(t.points for t in tasks) * grid.repeats  # progress counts timed samples
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
    tables: dict[str, list] = {"ops": [], "attention": [], "collectives": [], "copies": [], "step_overhead": []}
    for key, table in results[0]:
        tables[key].append(table)
    cuda_name = torch.cuda.get_device_name(0) if device == "cuda" else None
    return MeasuredProfile(
        name=name, device=device, device_name=cuda_name or _cpu_name(), dtype=dtype,
        torch_version=torch.__version__, threads_per_rank=threads, num_ranks=world,
        cpu_count=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1,
        memory_bytes=_memory_bytes(),
        device_memory_bytes=float(torch.cuda.get_device_properties(0).total_memory) if device == "cuda" else None,
        date=datetime.now(timezone.utc).isoformat(timespec="seconds"), command=command,
        wall_time_s=round(wall_s, 1), repeats=grid.repeats,
        load_average=round(statistics.mean(loads), 2) if loads else None,
        source=f"seesaw profile on {platform.node() or 'this machine'}; medians of {grid.repeats} repeats",
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
    per-step overhead."""
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
        out[f"step_v{s.vocab_size}_1seq_ms"] = s.time_s[0] * 1e3
        out[f"step_v{s.vocab_size}_{s.seqs[-1]}seq_ms"] = s.time_s[-1] * 1e3
    return out

