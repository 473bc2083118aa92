"""Pure scheduling policies shared by the simulator and the real engine (no torch, no simpy)."""

from seesaw.scheduling.state import BlockPool, SchedulerError, Sequence, SeqStatus, blocks_for
from seesaw.scheduling.steps import (
    Decode, Forward, Mixed, Prefill, Reshard, Step, SwapIn, SwapOut,
)
from seesaw.scheduling.vllm import VllmScheduler, split_across_replicas

__all__ = [
    "BlockPool", "SchedulerError", "Sequence", "SeqStatus", "blocks_for",
    "Step", "Forward", "Prefill", "Decode", "Mixed", "Reshard", "SwapIn", "SwapOut",
    "VllmScheduler", "split_across_replicas",
]
