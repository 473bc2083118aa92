"""The phase rule: which phase a replica's time belongs to, from what it has in flight.

One rule for the simulator and the engine, so their ``time_by_phase`` mean the same: a forward
in flight wins (two kinds of forward at once count as ``mixed``), else a re-shard, else a KV copy
that no compute overlaps (``swap_stall``), else ``idle``. ``PhaseClock`` integrates it over time
from start/end events; time is whatever the caller's clock says (simulated or wall seconds).
"""

from __future__ import annotations

from typing import Mapping

from seesaw.core import PHASES

__all__ = ["FORWARD_KINDS", "phase_of", "PhaseClock"]

FORWARD_KINDS = ("prefill", "decode", "mixed")
IN_FLIGHT_KINDS = (*FORWARD_KINDS, "reshard", "swap_stall")


def phase_of(live: Mapping[str, int]) -> str:
    """Phase of an interval from the count of steps of each kind in flight."""
    prefill, decode, mixed = live["prefill"], live["decode"], live["mixed"]
    if prefill or decode or mixed:
        if mixed or (prefill and decode):
            return "mixed"                   # a mixed step, or two kinds of forward at once
        return "prefill" if prefill else "decode"
    if live["reshard"]:
        return "reshard"
    if live["swap_stall"]:
        return "swap_stall"
    return "idle"


class PhaseClock:
    """Seconds by phase of one replica, from the start and end of each step it runs."""

    def __init__(self, t0: float = 0.0):
        self.last = t0
        self.live = dict.fromkeys(IN_FLIGHT_KINDS, 0)
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def advance(self, now: float) -> None:
        """Book the time since the last event to the phase in force until ``now``."""
        if now != self.last:                 # events at one instant book nothing (+0.0 is a no-op)
            self.seconds[phase_of(self.live)] += now - self.last
            self.last = now

    def start(self, kind: str, now: float) -> None:
        if now != self.last:                 # ``advance``, inline (twice per simulated step)
            self.seconds[phase_of(self.live)] += now - self.last
            self.last = now
        self.live[kind] += 1

    def end(self, kind: str, now: float) -> None:
        if now != self.last:
            self.seconds[phase_of(self.live)] += now - self.last
            self.last = now
        self.live[kind] -= 1
