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


class SeesawStats(Spec):
    """What a Seesaw run did besides computing, simulated or real: transitions, re-shards, KV swaps."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    num_transitions: int = Field(default=0, ge=0, description="prefill <-> decode layout switches")
    reshard_time: float = Field(default=0.0, ge=0, description="seconds spent re-sharding")
    swap_stall_time: float = Field(default=0.0, ge=0, description="seconds of KV copies no compute overlapped")
    swapped_bytes: float = Field(default=0.0, ge=0, description="KV bytes moved between device and host")
    host_kv_peak_usage: float = Field(default=0.0, ge=0, description="highest fraction of the host pool in use")
    swap_bytes_per_rank: dict[int | str, dict[str, float]] = Field(
        default_factory=dict, description="engine: per rank, bytes swapped in and out")


class EngineStats(Spec):
    """What only a real run reports: where it ran, its KV cache, its steps and warm-up."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    device: str
    dtype: str
    num_steps: int = Field(default=0, ge=0)
    num_rejected: int = Field(default=0, ge=0, description="requests that can never fit the KV cache or budget")
    num_preemptions: int = Field(default=0, ge=0)
    kv_blocks_per_replica: int = Field(default=0, ge=0)
    block_size: int = Field(default=0, ge=0)
    peak_kv_usage: float = Field(default=0.0, ge=0)
    warmup_s: float = Field(default=0.0, ge=0, description="the dummy prefill before the clock started")


class RunResult(Spec):
    """End-to-end metrics of one run, simulated or real. Keys follow ``vllm bench throughput``.

    The JSON stays flat (``summary.json``, ``--json``); the typed sections read it: ``seesaw`` for a
    Seesaw run (simulated or real), ``engine`` for a real run."""

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

    @property
    def seesaw(self) -> SeesawStats | None:
        """The Seesaw section of a Seesaw run, else None."""
        return SeesawStats.model_validate(self.model_extra or {}) if self.policy == "seesaw" else None

    @property
    def engine(self) -> EngineStats | None:
        """The engine section of a real run, else None (a simulation)."""
        extra = self.model_extra or {}
        return EngineStats.model_validate(extra) if "device" in extra else None

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
