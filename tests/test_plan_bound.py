"""Bounded planner simulations: a stopped run's lower bound, the same plan with and without the bound."""

import math

import pytest

from seesaw.catalog import load_model, make_node
from seesaw.core import SeesawPolicy, ParallelConfig
from seesaw.workload import load_workload
from simulator.planner import SearchSpace, plan
from simulator.planner.runner import simulate_one
from simulator.sim import SimulationStopped, simulate

SPACE = SearchSpace(chunk_sizes=(512, 2048), max_num_seqs=(128, 256), seesaw_max_num_seqs=(128, 256),
                    host_pool_fractions=(1.0, 0.25), host_full_watermarks=(1.0,), decode_low_watermarks=(0.5,))


@pytest.fixture(scope="module")
def case():
    model, node = load_model("codellama-34b"), make_node("a10", 4)
    return model, node, load_workload("sharegpt", num_requests=100, seed=1)


def test_a_stopped_simulation_is_slower_than_its_bound(case):
    model, node, reqs = case
    pol = SeesawPolicy(prefill_layout=ParallelConfig(pp=4), decode_layout=ParallelConfig(tp=4))
    full = simulate(model, node, pol, reqs).elapsed_time
    with pytest.raises(SimulationStopped) as stop:
        simulate(model, node, pol, reqs, stop_after_s=lambda: 0.7 * full)
    assert 0.7 * full < stop.value.clock_s <= full          # a true lower bound past the bound
    # at or above its own makespan the run finishes, the same to the last digit
    assert simulate(model, node, pol, reqs, stop_after_s=lambda: full).elapsed_time == full
    assert simulate_one(model, node, pol, reqs, bound=math.inf)["makespan_s"] == full
    stopped = simulate_one(model, node, pol, reqs, bound=0.5 * full)
    assert list(stopped) == ["stopped_at_s"] and 0.5 * full < stopped["stopped_at_s"] <= full


@pytest.mark.parametrize("objective, workers", [("throughput", 1), ("cost", 1), ("throughput", 2)])
def test_a_plan_with_the_bound_equals_the_plan_without(case, objective, workers):
    """In-process, and on the runner's own pool (jobs one per worker, each with the latest bound)."""
    model, node, reqs = case
    kw = dict(space=SPACE, workers=workers, objective=objective, price_per_gpu_hour=1.0)
    free, bounded = plan(model, node, reqs, bound=False, **kw), plan(model, node, reqs, bound=True, **kw)
    assert bounded.plan.policy == free.plan.policy
    for key in ("winner", "best_vllm"):
        assert getattr(bounded, key) == getattr(free, key)
    assert bounded.plan.runner_up == free.plan.runner_up
    assert free.num_stopped == 0 and (bounded.num_stopped > 0 or workers > 1)   # in-process: deterministic
    t, f = bounded.table, free.table.set_index("candidate")
    done = t[t["source"] == "simulated"]
    # the finished candidates: the same makespans, ranked as without the bound
    assert list(done["makespan_s"]) == list(f.loc[done["candidate"], "makespan_s"])
    assert list(done["candidate"]) == [c for c in f.index[f["source"] == "simulated"] if c in set(done["candidate"])]
    stopped = t[t["source"] == "stopped"]
    assert len(stopped) == bounded.num_stopped
    for _, r in stopped.iterrows():   # a lower bound past the best of its kind, below its real makespan
        best = t[(t["source"] == "simulated") & (t["kind"] == r["kind"])]["makespan_s"].min()
        assert best < r["makespan_s"] <= f.loc[r["candidate"], "makespan_s"]
        assert f.loc[r["candidate"], "source"] == "simulated"
        assert r["note"].startswith("stopped at") and math.isnan(r["throughput_tok_s"])
