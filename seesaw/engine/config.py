"""A run's configuration as every engine rank sees it, and the engine's error.

``EngineConfig`` is everything a rank needs to know about a run (it is pickled to the ranks): the
scheduling policy (``seesaw.core``'s ``VllmPolicy`` or ``SeesawPolicy``, the one definition of
every scheduling knob) and the run-time settings; read-only properties give the engine the
policy's fields it reads (``layout``, ``decode_layout``, ``block_size``, ...). ``EngineError`` is
the one-line error of a run that cannot go on; ``reason`` shortens a backend (gloo/NCCL) error to
one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from seesaw.core import ParallelConfig, SeesawPolicy, VllmPolicy
from seesaw.engine.dtypes import TORCH_DTYPES

__all__ = ["EngineConfig", "EngineError", "reason"]


class EngineError(RuntimeError):
    """The run cannot go on (a rank died or timed out, the scheduler stalled). One line."""


@dataclass
class EngineConfig:
    """Everything every rank needs to know about a run (pickled to the ranks).

    A ``SeesawPolicy``: a Seesaw run (prefill under ``layout``, decode under ``decode_layout``,
    KV buffered in a host pool of ``host_kv_blocks`` blocks per replica, or the policy's
    ``host_kv_bytes`` for the whole run; None: 1 GiB, capped at what the workload can fill)."""

    policy: VllmPolicy | SeesawPolicy
    model_dir: str = ""
    model_name: str = "model"
    num_blocks: int | None = None          # KV blocks per replica; None: from kv_cache_bytes/memory
    kv_cache_bytes: float | None = None    # per-rank KV budget on CPU (default 1 GiB)
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    timeout_s: float = 120.0
    eos_token_ids: tuple[int, ...] = ()
    output: str = ""
    errors_output: str = ""
    append: bool = False                   # resume: append to an existing output file
    progress: bool = False
    fault: dict | None = None              # test hook: {"rank", "after_steps", "action": exit|hang}
    launcher_pid: int | None = None        # spawned ranks: rank 0 writes no output line once it is gone
    return_token_ids: bool = False         # add {custom_id: output token ids} to the result
    step_trace: str = ""                   # JSONL file: one record per forward step (rank 0's clock)
    warmup: bool = True                    # a dummy max-size prefill on every rank before the clock
    host_kv_blocks: int | None = None      # Seesaw: host blocks per replica (instead of host_kv_bytes)
    include_timing: bool = False           # output lines carry a "timing" object (not OpenAI's format)

    @property
    def torch_dtype(self) -> torch.dtype:
        return TORCH_DTYPES[self.dtype]

    @property
    def seesaw(self) -> bool:
        return isinstance(self.policy, SeesawPolicy)

    @property
    def layout(self) -> ParallelConfig:
        """The static layout, or a Seesaw run's prefill layout."""
        return self.policy.layout

    @property
    def decode_layout(self) -> ParallelConfig | None:
        return self.policy.decode_layout if self.seesaw else None

    @property
    def layout_name(self) -> str:
        return f"{self.layout}->{self.decode_layout}" if self.seesaw else str(self.layout)

    @property
    def block_size(self) -> int:
        return self.policy.block_size

    @property
    def max_num_seqs(self) -> int:
        return self.policy.max_num_seqs

    @property
    def max_num_batched_tokens(self) -> int:
        return self.policy.max_num_batched_tokens

    @property
    def gpu_memory_utilization(self) -> float:
        return self.policy.gpu_memory_utilization

    @property
    def enable_chunked_prefill(self) -> bool:
        return getattr(self.policy, "enable_chunked_prefill", False)  # vllm only


def reason(e: BaseException) -> str:
    """Last meaningful line of a backend error, without gloo's source-file prefix and advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])
    if "Connection closed by peer" in text or "Connection reset by peer" in text:
        return "a peer closed its connection (the rank crashed or was killed)"
    if "timed out" in text.lower():
        return f"a rank did not respond within the timeout ({text[:120]})"
    return text[:300]
