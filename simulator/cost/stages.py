"""How a layout shards the model, and the per-(layout, stage) constants the cost model keeps.

Sharding follows vLLM: PP splits the decoder layers as ``get_pp_indices`` does (embedding on the
first stage, LM head on the last); TP follows Megatron-LM (column-parallel fused QKV and gate/up,
row-parallel O and down), K/V split by KV head and replicated when ``tp`` exceeds their number.
``StageConstants`` are the roofline's numbers of one stage, computed once per layout
(``simulator.cost.roofline.build_stages``); ``MeasuredStage`` the measured tables that apply to it
(``simulator.cost.measured.measured_stage``).
"""

from __future__ import annotations

from dataclasses import dataclass

from seesaw.core import ModelSpec, ParallelConfig, SpecError
from simulator.cost.tables import Curve, Surface

__all__ = ["MeasuredStage", "StageConstants", "gemm_shapes", "kv_heads_per_gpu", "layers_per_stage"]


def layers_per_stage(model: ModelSpec, layout: ParallelConfig) -> list[int]:
    """Decoder layers on each PP stage. Embedding sits on the first, LM head on the last."""
    L, pp = model.num_hidden_layers, layout.pp
    if pp > L:
        raise SpecError(f"layout {layout}: pp={pp} exceeds the {L} layers of {model.name}")
    parts = [L // pp] * pp
    # vLLM get_pp_indices: leftover layers go to the stages before the last one (the last
    # carries the LM head), walking back towards the first
    for i in range(2, L % pp + 2):
        parts[-i] += 1
    return parts


def kv_heads_per_gpu(model: ModelSpec, tp: int) -> int:
    # GQA under TP: KV heads split when tp <= h_kv, else each GPU keeps one (replicated)
    return max(1, model.num_key_value_heads // tp)


def gemm_shapes(model: ModelSpec, tp: int) -> dict[str, tuple[float, float]]:
    """Per-GPU ``(in_features, out_features)`` of one layer's GEMMs under ``tp`` (vLLM's fused
    QKV and gate/up; Megatron-LM column-parallel QKV, gate/up, row-parallel O, down)."""
    m = model
    h, d = m.hidden_size, m.d_head
    q_gpu = m.num_attention_heads * d / tp
    kv_gpu = kv_heads_per_gpu(m, tp) * d
    i_gpu = m.intermediate_size / tp
    return {
        "qkv_proj": (h, q_gpu + 2 * kv_gpu),
        "o_proj": (q_gpu, h),
        "gate_up_proj": (h, 2 * i_gpu),
        "down_proj": (i_gpu, h),
    }


@dataclass(slots=True)
class MeasuredStage:
    """Measured curves of one (layout, stage), per GPU; ``None`` falls back to the roofline."""

    layers_curve: Curve | None  # all decoder layers of the stage: GEMMs + misc, by tokens
    missing_gemms: list[tuple[float, float]]  # (in, out) of GEMMs with no table: roofline
    misc_missing: bool  # no table of the layer's small kernels: roofline
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
class StageConstants:
    """Per-(layout, stage) constants, per GPU of the stage. Times in s, sizes in bytes."""

    layers: int
    weight_bytes: float  # resident weights (layers + embedding/LM head shards)
    kv_bytes_per_token: float  # this GPU's K and V for one token, all its layers
    lin_flops_per_token: float  # decoder-layer GEMM FLOPs per token
    lin_read_s: float  # time to stream the decoder layers' weights once
    lin_kernel_s: float  # fixed time of the GEMM kernels (4 per layer) and small kernels (6 per layer)
    misc_s_per_token: float  # the small kernels' bytes per token (norms, RoPE, activation, adds)
    attn_kernel_s: float  # fixed time of one prefill-attention kernel per layer
    attn_s_per_pair: float  # prefill attention seconds per causal query-key pair (all layers)
    attn_s_per_query: float  # prefill attention's fixed work per query (k0 pairs), all layers
    attn_read_s_per_prefill_token: float  # Q, K, V read + O written per prefill token
    decode_s_per_token: float  # decode attention: one context token's K and V read, all layers
    decode_kernel_s: float  # decode attention's per-call floor, all layers
    ar_s_per_token: float  # TP all-reduce bandwidth time per token (all all-reduces)
    ar_fixed_s: float  # TP all-reduce latency per step (all all-reduces)
    ar_small_s_per_token: float  # the same under the low-latency protocol (0: the node has none)
    ar_small_fixed_s: float
    head_flops_per_row: float  # LM head GEMM FLOPs per sampled row (last stage only)
    head_read_s: float  # time to stream the LM head shard once
    head_gather_s_per_row: float  # gathering one row of logits to one rank
    head_gather_fixed_s: float
    overhead_s: float  # share of the per-step overhead
    measured: MeasuredStage | None = None  # tables of a measured profile, if any

