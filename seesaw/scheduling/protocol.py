"""The contract between a scheduling policy and the executor that drives it (the simulator or the
real engine): the executor asks for steps, runs them, and reports each one back.

Both policies (``VllmScheduler``, ``SeesawScheduler``) satisfy ``Scheduler``; the executors are
written against it, so a plan means the same in both. The loop is::

    for req in requests: sched.add_request(req)
    while sched.has_unfinished():
        while (step := sched.schedule()) is not None: launch(step)
        done = wait_for_one_step()
        finished = sched.on_step_done(done, stopped=ids_that_hit_eos)

Time does not exist here: the executor measures or simulates it.
"""

from __future__ import annotations

from typing import Iterable, Protocol, runtime_checkable

from seesaw.scheduling.state import Sequence
from seesaw.scheduling.steps import Step

__all__ = ["Scheduler"]


@runtime_checkable
class Scheduler(Protocol):
    """What an executor calls on a policy to drive it. The executors also read a few counters
    and pools for their reports (``blocks``, ``num_in_flight``, ``seqs``, a Seesaw policy's
    ``stats()``); those are the policies' own attributes, not part of this contract."""

    num_preemptions: int
    num_finished: int

    def add_request(self, req) -> Sequence:
        """Queue a request (anything with ``id``, ``prompt_len``, ``output_len``) and return its
        sequence. Raises ``SchedulerError`` (one line) if it can never be served (its tokens need
        more KV blocks than the pool has, or exceed the token budget without chunked prefill)."""

    def has_unfinished(self) -> bool:
        """True while any request is waiting, running, in flight or parked in a host pool."""

    @property
    def num_unfinished(self) -> int:
        """Requests not finished yet (for stall messages and progress)."""

    def schedule(self) -> Step | None:
        """The next step to launch, or None when nothing can be launched now (the pipeline is
        full, a re-shard or swap is in flight, or everything left waits on a running step). The
        executor launches steps until None, then waits for one to complete. A step's sequences
        are marked in flight until ``on_step_done``."""

    def on_step_done(self, step: Step, stopped: Iterable[str] = ()) -> list[Sequence]:
        """Account a completed step: advance its sequences' ``num_computed_tokens``, free the
        blocks of those that finished (``stopped``: ids the engine saw hit EOS), apply a
        re-shard or a swap. Returns the sequences that finished with this step."""

    def peak_kv_usage(self) -> float:
        """Highest fraction of device KV blocks in use so far (0..1)."""
