"""Scheduling policies as data: the one definition of every scheduling knob and its default.

``VllmPolicy`` is continuous batching under one static layout; ``SeesawPolicy`` prefills under one
layout, parks KV in a host pool and decodes under another. Names follow vLLM
(``max_num_seqs``, ``max_num_batched_tokens``, ``block_size``). The simulator, the planner and the
engine all read these; nothing else defines a default for them.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import Field, model_validator

from seesaw.core.base import Spec
from seesaw.core.parallel import Layout, ParallelConfig

DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192
DEFAULT_BLOCK_SIZE = 16


class PolicyBase(Spec):
    """The knobs both policies share (vLLM's names and defaults)."""

    max_num_seqs: int = Field(default=DEFAULT_MAX_NUM_SEQS, gt=0, description="max sequences in a running batch")
    max_num_batched_tokens: int = Field(
        default=DEFAULT_MAX_NUM_BATCHED_TOKENS, gt=0, description="token budget per step (the chunk size under chunked prefill)"
    )
    block_size: int = Field(default=DEFAULT_BLOCK_SIZE, gt=0, description="tokens per KV block")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="fraction of device memory for weights + KV + activations"
    )


class VllmPolicy(PolicyBase):
    """vLLM-style continuous batching under one static layout."""

    kind: Literal["vllm"] = "vllm"
    layout: Layout
    enable_chunked_prefill: bool = False

    def describe(self) -> str:
        chunk = f", chunked {self.max_num_batched_tokens}" if self.enable_chunked_prefill else ""
        return f"vllm {self.layout}{chunk}"


class SeesawPolicy(PolicyBase):
    """Prefill under ``prefill_layout``, decode under ``decode_layout``, KV buffered in host memory."""

    kind: Literal["seesaw"] = "seesaw"
    prefill_layout: Layout
    decode_layout: Layout
    host_kv_bytes: float | None = Field(
        default=None, gt=0, description="host KV pool size; None = all host memory left after weights"
    )
    host_full_watermark: float = Field(
        default=1.0, gt=0, le=1,
        description="switch to decode when the host pool is this full (1.0 = the paper: when full)",
    )
    decode_low_watermark: float = Field(
        default=0.5, gt=0, le=1,
        description="with the host pool empty and requests waiting, switch back to prefill once "
        "device KV use falls below this fraction (1.0 = as soon as the host pool is empty)",
    )

    @model_validator(mode="after")
    def _same_dp(self) -> "SeesawPolicy":
        if self.prefill_layout.dp != self.decode_layout.dp:
            raise ValueError("prefill and decode layouts must have the same DP degree")
        if self.prefill_layout.world_size != self.decode_layout.world_size:
            raise ValueError("prefill and decode layouts must use the same number of GPUs")
        return self

    @property
    def layout(self) -> ParallelConfig:
        return self.prefill_layout

    def describe(self) -> str:
        return f"seesaw {self.prefill_layout}->{self.decode_layout}"


PolicySpec = Annotated[Union[VllmPolicy, SeesawPolicy], Field(discriminator="kind")]
