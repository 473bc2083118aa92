"""Spec validation, layout strings, and derived model quantities checked by hand."""

import json

import pytest
from hypothesis import given, strategies as st
from pydantic import TypeAdapter, ValidationError

from seesaw.core import (
    GpuSpec, ModelSpec, ParallelConfig, Plan, PolicySpec, SeesawPolicy, SpecError, VllmPolicy,
    format_layout, parse_layout, parse_parallel,
)

LLAMA2_70B = dict(
    name="llama2-70b", num_hidden_layers=80, hidden_size=8192, num_attention_heads=64,
    num_key_value_heads=8, intermediate_size=28672, vocab_size=32000,
)


def test_llama2_70b_parameters_and_kv_by_hand():
    m = ModelSpec(**LLAMA2_70B)
    # attention: q and o are 8192 x 8192; k and v are 8192 x (8 heads * 128) = 8192 x 1024
    attn = 2 * 8192 * 8192 + 2 * 8192 * 1024                # 150,994,944
    mlp = 3 * 8192 * 28672                                   # 704,643,072
    per_layer = attn + mlp + 2 * 8192                        # + two RMSNorm vectors
    total = 80 * per_layer + 2 * 32000 * 8192 + 8192         # embed + untied head + final norm
    assert m.params_per_layer == per_layer
    assert m.num_parameters == total == 68_976_648_192       # ~69B
    # KV: K and V, 80 layers, 8 KV heads of 128, 2 bytes (fp16) -> 327,680 B = 320 KiB
    assert m.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2 == 320 * 1024
    assert m.weight_bytes == 2 * total


def test_model_rejects_bad_shapes():
    with pytest.raises(ValidationError):
        ModelSpec(**{**LLAMA2_70B, "num_key_value_heads": 7})
    with pytest.raises(ValidationError):
        ModelSpec(**{**LLAMA2_70B, "num_hidden_layers": 0})
    with pytest.raises(ValidationError, match="extra"):
        ModelSpec(**LLAMA2_70B, hidden_sizee=1)


def test_model_from_hf_config_ignores_unknown_keys():
    cfg = {**LLAMA2_70B, "architectures": ["LlamaForCausalLM"], "torch_dtype": "float16"}
    cfg.pop("name")
    m = ModelSpec.from_hf_config(cfg, name="x")
    assert m.num_hidden_layers == 80 and m.d_head == 128


def test_gpu_spec_units_and_bounds():
    with pytest.raises(ValidationError):
        GpuSpec(name="bad", memory_bytes=24e9, hbm_bandwidth_bytes_per_s=600e9, peak_flops=-1)
    with pytest.raises(ValidationError):
        GpuSpec(name="bad", memory_bytes=24e9, hbm_bandwidth_bytes_per_s=600e9, peak_flops=1e14,
                compute_efficiency=1.5)


@pytest.mark.parametrize("text,expected", [
    ("P8", (1, 1, 8)), ("T4P2", (1, 4, 2)), ("D2T4", (2, 4, 1)), ("d2t4p1", (2, 4, 1)),
    ("T1", (1, 1, 1)), (" t2 p2 ", (1, 2, 2)),
])
def test_parse_parallel(text, expected):
    c = parse_parallel(text)
    assert (c.dp, c.tp, c.pp) == expected


@pytest.mark.parametrize("bad", ["", "X4", "T0", "T4T2", "T", "4T", "T4-P2", "P8->T4->T2"])
def test_parse_layout_rejects(bad):
    with pytest.raises(SpecError):
        parse_layout(bad)


def test_seesaw_layout_pair():
    c_p, c_d = parse_layout("P8->T4P2")
    assert (c_p.pp, c_d.tp, c_d.pp) == (8, 4, 2)
    assert format_layout((c_p, c_d)) == "P8->T4P2"
    with pytest.raises(SpecError, match="same DP"):
        parse_layout("D2P4->T8")
    with pytest.raises(SpecError, match="GPUs"):
        parse_layout("P4->T8")


@given(st.integers(1, 8), st.integers(1, 8), st.integers(1, 8))
def test_layout_string_round_trip(dp, tp, pp):
    c = ParallelConfig(dp=dp, tp=tp, pp=pp)
    assert parse_parallel(str(c)) == c
    assert parse_parallel(c.full_name()) == c


@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 4))
def test_rank_order_is_tp_contiguous_pp_strided(dp, tp, pp):
    c = ParallelConfig(dp=dp, tp=tp, pp=pp)
    ranks = [c.rank(d, t, p) for d in range(dp) for p in range(pp) for t in range(tp)]
    assert ranks == list(range(c.world_size))
    assert all(c.coords(c.rank(d, t, p)) == (d, t, p) for d in range(dp) for t in range(tp) for p in range(pp))


def test_check_model_divisibility():
    m = ModelSpec(**LLAMA2_70B)
    parse_parallel("T8").check_model(m)
    with pytest.raises(SpecError, match="attention heads"):
        parse_parallel("T3").check_model(m)
    with pytest.raises(SpecError, match="layers"):
        parse_parallel("P81").check_model(m)


def test_policy_union_round_trips_through_json():
    adapter = TypeAdapter(PolicySpec)
    for pol in (VllmPolicy(layout="T4P2", enable_chunked_prefill=True),
                SeesawPolicy(prefill_layout="P8", decode_layout="T4P2", host_kv_bytes=1e9)):
        again = adapter.validate_json(pol.model_dump_json())
        assert again == pol
        assert json.loads(pol.model_dump_json())["kind"] == pol.kind
    with pytest.raises(ValidationError):
        adapter.validate_python({"kind": "orca", "layout": "T1"})
    with pytest.raises(ValidationError):
        SeesawPolicy(prefill_layout="D2P4", decode_layout="T8")


def test_plan_round_trip():
    m = ModelSpec(**LLAMA2_70B)
    gpu = GpuSpec(name="l4", memory_bytes=24e9, hbm_bandwidth_bytes_per_s=300e9, peak_flops=121e12)
    from seesaw.core import NodeSpec
    node = NodeSpec(name="8xl4", gpu=gpu, num_gpus=8, interconnect="pcie",
                    gpu_link_bandwidth_bytes_per_s=16e9, host_link_bandwidth_bytes_per_s=16e9,
                    host_memory_bytes_per_gpu=80e9)
    plan = Plan(model=m, node=node, policy=SeesawPolicy(prefill_layout="P8", decode_layout="T4P2"),
                workload="sharegpt x2000", predicted={"throughput_tok_s": 1.0, "makespan_s": 2.0})
    assert Plan.model_validate_json(plan.model_dump_json()) == plan
