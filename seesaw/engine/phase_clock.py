"""Wall time of a replica by phase, as the simulator counts it (``PHASES``).

The driver marks when each kind of work starts and ends on a replica (a forward of a kind, a
re-shard, a KV copy the replica waits for); the time between two marks goes to the phase the
replica was in. One clock per DP replica, all on rank 0's ``time.perf_counter``.
"""

from __future__ import annotations

from seesaw.engine.config import PHASES

__all__ = ["PhaseClock"]


class PhaseClock:
    """Wall time of one replica by what it has in flight (the simulator's phase rule,
    ``simulator.sim._phase_of``): a forward in flight wins (two kinds at once: mixed), else a
    re-shard, else a KV copy nothing overlaps (swap stall), else idle."""

    FORWARD = ("prefill", "decode", "mixed")

    def __init__(self, t0: float):
        self.last = t0
        self.live = dict.fromkeys((*self.FORWARD, "reshard", "swap_stall"), 0)
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def advance(self, now: float) -> None:
        """Count the time since the last event under the phase in force until ``now``."""
        kinds = [k for k in self.FORWARD if self.live[k]]
        if kinds:
            phase = kinds[0] if len(kinds) == 1 else "mixed"
        else:
            phase = "reshard" if self.live["reshard"] else "swap_stall" if self.live["swap_stall"] else "idle"
        self.seconds[phase] += now - self.last
        self.last = now

    def start(self, kind: str, now: float) -> None:
        self.advance(now)
        self.live[kind] += 1

    def end(self, kind: str, now: float) -> None:
        self.advance(now)
        self.live[kind] -= 1
