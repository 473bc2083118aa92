"""Per-step cost model: how long one pipeline stage takes for one micro-batch, and memory sizing.

Roofline x efficiency, per stage and per micro-batch, from ``ModelSpec`` + ``NodeSpec`` (whose
``gpu`` is a ``GpuSpec``); SI units in every name. No torch, no simpy: the simulator calls
``stage_time_s`` thousands of times per run, so everything that depends only on the layout is
precomputed once per ``(tp, pp)`` and the hot path is a handful of float operations.

Interface
---------
``BatchShape(prefill_tokens, prefill_attn_pairs, decode_seqs, decode_context_tokens, sampled_seqs)``
    one micro-batch as the scheduler hands it to a stage (``BatchShape.prefill``/``.decode`` build
    one from lengths; ``a + b`` merges a prefill part and a decode part into a mixed step).
``CostModel(model, node, measured=None)``
    ``stage_time_s(layout, stage, shape)``      one stage's time for this micro-batch: its linear
                                                layers, attention, TP all-reduces, LM head (last
                                                stage) and its share of the per-step overhead;
                                                not the send to the next stage (``pp_send_s``)
    ``stage_breakdown(layout, stage, shape)``   the same split into ``compute_s``, ``weight_read_s``,
                                                ``attention_s``, ``comm_s``, ``overhead_s`` (they sum
                                                to ``total_s``; a linear layer's time is booked
                                                under whichever roofline term bounds it)
    ``pipeline_time_s(layout, shape, m)``       m equal micro-batches through all stages
    ``pp_send_s(layout, num_tokens)``           activations across one stage boundary
    ``pp_reply_s(layout, rows)``                sampled ids back to the driver, when the simulator
                                                charges it at the driver (``handoffs_rendezvous``)
    ``layers_per_stage(layout)``                vLLM's split; embedding first, LM head last
    ``weight_bytes_per_gpu(layout)``            the most loaded GPU (``stage_weight_bytes_per_gpu``
                                                gives every stage)
    ``kv_capacity_tokens(layout, util)``        KV tokens one DP replica can hold on device
    ``check_fits(layout, util, min_kv_tokens)`` raise ``SpecError`` (one line, with numbers)
    ``allreduce_s(nbytes, tp)``, ``host_copy_s(nbytes)``, ``reshard_s(src, dst)``,
    ``swap_s(layout, kind, tokens)`` (a Seesaw swap step), ``swap_bytes_per_token(layout)``,
    ``gemm_time_s(tokens, in_features, out_features)``

Model and assumptions
---------------------
- Linear layers (QKV, O, gate/up, down; LM head): ``max(flops / (peak * eff_c(n)),
  weight_bytes / (hbm_bw * eff_m)) + kernel_overhead_s`` per GEMM kernel, n = the GEMM's rows
  (tokens). ``eff_c(n) = compute_efficiency * n / (n + n0)``, n0 = ``compute_saturation_tokens``:
  a GEMM of n rows costs the compute time of n + n0 rows at full efficiency (tile padding and
  wave quantisation of the 128-256-row tiles cuBLAS uses; Vidur's A100 profiles show it between
  ~64 and ~1024 rows). ``kernel_overhead_s`` is the fixed launch/ramp/tail time of a kernel (the
  ~5 us floor of small A100 GEMMs in the same profiles). All four GEMMs of a layer see the same
  n, so a layer's linear time is one max over their summed FLOPs and bytes.
- Tensor parallelism follows Megatron-LM as vLLM implements it: Q/O/gate/up/down split by ``tp``;
  K/V split by KV head, each GPU holding ``max(1, h_kv / tp)`` KV heads (replicated when
  ``tp > h_kv``); vocab-parallel embedding (first stage) and LM head (last stage), each ``V/tp``
  rows; RMSNorm weights replicated. All-reduces: two per layer (after attention O and MLP down)
  plus one after the vocab-parallel embedding, on ``tokens * hidden * dtype`` bytes; the LM
  head's logits are gathered to one rank.
- Attention: prefill FLOPs ``4 * (h_q/tp) * d * pairs`` (QK^T and PV over causal query-key pairs)
  at ``peak * compute_efficiency`` (FlashAttention-2's forward reaches GEMM-like utilisation)
  against reading Q, K, V and writing O; decode is memory bound: every context token's K and V
  of this GPU's KV heads are read once. One attention kernel per layer and kind.
- Per-step overhead ``NodeSpec.step_overhead_s`` (CPU scheduling, kernel launches) is shared
  among stages in proportion to their layers, so one micro-batch's pass over all stages pays it
  once.
- Measured profiles (``CostModel(model, node, measured=profile)``, ``seesaw profile``): each term
  uses a table of the engine's own pieces where one matches the shape per rank -- the layer's
  GEMMs and its other ops by tokens, prefill attention per sequence by (query tokens, context),
  decode attention by (sequences, summed context), all-reduce / all-gather / send / broadcast by
  bytes and ranks, copies by bytes, the engine's per-step work outside the model by sequences --
  and the roofline of ``node`` otherwise (``seesaw.catalog.measured_node`` derives one from the
  same profile). ``Curve``/``Surface`` interpolate log time over log size, monotone, clamped below
  the grid and proportional above it. Prefill attention needs the step's prefill sequences
  (``BatchShape.prefill_seqs``); without them whole prompts of equal length are assumed.
  Seesaw's KV swap steps and re-shards use the engine's whole step where measured (``swaps`` by
  tokens for the rank's box, other boxes by the bytes a rank moves; ``reshards`` by bytes
  loaded per rank): on a CPU the copies through the host pool, the messages and the ranks'
  agreement cost tens of times a plain memcpy.
- Ranks busy at once, measured: tables are looked up by how many ranks compute at the same time
  (on a CPU they share the cores). A layout keeps all its ranks busy, except that a pipeline
  stage runs alone (tables of its own ranks) when its micro-batch is the only forward in flight:
  ``stage_time_s(..., alone=True)``. A P2 prefill of one 8192-token micro-batch of the tiny
  model took 0.17-0.23 s in the engine; priced with both ranks busy it came to 0.27 s, alone 0.18 s.
- Hand-offs between pipeline stages, measured (``handoffs_rendezvous``): a transfer starts only
  once the receiver asks for it, and the ``handoff`` table is timed from the later of sender and
  receiver being ready. So the simulator starts stage ``s > 0`` at max(its input sent, the stage
  free) plus the hand-off (the receiving ranks wait through it), each stage's ranks other than
  rank 0 pay for receiving the driver's step message, and the sampled ids reach the driver after
  it finishes what it is computing (``pp_reply_s``). Measured on the engine (P2, 2 CPU ranks):
  the second stage posts its receives after the data was sent in 82-99% of micro-batches and still
  waits 0.7-1.0 ms on average for each, for the message and for the activations, while the
  sender computes on; so the message is priced as a hand-off too. The roofline keeps eager
  sends: the transfer overlaps the receiver's work.
- Memory: weights per GPU of its stage, an activation reserve of ``max_num_batched_tokens`` rows
  (the peak live tensors in the MLP, as vLLM's profiling run measures it), the rest is KV.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from seesaw.core import GiB, MeasuredProfile, ModelSpec, NodeSpec, ParallelConfig, SpecError

__all__ = ["BatchShape", "CostModel", "Curve", "Surface", "attn_pairs"]


def attn_pairs(new_tokens: int, past_tokens: int = 0) -> float:
    """Causal query-key pairs of a chunk of ``new_tokens`` after ``past_tokens`` of context."""
    # query i (1-based) of the chunk attends to past + i keys: sum = new*past + new(new+1)/2
    return new_tokens * (past_tokens + (new_tokens + 1) / 2)


@dataclass(slots=True)
class BatchShape:
    """One micro-batch as the scheduler hands it to a pipeline stage."""

    prefill_tokens: int = 0  # new prompt tokens computed this step (sum over prefill chunks)
    prefill_attn_pairs: float = 0.0  # sum over chunks of new*(past + (new+1)/2), see attn_pairs
    decode_seqs: int = 0  # sequences decoding one token
    decode_context_tokens: int = 0  # sum of their context lengths (KV tokens read)
    sampled_seqs: int = 0  # rows that go through the LM head (decodes + finishing prefills)
    # prefill sequences (chunks) in the step; 0 = unknown (estimated from tokens and pairs). Only
    # measured profiles use it (per-sequence attention calls), so it stays out of equality.
    prefill_seqs: int = field(default=0, compare=False)

    @property
    def num_tokens(self) -> int:
        return self.prefill_tokens + self.decode_seqs

    @classmethod
    def prefill(
        cls, new_tokens: Iterable[int], past_tokens: Iterable[int] | None = None,
        num_finishing: int | None = None,
    ) -> "BatchShape":
        """Prefill chunks of ``new_tokens`` after ``past_tokens``; default: whole prompts, all of
        which finish (sample their first token)."""
        new = list(new_tokens)
        past = [0] * len(new) if past_tokens is None else list(past_tokens)
        return cls(
            prefill_tokens=sum(new),
            prefill_attn_pairs=sum(attn_pairs(n, p) for n, p in zip(new, past)),
            sampled_seqs=len(new) if num_finishing is None else num_finishing,
            prefill_seqs=len(new),
        )

    @classmethod
    def decode(cls, context_tokens: Iterable[int]) -> "BatchShape":
        """One decode token for each sequence with these context lengths."""
        ctx = list(context_tokens)
        return cls(decode_seqs=len(ctx), decode_context_tokens=sum(ctx), sampled_seqs=len(ctx))

    def __add__(self, other: "BatchShape") -> "BatchShape":
        return BatchShape(
            self.prefill_tokens + other.prefill_tokens,
            self.prefill_attn_pairs + other.prefill_attn_pairs,
            self.decode_seqs + other.decode_seqs,
            self.decode_context_tokens + other.decode_context_tokens,
            self.sampled_seqs + other.sampled_seqs,
            self.prefill_seqs + other.prefill_seqs,
        )


# --------------------------------------------------------------------------------------------
# Measured tables: monotone log-log interpolation


def _running_max(values: Sequence[float]) -> list[float]:
    out, top = [], 1e-15
    for v in values:
        top = v if v > top else top
        out.append(top)
    return out


def _isotonic(values: Sequence[float]) -> list[float]:
    """Closest non-decreasing sequence in least squares (pool adjacent violators): noisy means
    become monotone without one outlier lifting everything after it; monotone input is kept."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return _running_max([total / count for total, count in blocks for _ in range(int(count))])


def _locate(log_axis: list[float], lx: float) -> tuple[int, float]:
    """Cell index i and fraction f in [0, 1] of ``lx`` on a log grid (clamped to the grid)."""
    n = len(log_axis)
    if n == 1 or lx <= log_axis[0]:
        return 0, 0.0
    if lx >= log_axis[-1]:
        return n - 2, 1.0
    i = bisect_right(log_axis, lx) - 1
    return i, (lx - log_axis[i]) / (log_axis[i + 1] - log_axis[i])


class Curve:
    """Time by size from a measured table: linear interpolation of log time over log size.

    Noisy means are made non-decreasing first (isotonic regression), so the curve is monotone.
    Below the smallest size the time is the smallest one (a latency floor); above the largest
    it grows in proportion to the size (every table here becomes throughput bound: GEMM rows,
    bytes, context tokens), which keeps it monotone and continuous.
    """

    __slots__ = ("xs", "ys", "_lx", "_ly")

    def __init__(self, sizes: Sequence[float], times: Sequence[float]):
        self.xs = [float(x) for x in sizes]
        self.ys = _isotonic(times)
        self._lx = [math.log(x) for x in self.xs]
        self._ly = [math.log(y) for y in self.ys]

    def __call__(self, x: float) -> float:
        xs = self.xs
        if x <= xs[0]:
            return self.ys[0]
        if x >= xs[-1]:
            return self.ys[-1] * x / xs[-1]
        i, f = _locate(self._lx, math.log(x))
        return math.exp(self._ly[i] + f * (self._ly[i + 1] - self._ly[i]))


class Surface:
    """Time by two sizes from a measured grid ``z[i][j]`` at ``(xs[i], ys[j])``: bilinear in log
    space, made non-decreasing along both axes first (isotonic, then running maxima); clamped below, proportional above (on each
    axis separately), like ``Curve``."""

    __slots__ = ("xs", "ys", "z", "_lx", "_ly", "_lz")

    def __init__(self, xs: Sequence[float], ys: Sequence[float], z: Sequence[Sequence[float]]):
        self.xs = [float(x) for x in xs]
        self.ys = [float(y) for y in ys]
        rows = [_isotonic(r) for r in z]  # along y
        cols = [_isotonic(c) for c in zip(*rows)]  # then along x
        # pooling along x may break rows where columns pooled differently; running maxima along
        # both axes restore monotonicity (a running max along x keeps rows non-decreasing)
        rows = [_running_max(r) for r in zip(*cols)]
        cols = [_running_max(c) for c in zip(*rows)]
        self.z = [list(r) for r in zip(*cols)]
        self._lx = [math.log(x) for x in self.xs]
        self._ly = [math.log(y) for y in self.ys]
        self._lz = [[math.log(v) for v in r] for r in self.z]

    def __call__(self, x: float, y: float) -> float:
        scale = 1.0
        if x > self.xs[-1]:
            scale, x = x / self.xs[-1], self.xs[-1]
        if y > self.ys[-1]:
            scale, y = scale * y / self.ys[-1], self.ys[-1]
        i, fx = _locate(self._lx, math.log(max(x, self.xs[0])))
        j, fy = _locate(self._ly, math.log(max(y, self.ys[0])))
        z = self._lz
        i1, j1 = min(i + 1, len(z) - 1), min(j + 1, len(z[0]) - 1)
        lo = z[i][j] + fy * (z[i][j1] - z[i][j])
        hi = z[i1][j] + fy * (z[i1][j1] - z[i1][j])
        return scale * math.exp(lo + fx * (hi - lo))


def _pooled(points: dict[float, list[float]]) -> Curve:
    """One curve through measured points by size, the mean where several tables share a size."""
    xs = sorted(points)
    return Curve(xs, [sum(points[x]) / len(points[x]) for x in xs])


# the engine driver's step message buffer (seesaw.engine.driver.ControlPlane capacity, 32 KiB)
_CONTROL_MESSAGE_BYTES = 1 << 15


class _Tables:
    """A measured profile indexed for look-ups; tables measured under the wanted number of ranks
    win, else the nearest."""

    def __init__(self, profile: MeasuredProfile):
        self.profile = profile
        self._ops: dict[tuple, list[tuple[int, Curve]]] = {}
        for t in profile.ops:
            self._ops.setdefault((t.op, tuple(t.dims)), []).append((t.ranks, Curve(t.tokens, t.time_s)))
        self._attn: dict[tuple, list[tuple[int, Surface]]] = {}
        for a in profile.attention:
            key = (a.kind, a.num_heads, a.num_kv_heads, a.head_dim)
            self._attn.setdefault(key, []).append((a.ranks, Surface(a.sizes, a.context_tokens, a.time_s)))
        self._comm = {(c.op, c.ranks): Curve(c.size_bytes, c.time_s) for c in profile.collectives}
        self._copy = {c.kind: Curve(c.size_bytes, c.time_s) for c in profile.copies}
        self._steps = [(s.vocab_size, s.ranks, Curve(s.seqs, s.time_s)) for s in profile.step_overhead]
        self._swaps = {(t.kind, t.num_layers, t.num_kv_heads, t.head_dim, t.ranks): Curve(t.tokens, t.time_s)
                       for t in profile.swaps}
        # every box's swaps of one kind on k ranks make one curve by the bytes a rank moves, and
        # every model's re-shards on k ranks one by the bytes a rank loads (same bytes: mean)
        swaps: dict[tuple[str, int], dict[float, list[float]]] = {}
        for t in profile.swaps:
            per_token = 2 * t.num_layers * t.num_kv_heads * t.head_dim * profile.dtype_bytes  # K and V
            for n, sec in zip(t.tokens, t.time_s):
                swaps.setdefault((t.kind, t.ranks), {}).setdefault(n * per_token, []).append(sec)
        self._swap_bytes = {k: _pooled(pts) for k, pts in swaps.items()}
        reshards: dict[int, dict[float, list[float]]] = {}
        for t in profile.reshards:
            for b, sec in zip(t.size_bytes, t.time_s):
                reshards.setdefault(t.ranks, {}).setdefault(b, []).append(sec)
        self._reshards = {k: _pooled(pts) for k, pts in reshards.items()}

    @staticmethod
    def _nearest(found: list | None, ranks: int):
        if not found:
            return None
        return min(found, key=lambda rc: (abs(rc[0] - ranks), rc[0]))[1]

    def op(self, op: str, dims: tuple[float, ...], ranks: int = 1) -> Curve | None:
        return self._nearest(self._ops.get((op, tuple(int(round(d)) for d in dims))), ranks)

    def op_exact(self, op: str, dims: tuple[float, ...], ranks: int) -> Curve | None:
        """An op table measured under exactly ``ranks`` ranks (collectives), else None."""
        found = self._ops.get((op, tuple(int(round(d)) for d in dims))) or []
        return next((c for k, c in found if k == ranks), None)

    def attention(self, kind: str, heads: float, kv_heads: int, head_dim: int, ranks: int) -> Surface | None:
        return self._nearest(self._attn.get((kind, int(round(heads)), kv_heads, head_dim)), ranks)

    def comm(self, op: str, ranks: int) -> Curve | None:
        return self._comm.get((op, ranks))

    def handoff(self) -> Curve | None:
        """One stage's activations to the next: the hand-off between busy ranks where measured
        (CPU), else half a ping-pong."""
        return self._comm.get(("handoff", 2)) or self._comm.get(("send_recv", 2))

    def copy(self) -> Curve | None:
        """Host<->device copies: the slower of h2d and d2h where measured, else host->host."""
        both = [self._copy[k] for k in ("h2d", "d2h") if k in self._copy]
        if len(both) == 2:
            return both[0] if both[0].ys[-1] / both[0].xs[-1] >= both[1].ys[-1] / both[1].xs[-1] else both[1]
        return both[0] if both else self._copy.get("h2h")

    def swap(self, kind: str, box: tuple[int, int, int], ranks: int) -> Curve | None:
        """A Seesaw swap step ("out" / "in") of a rank box (layers, KV heads, head_dim) on
        ``ranks`` ranks, by tokens, where measured exactly."""
        return self._swaps.get((kind, *box, ranks))

    def swap_bytes(self, kind: str, ranks: int) -> Curve | None:
        """Swap steps of ``kind`` by the bytes each rank moves, every measured box pooled, on
        ``ranks`` ranks (else the nearest count)."""
        found = [(k, c) for (knd, k), c in self._swap_bytes.items() if knd == kind]
        return self._nearest(found, ranks)

    def reshard(self, ranks: int) -> Curve | None:
        """Re-shards by bytes loaded per rank, measured on ``ranks`` ranks (else the nearest)."""
        return self._nearest(list(self._reshards.items()), ranks)

    def step(self, vocab_size: int, ranks: int = 1) -> Curve | None:
        if not self._steps:
            return None
        return min(self._steps, key=lambda v: (abs(math.log(v[0] / vocab_size)), abs(v[1] - ranks), v[0], v[1]))[2]


@dataclass(slots=True)
class _MeasuredStage:
    """Measured curves of one (layout, stage), per GPU; ``None`` falls back to the roofline."""

    layers_curve: Curve | None  # all decoder layers of the stage: GEMMs + misc, by tokens
    missing_gemms: list[tuple[float, float]]  # (in, out) of GEMMs with no table: roofline
    embed: Curve | None  # embedding + RoPE tables (first stage), by tokens
    prefill: Surface | None  # one layer, one sequence: (query tokens, context)
    decode: Surface | None  # one layer: (sequences, context summed over them)
    allreduce: Curve | None  # TP all-reduce by bytes (measured alone)
    num_allreduce: int  # per step: two per layer, one after the embedding
    head: Curve | None  # LM head GEMM by rows (last stage)
    gather: Curve | None  # logits all-gather by per-rank bytes (last stage, tp > 1; measured alone)
    reply: Curve | None  # sampled ids from the sampling rank back to the driver (pp or dp > 1;
    # under PP with rendezvous hand-offs the simulator charges it at the driver: ``pp_reply_s``)
    control_s: float  # the driver's step message, paid by the stages whose ranks receive it
    step: Curve | None  # engine step outside the model, by sequences
    head_cols: int  # LM head rows per rank (vocab padded to a multiple of tp)
    # the same collectives timed inside forward passes (``tp_all_reduce`` by tokens,
    # ``tp_all_gather`` by rows); preferred where measured: they carry the wait for the other
    # ranks and the wake-ups that a loop of back-to-back calls does not
    allreduce_in_place: Curve | None = None
    gather_in_place: Curve | None = None


@dataclass(slots=True)
class _Stage:
    """Per-(layout, stage) constants, per GPU of the stage. Times in s, sizes in bytes."""

    layers: int
    weight_bytes: float  # resident weights (layers + embedding/LM head shards)
    kv_bytes_per_token: float  # this GPU's K and V for one token, all its layers
    lin_flops_per_token: float  # decoder-layer GEMM FLOPs per token
    lin_read_s: float  # time to stream the decoder layers' weights once
    lin_kernel_s: float  # fixed time of the GEMM kernels (4 per layer)
    attn_kernel_s: float  # fixed time of one attention kernel per layer
    attn_flops_per_pair: float  # prefill attention FLOPs per query-key pair
    attn_bytes_per_prefill_token: float  # Q, K, V read + O written per prefill token
    ar_s_per_token: float  # TP all-reduce bandwidth time per token (all all-reduces)
    ar_fixed_s: float  # TP all-reduce latency per step (all all-reduces)
    head_flops_per_row: float  # LM head GEMM FLOPs per sampled row (last stage only)
    head_read_s: float  # time to stream the LM head shard once
    head_gather_s_per_row: float  # gathering one row of logits to one rank
    head_gather_fixed_s: float
    overhead_s: float  # share of the per-step overhead
    overhead_frac: float = 1.0  # this stage's share of one step's overhead (layers / L)
    measured: _MeasuredStage | None = None  # tables of a measured profile, if any


class CostModel:
    """Roofline x efficiency cost of one pipeline stage of ``model`` on ``node``."""

    def __init__(self, model: ModelSpec, node: NodeSpec, measured: MeasuredProfile | None = None):
        self.model = model
        self.node = node
        self.measured = measured
        self._tables = _Tables(measured) if measured is not None else None
        # a measured hand-off table makes pipeline hand-offs rendezvous (``handoffs_rendezvous``)
        self._handoff = self._tables.comm("handoff", 2) if self._tables is not None else None
        if measured is not None and model.dtype_bytes != measured.dtype_bytes:
            raise SpecError(
                f"model {model.name} has dtype_bytes={model.dtype_bytes} but profile {measured.name!r} "
                f"was measured in {measured.dtype} ({measured.dtype_bytes} bytes); use "
                f"model.model_copy(update={{'dtype_bytes': {measured.dtype_bytes}}}) for an engine run in that dtype"
            )
        gpu = node.gpu
        # large-GEMM throughput and streaming bandwidth actually reached (profile efficiencies)
        self._flops_per_s = gpu.peak_flops * gpu.compute_efficiency
        self._hbm_bytes_per_s = gpu.hbm_bandwidth_bytes_per_s * gpu.memory_efficiency
        self._n0 = float(gpu.compute_saturation_tokens)
        self._kernel_s = gpu.kernel_overhead_s
        self._link_bytes_per_s = node.gpu_link_bandwidth_bytes_per_s
        self._host_bytes_per_s = node.host_link_bandwidth_bytes_per_s
        self._stages: dict[tuple[int, int], list[_Stage]] = {}

    # ---------------------------------------------------------------------------------------
    # layout constants

    def layers_per_stage(self, layout: ParallelConfig) -> list[int]:
        """Decoder layers on each PP stage. Embedding sits on the first, LM head on the last."""
        L, pp = self.model.num_hidden_layers, layout.pp
        if pp > L:
            raise SpecError(f"layout {layout}: pp={pp} exceeds the {L} layers of {self.model.name}")
        parts = [L // pp] * pp
        # vLLM get_pp_indices: leftover layers go to the stages before the last one (the last
        # carries the LM head), walking back towards the first
        for i in range(2, L % pp + 2):
            parts[-i] += 1
        return parts

    def _kv_heads_per_gpu(self, tp: int) -> int:
        # GQA under TP: KV heads split when tp <= h_kv, else each GPU keeps one (replicated)
        return max(1, self.model.num_key_value_heads // tp)

    def gemm_shapes(self, tp: int) -> dict[str, tuple[float, float]]:
        """Per-GPU ``(in_features, out_features)`` of one layer's GEMMs under ``tp`` (vLLM's fused
        QKV and gate/up; Megatron-LM column-parallel QKV, gate/up, row-parallel O, down)."""
        m = self.model
        h, d = m.hidden_size, m.d_head
        q_gpu = m.num_attention_heads * d / tp
        kv_gpu = self._kv_heads_per_gpu(tp) * d
        i_gpu = m.intermediate_size / tp
        return {
            "qkv_proj": (h, q_gpu + 2 * kv_gpu),
            "o_proj": (q_gpu, h),
            "gate_up_proj": (h, 2 * i_gpu),
            "down_proj": (i_gpu, h),
        }

    def _layout(self, layout: ParallelConfig, alone: bool = False) -> list[_Stage]:
        # measured: DP changes the driver's messages and, with ``alone``, the tables' busy ranks
        key = (layout.tp, layout.pp, layout.dp, alone)
        stages = self._stages.get(key)
        if stages is None:
            stages = self._stages[key] = self._build(layout, alone)
        return stages

    def _build(self, layout: ParallelConfig, alone: bool = False) -> list[_Stage]:
        layout.check_model(self.model)
        m, node = self.model, self.node
        tp, pp = layout.tp, layout.pp
        h, d, B = m.hidden_size, m.d_head, m.dtype_bytes
        hq_gpu = m.num_attention_heads / tp
        kv_gpu = self._kv_heads_per_gpu(tp)
        vocab_gpu = m.vocab_size / tp
        lin_params = sum(k * n for k, n in self.gemm_shapes(tp).values())
        layer_params = lin_params + 2 * h  # + two replicated RMSNorm vectors
        # ring all-reduce (NCCL): each GPU moves 2(t-1)/t of the buffer; 2(t-1) latency steps
        ring_frac = 2 * (tp - 1) / tp
        ar_latency_s = 2 * (tp - 1) * node.allreduce_latency_s
        gather_frac = (tp - 1) / tp  # gather to one rank: it receives the other (t-1)/t shards
        parts = self.layers_per_stage(layout)
        L = m.num_hidden_layers
        out = []
        for s, layers in enumerate(parts):
            first, last = s == 0, s == pp - 1
            head_params = vocab_gpu * h if last else 0.0
            weight_params = layers * layer_params + head_params
            if first:
                weight_params += vocab_gpu * h  # vocab-parallel embedding
            if last:
                weight_params += h  # final norm
            if last and first and m.tie_word_embeddings:
                weight_params -= vocab_gpu * h  # one shared matrix
            # two all-reduces per layer (attention O, MLP down), one after the embedding
            n_ar = (2 * layers + (1 if first else 0)) if tp > 1 else 0
            out.append(_Stage(
                layers=layers,
                weight_bytes=weight_params * B,
                kv_bytes_per_token=layers * 2 * kv_gpu * d * B,
                # 2 FLOPs per multiply-accumulate per weight per token (Kaplan et al. 2020, PaLM App. B)
                lin_flops_per_token=2.0 * lin_params * layers,
                lin_read_s=lin_params * layers * B / self._hbm_bytes_per_s,
                # fused QKV, O, fused gate/up, down: 4 GEMM kernels per layer, as in vLLM
                lin_kernel_s=4 * layers * self._kernel_s,
                attn_kernel_s=layers * self._kernel_s,
                # QK^T and PV: 2 x 2d FLOPs per (query, key) pair per head (FlashAttention paper)
                attn_flops_per_pair=4.0 * hq_gpu * d * layers,
                # Seesaw App. A attention KV movement: read Q, K, V, write O once per token
                attn_bytes_per_prefill_token=(2 * hq_gpu + 2 * kv_gpu) * d * B * layers,
                ar_s_per_token=n_ar * ring_frac * h * B / self._link_bytes_per_s,
                ar_fixed_s=n_ar * ar_latency_s,
                head_flops_per_row=2.0 * head_params,
                head_read_s=head_params * B / self._hbm_bytes_per_s,
                head_gather_s_per_row=(gather_frac * m.vocab_size * B / self._link_bytes_per_s
                                       if last and tp > 1 else 0.0),
                head_gather_fixed_s=node.p2p_latency_s if last and tp > 1 else 0.0,
                overhead_s=node.step_overhead_s * layers / L,
                overhead_frac=layers / L,
            ))
        if self._tables is not None:
            for s, c in enumerate(out):
                c.measured = self._measured_stage(layout, s, c, alone)
        return out

    def _measured_stage(self, layout: ParallelConfig, stage: int, c: _Stage, alone: bool = False) -> _MeasuredStage:
        """The tables that apply to one stage of ``layout``: shapes per rank as the engine runs
        them (``seesaw.engine.model``), tables measured with as many ranks busy at once as the
        layout keeps busy (all of its ranks: TP ranks, pipeline stages and DP replicas share the
        machine; ``alone``: only this stage's ranks in every replica, the other stages idle)
        preferred, else the nearest count; collectives need their exact TP degree."""
        m, tb, tp = self.model, self._tables, layout.tp
        busy = layout.tp * layout.dp if alone else layout.world_size
        h, d = m.hidden_size, m.d_head
        first, last = stage == 0, stage == layout.pp - 1
        shapes = self.gemm_shapes(tp)
        found = {k: tb.op("linear", v, busy) for k, v in shapes.items()}
        misc = tb.op("layer_misc", (h, m.num_attention_heads // tp * d, self._kv_heads_per_gpu(tp) * d,
                                    m.intermediate_size // tp), busy)
        parts = [f for f in found.values() if f is not None] + ([misc] if misc else [])
        layers_curve = None
        if parts:
            grid = sorted({x for f in parts for x in f.xs})
            layers_curve = Curve(grid, [c.layers * sum(f(x) for f in parts) for x in grid])
        cols = -(-m.vocab_size // tp)  # the engine pads the vocab to a multiple of tp
        heads = m.num_attention_heads / tp
        kv = self._kv_heads_per_gpu(tp)
        return _MeasuredStage(
            layers_curve=layers_curve,
            missing_gemms=[shapes[k] for k, f in found.items() if f is None],
            embed=tb.op("embed_rope", (h, d, cols), busy) if first else None,
            prefill=tb.attention("prefill", heads, kv, d, busy),
            decode=tb.attention("decode", heads, kv, d, busy),
            allreduce=tb.comm("all_reduce", tp) if tp > 1 else None,
            num_allreduce=(2 * c.layers + (1 if first else 0)) if tp > 1 else 0,
            head=tb.op("linear", (h, cols), busy) if last else None,
            gather=tb.comm("all_gather", tp) if last and tp > 1 else None,
            # sampled ids back to rank 0, a broadcast (under PP with a measured hand-off the
            # simulator charges it at the driver instead: ``pp_reply_s``)
            reply=tb.comm("broadcast", 2) if last and (layout.pp > 1 or layout.dp > 1)
            and not (layout.pp > 1 and self.handoffs_rendezvous) else None,
            # rendezvous: the receivers of the step message wait for it (the stages after the
            # first; the first only when it holds ranks other than rank 0); else the first stage
            control_s=self._control_s(layout) if (
                (stage > 0 or tp > 1 or layout.dp > 1) if self.handoffs_rendezvous else first) else 0.0,
            step=tb.step(m.vocab_size, busy),
            head_cols=cols,
            allreduce_in_place=tb.op_exact("tp_all_reduce", (h,), tp) if tp > 1 else None,
            gather_in_place=tb.op_exact("tp_all_gather", (cols,), tp) if last and tp > 1 else None,
        )

    # ---------------------------------------------------------------------------------------
    # per-step time (hot path)

    def stage_time_s(self, layout: ParallelConfig, stage: int, shape: BatchShape, alone: bool = False) -> float:
        """Seconds for PP stage ``stage`` of ``layout`` to run micro-batch ``shape``. ``alone``:
        the other stages are idle meanwhile (a measured profile then uses tables timed with only
        this stage's ranks busy: on a CPU the stages share the cores)."""
        c = self._layout(layout, alone and self._tables is not None and layout.pp > 1)[stage]
        if c.measured is not None:
            return sum(self._measured_parts(c, shape))
        n = shape.prefill_tokens + shape.decode_seqs
        rows = shape.sampled_seqs if c.head_flops_per_row else 0
        if not n and not rows:
            return 0.0
        t = c.overhead_s
        if n:
            comp = c.lin_flops_per_token * (n + self._n0) / self._flops_per_s
            t += ((comp if comp > c.lin_read_s else c.lin_read_s) + c.lin_kernel_s
                  + c.ar_s_per_token * n + c.ar_fixed_s)
        np_ = shape.prefill_tokens
        if np_:
            comp = c.attn_flops_per_pair * shape.prefill_attn_pairs / self._flops_per_s
            mem = c.attn_bytes_per_prefill_token * np_ / self._hbm_bytes_per_s
            t += (comp if comp > mem else mem) + c.attn_kernel_s
        if shape.decode_seqs:
            t += (c.kv_bytes_per_token * shape.decode_context_tokens / self._hbm_bytes_per_s
                  + c.attn_kernel_s)
        if rows:
            comp = c.head_flops_per_row * (rows + self._n0) / self._flops_per_s
            t += ((comp if comp > c.head_read_s else c.head_read_s) + self._kernel_s
                  + c.head_gather_s_per_row * rows + c.head_gather_fixed_s)
        return t

    def stage_breakdown(
        self, layout: ParallelConfig, stage: int, shape: BatchShape
    ) -> dict[str, float]:
        """``stage_time_s`` split into parts that sum to ``total_s`` (for plots).

        ``compute_s`` / ``weight_read_s``: linear layers (LM head included), booked under whichever
        roofline term bounds them; ``attention_s``: prefill and decode attention; ``comm_s``: TP
        all-reduces and the logits gather; ``overhead_s``: this stage's share of the step overhead.
        """
        c = self._layout(layout)[stage]
        if c.measured is not None:
            lin, attn, comm, over = self._measured_parts(c, shape)
            return dict(compute_s=lin, weight_read_s=0.0, attention_s=attn, comm_s=comm,
                        overhead_s=over, total_s=lin + attn + comm + over)
        n = shape.num_tokens
        rows = shape.sampled_seqs if c.head_flops_per_row else 0
        parts = dict(compute_s=0.0, weight_read_s=0.0, attention_s=0.0, comm_s=0.0, overhead_s=0.0)
        if n or rows:
            parts["overhead_s"] = c.overhead_s
        if n:
            comp = c.lin_flops_per_token * (n + self._n0) / self._flops_per_s
            bound = "compute_s" if comp > c.lin_read_s else "weight_read_s"
            parts[bound] += max(comp, c.lin_read_s) + c.lin_kernel_s
            parts["comm_s"] += c.ar_s_per_token * n + c.ar_fixed_s
        if shape.prefill_tokens:
            np_ = shape.prefill_tokens
            comp = c.attn_flops_per_pair * shape.prefill_attn_pairs / self._flops_per_s
            mem = c.attn_bytes_per_prefill_token * np_ / self._hbm_bytes_per_s
            parts["attention_s"] += max(comp, mem) + c.attn_kernel_s
        if shape.decode_seqs:
            kv_read = c.kv_bytes_per_token * shape.decode_context_tokens / self._hbm_bytes_per_s
            parts["attention_s"] += kv_read + c.attn_kernel_s
        if rows:
            comp = c.head_flops_per_row * (rows + self._n0) / self._flops_per_s
            bound = "compute_s" if comp > c.head_read_s else "weight_read_s"
            parts[bound] += max(comp, c.head_read_s) + self._kernel_s
            parts["comm_s"] += c.head_gather_s_per_row * rows + c.head_gather_fixed_s
        parts["total_s"] = sum(parts.values())
        return parts

    def _control_s(self, layout: ParallelConfig) -> float:
        """The engine driver's step message to a replica's other ranks: one gloo broadcast of its
        fixed buffer from rank 0 (``seesaw.engine.driver.ControlPlane``), which the replica's
        ranks wait for before they start; none when the replica is rank 0 alone. With a measured
        hand-off: one, since rank 0 sends it and computes on (its receivers ask late)."""
        members = layout.tp * layout.pp + (1 if layout.dp > 1 else 0)
        if members < 2:
            return 0.0
        if self._handoff is not None:
            return self._handoff(_CONTROL_MESSAGE_BYTES)
        tb = self._tables
        found = [r for (op, r) in tb._comm if op == "broadcast"]
        if not found:
            return 0.0
        ranks = min(found, key=lambda r: (abs(r - members), -r))
        return tb.comm("broadcast", ranks)(_CONTROL_MESSAGE_BYTES)

    def _measured_parts(self, c: _Stage, shape: BatchShape) -> tuple[float, float, float, float]:
        """(linear and other per-token ops, attention, communication, step overhead) of one stage
        from the measured tables, as the engine runs a step: prefill attention is one call per
        sequence, decode attention one call for the batch; the driver's step message (first
        stage) and, when the sampling rank is not rank 0, the sampled tokens' way back (last
        stage) count as communication; the driver's per-step work (scheduling, block tables,
        metadata, sampling) by sequences is the overhead."""
        m = c.measured
        n = shape.prefill_tokens + shape.decode_seqs
        np_ = shape.prefill_tokens
        # prefill sequences and their mean chunk and context (whole prompts when not given:
        # k prompts of n tokens have k n (n + 1) / 2 pairs)
        if np_:
            if shape.prefill_seqs:
                k = shape.prefill_seqs
                q = np_ / k
                ctx = max(q, shape.prefill_attn_pairs / np_ + (q - 1) / 2)
            else:
                q = max(1.0, 2 * shape.prefill_attn_pairs / np_ - 1)
                k, ctx = np_ / q, q
        else:
            k = 0
        seqs = shape.decode_seqs + k
        rows = shape.sampled_seqs if c.head_flops_per_row else 0
        if not n and not rows:
            return 0.0, 0.0, 0.0, 0.0
        lin = attn = comm = 0.0
        B = self.model.dtype_bytes
        if n:
            if m.layers_curve is not None:
                lin += m.layers_curve(n)
            for k_in, k_out in m.missing_gemms:
                lin += c.layers * self.gemm_time_s(n, k_in, k_out, measured=False)
            if m.embed is not None:
                lin += m.embed(n)
            if m.allreduce_in_place is not None:
                comm += m.num_allreduce * m.allreduce_in_place(n)
            elif m.allreduce is not None:
                comm += m.num_allreduce * m.allreduce(n * self.model.hidden_size * B)
            else:
                comm += c.ar_s_per_token * n + c.ar_fixed_s
        if np_:
            if m.prefill is not None:
                attn += c.layers * k * m.prefill(q, ctx)
            else:
                comp = c.attn_flops_per_pair * shape.prefill_attn_pairs / self._flops_per_s
                mem = c.attn_bytes_per_prefill_token * np_ / self._hbm_bytes_per_s
                attn += max(comp, mem) + c.attn_kernel_s
        if shape.decode_seqs:
            if m.decode is not None:
                attn += c.layers * m.decode(shape.decode_seqs, shape.decode_context_tokens)
            else:
                attn += (c.kv_bytes_per_token * shape.decode_context_tokens / self._hbm_bytes_per_s
                         + c.attn_kernel_s)
        if rows:
            h = self.model.hidden_size
            lin += m.head(rows) if m.head is not None else self.gemm_time_s(rows, h, m.head_cols, measured=False)
            if m.gather_in_place is not None:
                comm += m.gather_in_place(rows)
            elif m.gather is not None:
                comm += m.gather(rows * m.head_cols * B)
            else:
                comm += c.head_gather_s_per_row * rows + c.head_gather_fixed_s
            if m.reply is not None:
                comm += m.reply(8 * rows)  # int64 token ids
        # every stage of the engine pays a whole step's bookkeeping for its micro-batch (block-table
        # views, slot mapping, attention metadata, positions: ``ModelRunner.run_tables``); rank 0
        # also schedules and the last stage samples, each about a step's share. So, unlike the
        # roofline's per-step overhead, the measured one is not split over the stages.
        over = m.step(seqs) if m.step is not None and seqs else c.overhead_s
        comm += m.control_s
        return lin, attn, comm, over

    def pipeline_time_s(
        self, layout: ParallelConfig, shape: BatchShape, num_microbatches: int | None = None
    ) -> float:
        """Time for ``num_microbatches`` (default ``pp``) copies of ``shape`` to pass every stage.

        Classic pipeline schedule: the first micro-batch crosses all stages and boundaries, each
        later one leaves the slowest stage one stage-time after the previous (GPipe's
        (pp + m - 1) stage times when stages are equal).
        """
        m = layout.pp if num_microbatches is None else num_microbatches
        times = [self.stage_time_s(layout, s, shape) for s in range(layout.pp)]
        send = self.pp_send_s(layout, shape.num_tokens) if layout.pp > 1 else 0.0
        return sum(times) + (layout.pp - 1) * send + (m - 1) * max(times)

    def gemm_time_s(self, tokens: int, in_features: float, out_features: float,
                    measured: bool = True) -> float:
        """One GEMM kernel of ``tokens`` rows against an ``[in_features, out_features]`` weight
        (the measured table of that shape, measured alone, when there is one)."""
        if measured and self._tables is not None:
            curve = self._tables.op("linear", (in_features, out_features), 1)
            if curve is not None:
                return curve(tokens)
        comp = 2.0 * in_features * out_features * (tokens + self._n0) / self._flops_per_s
        read = in_features * out_features * self.model.dtype_bytes / self._hbm_bytes_per_s
        return max(comp, read) + self._kernel_s

    # ---------------------------------------------------------------------------------------
    # communication and copies

    def allreduce_s(self, nbytes: float, tp: int) -> float:
        """Ring all-reduce of ``nbytes`` over ``tp`` GPUs (0 when tp == 1)."""
        if tp <= 1:
            return 0.0
        curve = self._tables.comm("all_reduce", tp) if self._tables is not None else None
        if curve is not None:
            return curve(nbytes)
        # NCCL ring: bus bytes 2(t-1)/t * size per GPU (nccl-tests PERFORMANCE.md), 2(t-1) steps
        return (2 * (tp - 1) / tp * nbytes / self._link_bytes_per_s
                + 2 * (tp - 1) * self.node.allreduce_latency_s)

    @property
    def handoffs_rendezvous(self) -> bool:
        """Pipeline hand-offs start when the receiver asks and keep it waiting (measured
        ``handoff`` table; see the module docstring), instead of overlapping its work."""
        return self._handoff is not None

    def pp_reply_s(self, layout: ParallelConfig, rows: int) -> float:
        """The sampled ids of ``rows`` sequences from the last stage back to the driver under PP
        with rendezvous hand-offs (0 otherwise: then the last stage's time includes them)."""
        if layout.pp == 1 or not rows or self._handoff is None:
            return 0.0
        return self._handoff(8 * rows)  # int64 token ids

    def pp_send_s(self, layout: ParallelConfig, num_tokens: int) -> float:
        """Activations ``[tokens, hidden]`` across one stage boundary (each TP rank sends its copy
        to its peer in parallel, as vLLM does, so the time does not depend on tp)."""
        nbytes = num_tokens * self.model.hidden_size * self.model.dtype_bytes
        curve = self._tables.handoff() if self._tables is not None else None
        if curve is not None:
            return curve(max(nbytes, 1))
        return nbytes / self._link_bytes_per_s + self.node.p2p_latency_s

    def host_copy_s(self, nbytes: float) -> float:
        """Copy ``nbytes`` between one GPU and host memory over that GPU's host link."""
        curve = self._tables.copy() if self._tables is not None else None
        if curve is not None and nbytes > 0:
            return curve(nbytes)
        return nbytes / self._host_bytes_per_s

    def reshard_s(self, src: ParallelConfig, dst: ParallelConfig) -> float:
        """Switch weights from ``src`` to ``dst``: every GPU loads its whole new shard from the
        host copy over its own host link, all in parallel, so the slowest GPU decides. A
        measured profile's re-shard table (the engine's whole re-shard, barrier and new KV cache
        included, by bytes loaded per rank) wins over the host-copy bandwidth."""
        if (src.dp, src.tp, src.pp) == (dst.dp, dst.tp, dst.pp):
            return 0.0
        nbytes = self.weight_bytes_per_gpu(dst)
        curve = self._tables.reshard(dst.gpus_per_replica) if self._tables is not None else None
        if curve is not None:
            return curve(nbytes)
        return self.host_copy_s(nbytes)

    def swap_box(self, layout: ParallelConfig) -> tuple[int, int, int]:
        """(layers, KV heads, head_dim) of the largest KV box one GPU of ``layout`` holds."""
        return (max(self.layers_per_stage(layout)), self._kv_heads_per_gpu(layout.tp), self.model.d_head)

    def swap_s(self, layout: ParallelConfig, kind: str, tokens: int) -> float:
        """One Seesaw swap step moving the KV of ``tokens`` tokens between the GPUs of a replica
        of ``layout`` and host memory (``kind`` "out": to the host, "in": back). Every GPU
        copies its own box over its own host link, in parallel. A measured profile's swap steps
        (the engine's whole step: message, copies, agreement) win over the host-copy bandwidth:
        the table of this box by tokens, else every measured box's by the bytes a rank moves (on
        a CPU the whole step costs ~30x a memcpy of its bytes, so a memcpy would favour Seesaw
        pairs outside the profiled shapes)."""
        if tokens <= 0:
            return 0.0
        nbytes = tokens * self.swap_bytes_per_token(layout)
        if self._tables is not None:
            curve = self._tables.swap(kind, self.swap_box(layout), layout.gpus_per_replica)
            if curve is not None:
                return curve(tokens)
            curve = self._tables.swap_bytes(kind, layout.gpus_per_replica)
            if curve is not None:
                return curve(nbytes)
        return self.host_copy_s(nbytes)

    def swap_bytes_per_token(self, layout: ParallelConfig) -> float:
        """KV bytes one GPU moves per swapped token under ``layout`` (the most loaded stage;
        replicated KV heads, when tp > h_kv, are copied to every GPU that holds them)."""
        return max(c.kv_bytes_per_token for c in self._layout(layout))

    # ---------------------------------------------------------------------------------------
    # memory

    def stage_weight_bytes_per_gpu(self, layout: ParallelConfig) -> list[float]:
        return [c.weight_bytes for c in self._layout(layout)]

    def weight_bytes_per_gpu(self, layout: ParallelConfig) -> float:
        """Weights on the most loaded GPU of ``layout``."""
        return max(self.stage_weight_bytes_per_gpu(layout))

    def activation_reserve_bytes(
        self, layout: ParallelConfig, max_num_batched_tokens: int = 8192
    ) -> float:
        """Peak activations of one forward pass of ``max_num_batched_tokens`` tokens on one GPU:
        residual and normed hidden states [n, h] x 2 plus the MLP's gate/up output [n, 2i/tp] and
        activation [n, i/tp] (the largest live set, which vLLM's profiling run measures)."""
        m = self.model
        per_token = 2 * m.hidden_size + 3 * m.intermediate_size / layout.tp
        return max_num_batched_tokens * m.dtype_bytes * per_token

    def kv_capacity_tokens(
        self, layout: ParallelConfig, gpu_memory_utilization: float = 0.9,
        max_num_batched_tokens: int = 8192,
    ) -> int:
        """KV tokens one DP replica can hold on device: per stage, (memory x utilization - weights -
        activation reserve) / KV bytes per token on that GPU; the tightest stage decides."""
        budget = self.node.gpu.memory_bytes * gpu_memory_utilization
        reserve = self.activation_reserve_bytes(layout, max_num_batched_tokens)
        cap = min((budget - c.weight_bytes - reserve) / c.kv_bytes_per_token
                  for c in self._layout(layout))
        return max(0, math.floor(cap))

    def check_fits(
        self, layout: ParallelConfig, gpu_memory_utilization: float = 0.9,
        min_kv_tokens: int | None = None, max_num_batched_tokens: int = 8192,
    ) -> None:
        """Raise ``SpecError`` (one line, with the numbers) unless ``layout`` can serve ``model`` on
        ``node``: shardable, enough GPUs, weights fit, and at least ``min_kv_tokens`` of KV per
        replica (default: one sequence of ``max_position_embeddings``, as vLLM requires)."""
        m, node, gpu = self.model, self.node, self.node.gpu
        layout.check_model(m)
        if layout.world_size > node.num_gpus:
            raise SpecError(
                f"layout {layout}: needs {layout.world_size} GPUs, node {node.name} has {node.num_gpus}"
            )
        budget = gpu.memory_bytes * gpu_memory_utilization
        weights = self.weight_bytes_per_gpu(layout)
        where = f"on {gpu.name} ({gpu.memory_bytes / GiB:.1f} GiB x {gpu_memory_utilization:.2f})"
        if weights > budget:
            raise SpecError(
                f"layout {layout}: weights need {weights / GiB:.1f} GiB per GPU, "
                f"{budget / GiB:.1f} GiB available {where}"
            )
        need = m.max_position_embeddings if min_kv_tokens is None else min_kv_tokens
        have = self.kv_capacity_tokens(layout, gpu_memory_utilization, max_num_batched_tokens)
        if have < need:
            reserve = self.activation_reserve_bytes(layout, max_num_batched_tokens)
            raise SpecError(
                f"layout {layout}: KV for {have} tokens fits per replica, {need} needed "
                f"(weights {weights / GiB:.1f} GiB + activations {reserve / GiB:.1f} GiB per GPU "
                f"of {budget / GiB:.1f} GiB available {where})"
            )
