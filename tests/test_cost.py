"""Cost model: hand-computed roofline numbers, the paper's observations, memory and copies."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from seesaw.catalog import load_model, load_node
from seesaw.core import GiB, GpuSpec, ModelSpec, NodeSpec, SpecError, parse_parallel
from simulator.cost import BatchShape, CostModel, attn_pairs

# Hand-checkable specs with round numbers, so every expected value below can be worked out on
# paper; the catalog's real profiles are used for the paper's observations at the end.
L4 = GpuSpec(
    name="l4", memory_bytes=24 * GiB, hbm_bandwidth_bytes_per_s=300e9, peak_flops=121e12,
    compute_efficiency=0.5, memory_efficiency=0.8, compute_saturation_tokens=100, kernel_overhead_s=5e-6,
    attention_compute_efficiency=0.25, attention_saturation_keys=1000, decode_attention_memory_efficiency=0.75,
    decode_attention_floor_s=10e-6, elementwise_memory_efficiency=0.5,
)
NODE = NodeSpec(
    name="8xl4", gpu=L4, num_gpus=8, interconnect="pcie", gpu_link_bandwidth_bytes_per_s=10e9,
    host_link_bandwidth_bytes_per_s=12.5e9, host_memory_bytes_per_gpu=80 * GiB,
    allreduce_latency_s=5e-6, allreduce_base_s=20e-6, p2p_latency_s=10e-6, p2p_bandwidth_bytes_per_s=20e9,
    step_overhead_s=2e-3,
)
LLAMA2_70B = ModelSpec(
    name="llama2-70b", num_hidden_layers=80, hidden_size=8192, num_attention_heads=64,
    num_key_value_heads=8, intermediate_size=28672, vocab_size=32000,
)
T4P2 = parse_parallel("T4P2")

# per-GPU GEMM weights of one 70B layer at tp=4:
#   W_q, W_o: 8192 x (64/4 * 128) = 8192 x 2048 each;  W_k, W_v: 8192 x (8/4 * 128) = 8192 x 256 each
#   gate, up, down: 8192 x 28672/4 = 8192 x 7168 each
LIN_PARAMS_T4 = 2 * 8192 * 2048 + 2 * 8192 * 256 + 3 * 8192 * 7168  # = 213,909,504
FLOPS = 121e12 * 0.5  # peak x compute_efficiency
HBM = 300e9 * 0.8  # bandwidth x memory_efficiency
ATTN_FLOPS = 121e12 * 0.25  # prefill attention on long contexts: peak x attention_compute_efficiency
KV_BW = 300e9 * 0.75  # decode attention's KV reads: bandwidth x decode_attention_memory_efficiency
EW_BW = 300e9 * 0.5  # norms, RoPE, activation, adds: bandwidth x elementwise_memory_efficiency
# bytes of one 70B layer's 6 small kernels per token at tp=4: 2 RMSNorms read + write [8192],
# 2 residual adds read 2 and write 1 [8192], RoPE rewrites Q (16 heads) and K (2 heads) of 128,
# SiLU-and-mul reads [2 x 7168] and writes [7168]; fp16
EW_BYTES_T4 = (2 * 2 * 8192 + 2 * 3 * 8192 + 2 * (16 + 2) * 128 + 3 * 7168) * 2  # = 216,064


@pytest.fixture(scope="module")
def cm():
    return CostModel(LLAMA2_70B, NODE)


def test_gemm_params_per_gpu(cm):
    assert LIN_PARAMS_T4 == 213_909_504
    assert sum(k * n for k, n in cm.gemm_shapes(4).values()) == LIN_PARAMS_T4


def test_decode_step_70b_t4p2_by_hand(cm):
    # stage 0 of T4P2: layers 0-39 plus the embedding; 32 sequences, 1000 tokens of context each
    shape = BatchShape.decode([1000] * 32)
    layers = 40
    weight_read = layers * LIN_PARAMS_T4 * 2 / HBM  # 17.11 GB / 240 GB/s = 71.3 ms
    compute = 2 * layers * LIN_PARAMS_T4 * (32 + 100) / FLOPS  # 37.3 ms: memory bound
    assert compute < weight_read
    gemm_kernels = (4 + 6) * layers * 5e-6  # 4 GEMMs and 6 small kernels per layer: 2 ms
    small = 32 * layers * EW_BYTES_T4 / EW_BW  # 276.6 MB / 150 GB/s = 1.84 ms
    kv_read = 32 * 1000 * layers * 2 * 2 * 128 * 2 / KV_BW  # K and V, 2 KV heads per GPU: 5.83 ms
    attn_floor = layers * 10e-6  # one decode-attention call per layer
    # 2 all-reduces per layer + 1 after the embedding, over 4 GPUs of 32 x 8192 x 2 bytes: the
    # floor (20 us + 2 x 3 ring steps of 5 us) plus the ring's bus bytes
    allreduce = (2 * layers + 1) * (2 * 3 / 4 * 32 * 8192 * 2 / 10e9 + 20e-6 + 2 * 3 * 5e-6)  # 81 x 129 us
    overhead = 2e-3 * 40 / 80
    expected = weight_read + gemm_kernels + small + kv_read + attn_floor + allreduce + overhead
    assert expected == pytest.approx(0.0928, abs=1e-3)
    assert cm.stage_time_s(T4P2, 0, shape) == pytest.approx(expected, rel=1e-9)
    parts = cm.stage_breakdown(T4P2, 0, shape)
    assert parts["weight_read_s"] == pytest.approx(weight_read + gemm_kernels + small, rel=1e-9)
    assert parts["compute_s"] == 0
    assert parts["attention_s"] == pytest.approx(kv_read + attn_floor, rel=1e-9)
    assert parts["comm_s"] == pytest.approx(allreduce, rel=1e-9)
    assert parts["overhead_s"] == pytest.approx(overhead, rel=1e-9)


def test_prefill_step_70b_t4p2_by_hand(cm):
    # stage 1 (last) of T4P2: layers 40-79 plus the LM head; one 2000-token prompt
    shape = BatchShape.prefill([2000])
    layers, n = 40, 2000
    compute = 2 * layers * LIN_PARAMS_T4 * (n + 100) / FLOPS  # 594 ms: compute bound
    assert compute > layers * LIN_PARAMS_T4 * 2 / HBM
    gemm_kernels = (4 + 6) * layers * 5e-6
    small = n * layers * EW_BYTES_T4 / EW_BW  # 17.3 GB / 150 GB/s = 115 ms
    pairs = 2000 * 2001 / 2  # causal query-key pairs
    # QK^T + PV, 16 query heads per GPU, on the efficiency curve k / (k + 1000): the work of
    # pairs + 1000 per query at the long-context rate
    attn_flops = 4 * 16 * 128 * (pairs + 1000 * n) * layers
    attn_bytes = n * (2 * 16 + 2 * 2) * 128 * 2 * layers  # Q, O (16 heads), K, V (2 heads)
    attention = max(attn_flops / ATTN_FLOPS, attn_bytes / HBM) + layers * 5e-6  # 43.5 ms
    allreduce = 2 * layers * (2 * 3 / 4 * n * 8192 * 2 / 10e9 + 20e-6 + 2 * 3 * 5e-6)  # 397 ms on PCIe
    head_params = 32000 / 4 * 8192  # vocab-parallel LM head
    head = max(2 * head_params * (1 + 100) / FLOPS, head_params * 2 / HBM) + 5e-6
    gather = 3 / 4 * 32000 * 2 / 10e9 + 10e-6  # logits of the sampled row gathered to one rank
    overhead = 1e-3
    expected = compute + gemm_kernels + small + attention + allreduce + head + gather + overhead
    assert expected == pytest.approx(1.154, abs=2e-3)
    assert cm.stage_time_s(T4P2, 1, shape) == pytest.approx(expected, rel=1e-9)
    parts = cm.stage_breakdown(T4P2, 1, shape)
    assert parts["compute_s"] == pytest.approx(compute + gemm_kernels + small, rel=1e-9)
    assert parts["attention_s"] == pytest.approx(attention, rel=1e-9)
    assert parts["weight_read_s"] == pytest.approx(head, rel=1e-9)  # one sampled row: head is read bound
    assert parts["comm_s"] == pytest.approx(allreduce + gather, rel=1e-9)
    assert parts["total_s"] == pytest.approx(expected, rel=1e-9)


def test_pp_send_and_pipeline_time(cm):
    # point-to-point bandwidth 20 GB/s, 10 us floor
    assert cm.pp_send_s(T4P2, 2000) == pytest.approx(2000 * 8192 * 2 / 20e9 + 10e-6)
    shape = BatchShape.decode([500] * 8)
    s0, s1 = (cm.stage_time_s(T4P2, s, shape) for s in (0, 1))
    # (pp + m - 1) stage slots with the slowest stage repeating, plus one boundary crossing
    assert cm.pipeline_time_s(T4P2, shape, 3) == pytest.approx(s0 + s1 + cm.pp_send_s(T4P2, 8) + 2 * max(s0, s1))
    t8 = parse_parallel("T8")
    assert cm.pipeline_time_s(t8, shape) == cm.stage_time_s(t8, 0, shape)


def test_pp_send_without_a_boundary(cm):
    """A layout without PP has no stage boundary: boundary 0 still prices an activation send (the
    notebooks' pipeline breakdown multiplies it by pp - 1 = 0), as before the crossings cache."""
    t8, p8 = parse_parallel("T8"), parse_parallel("P8")
    assert cm.pp_send_s(t8, 4096) == cm.pp_send_s(p8, 4096) > 0


def test_layers_per_stage(cm):
    assert cm.layers_per_stage(parse_parallel("P8")) == [10] * 8
    assert cm.layers_per_stage(parse_parallel("P3")) == [27, 27, 26]  # leftovers before the last
    m13 = LLAMA2_70B.model_copy(update=dict(num_hidden_layers=40))
    assert CostModel(m13, NODE).layers_per_stage(parse_parallel("P3")) == [13, 14, 13]


def test_weight_bytes_per_gpu(cm):
    layer = (LIN_PARAMS_T4 + 2 * 8192) * 2  # + replicated RMSNorm vectors
    emb = 32000 / 4 * 8192 * 2
    first = 40 * layer + emb
    last = 40 * layer + emb + 8192 * 2  # LM head shard + final norm
    assert cm.stage_weight_bytes_per_gpu(T4P2) == pytest.approx([first, last])
    assert cm.weight_bytes_per_gpu(T4P2) == pytest.approx(last)
    for text in ("T1", "P2", "P8"):  # without TP nothing is replicated: stages add up to the model
        assert sum(cm.stage_weight_bytes_per_gpu(parse_parallel(text))) == pytest.approx(LLAMA2_70B.weight_bytes)


def test_gqa_kv_heads_replicated_beyond_h_kv():
    m = LLAMA2_70B.model_copy(update=dict(num_key_value_heads=2, name="gqa2"))
    cm = CostModel(m, NODE)
    per_layer_head = 2 * 128 * 2  # K and V of one head, fp16
    assert cm.swap_bytes_per_token(parse_parallel("T2")) == 80 * per_layer_head  # 1 head each
    assert cm.swap_bytes_per_token(parse_parallel("T8")) == 80 * per_layer_head  # 1 head, replicated
    assert cm.swap_bytes_per_token(parse_parallel("T1")) == 80 * 2 * per_layer_head
    qkv_in, qkv_out = cm.gemm_shapes(8)["qkv_proj"]
    assert qkv_out == 64 / 8 * 128 + 2 * 128  # W_k, W_v of the replicated head on every GPU


def test_swap_bytes_per_token(cm):
    # T4P2: 40 layers x K,V x 2 heads x 128 x 2 bytes on every GPU
    assert cm.swap_bytes_per_token(T4P2) == 40 * 2 * 2 * 128 * 2
    assert cm.swap_bytes_per_token(parse_parallel("T8")) == 80 * 2 * 1 * 128 * 2


def test_allreduce_and_copies(cm):
    assert cm.allreduce_s(1e6, 1) == 0
    # the floor (20 us + 2(t-1) ring steps of 5 us) plus 2(t-1)/t of the bytes at 10 GB/s
    assert cm.allreduce_s(1e6, 4) == pytest.approx(2 * 3 / 4 * 1e6 / 10e9 + 20e-6 + 6 * 5e-6)
    assert cm.allreduce_s(1e6, 8) == pytest.approx(2 * 7 / 8 * 1e6 / 10e9 + 20e-6 + 14 * 5e-6)
    assert cm.allreduce_s(16, 2) == pytest.approx(16 / 10e9 + 20e-6 + 2 * 5e-6)  # small: the floor
    assert cm.host_copy_s(12.5e9) == pytest.approx(1.0)


def test_reshard_time(cm):
    p8, t8 = parse_parallel("P8"), parse_parallel("P8")
    assert cm.reshard_s(p8, t8) == 0
    # P8 -> T4P2: every GPU loads its T4P2 shard over its own host link; the last stage's is largest
    assert cm.reshard_s(parse_parallel("P8"), T4P2) == pytest.approx(max(cm.stage_weight_bytes_per_gpu(T4P2)) / 12.5e9)
    # T4P2 -> P8: the last P8 stage (10 layers + LM head + final norm) is the largest shard
    p8_last = (10 * LLAMA2_70B.params_per_layer + 32000 * 8192 + 8192) * 2
    assert cm.reshard_s(T4P2, p8) == pytest.approx(p8_last / 12.5e9)


def test_check_fits_message(cm):
    w = cm.weight_bytes_per_gpu(parse_parallel("T1P2"))
    msg = (f"layout P2: weights need {w / GiB:.1f} GiB per GPU, 21.6 GiB available on l4 "
           f"(24.0 GiB x 0.90)")
    assert f"{w / GiB:.1f}" == "64.2"  # 40 layers x 855.7M + LM head 262.1M params, fp16
    with pytest.raises(SpecError, match=f"^{re.escape(msg)}$"):
        cm.check_fits(parse_parallel("T1P2"))
    with pytest.raises(SpecError, match="needs 16 GPUs, node 8xl4 has 8"):
        cm.check_fits(parse_parallel("D2T8"))
    with pytest.raises(SpecError, match="does not divide the 64 attention heads"):
        cm.check_fits(parse_parallel("T3"))
    cm.check_fits(T4P2)  # 17.2 GiB of weights + KV for > 4096 tokens
    with pytest.raises(SpecError, match=r"^layout T4P2: KV for \d+ tokens fits per replica, 10000000 needed"):
        cm.check_fits(T4P2, min_kv_tokens=10_000_000)


def test_kv_capacity(cm):
    caps = [cm.kv_capacity_tokens(T4P2, u) for u in (0.75, 0.8, 0.85, 0.9, 0.95, 1.0)]
    assert caps == sorted(caps) and caps[0] < caps[-1]
    assert cm.kv_capacity_tokens(parse_parallel("T1P2")) == 0  # weights do not fit
    # by hand, T4P2 at 0.9: the last stage (LM head) is the tighter one
    reserve = 8192 * 2 * (2 * 8192 + 3 * 28672 / 4)  # activations of 8192 tokens
    free = 24 * GiB * 0.9 - cm.weight_bytes_per_gpu(T4P2) - reserve
    assert cm.kv_capacity_tokens(T4P2) == int(free // (40 * 2 * 2 * 128 * 2))


def test_empty_shape_costs_nothing(cm):
    for stage in (0, 1):
        assert cm.stage_time_s(T4P2, stage, BatchShape()) == 0.0
        assert cm.stage_breakdown(T4P2, stage, BatchShape())["total_s"] == 0.0


def test_batch_shape_helpers():
    assert attn_pairs(3) == 1 + 2 + 3
    assert attn_pairs(2, past_tokens=10) == 11 + 12
    s = BatchShape.prefill([3, 2], past_tokens=[0, 10], num_finishing=1) + BatchShape.decode([7, 9])
    assert s == BatchShape(prefill_tokens=5, prefill_attn_pairs=6 + 23, decode_seqs=2,
                           decode_context_tokens=16, sampled_seqs=3)
    assert s.num_tokens == 7


LAYOUTS = [parse_parallel(t) for t in ("T1P8", "T2P4", "T4P2", "T8", "T2P3", "P5")]

chunks = st.lists(st.tuples(st.integers(1, 4096), st.integers(0, 8192)), max_size=4)
contexts = st.lists(st.integers(1, 8192), max_size=64)


def _shape(chunk_list, ctx):
    if not chunk_list and not ctx:
        return BatchShape()
    new, past = zip(*chunk_list) if chunk_list else ((), ())
    return BatchShape.prefill(new, past) + BatchShape.decode(ctx)


@settings(max_examples=150, deadline=None)
@given(chunks, contexts, chunks, contexts, st.sampled_from(LAYOUTS))
def test_more_work_never_costs_less(c1, d1, c2, d2, layout):
    cm = CostModel(LLAMA2_70B, NODE)
    base = _shape(c1, d1)
    more = base + _shape(c2, d2)
    for stage in range(layout.pp):
        t0, t1 = cm.stage_time_s(layout, stage, base), cm.stage_time_s(layout, stage, more)
        assert t1 >= t0
        assert cm.stage_breakdown(layout, stage, more)["total_s"] == pytest.approx(t1, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 10**6), st.sampled_from([2, 4, 8]))
def test_comm_monotone(a, b, tp):
    cm = CostModel(LLAMA2_70B, NODE)
    lo, hi = sorted((a, b))
    assert cm.allreduce_s(lo, tp) <= cm.allreduce_s(hi, tp)
    assert cm.pp_send_s(T4P2, lo) <= cm.pp_send_s(T4P2, hi)


# ------------------------------------------------------------------------------------------
# The paper's observations on the catalog's profiles.
#
# Per-batch time = CostModel.pipeline_time_s with m = pp micro-batches of 16/pp sequences: the
# first micro-batch crosses every stage, each later one leaves the slowest stage one stage-time
# after the previous one, i.e. (pp + m - 1) stage times for equal stages.

FIG1_LAYOUTS = ["T1P8", "T2P4", "T4P2", "T8P1"]


def _batch_times(model: str, node: str, prompt_tokens: int = 1000, context_tokens: int = 1000):
    cm = CostModel(load_model(model), load_node(node))
    prefill, decode = {}, {}
    for text in FIG1_LAYOUTS:
        layout = parse_parallel(text)
        per_mb = 16 // layout.pp
        prefill[text] = cm.pipeline_time_s(layout, BatchShape.prefill([prompt_tokens] * per_mb))
        decode[text] = cm.pipeline_time_s(layout, BatchShape.decode([context_tokens] * per_mb))
    return prefill, decode


def test_figure1_prefill_prefers_pp_decode_prefers_tp():
    # LLaMA2-13B on 8xL4 (PCIe), global batch 16: prefill grows with TP, decode grows with PP
    prefill, decode = _batch_times("llama2-13b", "8xl4")
    assert min(prefill, key=prefill.get) == "T1P8" and max(prefill, key=prefill.get) == "T8P1"
    assert min(decode, key=decode.get) == "T8P1" and max(decode, key=decode.get) == "T1P8"
    # and monotonically so along the sweep, as in the paper's figure
    p, d = [prefill[t] for t in FIG1_LAYOUTS], [decode[t] for t in FIG1_LAYOUTS]
    assert p == sorted(p) and d == sorted(d, reverse=True)


@pytest.mark.parametrize("model", ["llama2-13b", "llama2-70b"])
def test_nvlink_makes_tp_prefill_competitive(model):
    nvlink, _ = _batch_times(model, "8xa100-40g-nvlink")
    pcie, _ = _batch_times(model, "8xa100-40g-pcie")
    assert nvlink["T8P1"] <= 1.3 * nvlink["T1P8"]
    assert pcie["T8P1"] >= 3 * pcie["T1P8"]
    # PP prefill hardly uses the GPU-GPU link, so the interconnect barely changes it
    assert pcie["T1P8"] == pytest.approx(nvlink["T1P8"], rel=0.05)


def test_check_fits_on_catalog_l4():
    cm = CostModel(load_model("llama2-70b"), load_node("8xl4"))
    expected = "layout P2: weights need 64.2 GiB per GPU, 20.2 GiB available on l4 (22.5 GiB x 0.90)"
    with pytest.raises(SpecError, match=f"^{re.escape(expected)}$"):
        cm.check_fits(parse_parallel("T1P2"))
    for text in ("T4P2", "T8", "P8", "T2P4"):
        cm.check_fits(parse_parallel(text))


def test_non_gemm_kernels_take_their_own_floor():
    """With ``non_gemm_kernel_s`` a layer's 4 GEMM kernels keep ``kernel_overhead_s`` while its 6 small
    kernels and its prefill-attention kernel take the other floor; without it, one floor for all."""
    split = NODE.model_copy(update={"gpu": L4.model_copy(update={"non_gemm_kernel_s": 2e-6})})
    one, two = CostModel(LLAMA2_70B, NODE).stages(T4P2)[0], CostModel(LLAMA2_70B, split).stages(T4P2)[0]
    assert one.lin_kernel_s == pytest.approx(40 * 10 * 5e-6)
    assert two.lin_kernel_s == pytest.approx(40 * (4 * 5e-6 + 6 * 2e-6))
    assert (one.attn_kernel_s, two.attn_kernel_s) == (pytest.approx(40 * 5e-6), pytest.approx(40 * 2e-6))
    # a lone GEMM (and so the LM head) keeps the GEMM floor
    rf = CostModel(LLAMA2_70B, split).roofline
    assert rf.gemm_s(1, 8192, 1024, 2) == pytest.approx(8192 * 1024 * 2 / HBM + 5e-6)
