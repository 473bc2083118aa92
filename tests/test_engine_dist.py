"""Multi-rank forward passes (gloo, CPU) against the single-process model, the launcher, and the
ranks' heap set-up (``keep_freed_memory``).

Max abs logit differences observed against the single-process full forward (fp32) are ~2e-6 for
every layout here; the tolerance is 1e-4.
"""

from statistics import median_high

import pytest

from seesaw.engine.dist import RankError, run_layout
from seesaw.engine.runner import generate
from seesaw.engine.weights import build_shard, load_checkpoint
from seesaw.core import parse_parallel
from tests.engine_helpers import (
    full_logits, glibc, in_new_process, make_checkpoint, random_prompts, rank_fails, rank_refaults,
    rank_sleeps, rank_sum, run_ranks,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

TOL = 1e-4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    store = load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("tiny")))
    return store, build_shard(store)


@pytest.fixture(scope="module")
def tied(tmp_path_factory):
    store = load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("tied"), tie_word_embeddings=True, seed=5))
    return store, build_shard(store)


def _seqs():
    return {f"s{i}": p for i, p in enumerate(random_prompts([13, 5, 20, 9], seed=4))}


def _two_steps(seqs):
    """A prefill chunk of 8 tokens for everyone, then the rest: exercises cached attention."""
    return [{s: t[:8] for s, t in seqs.items()}, {s: t[8:] for s, t in seqs.items() if t[8:]}]


def _max_diff(out, model, seqs):
    assert set(out) == set(seqs)
    return max((out[s] - full_logits(model, t)).abs().max().item() for s, t in seqs.items())


@pytest.mark.parametrize("layout,micro_batches", [
    ("T2", 1), ("P2", 1), ("P2", 2), ("P2", 4), ("D2", 1), ("T2P2", 2),
])
def test_layout_logits_match_single_process(tiny, layout, micro_batches):
    store, model = tiny
    seqs = _seqs()
    out = run_layout(store, parse_parallel(layout), _two_steps(seqs), num_micro_batches=micro_batches,
                     block_size=4)
    assert _max_diff(out, model, seqs) < TOL


@pytest.mark.parametrize("layout", ["T4", "P4", "D2T2"])
def test_wider_layouts_match_single_process(tiny, layout):
    """T4 replicates each of the 2 KV heads on two ranks; P4 has one layer per stage."""
    store, model = tiny
    seqs = _seqs()
    out = run_layout(store, parse_parallel(layout), _two_steps(seqs), num_micro_batches=4)
    assert _max_diff(out, model, seqs) < TOL


def test_tied_embeddings_across_stages_and_slices(tied):
    store, model = tied
    seqs = _seqs()
    out = run_layout(store, parse_parallel("T2P2"), _two_steps(seqs), num_micro_batches=2)
    assert _max_diff(out, model, seqs) < TOL


def test_generation_under_pipeline_and_tensor_parallel(tiny):
    """Greedy decode through ``execute`` (last stage samples, broadcasts to the replica): every
    rank sees the same tokens, equal to the single-process ones."""
    store, model = tiny
    seqs = _seqs()
    out = run_layout(store, parse_parallel("T2P2"), [seqs], mode="generate", max_new_tokens=5,
                     num_micro_batches=2)
    ref = generate(model, list(seqs.values()), 5)
    assert [out[s] for s in seqs] == ref


def test_launcher_collects_results_in_rank_order():
    assert run_ranks(rank_sum, 3) == [3.0, 3.0, 3.0]


def test_launcher_reraises_a_rank_error_and_kills_the_others():
    with pytest.raises(RankError) as err:
        run_ranks(rank_fails, 3, 1, timeout_s=30)
    assert "rank 1 of 3 failed" in str(err.value) and "boom on rank 1" in str(err.value)


def test_launcher_times_out():
    with pytest.raises(TimeoutError, match=r"ranks \[0, 1\]"):
        run_ranks(rank_sleeps, 2, 60.0, timeout_s=3)


def _refaults_in_a_new_process(keep: str) -> tuple[bool, list[int]]:
    code = ("import json; from seesaw.engine.dist import keep_freed_memory; from tests.engine_helpers import refaults; "
            "print(json.dumps([keep_freed_memory(), refaults()]))")
    return tuple(in_new_process(code, env={"SEESAW_KEEP_FREED_MEMORY": keep}))


PAGES = 40 * 256  # a 40 MiB tensor's 4 KiB pages


@glibc
def test_keep_freed_memory_stops_the_heap_refaulting_big_blocks():
    """Rounds of a 40 MiB tensor: with malloc's defaults every round faults its 10,240 pages in (a
    fresh mmap each time); once the heap keeps what it frees, most rounds fault none. (A round
    may still fault while the heap grows: a small block left in the freed space, or, in a
    forked rank, space inherited from the parent; so the test asks for the median.)"""
    took, faults = _refaults_in_a_new_process("0")
    assert not took and min(faults[1:]) > PAGES // 2
    took, faults = _refaults_in_a_new_process("1")
    assert took and median_high(faults) < PAGES // 100


@glibc
def test_ranks_keep_freed_memory():
    """``init_process`` sets every rank's heap up (``keep_freed_memory``)."""
    assert all(median_high(faults) < PAGES // 100 for faults in run_ranks(rank_refaults, 2))
