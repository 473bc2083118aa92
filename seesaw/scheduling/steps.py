"""What a scheduler asks its executor to do next.

A forward step carries, per sequence, how many new tokens to compute (vLLM v1's
``{req_id: num_tokens}``): a whole prompt, a prefill chunk, or one decode token. ``Prefill``,
``Decode`` and ``Mixed`` differ only in what they contain, so executors that do not care treat
them alike. ``Reshard`` and the swap steps exist for the Seesaw policy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from seesaw.scheduling.state import Flight, Sequence
from seesaw.core import ParallelConfig

__all__ = ["Step", "Forward", "Prefill", "Decode", "Mixed", "Reshard", "SwapOut", "SwapIn", "mark_in_flight"]


@dataclass(slots=True, eq=False)
class Step:
    """Base of every step. ``replica`` is the DP replica it runs on."""

    replica: int = 0

    @property
    def kind(self) -> str:
        return type(self).__name__.lower()


@dataclass(slots=True, eq=False)
class Forward(Step):
    """One forward pass (one pipeline micro-batch) over ``seqs``."""

    seqs: list[Sequence] = field(default_factory=list)
    num_new_tokens: list[int] = field(default_factory=list)   # parallel to seqs
    # tokens whose KV is written to the host pool once this step completes (Seesaw prefill)
    offload_to_host: bool = False
    # the scheduler's in-flight marker of the members (``Sequence.flight``), set when it hands
    # the step out
    flight: Flight | None = field(default=None, repr=False)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new_tokens)

    def scheduled(self) -> dict[str, int]:
        return {s.req_id: n for s, n in zip(self.seqs, self.num_new_tokens)}


@dataclass(slots=True, eq=False)
class Prefill(Forward):
    """Prompt tokens only (whole prompts, or chunks of them)."""


@dataclass(slots=True, eq=False)
class Decode(Forward):
    """One new token per sequence. ``computed_tokens``: the sum of the members'
    ``num_computed_tokens`` when the step was built, if the scheduler had it at hand (-1: not
    given; an executor that needs it sums them itself)."""

    computed_tokens: int = -1


@dataclass(slots=True, eq=False)
class Mixed(Forward):
    """Decodes first, then prefill chunks up to the token budget (chunked prefill).
    ``num_decodes``: how many of the members are those decodes (-1: not given)."""

    num_decodes: int = -1


@dataclass(slots=True, eq=False)
class Reshard(Step):
    """Switch every rank of the replica from layout ``src`` to ``dst``."""

    src: ParallelConfig | None = None
    dst: ParallelConfig | None = None


@dataclass(slots=True, eq=False)
class SwapOut(Step):
    """Move these sequences' KV from device to the host pool."""

    seqs: list[Sequence] = field(default_factory=list)


@dataclass(slots=True, eq=False)
class SwapIn(Step):
    """Move these sequences' KV from the host pool to device blocks."""

    seqs: list[Sequence] = field(default_factory=list)


def mark_in_flight(step: Forward) -> None:
    """Set ``step``'s members in flight: its flight taken again (a decode of one group's
    survivors, ``VllmScheduler.batch_flight``), else a new one they all point to."""
    flight = step.flight
    if flight is None:
        flight = step.flight = Flight()
        for s in step.seqs:
            s.flight = flight
    else:
        flight.live = True
