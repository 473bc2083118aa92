"""The scheduling contract: both policies satisfy ``Scheduler``, and the one phase rule."""

from seesaw.core import VllmPolicy, parse_parallel
from seesaw.scheduling import PhaseClock, Scheduler, SeesawScheduler, VllmScheduler, phase_of


def test_both_policies_satisfy_the_scheduler_protocol():
    vllm = VllmScheduler.from_policy(VllmPolicy(layout=parse_parallel("T2")), num_device_blocks=64)
    seesaw = SeesawScheduler(64, 64, parse_parallel("P2"), parse_parallel("T2"))
    assert isinstance(vllm, Scheduler) and isinstance(seesaw, Scheduler)


def test_phase_of_prefers_forward_then_reshard_then_swap_stall():
    base = dict.fromkeys(("prefill", "decode", "mixed", "reshard", "swap_stall"), 0)
    assert phase_of(base) == "idle"
    assert phase_of({**base, "swap_stall": 1}) == "swap_stall"
    assert phase_of({**base, "swap_stall": 1, "reshard": 1}) == "reshard"
    assert phase_of({**base, "reshard": 1, "decode": 2}) == "decode"
    assert phase_of({**base, "prefill": 1, "decode": 1}) == "mixed"


def test_phase_clock_books_each_interval_to_the_phase_in_force():
    clock = PhaseClock(t0=0.0)
    clock.start("prefill", 1.0)   # 0-1 idle
    clock.start("decode", 3.0)    # 1-3 prefill
    clock.end("prefill", 4.0)     # 3-4 mixed
    clock.end("decode", 6.0)      # 4-6 decode
    clock.start("swap_stall", 6.0)
    clock.end("swap_stall", 6.5)  # 6-6.5 swap stall
    assert clock.seconds == {"prefill": 2.0, "decode": 2.0, "mixed": 1.0, "reshard": 0.0, "swap_stall": 0.5,
                             "idle": 1.0}
