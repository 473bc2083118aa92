"""Cost model with a measured profile: schema, monotone interpolation, table look-ups, fallbacks,
and the committed CPU profile driving ``simulate``. Torch-free (the simulator side)."""

from __future__ import annotations

import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from seesaw.catalog import CatalogError, list_catalog, load_measured, load_model, measured_node
from seesaw.core import (
    AttentionTable, CommTable, CopyTable, MeasuredProfile, OpTable, ReshardTable, SeesawPolicy, SpecError,
    StepTable, SwapTable, VllmPolicy, parse_parallel,
)
from seesaw.workload import load_workload
from simulator.cost import BatchShape, CostModel, Curve, Surface
from simulator.sim import simulate

TINY = load_model("tiny")  # 4 layers, h 64, 4 heads / 2 KV heads of 16, i 128, vocab 260, fp32
TOKENS = (1, 4, 16, 64)


def lin(a: float) -> tuple[float, ...]:
    """A table linear in tokens with a floor: a * (8 + n) microseconds."""
    return tuple(a * (8 + n) * 1e-6 for n in TOKENS)


def tiny_profile(**over) -> MeasuredProfile:
    """A hand-made profile of the tiny model's T1 and T2 shapes, every table a simple formula."""
    ops = [
        # T1: qkv [64 -> (4 + 2*2) * 16 = 128], o [64 -> 64], gate/up [64 -> 256], down [128 -> 64]
        OpTable(op="linear", dims=(64, 128), tokens=TOKENS, time_s=lin(1)),
        OpTable(op="linear", dims=(64, 64), tokens=TOKENS, time_s=lin(2)),
        OpTable(op="linear", dims=(64, 256), tokens=TOKENS, time_s=lin(3)),
        OpTable(op="linear", dims=(128, 64), tokens=TOKENS, time_s=lin(4)),
        OpTable(op="linear", dims=(64, 260), tokens=TOKENS, time_s=lin(5)),  # LM head
        OpTable(op="layer_misc", dims=(64, 64, 32, 128), tokens=TOKENS, time_s=lin(6)),
        OpTable(op="embed_rope", dims=(64, 16, 260), tokens=TOKENS, time_s=lin(7)),
        # T2 (measured on 2 ranks): qkv [64 -> (2 + 2) * 16], o [32 -> 64], gate/up [64 -> 128], down [64 -> 64]
        OpTable(op="linear", dims=(64, 64), ranks=2, tokens=TOKENS, time_s=lin(20)),
        OpTable(op="linear", dims=(32, 64), ranks=2, tokens=TOKENS, time_s=lin(21)),
        OpTable(op="linear", dims=(64, 128), ranks=2, tokens=TOKENS, time_s=lin(22)),
        OpTable(op="linear", dims=(64, 130), ranks=2, tokens=TOKENS, time_s=lin(23)),
    ]
    attention = [
        AttentionTable(kind="prefill", num_heads=4, num_kv_heads=2, head_dim=16, sizes=(2, 16, 64),
                       context_tokens=(2, 16, 64, 256),
                       time_s=((10e-6, 12e-6, 20e-6, 50e-6), (15e-6, 15e-6, 30e-6, 80e-6),
                               (40e-6, 40e-6, 40e-6, 150e-6))),
        AttentionTable(kind="decode", num_heads=4, num_kv_heads=2, head_dim=16, sizes=(1, 4, 16),
                       context_tokens=(16, 64, 256),
                       time_s=((10e-6, 11e-6, 14e-6), (12e-6, 13e-6, 18e-6), (15e-6, 16e-6, 25e-6))),
    ]
    collectives = [
        CommTable(op="all_reduce", ranks=2, size_bytes=(4, 1024, 1 << 20), time_s=(100e-6, 120e-6, 2e-3)),
        CommTable(op="all_gather", ranks=2, size_bytes=(4, 1024, 1 << 20), time_s=(150e-6, 170e-6, 3e-3)),
        CommTable(op="send_recv", ranks=2, size_bytes=(4, 1024, 1 << 20), time_s=(50e-6, 60e-6, 1e-3)),
        CommTable(op="broadcast", ranks=2, size_bytes=(8, 512), time_s=(80e-6, 90e-6)),
    ]
    data = dict(
        name="tiny-hand", device="cpu", device_name="test CPU", dtype="float32", torch_version="0",
        threads_per_rank=1, num_ranks=2, cpu_count=2, memory_bytes=16e9, date="2026-01-01T00:00:00",
        ops=tuple(ops), attention=tuple(attention), collectives=tuple(collectives),
        copies=(CopyTable(kind="h2h", size_bytes=(4096, 1 << 20, 1 << 24), time_s=(1e-6, 100e-6, 2e-3)),),
        step_overhead=(StepTable(vocab_size=260, seqs=(1, 4, 16), time_s=(300e-6, 400e-6, 900e-6)),),
    )
    data.update(over)
    return MeasuredProfile(**data)


@pytest.fixture(scope="module")
def prof():
    return tiny_profile()


@pytest.fixture(scope="module")
def node(prof):
    return measured_node(prof, 2)


@pytest.fixture(scope="module")
def cm(prof, node):
    return CostModel(TINY, node, measured=prof)


# --------------------------------------------------------------------------------------------
# schema


def test_schema_yaml_round_trip(prof, tmp_path):
    path = tmp_path / "tiny-hand.yaml"
    path.write_text(yaml.safe_dump(prof.model_dump(mode="json"), sort_keys=False))
    assert load_measured(path) == prof
    assert MeasuredProfile.model_validate(yaml.safe_load(path.read_text())) == prof
    assert prof.dtype_bytes == 4


@pytest.mark.parametrize("bad, match", [
    (dict(tokens=(4, 2), time_s=(1e-6, 2e-6)), "strictly increasing"),
    (dict(tokens=(1, 2), time_s=(1e-6,)), "time_s has 1 values"),
    (dict(tokens=(1, 2), time_s=(1e-6, 0.0)), "greater than 0"),
    (dict(tokens=(1,), time_s=(1e-6,), color="red"), "Extra inputs"),
])
def test_op_table_rejects_bad_tables(bad, match):
    with pytest.raises(ValidationError, match=match):
        OpTable(op="linear", dims=(2, 2), **bad)


def test_attention_table_shape_checked():
    with pytest.raises(ValidationError, match="2 rows of 3 values"):
        AttentionTable(kind="decode", num_heads=1, num_kv_heads=1, head_dim=8, sizes=(1, 2),
                       context_tokens=(1, 2, 3), time_s=((1e-6, 2e-6, 3e-6),))


def test_bad_profile_file_is_one_line_catalog_error(prof, tmp_path):
    data = prof.model_dump(mode="json")
    data["collectives"][0]["size_bytes"] = [4, 4, 8]
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(CatalogError, match=r"bad.yaml: field 'collectives.0': .*strictly increasing") as e:
        load_measured(path)
    assert "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# interpolation


def test_curve_grid_points_log_log_between_clamped_below_proportional_above():
    c = Curve((1, 4, 16), (2e-6, 8e-6, 20e-6))
    for x, y in zip((1, 4, 16), (2e-6, 8e-6, 20e-6)):
        assert c(x) == pytest.approx(y, rel=1e-12)
    assert c(2) == pytest.approx(math.sqrt(2e-6 * 8e-6), rel=1e-12)  # geometric midpoint
    assert c(8) == pytest.approx(math.sqrt(8e-6 * 20e-6), rel=1e-12)
    assert c(0.5) == c(0) == 2e-6  # the latency floor
    assert c(32) == pytest.approx(40e-6) and c(160) == pytest.approx(200e-6)


def test_curve_makes_noisy_medians_monotone():
    c = Curve((1, 2, 4, 8), (5e-6, 3e-6, 4e-6, 10e-6))  # a slow first point (cold cache)
    assert c.ys == pytest.approx([4e-6, 4e-6, 4e-6, 10e-6])  # pooled, not lifted to 5e-6
    assert Curve((1, 2), (1.0, 2.0)).ys == [1.0, 2.0]  # monotone input is kept


sizes = st.lists(st.integers(1, 1 << 20), min_size=1, max_size=8, unique=True).map(sorted)
noisy = st.floats(1e-7, 1.0, allow_nan=False)


@settings(max_examples=150, deadline=None)
@given(sizes, st.data(), st.lists(st.floats(0.1, 4e6), min_size=2, max_size=30))
def test_curve_monotone_everywhere(xs, data, queries):
    ys = data.draw(st.lists(noisy, min_size=len(xs), max_size=len(xs)))
    c = Curve(xs, ys)
    values = [c(q) for q in sorted(queries)]
    assert all(b >= a * (1 - 1e-12) for a, b in zip(values, values[1:]))
    assert all(v > 0 for v in values)


@settings(max_examples=100, deadline=None)
@given(sizes, sizes, st.data(), st.floats(0.5, 3e6), st.floats(0.5, 3e6), st.floats(1.0, 4.0))
def test_surface_monotone_in_each_axis(xs, ys, data, x, y, step):
    z = [data.draw(st.lists(noisy, min_size=len(ys), max_size=len(ys))) for _ in xs]
    s = Surface(xs, ys, z)
    base = s(x, y)
    assert s(x * step, y) >= base * (1 - 1e-12)
    assert s(x, y * step) >= base * (1 - 1e-12)


def test_surface_grid_points_and_extrapolation():
    z = ((1.0, 2.0, 4.0), (3.0, 5.0, 9.0))
    s = Surface((2, 8), (1, 4, 16), z)
    for i, x in enumerate((2, 8)):
        for j, y in enumerate((1, 4, 16)):
            assert s(x, y) == pytest.approx(z[i][j], rel=1e-12)
    assert s(4, 4) == pytest.approx(math.sqrt(2.0 * 5.0), rel=1e-12)
    assert s(1, 0.5) == 1.0
    assert s(16, 32) == pytest.approx(9.0 * 2 * 2)  # proportional on both axes


# --------------------------------------------------------------------------------------------
# cost model look-ups


def test_gemm_allreduce_send_copy_read_their_tables(cm):
    assert cm.gemm_time_s(4, 64, 256) == pytest.approx(3 * 12e-6)
    assert cm.gemm_time_s(8, 64, 256) == pytest.approx(math.sqrt(3 * 12e-6 * 3 * 24e-6))  # 4 < 8 < 16
    assert cm.allreduce_s(1024, 2) == pytest.approx(120e-6)
    assert cm.allreduce_s(1024, 1) == 0.0
    # pp_send: hidden 64 fp32 = 256 bytes per token; 4 tokens = 1024 bytes
    assert cm.pp_send_s(parse_parallel("P2"), 4) == pytest.approx(60e-6)
    assert cm.host_copy_s(1 << 20) == pytest.approx(100e-6)
    assert cm.host_copy_s(1 << 25) == pytest.approx(4e-3)  # proportional past the grid


def test_decode_step_t1_by_hand(cm):
    # 4 sequences of 64 context tokens each: every table is hit at a grid point
    t = cm.stage_breakdown(parse_parallel("T1"), 0, BatchShape.decode([64] * 4))
    layers = 4 * sum(a * (8 + 4) * 1e-6 for a in (1, 2, 3, 4, 6))  # GEMMs + misc of 4 layers
    assert t["compute_s"] == pytest.approx(layers + 7 * 12e-6 + 5 * 12e-6)  # + embed/rope + LM head
    assert t["attention_s"] == pytest.approx(4 * 18e-6)  # decode (4 seqs, 256 context) per layer
    assert t["comm_s"] == 0.0
    assert t["overhead_s"] == pytest.approx(400e-6)  # the engine step for 4 sequences
    assert cm.stage_time_s(parse_parallel("T1"), 0, BatchShape.decode([64] * 4)) == pytest.approx(t["total_s"])


def test_prefill_uses_per_sequence_attention(cm):
    T1 = parse_parallel("T1")
    # two whole prompts of 16 tokens: 2 calls per layer of prefill(16, 16)
    shape = BatchShape.prefill([16, 16])
    assert cm.stage_breakdown(T1, 0, shape)["attention_s"] == pytest.approx(4 * 2 * 15e-6)
    # without the sequence count it is estimated from tokens and pairs (same answer here)
    anon = BatchShape(prefill_tokens=32, prefill_attn_pairs=shape.prefill_attn_pairs, sampled_seqs=2)
    assert cm.stage_breakdown(T1, 0, anon)["attention_s"] == pytest.approx(4 * 2 * 15e-6)
    # a later chunk: 16 new tokens after 48 -> context 64
    chunk = BatchShape.prefill([16], past_tokens=[48])
    assert cm.stage_breakdown(T1, 0, chunk)["attention_s"] == pytest.approx(4 * 30e-6)


def test_t2_uses_two_rank_tables_and_collectives(cm):
    T2 = parse_parallel("T2")
    t = cm.stage_breakdown(T2, 0, BatchShape.decode([64] * 4))
    # per rank: QKV [64 -> 64] and down [64 -> 64] share a table, O [32 -> 64], gate/up [64 -> 128];
    # no T2 layer_misc or embed_rope table (left out); LM head [64 -> 130]. The missing small
    # kernels from the node's roofline: per layer 6 kernels of its kernel time (the fastest table
    # entry, 9 us) plus their bytes per token, (4 x 64 norms + 6 x 64 adds + 2 x (2 + 1) x 16 RoPE
    # + 3 x 64 activation) x 4 bytes = 3712, at its streaming rate (the one-row [64 -> 128] GEMM:
    # 64 x 128 x 4 bytes in 9 us)
    misc = 4 * 6 * 9e-6 + 4 * 4 * 3712 / (64 * 128 * 4 / 9e-6)
    assert t["compute_s"] == pytest.approx(4 * (20 + 21 + 22 + 20) * 12e-6 + 23 * 12e-6 + misc)
    # 9 all-reduces of 4 tokens x 64 x 4 bytes = 1024 bytes, a logits gather of 4 x 130 x 4 bytes,
    # the driver's 32 KiB step message to the other rank
    gather = Curve((4, 1024, 1 << 20), (150e-6, 170e-6, 3e-3))(4 * 130 * 4)
    control = Curve((8, 512), (80e-6, 90e-6))(1 << 15)
    assert t["comm_s"] == pytest.approx(9 * 120e-6 + gather + control)


def test_pipeline_stages_pay_the_driver_message_and_the_token_reply(cm):
    P2 = parse_parallel("P2")
    shape = BatchShape.decode([64] * 4)
    first, last = (cm.stage_breakdown(P2, s, shape) for s in (0, 1))
    bcast = Curve((8, 512), (80e-6, 90e-6))
    assert first["comm_s"] == pytest.approx(bcast(1 << 15))  # step message to the replica
    assert last["comm_s"] == pytest.approx(bcast(8 * 4))  # 4 sampled ids back to rank 0
    # each stage pays its layers' share of the driver's step (2 of 4 layers)
    assert first["overhead_s"] == pytest.approx(400e-6) == last["overhead_s"]  # each stage: a whole step's bookkeeping


def test_missing_tables_fall_back_to_the_roofline(node):
    empty = tiny_profile(ops=(), attention=(), collectives=(), copies=(), step_overhead=())
    bare = measured_node(tiny_profile(), 2)  # the same roofline figures
    roof, meas = CostModel(TINY, bare), CostModel(TINY, bare, measured=empty)
    for layout in ("T1", "T2", "P2"):
        lay = parse_parallel(layout)
        for shape in (BatchShape.decode([100] * 8), BatchShape.prefill([50, 30])):
            for s in range(lay.pp):
                assert meas.stage_time_s(lay, s, shape) == pytest.approx(roof.stage_time_s(lay, s, shape), rel=1e-9)
    assert meas.allreduce_s(4096, 2) == roof.allreduce_s(4096, 2)
    assert meas.host_copy_s(1e6) == roof.host_copy_s(1e6)


def test_dtype_mismatch_is_a_clear_error(prof, node):
    with pytest.raises(SpecError, match="dtype_bytes=2 .* float32"):
        CostModel(TINY.model_copy(update={"dtype_bytes": 2}), node, measured=prof)


def test_measured_node_figures(prof):
    n = measured_node(prof)
    assert n.num_gpus == 2 and n.interconnect == "loopback"
    assert n.gpu.memory_bytes == pytest.approx(16e9 * 0.5 / 2)
    assert n.host_memory_bytes_per_gpu == pytest.approx(16e9 * 0.5 / 2)
    assert n.host_link_bandwidth_bytes_per_s == pytest.approx((1 << 24) / 2e-3)
    assert n.gpu_link_bandwidth_bytes_per_s == pytest.approx(2 * 1 / 2 * (1 << 20) / 2e-3)
    assert n.allreduce_latency_s == pytest.approx(100e-6 / 2)
    assert n.p2p_latency_s == pytest.approx(50e-6)
    assert n.step_overhead_s == pytest.approx(300e-6)
    assert measured_node(prof, 3, device_memory_fraction=0.25).gpu.memory_bytes == pytest.approx(16e9 / 4 / 3)
    with pytest.raises(CatalogError, match="num_ranks"):
        measured_node(prof, 0)


@pytest.mark.parametrize("layout", ["T1", "T2", "P2", "D2"])
def test_simulate_tiny_on_a_measured_two_rank_node(prof, layout):
    node = measured_node(prof, 1 if layout == "T1" else 2)
    reqs = load_workload("constant", num_requests=40, input_len=48, output_len=16)
    policy = VllmPolicy(layout=parse_parallel(layout), max_num_seqs=16)
    r = simulate(TINY, node, policy, reqs, cost=CostModel(TINY, node, measured=prof))
    assert r.num_requests == 40 and r.total_output_tokens == 40 * 16
    assert 0 < r.elapsed_time < 10


# --------------------------------------------------------------------------------------------
# the committed profile of this CPU


COMMITTED = [n for n in list_catalog()["measured"] if n.startswith("cpu-")]


@pytest.mark.skipif(not COMMITTED, reason="no committed CPU profile")
@pytest.mark.parametrize("model_name, layouts", [("tiny", ["T1", "T2"]), ("smollm2-135m", ["T1", "T3"])])
def test_committed_profile_covers_tiny_and_smollm2(model_name, layouts):
    prof = load_measured(COMMITTED[0])
    model = load_model(model_name).model_copy(update={"dtype_bytes": prof.dtype_bytes})
    for layout in layouts:
        lay = parse_parallel(layout)
        node = measured_node(prof, lay.world_size)
        cm = CostModel(model, node, measured=prof)
        m = cm.stages(lay)[0].measured
        assert m.missing_gemms == [] and m.layers_curve is not None and m.embed is not None
        assert m.prefill is not None and m.decode is not None and m.head is not None
        assert m.step is not None
        if lay.tp > 1:
            assert m.allreduce is not None and m.gather is not None
        reqs = load_workload("constant", num_requests=16, input_len=32, output_len=8)
        r = simulate(model, node, VllmPolicy(layout=lay, max_num_seqs=8), reqs, cost=cm)
        assert r.elapsed_time > 0 and r.total_output_tokens == 16 * 8


def test_dp_replicas_pay_the_driver_messages_t1_does_not(cm):
    shape = BatchShape.decode([64] * 4)
    t1 = cm.stage_breakdown(parse_parallel("T1"), 0, shape)
    d2 = cm.stage_breakdown(parse_parallel("D2"), 0, shape)  # after T1: not a cached T1 stage
    bcast = Curve((8, 512), (80e-6, 90e-6))
    assert t1["comm_s"] == 0.0
    assert d2["comm_s"] == pytest.approx(bcast(1 << 15) + bcast(8 * 4))


def test_measured_handoffs_are_rendezvous_the_receiver_waits():
    """With a measured ``handoff`` table the second stage waits through the step message and the
    activations it receives (the engine's receiver asks late, and a transfer starts only then),
    and the sampled ids cost the driver; a slow hand-off then sets the pace of the pipeline."""
    hand = CommTable(op="handoff", ranks=2, size_bytes=(8, 1 << 20), time_s=(5e-3, 5e-3))
    prof = tiny_profile(collectives=tiny_profile().collectives + (hand,))
    node = measured_node(prof, 2)
    cm = CostModel(TINY, node, measured=prof)
    eager = CostModel(TINY, node, measured=tiny_profile())  # no hand-off table: eager sends
    assert cm.handoffs_rendezvous and not eager.handoffs_rendezvous
    P2, T2 = parse_parallel("P2"), parse_parallel("T2")
    shape = BatchShape.decode([64])
    first, last = (cm.stage_breakdown(P2, s, shape) for s in (0, 1))
    assert first["comm_s"] == 0.0  # rank 0 sends the step message and computes on
    assert last["comm_s"] == pytest.approx(5e-3)  # the second stage waits for it; the reply is not its
    assert cm.pp_reply_s(P2, 1) == pytest.approx(5e-3) and cm.pp_reply_s(T2, 1) == 0.0
    assert eager.pp_reply_s(P2, 1) == 0.0
    # two requests: two one-sequence micro-batches in flight. Per micro-batch the second stage
    # waits 5 ms for the message (in its stage time) and 5 ms for the activations, then computes:
    # the pipeline's pace, since the round trip (both stages, activations, ids back: ~18 ms) over
    # two micro-batches is shorter.
    reqs = load_workload("constant", num_requests=2, input_len=16, output_len=33)
    r = simulate(TINY, node, VllmPolicy(layout=P2, max_num_seqs=8), reqs, cost=cm)
    steps = r.steps[r.steps.kind == "decode"]
    assert len(steps) == 64 and (steps.num_seqs == 1).all()
    stage1 = cm.stage_time_s(P2, 1, BatchShape.decode([32]))
    assert r.time_by_phase["decode"] == pytest.approx(64 * (5e-3 + stage1), rel=0.05)


def test_seesaw_swaps_and_reshards_read_their_tables_else_the_host_copy():
    """A swap step costs the engine's measured step for the layout's box (P2: 2 layers x 2 KV
    heads; T2: 4 layers x 1), by tokens; a box without a table uses the measured steps of its
    kind by the bytes a rank moves (the nearest rank count), and only a profile without any
    falls back to copying its bytes. Re-shard tables of several models on the same ranks make
    one curve by bytes loaded."""
    swaps = (SwapTable(kind="out", num_layers=2, num_kv_heads=2, head_dim=16, ranks=2, tokens=(64, 4096),
                       time_s=(2e-3, 8e-3)),
             SwapTable(kind="in", num_layers=4, num_kv_heads=1, head_dim=16, ranks=2, tokens=(64, 4096),
                       time_s=(3e-3, 9e-3)))
    reshards = (ReshardTable(ranks=2, size_bytes=(1000, 10**6), time_s=(2e-3, 20e-3)),
                ReshardTable(ranks=2, size_bytes=(10**6,), time_s=(40e-3,)))
    prof = tiny_profile(swaps=swaps, reshards=reshards)
    node = measured_node(prof, 2)
    cm = CostModel(TINY, node, measured=prof)
    plain = CostModel(TINY, node, measured=tiny_profile())
    P2, T2 = parse_parallel("P2"), parse_parallel("T2")
    assert cm.swap_box(P2) == (2, 2, 16) and cm.swap_box(T2) == (4, 1, 16)
    assert cm.swap_s(P2, "out", 64) == pytest.approx(2e-3) and cm.swap_s(P2, "out", 8192) == pytest.approx(16e-3)
    assert cm.swap_s(T2, "in", 4096) == pytest.approx(9e-3) and cm.swap_s(T2, "in", 0) == 0.0
    per_token = plain.swap_bytes_per_token(P2)
    assert per_token == cm.swap_bytes_per_token(T2) == 2 * 2 * 2 * 16 * 4  # K and V, fp32: both boxes 512 B
    assert cm.swap_s(P2, "in", 4096) == pytest.approx(9e-3)  # no P2 swap-in table: T2's, at the same bytes
    T2P2 = parse_parallel("T2P2")  # 4 ranks, box 2 layers x 1 KV head: 256 B a token, the 2-rank tables
    assert cm.swap_bytes_per_token(T2P2) == 256 and cm.swap_box(T2P2) == (2, 1, 16)
    out_2048 = cm.swap_s(P2, "out", 2048)  # the same bytes as 4096 tokens of T2P2
    assert cm.swap_s(T2P2, "out", 4096) == pytest.approx(out_2048) and 2e-3 < out_2048 < 8e-3
    assert plain.swap_s(P2, "out", 4096) == pytest.approx(plain.host_copy_s(4096 * per_token))  # no tables: bytes
    assert plain.swap_s(T2P2, "in", 4096) == pytest.approx(plain.host_copy_s(4096 * 256))
    # one curve on 2 ranks: (1000 B, 2 ms), (1 MB, mean of 20 and 40 ms)
    assert cm.tables.reshard(2).ys == [2e-3, pytest.approx(30e-3)]
    bytes_t2 = cm.weight_bytes_per_gpu(T2)
    assert cm.reshard_s(P2, T2) == pytest.approx(cm.tables.reshard(2)(bytes_t2))
    assert cm.reshard_s(P2, P2) == 0.0
    assert plain.reshard_s(P2, T2) == pytest.approx(plain.host_copy_s(bytes_t2))
    # the simulator charges them: a Seesaw run's re-shard and swap-stall phases grow
    reqs = load_workload("constant", num_requests=8, input_len=64, output_len=4)
    pol = SeesawPolicy(prefill_layout=P2, decode_layout=T2, max_num_seqs=8, host_kv_bytes=1e9)
    fast, slow = (simulate(TINY, node, pol, reqs, cost=c) for c in (plain, cm))
    f, w = fast.extra, slow.extra
    assert w["reshard_time"] > f["reshard_time"] and w["swap_stall_time"] > f["swap_stall_time"]
    assert w["num_transitions"] == 1 and w["reshard_time"] == pytest.approx(cm.reshard_s(P2, T2))  # one P2 -> T2



def test_a_lone_pipeline_micro_batch_uses_the_tables_of_one_busy_stage():
    """P2's stages are TP-1 shards: with tables timed on one rank and (10x slower here) on two
    ranks at once, a stage running while the other is idle is priced from the one-rank tables.
    In the simulator a micro-batch that is the only forward in flight runs alone on every stage
    (no step is issued before a completion); two in flight share the machine."""
    busy_ops = tuple(OpTable(op=t.op, dims=t.dims, ranks=2, tokens=t.tokens, time_s=tuple(10 * x for x in t.time_s))
                     for t in tiny_profile().ops if t.ranks == 1)
    prof = tiny_profile(ops=tiny_profile().ops + busy_ops)
    node = measured_node(prof, 2)
    cm = CostModel(TINY, node, measured=prof)
    P2, T1 = parse_parallel("P2"), parse_parallel("T1")
    shape = BatchShape.prefill([64])
    alone, shared = cm.stage_time_s(P2, 0, shape, alone=True), cm.stage_time_s(P2, 0, shape)
    assert shared > 3 * alone
    assert cm.stage_time_s(T1, 0, shape, alone=True) == cm.stage_time_s(T1, 0, shape)  # one stage: no-op
    # one request: its prefill is the only forward in flight -> both stages alone
    one = simulate(TINY, node, VllmPolicy(layout=P2, max_num_seqs=8), load_workload(
        "constant", num_requests=1, input_len=64, output_len=1), cost=cm)
    lone = sum(cm.stage_time_s(P2, s, shape, alone=True) for s in (0, 1)) + cm.pp_send_s(P2, 64)
    assert one.time_by_phase["prefill"] == pytest.approx(lone, rel=1e-6)
    # two requests in two micro-batches: both in flight, the stages priced as sharing the machine
    two = simulate(TINY, node, VllmPolicy(layout=P2, max_num_seqs=8, max_num_batched_tokens=100), load_workload(
        "constant", num_requests=2, input_len=64, output_len=1), cost=cm)
    assert two.time_by_phase["prefill"] > 3 * one.time_by_phase["prefill"]
