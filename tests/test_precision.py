"""Precision (``--dtype``, ``--kv-cache-dtype``): bytes, KV capacity, FLOP/s peaks, the FP8 error on
GPUs without FP8 tensor cores, the planner's opt-in precision search, and the CLI's options
(``--node`` too, and ``calibrate --gpu/--node``)."""

from __future__ import annotations

import json

import pytest

from seesaw import catalog
from seesaw.core import ModelSpec, ParallelConfig, Precision, SpecError, UnsupportedPrecision
from simulator.cost import CostModel
from simulator.cost.roofline import Roofline
from simulator.cost.shapes import BatchShape
from simulator.planner import precisions_to_search
from tests.factories import assert_one_line_exit_2

MODEL = catalog.load_model("llama3.1-70b")
T8 = ParallelConfig(tp=8)


def _linear_params(m: ModelSpec) -> int:
    return m.num_hidden_layers * (m.attn_params_per_layer + m.mlp_params_per_layer)


def test_fp8_weights_halve_the_gemm_weights_and_keep_the_rest_16_bit():
    bf16, fp8 = MODEL, Precision(dtype="fp8").apply(MODEL)
    lin = _linear_params(MODEL)
    assert bf16.weight_bytes - fp8.weight_bytes == lin  # 2 -> 1 byte per decoder GEMM weight
    assert fp8.weight_bytes == 2 * MODEL.num_parameters - lin  # embedding, head, norms: 2 bytes
    assert fp8.kv_bytes_per_token == bf16.kv_bytes_per_token and fp8.dtype_bytes == 2
    kv8 = Precision(kv_cache_dtype="fp8").apply(MODEL)
    assert kv8.kv_bytes_per_token * 2 == bf16.kv_bytes_per_token and kv8.weight_bytes == bf16.weight_bytes
    assert (fp8.dtype_label, kv8.dtype_label, bf16.dtype_label) == ("fp8", "bf16 kv-fp8", "bf16")


def test_fp8_kv_doubles_the_kv_capacity_and_fp8_weights_raise_it():
    node = catalog.make_node("h100", 8)
    cap = {label: CostModel(p.apply(MODEL), node).kv_capacity_tokens(T8) for label, p in {
        "bf16": Precision(), "kv-fp8": Precision(kv_cache_dtype="fp8"), "fp8": Precision(dtype="fp8")}.items()}
    assert abs(cap["kv-fp8"] - 2 * cap["bf16"]) <= 1
    # 70 GB less of weights over 8 GPUs: ~8.8 GB more per GPU at 40 KiB per token per GPU
    extra = (MODEL.weight_bytes - Precision(dtype="fp8").apply(MODEL).weight_bytes) / 8
    assert cap["fp8"] - cap["bf16"] == pytest.approx(extra / (MODEL.kv_bytes_per_token / 8), rel=0.01)


def test_fp8_uses_the_fp8_peak_for_decoder_gemms_and_16_bit_for_the_head():
    node = catalog.make_node("h100", 8)
    gpu = node.gpu
    rf8, rf16 = Roofline.of(node, fp8=True), Roofline.of(node)
    assert rf8.flops_per_s == pytest.approx(gpu.peak_flops_fp8 * gpu.compute_efficiency)
    assert rf16.flops_per_s == pytest.approx(gpu.peak_flops * gpu.compute_efficiency)
    assert rf8.head_flops_per_s == rf16.flops_per_s  # the LM head stays bf16 (vLLM's fp8 leaves it)
    assert gpu.peak_flops_fp8 == pytest.approx(2 * gpu.peak_flops, rel=1e-3)
    # a long prefill is compute bound: the decoder GEMMs' time halves with the doubled peak (their
    # FLOPs over the peak; norms and the LM head keep their time)
    cm16, cm8 = CostModel(MODEL, node), CostModel(Precision(dtype="fp8").apply(MODEL), node)
    n = 8192
    shape = BatchShape(prefill_tokens=n, prefill_attn_pairs=n * (n + 1) // 2, prefill_seqs=1, sampled_seqs=1)
    p16, p8 = cm16.stage_breakdown(T8, 0, shape), cm8.stage_breakdown(T8, 0, shape)
    gemm16 = cm16.stages(T8)[0].lin_flops_per_token * (n + rf16.n0) / rf16.flops_per_s
    assert p16["compute_s"] - p8["compute_s"] == pytest.approx(gemm16 / 2, rel=1e-3)
    assert p8["attention_s"] == pytest.approx(p16["attention_s"])  # attention stays 16-bit


def test_decode_is_faster_with_fp8_weights_and_fp8_kv():
    node = catalog.make_node("h100", 8)
    shape = BatchShape(decode_seqs=64, decode_context_tokens=64 * 2048, sampled_seqs=64)
    times = [CostModel(p.apply(MODEL), node).stage_time_s(T8, 0, shape) for p in
             (Precision(), Precision(dtype="fp8"), Precision(dtype="fp8", kv_cache_dtype="fp8"))]
    assert times[0] > times[1] > times[2]


def test_a_gpu_without_fp8_tensor_cores_is_one_line_naming_it():
    node = catalog.make_node("a100-80g", 8)
    assert catalog.load_gpu("a100-80g").peak_flops_fp8 is None and node.gpu.dtypes == ("bf16", "fp16")
    with pytest.raises(UnsupportedPrecision, match=r"GPU a100-80g has no FP8 tensor cores.*supports bf16, fp16$"):
        CostModel(Precision(dtype="fp8").apply(MODEL), node)
    CostModel(Precision(kv_cache_dtype="fp8").apply(MODEL), node)  # an FP8 KV cache is storage only


@pytest.mark.parametrize("gpu", ["h100", "h100-pcie", "h200", "b200", "l40s", "l4", "mi300x", "rtx4090"])
def test_fp8_gpus_cite_a_dense_fp8_figure(gpu):
    spec = catalog.load_gpu(gpu)
    assert spec.peak_flops_fp8 is not None and spec.peak_flops_fp8 >= 1.9 * spec.peak_flops
    text = catalog.profile_path("gpus", gpu).read_text()
    comment = text.split("peak_flops_fp8:")[0].split("\n\n")[-1].splitlines()[-3:]  # the lines above it
    assert any("FP8" in line and "datasheet" in line.lower() or "whitepaper" in line for line in comment)


def test_precision_names_and_bad_ones():
    assert Precision.parse("bfloat16", None) == Precision() and Precision.parse("FP16").dtype == "fp16"
    assert Precision.parse(None, "fp8").label == "bf16 kv-fp8"
    with pytest.raises(SpecError, match="--dtype 'int4': expected bf16, fp16, fp8"):
        Precision.parse("int4")
    with pytest.raises(SpecError, match="--kv-cache-dtype 'fp4'"):
        Precision.parse(None, "fp4")


def test_the_planner_searches_precision_only_when_asked():
    h100, a100 = catalog.load_gpu("h100"), catalog.load_gpu("a100-80g")
    assert [p.label for p in precisions_to_search(h100)] == ["bf16"]
    assert [p.label for p in precisions_to_search(h100, "fp8")] == ["fp8"]
    assert [p.label for p in precisions_to_search(h100, "auto")] == ["bf16", "bf16 kv-fp8", "fp8", "fp8 kv-fp8"]
    assert [p.label for p in precisions_to_search(h100, "auto", "auto")] == ["bf16", "fp8"]
    assert [p.label for p in precisions_to_search(a100, "auto")] == ["bf16", "bf16 kv-fp8"]
    with pytest.raises(UnsupportedPrecision):
        precisions_to_search(a100, "fp8")


def test_plan_keeps_the_dtype_and_auto_searches(tmp_path):
    import seesaw

    kw = dict(model="llama3.1-8b", gpu="h100", num_gpus=2, workload="constant", input_len=512, output_len=64,
              num_requests=40, workers=1)
    kept = seesaw.plan(**kw)
    assert set(kept.table["dtype"]) == {"bf16"} and kept.plan.provenance["precision"] == "bf16"
    fp8 = seesaw.plan(**kw, dtype="fp8")
    assert set(fp8.table["dtype"]) == {"fp8"} and fp8.plan.model.linear_bytes_per_param == 1
    searched = seesaw.plan(**kw, dtype="auto", kv_cache_dtype="auto")
    assert set(searched.table["dtype"]) == {"bf16", "fp8"}
    assert list(searched.table["rank"]) == list(range(1, len(searched.table) + 1))
    assert searched.plan.provenance["precision"] == searched.winner["dtype"]
    assert searched.plan.provenance["precision_search"] == "bf16, fp8"
    assert searched.winner["throughput_tok_s"] >= max(kept.winner["throughput_tok_s"], fp8.winner["throughput_tok_s"]) * 0.999


def test_cli_simulate_records_the_dtype(seesaw, tmp_path):
    args = ("simulate", "-m", "llama3.1-8b", "--node", "8xh100", "-N", "2", "-n", "30", "--json")
    base = seesaw(*args)
    res = seesaw(*args, "--dtype", "fp8", "--kv-cache-dtype", "fp8", "-o", tmp_path / "sim")
    assert res.returncode == 0 and base.returncode == 0, res.stderr + base.stderr
    assert res.stdout.startswith("Simulated llama3.1-8b (fp8 kv-fp8) on 2xh100")
    summ = json.loads(res.stdout.splitlines()[-1])
    assert summ["dtype"] == "fp8 kv-fp8" == json.loads((tmp_path / "sim" / "summary.json").read_text())["dtype"]
    assert summ["tokens_per_second"] > json.loads(base.stdout.splitlines()[-1])["tokens_per_second"]
    assert "dtype: fp8 kv-fp8" in (tmp_path / "sim" / "config.yaml").read_text()


def test_cli_plan_writes_the_dtype(seesaw, tmp_path):
    res = seesaw("plan", "-m", "llama3.1-8b", "-g", "l40s", "-N", "2", "-n", "20", "--workers", "1",
                 "--dtype", "fp8", "-o", tmp_path / "plan", "--json")
    assert res.returncode == 0, res.stderr
    plan = json.loads((tmp_path / "plan" / "plan.json").read_text())
    assert plan["provenance"]["precision"] == "fp8" and plan["model"]["weight_dtype_bytes"] == 1
    assert json.loads(res.stdout.splitlines()[-1])["config"]["dtype"] == "fp8"


@pytest.mark.parametrize("args, words", [
    (("simulate", "-g", "a100-80g", "--dtype", "fp8"), ("a100-80g", "FP8", "bf16, fp16")),
    (("plan", "-g", "a10", "--dtype", "fp8"), ("a10", "FP8")),
    (("simulate", "--dtype", "fp9"), ("--dtype", "fp9")),
    (("simulate", "--dtype", "auto"), ("auto", "plan")),
    (("simulate", "--gpu", "cpu-2core", "-m", "tiny", "--dtype", "bf16"), ("measured", "float32")),
    (("simulate", "--gpu", "l4", "--node", "8xl4"), ("--gpu", "--node", "one of them")),
    (("compare", "--node", "l4"), ("--node", "'l4'", "8xl4")),
    (("whatif", "--node", "8xl4,h100"), ("--node", "'h100'")),
    (("run", "--dtype", "fp8", "-n", "1"), ("--dtype", "fp8", "float32, bfloat16 or float16")),
])
def test_bad_precision_and_hardware_options_are_one_line(seesaw, args, words):
    assert_one_line_exit_2(seesaw(*args), *words)


def test_node_option_is_a_node_template_or_file(seesaw, tmp_path):
    node_file = tmp_path / "box.yaml"
    node_file.write_text(catalog.profile_path("nodes", "8xl4").read_text())
    for node in ("8xl4", node_file):
        res = seesaw("simulate", "-m", "llama2-7b", "--node", node, "-N", "4", "-n", "10")
        assert res.returncode == 0 and res.stdout.startswith("Simulated llama2-7b on 4xl4 (4 x L4, pcie)"), res.stderr


def test_whatif_with_fp8_marks_gpus_without_it_infeasible(tmp_path):
    import seesaw

    res = seesaw.whatif(model="llama3.1-8b", gpu="h100,a100-80g", num_gpus="2", workload="constant",
                        input_len=256, output_len=32, num_requests=20, sample_size=20, workers=1, dtype="fp8")
    df = res.table().set_index("option")
    assert df.loc["2xh100", "feasible"] and df.loc["2xh100", "dtype"] == "fp8"
    assert not df.loc["2xa100-80g-nvlink", "feasible"]
    assert "no FP8 tensor cores" in df.loc["2xa100-80g-nvlink", "reason"]


def test_calibrate_predicts_on_the_gpu_or_node_given(monkeypatch, tmp_path):
    """``calibrate --gpu/--node``: the engine runs (stubbed here; the end-to-end run is
    test_calibrate's) are predicted on that hardware's roofline, scaled to the layout's ranks,
    instead of the measured profile; a measured profile's name works as ``--profile``."""
    from seesaw.app import calibrate as cal
    from seesaw.engine import launch

    monkeypatch.setattr(launch, "run_batch", lambda store, items, config: {
        "tokens_per_second": 100.0, "elapsed_time": 1.0, "time_by_phase": {"prefill": 0.2, "decode": 0.8}})
    node_file = tmp_path / "box.yaml"
    node_file.write_text(catalog.profile_path("nodes", "8xl4").read_text())
    wl = cal.parse_workloads("constant:16/4")

    def predicted(**kw):
        (row,) = cal.calibrate("tiny", ["T2"], wl, num_requests=2, **kw)
        return row.predicted_tok_s

    measured = predicted()
    assert predicted(hardware="cpu-2core") == measured
    on_l4 = predicted(hardware="8xl4")
    assert on_l4 > 3 * measured  # an L4 roofline (step-overhead bound on tiny), not two CPU cores
    assert predicted(hardware=str(node_file)) == on_l4 == predicted(hardware="l4")
    with pytest.raises(SpecError, match="unknown GPU"):
        predicted(hardware="no-such-gpu")


def test_calibrate_takes_one_source_of_prediction(seesaw):
    assert_one_line_exit_2(seesaw("calibrate", "--profile", "cpu-2core", "--gpu", "l4"), "--profile", "--gpu")
    assert_one_line_exit_2(seesaw("calibrate", "--gpu", "l4", "--node", "8xl4"), "--gpu", "--node")


def test_run_refuses_a_plan_made_for_fp8(seesaw, tmp_path):
    from tests.factories import tiny_plan_file

    path = tiny_plan_file(tmp_path / "plan.json")
    plan = json.loads(path.read_text())
    plan["model"]["weight_dtype_bytes"] = 1
    path.write_text(json.dumps(plan))
    assert_one_line_exit_2(seesaw("run", "--plan", path, "-n", "1", "-o", tmp_path / "run"), "plan.json", "fp8")
