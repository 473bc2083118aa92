"""Typed results: what a run measured or simulated (``RunResult``) and what the planner chose (``Plan``).

``RunResult``'s keys follow ``vllm bench throughput`` (requests/s, total and output tokens/s);
extra keys are allowed so a simulator or an engine run can carry its own detail.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_serializer

from seesaw.core.base import Spec
from seesaw.core.hardware import NodeSpec
from seesaw.core.model import ModelSpec
from seesaw.core.policy import PolicySpec


class RunResult(Spec):
    """End-to-end metrics of one run, simulated or real. Keys follow ``vllm bench throughput``."""

    model_config = ConfigDict(frozen=True, extra="allow")

    elapsed_time: float = Field(ge=0, description="makespan in seconds")
    num_requests: int = Field(ge=0)
    total_num_tokens: int = Field(ge=0, description="prompt + generated tokens")
    total_output_tokens: int = Field(ge=0)
    requests_per_second: float = Field(ge=0)
    tokens_per_second: float = Field(ge=0, description="total tokens per second")
    output_tokens_per_second: float = Field(ge=0)
    layout: str
    policy: str
    time_by_phase: dict[str, float] = Field(default_factory=dict, description="seconds per phase")

    def throughput_line(self) -> str:
        return (
            f"Throughput: {self.requests_per_second:.2f} requests/s, "
            f"{self.tokens_per_second:.2f} total tokens/s, "
            f"{self.output_tokens_per_second:.2f} output tokens/s"
        )


class Predicted(Spec):
    """What a plan predicts for its workload: the one set of keys every planner fills.

    ``throughput_tok_s`` is total (prompt + output) tokens per second and ``output_throughput_tok_s``
    output tokens per second (vLLM's definitions); ``<phase>_s`` the simulated seconds by phase
    (``seesaw.core.PHASES``). Figures that do not apply (no price, no vLLM baseline, a phase that
    never happened) are None and left out of the JSON."""

    throughput_tok_s: float = Field(ge=0)
    output_throughput_tok_s: float | None = Field(default=None, ge=0)
    requests_per_s: float | None = Field(default=None, ge=0)
    makespan_s: float = Field(ge=0)
    gpu_hours: float | None = Field(default=None, ge=0)
    cost_per_mtok_usd: float | None = Field(default=None, ge=0)
    speedup_vs_best_vllm: float | None = Field(default=None, gt=0)
    prefill_s: float | None = None
    decode_s: float | None = None
    mixed_s: float | None = None
    reshard_s: float | None = None
    swap_stall_s: float | None = None
    idle_s: float | None = None

    @model_serializer(mode="wrap")
    def _drop_none(self, handler):
        return {k: v for k, v in handler(self).items() if v is not None}

    def phase_s(self, phase: str) -> float | None:
        """Predicted seconds of ``phase`` (one of ``PHASES``), None when it never happened."""
        return getattr(self, f"{phase}_s")


class Plan(Spec):
    """What the planner chose, with enough context to re-run or audit it."""

    model: ModelSpec
    node: NodeSpec
    policy: PolicySpec
    workload: str = Field(description="workload description the plan was made for")
    objective: Literal["throughput", "cost"] = "throughput"
    predicted: Predicted = Field(description="predicted metrics")
    runner_up: dict | None = None
    search_space_size: int = Field(default=0, ge=0)
    explanation: str = ""
    provenance: dict[str, str] = Field(default_factory=dict)
