"""Simulator behaviour (issue: vLLM-style serving under any DxTxP layout).

These pin behaviour the paper reports or that must hold by construction, not tuned numbers.
"""

import json

import pytest
from typer.testing import CliRunner

from seesaw.catalog import load_model, load_node, make_node
from seesaw.cli import app
from seesaw.core import SpecError, VllmPolicy
from seesaw.workload import load_workload
from simulator.sim import simulate


def _sim(model, node, layout, reqs, **kw):
    return simulate(load_model(model), node, VllmPolicy(layout=layout, **kw), reqs)


@pytest.mark.parametrize("layout,kw", [
    ("T4P2", {}), ("P8", {}), ("D2T4", {}),
    ("T2P4", {"enable_chunked_prefill": True, "max_num_batched_tokens": 512}),
])
def test_conservation_every_request_finishes_with_its_output_length(layout, kw):
    reqs = load_workload("sharegpt", num_requests=120, seed=3)
    r = _sim("llama2-13b", load_node("8xl4"), layout, reqs, **kw)
    by_id = {q.id: q for q in reqs}
    assert r.num_requests == len(reqs)
    assert all(row.output_len == by_id[row.id].output_len for row in r.requests.itertuples())
    assert r.total_output_tokens == sum(q.output_len for q in reqs)
    assert r.total_num_tokens == sum(q.prompt_len + q.output_len for q in reqs)
    # compute: each prompt once, output-1 decodes; preemption only adds recomputation
    computed = int(r.steps["prefill_tokens"].sum() + r.steps["decode_seqs"].sum())
    assert computed >= sum(q.prompt_len + q.output_len - 1 for q in reqs)
    if r.num_preemptions == 0:
        assert computed == sum(q.prompt_len + q.output_len - 1 for q in reqs)
    assert abs(sum(r.time_by_phase.values()) - r.elapsed_time) < 1e-6 * r.elapsed_time
    assert (r.requests["finish_time_s"] <= r.elapsed_time + 1e-9).all()
    assert (r.requests["first_token_time_s"] <= r.requests["finish_time_s"]).all()


def test_deterministic():
    reqs = load_workload("sharegpt", num_requests=80, seed=1)
    a = _sim("llama2-13b", load_node("8xl4"), "T2P4", reqs)
    b = _sim("llama2-13b", load_node("8xl4"), "T2P4", reqs)
    assert a.elapsed_time == b.elapsed_time
    assert a.steps.equals(b.steps)


def test_paper_observation_13b_8xl4_batch_16():
    """Su et al. Fig. 1: prefill fastest at T1P8, slowest at T8P1; decode the reverse."""
    node = load_node("8xl4")
    layouts = ["P8", "T2P4", "T4P2", "T8"]
    # the paper's global batch of 16 split into PP micro-batches of 16/PP sequences
    def run(lay, reqs):
        pp = VllmPolicy(layout=lay).layout.pp
        return _sim("llama2-13b", node, lay, reqs, max_num_seqs=16 // pp, max_num_batched_tokens=16384)

    prefill_reqs = load_workload("constant", num_requests=16, input_len=1000, output_len=1)
    prefill = {lay: run(lay, prefill_reqs).elapsed_time for lay in layouts}
    decode_reqs = load_workload("constant", num_requests=16, input_len=8, output_len=512)
    decode = {lay: run(lay, decode_reqs).time_by_phase["decode"] for lay in layouts}
    assert min(prefill, key=prefill.get) == "P8" and max(prefill, key=prefill.get) == "T8"
    assert min(decode, key=decode.get) == "T8" and max(decode, key=decode.get) == "P8"


@pytest.mark.parametrize("node", ["8xl4", "8xa10"])
def test_prefill_only_favours_pp_decode_heavy_favours_tp_on_pcie(node):
    n = load_node(node)
    prefill_only = load_workload("constant", num_requests=64, input_len=2048, output_len=1)
    decode_heavy = load_workload("constant", num_requests=64, input_len=64, output_len=512)
    tput = {lay: _sim("llama2-13b", n, lay, prefill_only).requests_per_second for lay in ("P8", "T8")}
    assert tput["P8"] > 1.5 * tput["T8"]
    tput = {lay: _sim("llama2-13b", n, lay, decode_heavy).requests_per_second for lay in ("P8", "T8")}
    assert tput["T8"] > 1.5 * tput["P8"]


def test_nvlink_makes_tp_prefill_competitive():
    reqs = load_workload("constant", num_requests=32, input_len=2048, output_len=1)
    ratio = {}
    for name in ("8xa100-40g-nvlink", "8xa100-40g-pcie"):
        n = load_node(name)
        ratio[name] = _sim("llama2-13b", n, "T8", reqs).elapsed_time / _sim("llama2-13b", n, "P8", reqs).elapsed_time
    assert ratio["8xa100-40g-nvlink"] < 1.3
    assert ratio["8xa100-40g-pcie"] > 2.0


def test_data_parallel_replicas_split_the_work():
    reqs = load_workload("constant", num_requests=64, input_len=256, output_len=64)
    r = _sim("llama2-7b", make_node("a10", 2), "D2", reqs)
    assert set(r.requests["replica"]) == {0, 1}
    assert r.requests.groupby("replica").size().tolist() == [32, 32]


def test_layout_errors():
    reqs = load_workload("constant", num_requests=4, input_len=16, output_len=4)
    with pytest.raises(SpecError, match=r"weights need .* GiB per GPU, .* GiB available"):
        _sim("llama2-70b", load_node("8xl4"), "D8", reqs)
    with pytest.raises(SpecError, match="does not divide"):
        _sim("llama2-70b", make_node("l4", 6), "T3P2", reqs)
    with pytest.raises(SpecError, match="uses 4 GPUs"):
        _sim("llama2-13b", load_node("8xl4"), "T4", reqs)


def test_cli_simulate_json_and_output_folder(tmp_path):
    res = CliRunner().invoke(app, [
        "simulate", "--model", "llama2-13b", "--gpu", "l4", "--num-gpus", "8", "--workload", "sharegpt",
        "-n", "50", "--layout", "T2P4", "--json", "-o", str(tmp_path / "run"),
    ])
    assert res.exit_code == 0, res.output
    lines = res.stdout.strip().splitlines()
    assert lines[0].startswith("Simulated llama2-13b on 8xl4") and "T2P4" in lines[0]  # what it simulated, first
    assert lines[1].startswith("Throughput: ") and "requests/s" in lines[1] and "output tokens/s" in lines[1]
    obj = json.loads(lines[-1])
    for key in ("elapsed_time", "num_requests", "total_num_tokens", "requests_per_second",
                "tokens_per_second", "output_tokens_per_second", "layout", "policy", "time_by_phase"):
        assert key in obj
    assert obj["num_requests"] == 50 and obj["layout"] == "T2P4" and obj["policy"] == "vllm"
    for f in ("config.yaml", "summary.json", "requests.csv", "steps.csv"):
        assert (tmp_path / "run" / f).is_file()
