"""Planner: enumeration with reasons, estimate-guided search without regret, cost objective, sampling."""

import pytest

from seesaw.catalog import load_model, make_node
from seesaw.core import Plan, SeesawPolicy, VllmPolicy
from seesaw.workload import load_workload
from simulator.cost import CostModel
from simulator.extrapolate import nested_samples
from simulator.planner import (
    SearchSpace, enumerate_candidates, enumerate_layouts, estimate_makespan_s, plan,
    replica_works,
)
from simulator.sim import simulate

# small spaces keep exhaustive runs to a few seconds while keeping every kind of knob
SMALL = SearchSpace(chunk_sizes=(512, 2048), max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                    host_pool_fractions=(1.0, 0.25), host_full_watermarks=(1.0, 0.5),
                    decode_low_watermarks=(0.5,))
TINY = SearchSpace(chunk_sizes=(2048,), max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                   host_pool_fractions=(1.0,), host_full_watermarks=(1.0,),
                   decode_low_watermarks=(0.5,))


@pytest.fixture(scope="module")
def small_case():
    model, node = load_model("codellama-34b"), make_node("a10", 4)
    reqs = load_workload("sharegpt", num_requests=100, seed=1)
    return model, node, reqs


@pytest.fixture(scope="module")
def searched(small_case):
    model, node, reqs = small_case
    full = plan(model, node, reqs, space=SMALL, exhaustive=True, workers=2)
    fast = plan(model, node, reqs, space=SMALL, workers=2)
    return full, fast


def test_layouts_are_enumerated_with_one_line_reasons():
    model = load_model("llama2-70b")
    feasible, rejected = enumerate_layouts(model, make_node("l4", 8))
    assert {str(c) for c in feasible} == {"P8", "T2P4", "T4P2", "T8"}
    reasons = dict(rejected)
    assert len(reasons) == 6 and all("\n" not in r for r in reasons.values())
    assert "weights need" in reasons["D8T1P1"] and "GiB per GPU" in reasons["D8T1P1"]
    # one L4 (P1): 70B weights do not fit
    _, rejected = enumerate_layouts(model, make_node("l4", 1))
    assert len(rejected) == 1 and "weights need" in rejected[0][1]
    # six GPUs: T3 and T6 do not divide LLaMA2-70B's 64 attention heads
    feasible, rejected = enumerate_layouts(model, make_node("l4", 6))
    reasons = dict(rejected)
    assert "tp=3 does not divide the 64 attention heads" in reasons["D1T3P2"]
    assert "tp=6 does not divide" in reasons["D1T6P1"]
    assert [str(c) for c in feasible] == ["P6"] or all(c.tp in (1, 2) for c in feasible)


def test_candidates_cover_vllm_variants_and_equal_dp_seesaw_pairs():
    model, node = load_model("llama2-13b"), make_node("a10", 4)
    layouts, _ = enumerate_layouts(model, node)
    cands, rejected = enumerate_candidates(model, node, layouts, SMALL)
    assert not rejected
    vllm = [c for c in cands if isinstance(c.policy, VllmPolicy)]
    seesaw = [c for c in cands if isinstance(c.policy, SeesawPolicy)]
    assert len(vllm) == len(layouts) * 3                   # chunked off, 512, 2048
    pairs = {(str(c.policy.prefill_layout), str(c.policy.decode_layout)) for c in seesaw}
    assert all(a != b for a, b in pairs)
    assert all(c.policy.prefill_layout.dp == c.policy.decode_layout.dp for c in seesaw)
    n_pairs = sum(1 for a in layouts for b in layouts if a != b and a.dp == b.dp)
    assert len(pairs) == n_pairs and len(seesaw) == n_pairs * 4      # 2 pools x 2 watermarks
    assert len({c.name for c in cands}) == len(cands)
    # the switch-back watermark is a knob too: the default space tries ours (0.5) and the paper's (1.0)
    default, _ = enumerate_candidates(model, node, layouts)
    dls = {c.policy.decode_low_watermark for c in default if isinstance(c.policy, SeesawPolicy)}
    assert dls == {0.5, 1.0}


def test_planner_finds_the_exhaustive_winner(searched):
    full, fast = searched
    assert fast.num_simulated < full.num_simulated
    assert fast.winner["makespan_s"] == pytest.approx(full.winner["makespan_s"], rel=1e-9)
    assert fast.best_vllm["makespan_s"] == pytest.approx(full.best_vllm["makespan_s"], rel=1e-9)
    # the ranked table: simulated rows first, sorted by makespan; speedups relative to best vLLM
    t = fast.table
    sim = t[t["source"] == "simulated"]
    assert list(sim.index) == list(range(len(sim)))
    assert sim["makespan_s"].is_monotonic_increasing
    assert t.loc[t["candidate"] == fast.best_vllm["candidate"], "speedup_vs_best_vllm"].iloc[0] == pytest.approx(1.0)


def test_plan_is_a_complete_auditable_plan(small_case, searched):
    model, node, reqs = small_case
    r = searched[1]
    p = r.plan
    assert Plan.model_validate_json(p.model_dump_json()) == p
    assert p.predicted.throughput_tok_s > 0 and p.predicted.makespan_s > 0
    assert p.predicted.cost_per_mtok_usd > 0 and p.search_space_size == len(r.table)
    assert p.runner_up["layout"] != r.winner["layout"] and p.runner_up["worse_by_pct"] >= 0
    assert p.provenance["model_profile"] == "codellama-34b" and p.provenance["gpu_profile"] == "a10"
    assert "seesaw_version" in p.provenance
    assert r.best_vllm["candidate"] in p.explanation or p.policy.kind == "vllm"
    # the winner re-simulates to the predicted makespan (the plan means what it says)
    again = simulate(model, node, p.policy, reqs)
    assert again.elapsed_time == pytest.approx(p.predicted.makespan_s, rel=1e-9)


def test_estimates_rank_layouts_like_the_simulator():
    """The closed form must order clearly different layouts the way the simulator does."""
    model, node = load_model("llama2-70b"), make_node("l4", 8)
    reqs = load_workload("sharegpt", num_requests=200, seed=0)
    cost, works = CostModel(model, node), replica_works(reqs, 1)
    est = {lay: estimate_makespan_s(cost, VllmPolicy(layout=lay), works)[0] for lay in ("P8", "T4P2")}
    assert est["T4P2"] < est["P8"]
    sim = {lay: simulate(model, node, VllmPolicy(layout=lay), reqs).elapsed_time for lay in ("P8", "T4P2")}
    assert sim["T4P2"] < sim["P8"]
    s = SeesawPolicy(prefill_layout="P8", decode_layout="T8", host_kv_bytes=100e9)
    e, phases = estimate_makespan_s(cost, s, works)
    assert e == pytest.approx(simulate(model, node, s, reqs).elapsed_time, rel=0.25)
    assert set(phases) == {"prefill", "decode", "reshard"}


def test_cost_objective_uses_the_price_override(small_case):
    model, node, reqs = small_case
    cheap = plan(model, node, reqs, space=TINY, objective="cost", price_per_gpu_hour=1.0, workers=1)
    dear = plan(model, node, reqs, space=TINY, objective="cost", price_per_gpu_hour=2.0, workers=1)
    assert cheap.winner["makespan_s"] == dear.winner["makespan_s"]
    assert dear.winner["cost_per_mtok_usd"] == pytest.approx(2 * cheap.winner["cost_per_mtok_usd"])
    tokens = sum(q.prompt_len + q.output_len for q in reqs)
    assert cheap.winner["cost_per_mtok_usd"] == pytest.approx(
        4 * cheap.winner["makespan_s"] / 3600 / (tokens / 1e6), rel=1e-3)


def test_cost_objective_needs_a_price(small_case):
    model, node, reqs = small_case
    priceless = node.model_copy(update={"gpu": node.gpu.model_copy(update={"price_per_hour_usd": None})})
    with pytest.raises(ValueError, match="price"):
        plan(model, priceless, reqs, objective="cost", workers=1)


def test_large_workloads_are_extrapolated_from_a_sample(small_case):
    """Screened on a nested sample (rows only screened: scaled by the token ratio); the contenders
    converged on samples growing to the whole 500 (``simulator.planner.converge``): exact there."""
    model, node, _ = small_case
    reqs = load_workload("sharegpt", num_requests=500, seed=2)
    sample = nested_samples(list(reqs), [60], seed=0)[0]
    screen = plan(model, node, reqs, space=TINY, sample_size=60, workers=1, converge_max=None)  # screening only
    small = plan(model, node, sample, space=TINY, sample_size=None, workers=1)
    assert screen.extrapolated_from == 60 and small.extrapolated_from is None
    assert any("sample of 60 of 500" in n for n in screen.notes)
    ratio = sum(q.prompt_len + q.output_len for q in reqs) / sum(q.prompt_len + q.output_len for q in sample)
    screened = screen.table[screen.table["source"] == "simulated"]
    assert len(screened) and not (screen.table["source"] == "converged").any()
    for _, row in screened.iterrows():
        same = small.table[small.table["candidate"] == row["candidate"]].iloc[0]
        assert row["makespan_s"] == pytest.approx(ratio * same["makespan_s"], rel=1e-6)
    big = plan(model, node, reqs, space=TINY, sample_size=60, workers=1)
    assert big.winner["source"] == "converged"
    if big.sampling["sample_size"] == 500:     # grew to the whole workload: the full simulation, no error
        full = simulate(model, node, big.plan.policy, list(reqs))
        assert big.winner["makespan_s"] == pytest.approx(full.elapsed_time, rel=1e-9)
        assert big.sampling["estimated_error"] == 0.0


def test_no_feasible_layout_gives_no_plan_and_reasons():
    model = load_model("llama2-70b")
    r = plan(model, make_node("l4", 4), load_workload("sharegpt", num_requests=20), workers=1)
    assert r.plan is None and r.winner is None and len(r.table) == 0
    assert r.rejected and all("weights need" in why or "KV" in why for _, why in r.rejected)


def test_plan_with_a_measured_profile_agrees_with_the_exhaustive_search():
    """``measured=``: the planner prices candidates with the machine's tables (here the committed CPU
    profile, 2 ranks) and, for a decode-heavy and a prefill-heavy batch, picks the layout that
    ``seesaw run --auto``'s exhaustive full simulation picks."""
    from seesaw import catalog
    from seesaw.app import autotune
    from seesaw.workload import Request

    prof = catalog.load_measured("cpu-2core")
    mach = autotune.machine(2)
    model = load_model("tiny").model_copy(update={"dtype_bytes": 4})  # fp32, as the CPU engine runs
    for p_len, o_len in ((16, 128), (256, 8)):
        reqs = [Request(id=str(i), prompt_len=p_len, output_len=o_len) for i in range(32)]
        res = plan(model, mach.node, reqs, measured=prof, workers=1, space=TINY)
        assert res.plan is not None and "measured profile" in res.plan.provenance["cost_model"]
        exhaustive, _, _ = autotune.plan_for_machine(model, mach, reqs, workload="constant")
        assert autotune.policy_layouts(res.plan.policy) == autotune.policy_layouts(exhaustive.policy)
        roofline = plan(model, mach.node, reqs, workers=1, space=TINY)
        assert roofline.plan.provenance["cost_model"] == "roofline"
        assert res.plan.predicted.throughput_tok_s != roofline.plan.predicted.throughput_tok_s
