"""A run's configuration as every engine rank sees it, the engine's error, and the phase names.

``EngineConfig`` is everything a rank needs to know about a run (it is pickled to the ranks);
``EngineError`` is the one-line error of a run that cannot go on; ``PHASES`` are the simulator's
names for where wall time goes; ``reason`` shortens a backend (gloo/NCCL) error to one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from seesaw.core import ParallelConfig

__all__ = ["EngineConfig", "EngineError", "PHASES", "reason"]

PHASES = ("prefill", "decode", "mixed", "reshard", "swap_stall", "idle")  # as the simulator's
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineError(RuntimeError):
    """The run cannot go on (a rank died or timed out, the scheduler stalled). One line."""


@dataclass
class EngineConfig:
    """Everything every rank needs to know about a run (pickled to the ranks).

    ``decode_layout`` set: a Seesaw run (prefill under ``layout``, decode under ``decode_layout``,
    KV buffered in a host pool of ``host_kv_blocks`` blocks per replica, or ``host_kv_bytes`` for
    the whole run; default 1 GiB, capped at what the workload can fill)."""

    layout: ParallelConfig
    model_dir: str = ""
    model_name: str = "model"
    block_size: int = 16
    num_blocks: int | None = None          # KV blocks per replica; None: from kv_cache_bytes/memory
    kv_cache_bytes: float | None = None    # per-rank KV budget on CPU (default 1 GiB)
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_chunked_prefill: bool = False
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
    return_token_ids: bool = False         # add {custom_id: output token ids} to the result
    step_trace: str = ""                   # JSONL file: one record per forward step (rank 0's clock)
    warmup: bool = True                    # a dummy max-size prefill on every rank before the clock
    # Seesaw
    decode_layout: ParallelConfig | None = None
    host_kv_bytes: float | None = None     # host KV pool of the whole run (split over DP replicas)
    host_kv_blocks: int | None = None      # or: host blocks per replica
    host_full_watermark: float = 1.0
    decode_low_watermark: float = 0.5

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def seesaw(self) -> bool:
        return self.decode_layout is not None

    @property
    def layout_name(self) -> str:
        return f"{self.layout}->{self.decode_layout}" if self.seesaw else str(self.layout)


def reason(e: BaseException) -> str:
    """Last meaningful line of a backend error, without gloo's source-file prefix and advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])
    if "Connection closed by peer" in text or "Connection reset by peer" in text:
        return "a peer closed its connection (the rank crashed or was killed)"
    if "timed out" in text.lower():
        return f"a rank did not respond within the timeout ({text[:120]})"
    return text[:300]
