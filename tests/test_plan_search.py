"""Planner search machinery: shared simulations are the runs they stand for, successive halving on
nested samples, simulations on any executor (a thread pool; a local Dask cluster when installed)."""

from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest

from seesaw.catalog import load_model, make_node
from seesaw.workload import load_workload
from simulator.cost import CostModel
from simulator.extrapolate import halving_sizes, nested_samples
from simulator.planner import SearchSpace, enumerate_candidates, enumerate_layouts, plan
from simulator.planner.runner import simulate_one

# host-pool knobs that only matter when the pool fills: most variants share one run
POOLS = SearchSpace(chunk_sizes=(2048,), max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                    host_pool_fractions=(1.0, 0.25, 0.02), host_full_watermarks=(1.0, 0.5),
                    decode_low_watermarks=(0.5, 1.0))


@pytest.fixture(scope="module")
def case():
    model, node = load_model("codellama-34b"), make_node("a10", 4)
    return model, node, load_workload("sharegpt", num_requests=120, seed=3)


def test_nested_samples_are_nested_seeded_draws_in_source_order():
    reqs = [SimpleNamespace(i=i, prompt_len=1 + i % 7, output_len=1 + i * 37 % 101) for i in range(1000)]
    a, b, c = ([r.i for r in s] for s in nested_samples(reqs, [100, 300, 1000], seed=4))
    assert len(a) == 100 and len(b) == 300 and c == list(range(1000))
    assert set(a) <= set(b) and a == sorted(a) and b == sorted(b)
    assert [r.i for r in nested_samples(reqs, [100], seed=4)[0]] == a
    assert [r.i for r in nested_samples(reqs, [100], seed=5)[0]] != a
    # balanced: every prefix holds about the whole's mix of output lengths
    mean = sum(r.output_len for r in reqs) / len(reqs)
    assert abs(sum(reqs[i].output_len for i in a) / len(a) / mean - 1) < 0.02
    assert halving_sizes(2000, 200) == [500, 1000, 2000] and halving_sizes(2000, 200, rungs=4)[0] == 250
    assert halving_sizes(300, 200) == [300]


def test_shared_simulations_repeat_the_run_they_stand_for(case):
    """Every candidate that shares another's simulation (equivalence before, reuse after) gets, when
    simulated on its own, exactly the shared result; and the sharing saves most of the runs."""
    model, node, reqs = case
    res = plan(model, node, reqs, space=POOLS, exhaustive=True, workers=1)
    cands, _ = enumerate_candidates(model, node, enumerate_layouts(model, node, CostModel(model, node), POOLS)[0],
                                    POOLS)
    shared = res.table[res.table["note"].str.startswith("same as")]
    assert res.num_shared == len(shared) and len(shared) > res.num_simulated / 2
    for _, row in shared.head(8).iterrows():
        own = simulate_one(model, node, cands[int(row["index"])].policy, reqs)
        assert own["makespan_s"] == pytest.approx(row["makespan_s"], rel=1e-12), row["candidate"]
    # a pool too small to hold the sample's prompts really runs (more than one prefill phase)
    small = res.table[res.table["candidate"].str.contains("pool=0.02x") & (res.table["note"] == "")]
    assert len(small) and (small["num_transitions"] > 1).all()


def test_successive_halving_simulates_survivors_on_growing_nested_samples():
    model, node = load_model("llama2-13b"), make_node("a10", 4)
    reqs = load_workload("sharegpt", num_requests=400, seed=1)
    space = SearchSpace(chunk_sizes=(512, 2048), max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                        host_pool_fractions=(1.0,), host_full_watermarks=(1.0,), decode_low_watermarks=(0.5,))
    res = plan(model, node, reqs, space=space, halving_min=100, workers=1)
    assert [r["requests"] for r in res.rungs] == [100, 200, 400]
    sims = [r["simulations"] for r in res.rungs]
    assert sims[0] >= sims[-1] > 0 and res.num_simulated == sum(sims)
    screened = res.table[res.table["source"] == "screened"]
    assert len(screened) and screened["note"].str.contains("screened out on a sample of").all()
    assert res.winner["source"] == "simulated" and "successive halving" in res.plan.provenance["search"]
    # the winner is ranked on the whole sample: its makespan is a whole-sample simulation's
    whole = plan(model, node, reqs, space=space, workers=1)
    table = whole.table.set_index("candidate")
    if res.winner["candidate"] in table.index and table.loc[res.winner["candidate"], "source"] == "simulated":
        assert res.winner["makespan_s"] == pytest.approx(table.loc[res.winner["candidate"], "makespan_s"], rel=1e-12)


def test_any_executor_gives_the_same_plan(case):
    model, node, reqs = case
    local = plan(model, node, reqs, space=POOLS, workers=1)
    with ThreadPoolExecutor(2) as pool:
        threads = plan(model, node, reqs, space=POOLS, executor=pool)
        assert not pool._shutdown  # a given executor is the caller's to shut down
    assert threads.plan.policy == local.plan.policy
    assert threads.winner["makespan_s"] == local.winner["makespan_s"]


def test_a_local_dask_cluster_gives_the_same_plan(case):
    """Two in-process Dask workers (processes=False: process workers take seconds to start on a
    2-core machine) run the planner's simulations through ``Client.get_executor()``."""
    distributed = pytest.importorskip("dask.distributed")
    model, node, reqs = case
    local = plan(model, node, reqs, space=POOLS, workers=2)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        remote = plan(model, node, reqs, space=POOLS, executor=client.get_executor())
    assert remote.plan.policy == local.plan.policy
    assert remote.winner["makespan_s"] == local.winner["makespan_s"] and remote.num_simulated == local.num_simulated


def test_cli_plan_on_a_dask_scheduler_named_by_the_environment(seesaw, monkeypatch, tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    args = ("plan", "-m", "llama2-7b", "-g", "a10", "-N", "2", "-n", "40", "--json")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster:
        monkeypatch.setenv("SEESAW_DASK", cluster.scheduler_address)
        code, out, err = seesaw(*args)
    assert code == 0, err
    monkeypatch.delenv("SEESAW_DASK")
    code, local, _ = seesaw(*args)
    assert code == 0 and _winner(out) == _winner(local)


def _winner(out: str) -> dict:
    import json

    return json.loads(out.strip().splitlines()[-1])["winner"]


def test_cli_unreachable_dask_scheduler_is_one_line(seesaw, monkeypatch):
    from seesaw.app import executors
    from tests.factories import assert_one_line_exit_2

    monkeypatch.setattr(executors, "DASK_CONNECT_TIMEOUT_S", 1)
    res = seesaw("plan", "-m", "llama2-7b", "-g", "a10", "-N", "2", "-n", "20", "--dask", "tcp://127.0.0.1:9")
    assert_one_line_exit_2(res, "--dask tcp://127.0.0.1:9", "cannot reach the Dask scheduler")
