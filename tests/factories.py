"""Tiny factories for scheduler tests (CPU only, no torch, no simpy)."""

from __future__ import annotations

from dataclasses import dataclass

from seesaw.scheduling import VllmScheduler


@dataclass(frozen=True)
class Req:
    id: str
    prompt_len: int
    output_len: int
    arrival_time_s: float = 0.0


def create_requests(n: int, prompt_len: int = 32, output_len: int = 8, start: int = 0) -> list[Req]:
    return [Req(f"r{start + i}", prompt_len, output_len) for i in range(n)]


def create_scheduler(num_blocks: int = 1000, **kw) -> VllmScheduler:
    kw.setdefault("block_size", 16)
    kw.setdefault("max_num_seqs", 8)
    kw.setdefault("max_num_batched_tokens", 512)
    return VllmScheduler(num_blocks, **kw)


def drive(sched, max_steps: int = 100_000):
    """Run a scheduler to completion with a trivial clock: steps complete in FIFO order.

    Keeps up to ``pipeline_depth`` steps in flight. Returns the list of steps executed.
    """
    done, in_flight = [], []
    for _ in range(max_steps):
        while True:
            step = sched.schedule()
            if step is None:
                break
            in_flight.append(step)
        if not in_flight:
            assert not sched.has_unfinished(), "scheduler stalled with unfinished requests"
            return done
        step = in_flight.pop(0)
        sched.on_step_done(step)
        done.append(step)
    raise AssertionError("did not finish")
