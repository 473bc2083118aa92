"""The schedulers' known idle set (``idle_known``, which spares the decode hot path a scan of the
running sequences) always equals that scan, whatever order steps complete in; so does a decode's
computed-token sum when the scheduler hands it over without a pass. With chunked prefill the idle
set holds the decode candidates (one token to compute) and ``prefilling`` the running sequences
mid-prefill, each equal to its scan."""

import random

import pytest

from seesaw.core import parse_parallel
from seesaw.scheduling import SeesawScheduler, VllmScheduler
from tests.factories import Req


def _requests(rng: random.Random, n: int) -> list[Req]:
    return [Req(f"r{i}", rng.randint(1, 60), rng.randint(1, 40)) for i in range(n)]


def _check(sched) -> None:
    if sched.idle_known is not None:
        scanned = [s for s in sched.running.values()
                   if not s.in_flight and (not sched.chunked or s.num_new_tokens == 1)]
        assert [s.req_id for s in sched.idle_known] == [s.req_id for s in scanned]
    if sched.chunked:
        mid = [s.req_id for s in sched.running.values() if s.num_new_tokens > 1]
        assert list(sched.prefilling) == mid


def _check_in_flight(sched, steps: list) -> None:
    """A sequence is in flight exactly when it is in a step handed out and not completed, whether
    its flight was taken again or not (Seesaw's sequences waiting for a SwapOut aside: evicted
    ones are in flight, prefilled ones not yet)."""
    expect = {id(s) for step in steps for s in getattr(step, "seqs", ())}
    offload = {id(s) for s in getattr(sched, "to_offload", ())}
    assert {id(s) for s in sched.seqs if s.in_flight} - offload == expect - offload


def _drive_shuffled(sched, rng: random.Random) -> int:
    """Run to completion, completing a random in-flight step each time (as a real engine's
    replicas and swaps may); check the idle set and who is in flight after every call. Returns how
    often the idle set was known."""
    in_flight, known = [], 0
    for _ in range(200_000):
        while (step := sched.schedule()) is not None:
            in_flight.append(step)
            _check(sched)
            _check_in_flight(sched, in_flight)
            if getattr(step, "computed_tokens", -1) >= 0:   # a decode's sum, when the scheduler knew it
                assert step.computed_tokens == sum(s.num_computed_tokens for s in step.seqs)
        if not in_flight:
            assert not sched.has_unfinished()
            return known
        sched.on_step_done(in_flight.pop(rng.randrange(len(in_flight))))
        _check(sched)
        _check_in_flight(sched, in_flight)
        known += sched.idle_known is not None
    raise AssertionError("did not finish")


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("depth", [1, 2, 4])
def test_vllm_idle_set_matches_a_scan(seed, depth):
    rng = random.Random(seed)
    # few blocks: preemptions by recompute happen often
    sched = VllmScheduler(48, block_size=8, max_num_seqs=6, max_num_batched_tokens=128,
                          pipeline_depth=depth)
    for r in _requests(rng, 60):
        sched.add_request(r)
    known = _drive_shuffled(sched, rng)
    assert sched.num_finished == 60 and known > 0


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("depth", [1, 2, 4])
@pytest.mark.parametrize("budget", [16, 48])
def test_chunked_idle_set_and_prefilling_match_a_scan(seed, depth, budget):
    rng = random.Random(seed)
    # small budgets split prompts into chunks (some of one token); few blocks: preemptions of
    # decodes and of sequences mid-prefill
    sched = VllmScheduler(24, block_size=8, max_num_seqs=6, max_num_batched_tokens=budget,
                          pipeline_depth=depth, enable_chunked_prefill=True)
    for r in _requests(rng, 60):
        sched.add_request(r)
    known = _drive_shuffled(sched, rng)
    assert sched.num_finished == 60 and known > 0 and sched.num_preemptions > 0
    assert not sched.prefilling


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("layouts", [("P2", "T2"), ("T2", "T2"), ("P4", "T2P2")])
def test_seesaw_idle_set_matches_a_scan(seed, layouts):
    rng = random.Random(seed)
    sched = SeesawScheduler(40, 60, parse_parallel(layouts[0]), parse_parallel(layouts[1]),
                            block_size=8, max_num_seqs=6, max_num_batched_tokens=128)
    for r in _requests(rng, 50):
        sched.add_request(r)
    known = _drive_shuffled(sched, rng)
    assert sched.num_finished == 50 and known > 0
