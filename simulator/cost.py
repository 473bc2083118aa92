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
``CostModel(model, node)``
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
    ``layers_per_stage(layout)``                vLLM's split; embedding first, LM head last
    ``weight_bytes_per_gpu(layout)``            the most loaded GPU (``stage_weight_bytes_per_gpu``
                                                gives every stage)
    ``kv_capacity_tokens(layout, util)``        KV tokens one DP replica can hold on device
    ``check_fits(layout, util, min_kv_tokens)`` raise ``SpecError`` (one line, with numbers)
    ``allreduce_s(nbytes, tp)``, ``host_copy_s(nbytes)``, ``reshard_s(src, dst)``,
    ``swap_bytes_per_token(layout)``, ``gemm_time_s(tokens, in_features, out_features)``

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
- Memory: weights per GPU of its stage, an activation reserve of ``max_num_batched_tokens`` rows
  (the peak live tensors in the MLP, as vLLM's profiling run measures it), the rest is KV.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from seesaw.specs import GiB, ModelSpec, NodeSpec, ParallelConfig, SpecError

__all__ = ["BatchShape", "CostModel", "attn_pairs"]


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
        )


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


class CostModel:
    """Roofline x efficiency cost of one pipeline stage of ``model`` on ``node``."""

    def __init__(self, model: ModelSpec, node: NodeSpec):
        self.model = model
        self.node = node
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

    def _layout(self, layout: ParallelConfig) -> list[_Stage]:
        key = (layout.tp, layout.pp)
        stages = self._stages.get(key)
        if stages is None:
            stages = self._stages[key] = self._build(layout)
        return stages

    def _build(self, layout: ParallelConfig) -> list[_Stage]:
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
            ))
        return out

    # ---------------------------------------------------------------------------------------
    # per-step time (hot path)

    def stage_time_s(self, layout: ParallelConfig, stage: int, shape: BatchShape) -> float:
        """Seconds for PP stage ``stage`` of ``layout`` to run micro-batch ``shape``."""
        c = self._layout(layout)[stage]
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

    def gemm_time_s(self, tokens: int, in_features: float, out_features: float) -> float:
        """One GEMM kernel of ``tokens`` rows against an ``[in_features, out_features]`` weight."""
        comp = 2.0 * in_features * out_features * (tokens + self._n0) / self._flops_per_s
        read = in_features * out_features * self.model.dtype_bytes / self._hbm_bytes_per_s
        return max(comp, read) + self._kernel_s

    # ---------------------------------------------------------------------------------------
    # communication and copies

    def allreduce_s(self, nbytes: float, tp: int) -> float:
        """Ring all-reduce of ``nbytes`` over ``tp`` GPUs (0 when tp == 1)."""
        if tp <= 1:
            return 0.0
        # NCCL ring: bus bytes 2(t-1)/t * size per GPU (nccl-tests PERFORMANCE.md), 2(t-1) steps
        return (2 * (tp - 1) / tp * nbytes / self._link_bytes_per_s
                + 2 * (tp - 1) * self.node.allreduce_latency_s)

    def pp_send_s(self, layout: ParallelConfig, num_tokens: int) -> float:
        """Activations ``[tokens, hidden]`` across one stage boundary (each TP rank sends its copy
        to its peer in parallel, as vLLM does, so the time does not depend on tp)."""
        nbytes = num_tokens * self.model.hidden_size * self.model.dtype_bytes
        return nbytes / self._link_bytes_per_s + self.node.p2p_latency_s

    def host_copy_s(self, nbytes: float) -> float:
        """Copy ``nbytes`` between one GPU and host memory over that GPU's host link."""
        return nbytes / self._host_bytes_per_s

    def reshard_s(self, src: ParallelConfig, dst: ParallelConfig) -> float:
        """Switch weights from ``src`` to ``dst``: every GPU loads its whole new shard from the
        host copy over its own host link, all in parallel, so the slowest GPU decides."""
        if (src.dp, src.tp, src.pp) == (dst.dp, dst.tp, dst.pp):
            return 0.0
        return self.host_copy_s(self.weight_bytes_per_gpu(dst))

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
