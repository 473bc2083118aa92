"""Scheduler state: sequences, their lifecycle, and device KV block accounting.

Pure Python (no torch, no simpy): the simulator and the real engine both drive these objects.
Vocabulary follows vLLM: a sequence knows ``num_tokens`` (prompt plus generated so far) and
``num_computed_tokens`` (tokens whose KV is already in the cache); a step schedules
``num_tokens - num_computed_tokens`` new tokens for it (a whole prompt, a prefill chunk, or the one
token sampled last step). Preemption by recompute resets ``num_computed_tokens`` to zero and keeps
the generated tokens, which are then recomputed as part of the prompt.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from seesaw.core import SpecError

__all__ = ["SeqStatus", "Sequence", "Flight", "BlockPool", "SchedulerError", "blocks_for"]


class SchedulerError(SpecError):
    """A request or configuration the scheduler cannot serve (one-line message; bad input, exit 2)."""


class SeqStatus(enum.Enum):
    WAITING = "waiting"        # not (or no longer) holding device KV; needs a prefill
    RUNNING = "running"        # holds device KV blocks; prefilling in chunks or decoding
    ON_HOST = "on_host"        # prefilled, KV parked in the host pool (Seesaw)
    FINISHED = "finished"


def blocks_for(num_tokens: int, block_size: int) -> int:
    return -(-num_tokens // block_size)


class Flight:
    """Whether the sequences that point to it are in a step that has not completed yet: a forward
    step's members share one, so completing the step is one write (``live = False``) instead of
    one per member, and a decode of the same group again reuses it (see ``VllmScheduler``)."""

    __slots__ = ("live",)

    def __init__(self, live: bool = True):
        self.live = live


# the shared markers of a sequence set in or out of flight on its own (never switched)
IN_FLIGHT, NOT_IN_FLIGHT = Flight(True), Flight(False)


@dataclass(slots=True, eq=False)
class Sequence:
    """One request as the scheduler tracks it."""

    req_id: str
    prompt_len: int
    max_output_len: int
    arrival_time_s: float = 0.0
    replica: int = 0
    status: SeqStatus = SeqStatus.WAITING
    num_computed_tokens: int = 0
    num_tokens: int = 0            # prompt + generated so far (see ``num_output_tokens``)
    max_num_tokens: int = field(init=False, default=0)   # prompt + max_output_len: done at this
    num_blocks: int = 0            # device KV blocks held
    num_host_blocks: int = 0       # host-pool KV blocks held (Seesaw)
    num_preemptions: int = 0
    flight: Flight = field(default=NOT_IN_FLIGHT, repr=False)   # see ``in_flight``
    admit_order: int = 0           # for LIFO preemption
    finish_reason: str | None = None
    # filled by the executor that drives the scheduler
    first_token_time_s: float | None = None
    finish_time_s: float | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.num_tokens = self.prompt_len
        self.max_num_tokens = self.prompt_len + self.max_output_len

    def append_token(self) -> None:
        self.num_tokens += 1

    @property
    def num_output_tokens(self) -> int:
        """Tokens generated so far (a preempted sequence keeps them: they are recomputed with its
        prompt). Derived, so a decode step counts one token per sequence with one update."""
        return self.num_tokens - self.prompt_len

    @property
    def in_flight(self) -> bool:
        """Part of a step that has not completed yet."""
        return self.flight.live

    @in_flight.setter
    def in_flight(self, value: bool) -> None:
        self.flight = IN_FLIGHT if value else NOT_IN_FLIGHT

    @property
    def num_new_tokens(self) -> int:
        """Tokens a step would compute for this sequence now."""
        return self.num_tokens - self.num_computed_tokens

    @property
    def is_prefilling(self) -> bool:
        return self.num_new_tokens > 1 or self.num_output_tokens == 0

    @property
    def is_finished(self) -> bool:
        return self.status is SeqStatus.FINISHED


class BlockPool:
    """Counts free KV blocks of one pool (device or host). Ids are the engine's business."""

    __slots__ = ("num_blocks", "block_size", "num_free", "peak_used")

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks < 0 or block_size <= 0:
            raise SchedulerError(f"invalid block pool: {num_blocks} blocks of {block_size} tokens")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.num_free = num_blocks
        self.peak_used = 0

    @property
    def num_used(self) -> int:
        return self.num_blocks - self.num_free

    @property
    def usage(self) -> float:
        return self.num_used / self.num_blocks if self.num_blocks else 0.0

    def can_allocate(self, n: int, reserve: int = 0) -> bool:
        return n + reserve <= self.num_free

    def allocate(self, n: int) -> None:
        assert 0 <= n <= self.num_free, (n, self.num_free)
        self.num_free -= n
        used = self.num_blocks - self.num_free
        if used > self.peak_used:
            self.peak_used = used

    def free(self, n: int) -> None:
        assert 0 <= n and self.num_free + n <= self.num_blocks, (n, self.num_free)
        self.num_free += n
