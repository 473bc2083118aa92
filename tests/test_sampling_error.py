"""Sampling with a stated error: growing nested samples until the throughput estimate converges,
the sample size and estimated error in the simulate summary, the console, the plan and the what-if."""

import json

import pytest

from seesaw import api
from seesaw.app.simulate import build_policy
from seesaw.catalog import load_model, make_node
from seesaw.workload import load_workload
from simulator.extrapolate import (
    Convergence, converge, growing_sizes, marginal_makespan, nested_samples, sample_workload, steady_points, tokens,
)
from simulator.sim import simulate

MODEL, NODE = "llama2-7b", ("a100-40g", 1)


@pytest.fixture(scope="module")
def sampled():
    reqs = load_workload("sharegpt", num_requests=5000, seed=2)
    return sample_workload(reqs, 800, seed=0)


def _run(reqs):
    return simulate(load_model(MODEL), make_node(*NODE), build_policy("T1"), reqs)


def test_growing_sizes_and_the_stated_error():
    assert growing_sizes(10_000) == [1250, 2500, 5000, 10_000] and growing_sizes(8000) == [1000, 2000, 4000, 8000]
    assert growing_sizes(2000) == [1000, 2000] and growing_sizes(1999) == [1999]
    c = Convergence((1000, 2000, 4000), (90.0, 100.0, 100.4))
    assert c.error == pytest.approx(0.4 / 100.4) and c.converged
    assert not Convergence((1000, 2000, 4000), (90.0, 100.0, 101.0)).converged
    assert not Convergence((1000, 2000), (100.0, 100.1)).converged  # the first estimate is only scaled
    assert Convergence((1000,), (100.0,)).error is None
    assert marginal_makespan([(100, 10.0), (200, 18.0)], 1000) == pytest.approx(18.0 + 800 * 8 / 100)
    assert marginal_makespan([(100, 10.0)], 1000) == pytest.approx(100.0)


def test_converge_stops_when_two_estimates_agree_and_states_the_error(sampled):
    loose, conv = converge(_run, sampled, seed=0, tol=0.5, first=100)
    assert conv.sizes == (100, 200, 400) and conv.converged       # 50%: the first two marginal estimates agree
    full, capped = converge(_run, sampled, seed=0, tol=1e-9, first=100)
    assert capped.sizes == (100, 200, 400, 800) and not capped.converged  # to the cap: the whole sample
    assert capped.throughputs[:3] == conv.throughputs                # nested and seeded: the same runs
    assert capped.error == pytest.approx(abs(capped.throughputs[-1] - capped.throughputs[-2]) / capped.throughputs[-1])
    # the result is the whole workload's, at the last estimate's throughput
    assert full.num_requests == 5000 and full.extra["extrapolated_from"] == 800
    assert full.tokens_per_second == pytest.approx(capped.throughputs[-1], rel=1e-9)
    assert full.extra["sampling"]["sample_size"] == 800 and full.extra["sampling"]["estimated_error"] is not None
    # the estimate: the whole sample's makespan plus the rest at the marginal rate of the last two,
    # measured up to each run's last admission
    half, whole = nested_samples(sampled.requests, [400, 800], seed=0)
    points = [(tokens(r), res.elapsed_time, steady_points(res.steps)) for r in (half, whole) for res in [_run(r)]]
    assert full.elapsed_time == pytest.approx(marginal_makespan(points, sampled.total_tokens), rel=1e-9)
    assert full.elapsed_time != pytest.approx(marginal_makespan([p[:2] for p in points], sampled.total_tokens))
    assert full.elapsed_time != pytest.approx(points[-1][1] * sampled.total_tokens / points[-1][0])


def test_simulate_reports_sample_size_and_error_in_summary_and_console(seesaw, tmp_path):
    out = tmp_path / "sim"
    res = seesaw("simulate", "--model", MODEL, "--gpu", NODE[0], "--num-gpus", "1", "--layout", "T1",
                 "-n", "20000", "--sample-size", "2000", "--json", "-o", out)
    assert res.returncode == 0, res.stderr
    err = " ".join(res.stderr.split())
    assert "note: simulated nested samples of 1,000, 2,000 of 20,000 requests" in err and "estimated error" in err
    summary = json.loads((out / "summary.json").read_text())
    sampling = summary["sampling"]
    assert sampling["sample_sizes"] == [1000, 2000] and sampling["sample_size"] == 2000
    assert 0 <= sampling["estimated_error"] < 0.2 and summary["extrapolated_from"] == 2000
    assert json.loads(res.stdout.strip().splitlines()[-1])["sampling"] == sampling


def test_plan_and_whatif_state_the_sampling_error():
    kw = dict(model=MODEL, gpu=NODE[0], num_gpus=1, num_requests=5000, sample_size=120, workers=1)
    res = api.plan(**kw, screen={"vllm": 1, "seesaw": 0}, refine={"vllm": 0, "seesaw": 0})
    sizes = res.sampling["sample_sizes"]
    assert sizes[:3] == [120, 240, 480] and res.sampling["estimated_error"] is not None
    assert any("beyond the screening sample" in n and f"up to {sizes[-1]:,} of 5,000" in n for n in res.notes)
    assert res.summary()["sampling"] == res.sampling
    assert res.plan.provenance["sample_estimated_error"] == f"{res.sampling['estimated_error']:.4f}"
    wi = api.whatif(model=MODEL, gpu=NODE[0], num_gpus="1", num_requests=5000, sample_size=120, workers=1)
    table = wi.table()
    assert table["estimated_error"].notna().all()
    assert any("Estimated sampling error: up to" in n for n in wi.notes)
