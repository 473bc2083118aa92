"""Pure scheduling policies shared by the simulator and the real engine (no torch, no simpy).

``Scheduler`` (``protocol.py``) is the contract both executors drive; ``VllmScheduler`` and
``SeesawScheduler`` implement it; ``phase_of`` / ``PhaseClock`` split a replica's time into phases
the same way in both. Messages speak policy terms, never command-line flags.
"""

from seesaw.scheduling.state import BlockPool, SchedulerError, Sequence, SeqStatus, blocks_for
from seesaw.scheduling.steps import (
    Decode, Forward, Mixed, Prefill, Reshard, Step, SwapIn, SwapOut,
)
from seesaw.scheduling.vllm import VllmScheduler
from seesaw.scheduling.placement import split_across_replicas
from seesaw.scheduling.seesaw import SeesawScheduler
from seesaw.scheduling.protocol import Scheduler
from seesaw.scheduling.phases import PhaseClock, phase_of

__all__ = [
    "BlockPool", "SchedulerError", "Sequence", "SeqStatus", "blocks_for",
    "Step", "Forward", "Prefill", "Decode", "Mixed", "Reshard", "SwapIn", "SwapOut",
    "VllmScheduler", "SeesawScheduler", "Scheduler", "split_across_replicas",
    "PhaseClock", "phase_of",
]
