"""Any ``-n``: a workload too large to build is sampled, never built, and results are extrapolated
by the one definition (``simulator.extrapolate``) that simulate, compare, plan and whatif share.

Also the impossible inputs of the simulator (a prompt longer than every KV pool, a host pool
smaller than one block, requests longer than the model's context) and the API's count checks.
"""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import seesaw as api
from seesaw import sampling
from seesaw import workload as wl
from seesaw.core import SpecError
from seesaw.sampling import Draw
from seesaw.workload import describe, load_workload
from simulator.extrapolate import sample_requests, sample_workload

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
BILLION = 10**9


def _small_max_built(monkeypatch, limit: int = 100) -> None:
    monkeypatch.setattr(sampling, "MAX_BUILT", limit)


@pytest.mark.parametrize("m,n", [(7, 7), (7, 3), (7, 7 * 4), (7, 7 * 4 + 5), (1, 9)])
def test_a_draw_by_index_is_the_draw_built_in_full(m, n):
    d = Draw.of(m, n, np.random.default_rng(3))
    i, k = d.source(np.arange(d.n))
    assert len(i) == len(k) == n
    lengths = np.arange(1, m + 1) * 10
    assert d.total(lengths) == int(lengths[i].sum())
    if n >= m:  # every request k times, then a partial copy without repeats
        assert (np.bincount(i, minlength=m) >= n // m).all() and k.max() == n // m - (n % m == 0)


@pytest.mark.parametrize("source,n", [("lengths.csv", 5000), ("lengths.csv", 3), ("sharegpt_small.json", 777)])
def test_a_file_sample_is_the_planners_sample_of_the_built_workload(monkeypatch, source, n):
    _small_max_built(monkeypatch, limit=2)
    path = str(EXAMPLES / source)
    sample = load_workload(path, num_requests=n, seed=5, sample_size=2)
    monkeypatch.setattr(sampling, "MAX_BUILT", 10**9)
    whole = load_workload(path, num_requests=n, seed=5)
    assert len(sample) == 2 and sample.represents == n == len(whole)
    assert sample.totals == (sum(r.prompt_len for r in whole), sum(r.output_len for r in whole))
    assert list(sample) == sample_requests(whole, 2, 5)
    assert "a seeded sample of 2 of" in sample.name
    a, b = sample_workload(sample, 2, 5), sample_workload(whole, 2, 5)
    assert (a.requests, a.num_requests, a.total_tokens, a.scale) == (b.requests, b.num_requests, b.total_tokens, b.scale)


@pytest.mark.parametrize("name", ["sharegpt", "arxiv", "constant", "uniform"])
def test_a_billion_requests_from_a_generator_builds_only_the_sample(name):
    tracemalloc.start()
    w = load_workload(name, num_requests=BILLION, seed=1, sample_size=500)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 20e6, f"{peak / 1e6:.0f} MB for a 500-request sample"
    assert len(w) == 500 and w.represents == BILLION
    ids = [int(r.id.split("-")[1]) for r in w]
    assert ids == sorted(set(ids)) and ids[-1] < BILLION
    p, o = w.totals  # the sample's mean x N
    assert p == round(BILLION * sum(r.prompt_len for r in w) / 500)
    assert o == round(BILLION * sum(r.output_len for r in w) / 500)
    assert load_workload(name, num_requests=BILLION, seed=1, sample_size=500) == w  # seeded
    stats = describe(w)
    assert stats["num_requests"] == BILLION and stats["sample_size"] == 500 and stats["total_prompt_tokens"] == p


def test_cli_workload_describe_a_billion_reads_a_sample(seesaw):
    import json

    res = seesaw("workload", "describe", "sharegpt", "-n", str(BILLION), "--json")
    assert res.returncode == 0, res.stderr
    stats = json.loads(res.stdout.strip().splitlines()[-1])
    assert stats["num_requests"] == BILLION and stats["sample_size"] == 100_000
    assert stats["total_tokens"] == pytest.approx(BILLION * (stats["input_len_mean"] + stats["output_len_mean"]))


def test_a_workload_that_fits_is_built_whole_as_before():
    w = load_workload("sharegpt", num_requests=2000, seed=0, sample_size=200)
    assert len(w) == w.represents == 2000 and w.sample_of is None
    assert "sample_size" not in describe(w)


def test_simulate_extrapolates_its_sample_by_the_token_ratio():
    kw = dict(model="llama2-7b", gpu="a100-40g", num_gpus=1, layout="T1", workload="sharegpt", seed=0)
    big = api.simulate(num_requests=BILLION, sample_size=200, **kw)
    sample = load_workload("sharegpt", num_requests=BILLION, seed=0, sample_size=200)
    alone = api.simulate(requests=list(sample), **kw)
    scale = sum(sample.totals) / sum(r.prompt_len + r.output_len for r in sample)
    assert big.num_requests == BILLION and big.summary()["extrapolated_from"] == 200
    assert big.elapsed_time == pytest.approx(alone.elapsed_time * scale)
    assert big.tokens_per_second == pytest.approx(alone.tokens_per_second)
    assert sum(big.time_by_phase.values()) == pytest.approx(sum(alone.time_by_phase.values()) * scale)
    assert "extrapolated_from" not in alone.summary()


def test_cli_simulate_says_it_simulated_a_sample(seesaw):
    res = seesaw("simulate", "--model", "llama2-7b", "--gpu", "a100-40g", "--num-gpus", "1", "--layout", "T1",
                 "-n", str(BILLION), "--sample-size", "100", "--json")
    assert res.returncode == 0, res.stderr
    err = " ".join(res.stderr.split())  # the console wraps long lines
    assert "note: simulated a seeded sample of 100 of 1,000,000,000 requests, extrapolated to all: times scaled by the token ratio" in err
    assert '"num_requests": 1000000000' in res.stdout and '"extrapolated_from": 100' in res.stdout


def test_plan_and_whatif_at_a_billion_requests_plan_the_sample():
    kw = dict(model="llama2-7b", gpu="a100-40g", num_gpus=1, num_requests=BILLION, sample_size=60, workers=1)
    res = api.plan(**kw, screen={"vllm": 1, "seesaw": 0}, refine={"vllm": 0, "seesaw": 0})
    assert res.num_requests == BILLION and res.extrapolated_from == 60
    assert res.plan.predicted.requests_per_s * res.plan.predicted.makespan_s == pytest.approx(BILLION)
    assert any(n.startswith("screened the candidates on a seeded sample of 60 of 1,000,000,000") for n in res.notes)
    assert res.winner["source"] == "converged" and res.winner["sample_size"] > 60   # then grown beyond it
    wi = api.whatif(model="llama2-7b", gpu="a100-40g", num_gpus="1", num_requests=BILLION, sample_size=60,
                       workers=1)
    assert wi.num_requests == BILLION and wi.notes[0].startswith("Each option's candidates were screened on a "
                                                                 "seeded sample of 60 of 1,000,000,000")


# --------------------------------------------------------------------------------------------
# Impossible inputs and counts


def _one_line(res) -> str:
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    (line,) = [x for x in res.stderr.splitlines() if x.strip()]
    return line


def test_a_prompt_longer_than_every_kv_pool_is_one_line(seesaw):
    line = _one_line(seesaw("simulate", "--model", "llama2-7b", "--gpu", "l4", "--num-gpus", "1", "--layout", "T1",
                            "--workload", "constant", "--input-len", "3000000", "--output-len", "4", "-n", "3"))
    assert "3000004 tokens need 187501 KV blocks, the device pool has" in line


def test_a_host_pool_smaller_than_one_block_is_one_line(seesaw):
    line = _one_line(seesaw("simulate", "--model", "llama2-7b", "--gpu", "l4", "--num-gpus", "2", "--layout", "P2->T2",
                            "--workload", "constant", "-n", "3", "--host-kv-gib", "0.0001"))
    assert "holds no KV block of 16 tokens per replica; give at least 0.0078125 GiB (--host-kv-gib)" in line


def test_requests_longer_than_the_context_are_a_one_line_warning(seesaw):
    res = seesaw("simulate", "--model", "llama2-7b", "--gpu", "l4", "--num-gpus", "1", "--layout", "T1",
                 "--workload", "constant", "--input-len", "5000", "--output-len", "4", "-n", "3")
    assert res.returncode == 0, res.stderr
    assert ("note: 3 of 3 simulated requests are longer (prompt + output) than llama2-7b's context of 4,096 "
            "tokens") in " ".join(res.stderr.split())
    plan = api.plan(model="llama2-7b", gpu="a100-40g", num_gpus=1, workload="constant", input_len=5000,
                       output_len=4, num_requests=3, workers=1, screen={"vllm": 1, "seesaw": 0},
                       refine={"vllm": 0, "seesaw": 0})
    assert any("than llama2-7b's context of 4,096 tokens" in n for n in plan.notes)


@pytest.mark.parametrize("call,message", [
    (lambda: api.simulate(model="llama2-7b", gpu="l4", num_gpus=0, layout="T1"), "num_gpus must be a positive"),
    (lambda: api.simulate(model="llama2-7b", gpu="l4", num_gpus=1, layout="T1", max_num_seqs=0),
     "max_num_seqs: Input should be greater than 0"),
    (lambda: api.simulate(model="llama2-7b", gpu="l4", num_gpus=1, layout="T1", chunk_size=-1),
     "max_num_batched_tokens: Input should be greater than 0"),
    (lambda: api.simulate(model="llama2-7b", gpu="l4", num_gpus=2, layout="P2->T2", host_kv_gib=-1),
     "host_kv_bytes: Input should be greater than 0"),
    (lambda: api.simulate(model="llama2-7b", gpu="l4", num_gpus=1, layout="T1", sample_size=0),
     "sample_size must be a positive integer"),
    (lambda: api.plan(model="llama2-7b", gpu="l4", num_gpus=1, sample_size=-5), "sample_size must be a positive"),
    (lambda: api.plan(model="llama2-7b", gpu="l4", num_gpus=1, workers=0), "workers must be a positive"),
    (lambda: api.compare(model="llama2-7b", gpu="l4", num_gpus=1, sample_size=-1), "sample_size must be"),
    (lambda: api.whatif(model="llama2-7b", gpu="l4", num_gpus="1", sample_size=0), "sample_size must be"),
    (lambda: api.whatif(model="llama2-7b", gpu="l4", num_gpus="1", workers=-1), "workers must be"),
    (lambda: api.load_workload("sharegpt", 0), "num_requests must be a positive integer, got 0"),
    (lambda: api.load_workload("constant", 5, input_len=0), "input_len must be a positive integer"),
    (lambda: api.load_workload("constant", 5, output_len=-2), "output_len must be a positive integer"),
    (lambda: api.load_workload("constant", 5, seed=-1), "seed must be a non-negative integer"),
    (lambda: load_workload("constant", 5, sample_size=0), "sample_size must be a positive integer"),
])
def test_the_api_checks_counts_as_one_line_spec_errors(call, message):
    with pytest.raises(SpecError, match=message) as e:
        call()
    assert "\n" not in str(e.value)


def test_a_generator_beyond_its_build_limit_is_drawn_as_its_sample():
    n = wl.GENERATED_MAX_BUILT + 1
    w = load_workload("sharegpt", num_requests=n, seed=0, sample_size=300)
    assert len(w) == 300 and w.represents == n and w.sample_of is not None
    at_limit = load_workload("sharegpt", num_requests=wl.GENERATED_MAX_BUILT, seed=0, sample_size=300)
    assert len(at_limit) == at_limit.represents == wl.GENERATED_MAX_BUILT and at_limit.sample_of is None
