"""Plan and what-if figures that converge beyond the screening sample (issue 23 item 3): the
contenders of a large workload are simulated on nested samples doubling from the screening sample,
and their whole-workload throughput, sample size and estimated error reach the table, the plan,
the what-if columns, report and console."""

import json

import pytest

from seesaw.app.simulate import build_policy
from seesaw.catalog import load_model, make_node
from seesaw.workload import load_workload
from simulator.extrapolate import (
    CONVERGE_MAX, Convergence, converge_pool_size, doubling_sizes, marginal_makespan, steady_points,
)
from simulator.planner import plan
from simulator.sim import simulate

MODEL, GPU = "llama2-7b", "a100-40g"
ONE_KIND = dict(screen={"vllm": 2, "seesaw": 0}, refine={"vllm": 1, "seesaw": 0})


def test_sizes_pool_and_the_rate_up_to_the_last_admission():
    assert doubling_sizes(1000, 1_000_000, 16_000) == [1000, 2000, 4000, 8000, 16_000]
    assert doubling_sizes(3000, 1_000_000, 16_000) == [3000, 6000, 12_000]
    assert doubling_sizes(200, 2000, 2000) == [200, 400, 800, 1600, 2000]    # the last: the whole
    assert converge_pool_size(1000) == CONVERGE_MAX and converge_pool_size(8000) == 32_000
    # makespans only: the marginal rate between them; with each run's last admission: the rate up to it
    assert marginal_makespan([(100, 10.0), (200, 18.0)], 1000) == pytest.approx(18.0 + 800 * 8 / 100)
    steady = [(100, 10.0, ((6.0, 60, 60), (6.0, 40, 40))), (200, 18.0, ((11.0, 110, 110), (16.0, 90, 90)))]
    assert marginal_makespan(steady, 1000) == pytest.approx(18.0 + 800 / (50 / 5 + 50 / 10))
    # a run that recomputed prefills (preemption) did more work than its tokens: its share counts
    redone = [(100, 10.0, ((6.0, 60, 100),)), (200, 18.0, ((11.0, 150, 250),))]
    assert marginal_makespan(redone, 1000) == pytest.approx(18.0 + 800 / ((120 - 60) / 5))
    stalled = [(100, 10.0, ((6.0, 60, 100),)), (200, 18.0, ((6.0, 60, 200),))]   # no progress: makespans
    assert marginal_makespan(stalled, 1000) == pytest.approx(18.0 + 800 * 8 / 100)
    assert Convergence((100, 200, 400), (1.0, 2.0, 3.0), whole=True).error == 0.0
    assert Convergence((100, 200, 400), (1.0, 2.0, 3.0), whole=True).converged


def test_steady_points_are_each_replicas_last_admission():
    reqs = list(load_workload("sharegpt", num_requests=300, seed=1))
    res = simulate(load_model(MODEL), make_node(GPU, 2), build_policy("D2T1", max_num_seqs=64), reqs)
    points = steady_points(res.steps)
    assert len(points) == 2
    for replica, (t, work, total) in enumerate(points):
        steps = res.steps[res.steps["replica"] == replica]
        admits = steps[steps["prefill_tokens"] > 0]
        assert t == pytest.approx(admits["end_s"].max()) and t < steps["end_s"].max()
        done = steps[steps["end_s"] <= t]
        assert work == int((done["prefill_tokens"] + done["decode_seqs"]).sum())
        assert total == int((steps["prefill_tokens"] + steps["decode_seqs"]).sum())


@pytest.fixture(scope="module")
def large():
    """8,000 requests screened on 100 (a batch of 256 holds the whole sample), converged up to
    1,600, and the full simulation of the winner and the best vLLM plan to compare with."""
    model, node = load_model(MODEL), make_node(GPU, 1)
    reqs = load_workload("sharegpt", num_requests=8000, seed=3)
    res = plan(model, node, reqs, sample_size=100, converge_max=1600, workers=1, **ONE_KIND)
    win = res.plan.policy
    full = simulate(model, node, win, list(reqs))
    return res, full


def test_plan_converges_the_winner_beyond_a_screening_sample_too_small_for_the_node(large):
    res, full = large
    t = res.table
    win = t.iloc[0]
    assert win["source"] == "converged" and res.winner["candidate"] == win["candidate"]
    assert res.sampling["sample_sizes"][0] == 100 and res.sampling["sample_size"] == win["sample_size"] > 100
    err = res.sampling["estimated_error"]
    assert err is not None and err == pytest.approx(win["estimated_error"], abs=1e-6)
    truth = full.tokens_per_second
    assert abs(win["throughput_tok_s"] / truth - 1) <= err + 0.03
    assert res.winner["sample_size"] == win["sample_size"] and res.winner["estimated_error"] == pytest.approx(err, abs=1e-6)
    assert res.plan.provenance["simulated_requests"] == str(int(win["sample_size"]))
    assert any("beyond the screening sample" in n for n in res.notes)


def test_the_screening_sample_alone_would_be_far_off(large):
    """The first estimate is the screening sample's throughput scaled to the whole: a batch of up to
    256 sequences never fills on 100 requests, so it reads far low; the converged one does not."""
    res, full = large
    first, last = res.sampling["throughput_estimates"][0], res.sampling["throughput_estimates"][-1]
    assert first < 0.8 * full.tokens_per_second < last


def test_whatif_reports_sample_size_and_error_per_option(tmp_path, seesaw):
    out = tmp_path / "wi"
    res = seesaw("whatif", "--model", MODEL, "--gpu", GPU, "--num-gpus", "1,2", "-n", "3000", "--sample-size", "100",
                 "--workers", "1", "-o", out)
    assert res.returncode == 0, res.stderr
    err = " ".join(res.stderr.split())
    assert "Estimated sampling error: up to" in err and "nested samples doubling from it" in err
    header = (out / "options.csv").read_text().splitlines()[0].split(",")
    for col in ("sample_size", "estimated_error", "vllm_sample_size", "vllm_estimated_error", "extrapolated_from"):
        assert col in header
    summary = json.loads((out / "summary.json").read_text())
    for opt in summary["options"]:
        assert opt["estimated_error"] is not None and opt["sample_size"] > 100
    for p in summary["plans"].values():
        assert p["winner"]["source"] == "converged" and p["sampling"]["sample_size"] == p["winner"]["sample_size"]
    report = (out / "report.md").read_text()
    assert "sampling error" in report and "vLLM sampling error" in report


def test_contenders_are_the_best_layouts_by_simulation_and_by_estimate():
    """Per kind: the best simulated layout (for vLLM its best variant with chunked prefill and its
    best without), and the best other layout by the estimate; a stopped variant can contend."""
    from simulator.planner.converge import contenders

    def row(i, kind, layout, chunk, est):
        return {"index": i, "kind": kind, "layout": layout, "chunk": chunk, "est_makespan_s": est, "error": None}

    rows = [row(0, "vllm", "D2T4", 0, 10.0), row(1, "vllm", "D2T4", 8192, 11.0), row(2, "vllm", "D2T4", 2048, 9.0),
            row(3, "vllm", "D4T2", 8192, 8.0), row(4, "vllm", "T8", 0, 12.0), row(5, "seesaw", "P8->T8", None, 9.0),
            row(6, "seesaw", "P8->T4P2", None, 7.0), row(7, "seesaw", "T4P2->T8", None, 8.5)]
    results = {0: {"makespan_s": 100.0}, 1: {"stopped_at_s": 101.0}, 2: {"stopped_at_s": 99.0},
               4: {"makespan_s": 103.0}, 5: {"makespan_s": 90.0}, 7: {"makespan_s": 95.0}}
    # vLLM: D2T4 (simulated best) without chunking (0) and its best-estimated chunked variant (2, stopped);
    # D4T2, the best other by estimate; Seesaw: P8->T8 simulated best, P8->T4P2 best other by estimate
    assert contenders(rows, results, shared={}) == [2, 0, 3, 5, 6]
    assert contenders(rows, results, shared={5: 7}) == [2, 0, 3, 7, 6]    # 5 shares a run: T4P2->T8 leads
