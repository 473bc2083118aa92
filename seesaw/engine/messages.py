"""The step messages rank 0 broadcasts to the ranks of a replica: one small dataclass per operation.

Every rank of a replica receives the same messages in the same order (``control.ControlPlane``)
and ``worker.StepWorker`` dispatches on the message's type. Two fields apply to any message and are
handled before its operation: ``free`` (sequence ids whose device blocks the driver released since
its last message: drop their tables) and ``sync`` (``"poll"`` or ``"wait"``: the replica first
agrees on finished KV copies, see ``seesaw_worker.SeesawWorker``).

- ``ForwardMsg``: one micro-batch, ``step`` its number within the replica, ``seqs`` one ``SeqChunk``
  ``(seq_id, start, new_tokens, new_blocks, sample, temperature, seed)`` per sequence. ``start``
  is how many tokens of the sequence are already cached (its new tokens take positions
  ``start..``), ``new_blocks`` extend its block table (a ``start`` of 0 starts a new table: a
  first prefill, or a re-prefill after preemption), ``sample`` says whether its last new token is
  the end of its known tokens (otherwise it is a prefill chunk and nothing is sampled).
  The reply, broadcast by the replica's sampling rank, is an int64 tensor with one token per
  sequence (-1 where not sampled).
- ``StopMsg``: nothing left to do for the replica; its ranks leave their loop.
- Seesaw only: ``SwapOutMsg`` and ``SwapInMsg`` (KV copies queued on each rank's prefetcher),
  ``EvictMsg`` (a synchronous copy to the host pool), ``ReshardMsg`` and ``SyncMsg`` (only agree).

The classes are pickled as they are (``op`` names the operation in error messages), so a message
costs its fields plus the class's name on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from seesaw.core import ParallelConfig

__all__ = ["Message", "SeqChunk", "ForwardMsg", "StopMsg", "SyncMsg", "SwapOutMsg", "SwapInMsg", "EvictMsg",
           "ReshardMsg"]


@dataclass(slots=True, kw_only=True)
class Message:
    """Fields every message carries."""

    op: ClassVar[str] = "message"
    free: list[int] = field(default_factory=list)  # sequences finished since the last message
    sync: str = ""                                 # "", "poll" or "wait"


# One sequence's part of a forward micro-batch, a plain tuple (a named one would double the time
# to pickle a large step): (seq_id, start, new token ids, new block ids, sample, temperature, seed)
SeqChunk = tuple[int, int, list[int], list[int], bool, float, int]


@dataclass(slots=True, kw_only=True)
class ForwardMsg(Message):
    op: ClassVar[str] = "forward"
    step: int
    seqs: list[SeqChunk]


@dataclass(slots=True, kw_only=True)
class StopMsg(Message):
    op: ClassVar[str] = "stop"


@dataclass(slots=True, kw_only=True)
class SyncMsg(Message):
    """Nothing but the copy agreement of ``sync`` (sent with ``sync="wait"``)."""

    op: ClassVar[str] = "sync"


@dataclass(slots=True, kw_only=True)
class SwapOutMsg(Message):
    """Queue the device -> host copy of each sequence's first ``num_tokens`` tokens."""

    op: ClassVar[str] = "swap_out"
    seqs: list[tuple[int, list[int], int]]   # (seq_id, host blocks, num_tokens)


@dataclass(slots=True, kw_only=True)
class EvictMsg(Message):
    """Copy evicted sequences to the host pool now, then drop their tables."""

    op: ClassVar[str] = "evict"
    seqs: list[tuple[int, list[int], int]]   # (seq_id, host blocks, num_tokens)


@dataclass(slots=True, kw_only=True)
class SwapInMsg(Message):
    """New tables of the given device blocks, and the host -> device copies into them queued."""

    op: ClassVar[str] = "swap_in"
    seqs: list[tuple[int, list[int], list[int], int]]   # (seq_id, host blocks, device blocks, num_tokens)


@dataclass(slots=True, kw_only=True)
class ReshardMsg(Message):
    """Re-shard the replica's weights and KV cache from layout ``src`` to ``dst``."""

    op: ClassVar[str] = "reshard"
    src: ParallelConfig
    dst: ParallelConfig
