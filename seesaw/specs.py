"""Boundary types shared by the simulator, the planner and the engine.

Everything here is data: pydantic v2 models, frozen, with ``extra="forbid"`` so a misspelt key in
a profile or a plan is an error rather than a silent default. Units are in the field names and are
SI (``_bytes``, ``_s``, ``_flops``, ``_bytes_per_s``; 1e9 / 1e12, never powers of two), except
where a datasheet states a power-of-two capacity, which the profile then writes out in bytes.

Layout strings follow the Seesaw paper: ``D2T4P1``, ``T4P2``, ``P8`` and, for a re-sharding
policy, ``P8->T4P2``. Rank order is TP-contiguous, PP-strided, DP outermost:
``rank = d * (tp * pp) + p * tp + t``.
"""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Literal, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, model_validator

__all__ = [
    "SpecError",
    "Spec",
    "ModelSpec",
    "GpuSpec",
    "NodeSpec",
    "ParallelConfig",
    "parse_parallel",
    "parse_layout",
    "format_layout",
    "VllmPolicy",
    "SeesawPolicy",
    "PolicySpec",
    "Plan",
    "RunResult",
    "OpTable",
    "AttentionTable",
    "CommTable",
    "CopyTable",
    "StepTable",
    "SwapTable",
    "ReshardTable",
    "MeasuredProfile",
]

GiB = 1024**3


class SpecError(ValueError):
    """Bad user-supplied specification (layout string, profile, plan). One-line message."""


class Spec(BaseModel):
    """Base for every boundary type: immutable, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")


# --------------------------------------------------------------------------------------------
# Model


class ModelSpec(Spec):
    """A LLaMA-family decoder. Field names follow HF ``LlamaConfig`` so a ``config.json`` loads."""

    name: str = Field(description="catalog name, e.g. llama2-70b")
    num_hidden_layers: int = Field(gt=0, description="decoder layers L")
    hidden_size: int = Field(gt=0, description="model width h")
    num_attention_heads: int = Field(gt=0, description="query heads h_q")
    num_key_value_heads: int = Field(gt=0, description="KV heads h_kv (GQA)")
    head_dim: int | None = Field(default=None, gt=0, description="per-head width d; default h/h_q")
    intermediate_size: int = Field(gt=0, description="SwiGLU inner width")
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    rope_theta: float = Field(default=10000.0, gt=0)
    rope_scaling: dict | None = Field(default=None, description="HF rope_scaling dict, if any")
    rms_norm_eps: float = Field(default=1e-5, gt=0)
    max_position_embeddings: int = Field(default=4096, gt=0)
    dtype_bytes: int = Field(default=2, gt=0, description="bytes per weight/KV element (fp16=2)")
    source: str = Field(default="", description="where the shape comes from")

    @model_validator(mode="after")
    def _check_heads(self) -> "ModelSpec":
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size is not divisible by num_attention_heads; give head_dim")
        return self

    @classmethod
    def from_hf_config(cls, config: dict, name: str, dtype_bytes: int = 2) -> "ModelSpec":
        """Build from a HF ``config.json`` dict, ignoring keys this model does not use."""
        keys = set(cls.model_fields) - {"name", "dtype_bytes", "source"}
        return cls(
            name=name,
            dtype_bytes=dtype_bytes,
            source="config.json",
            **{k: v for k, v in config.items() if k in keys and v is not None},
        )

    # -- derived shapes ------------------------------------------------------------------
    @property
    def d_head(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.d_head

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.d_head

    @property
    def attn_params_per_layer(self) -> int:
        # W_q [h, h_q d], W_k and W_v [h, h_kv d], W_o [h_q d, h]
        return self.hidden_size * (2 * self.q_size + 2 * self.kv_size)

    @property
    def mlp_params_per_layer(self) -> int:
        # SwiGLU: gate and up [h, i], down [i, h]
        return 3 * self.hidden_size * self.intermediate_size

    @property
    def params_per_layer(self) -> int:
        # two RMSNorm weight vectors per layer
        return self.attn_params_per_layer + self.mlp_params_per_layer + 2 * self.hidden_size

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size

    @property
    def num_parameters(self) -> int:
        # embedding + L layers + final norm + LM head (absent when tied)
        return (
            self.embedding_params
            + self.num_hidden_layers * self.params_per_layer
            + self.hidden_size
            + self.lm_head_params
        )

    @property
    def weight_bytes_per_layer(self) -> int:
        return self.params_per_layer * self.dtype_bytes

    @property
    def weight_bytes(self) -> int:
        return self.num_parameters * self.dtype_bytes

    @property
    def kv_bytes_per_token_per_layer(self) -> int:
        # K and V, each h_kv * d elements
        return 2 * self.kv_size * self.dtype_bytes

    @property
    def kv_bytes_per_token(self) -> int:
        return self.num_hidden_layers * self.kv_bytes_per_token_per_layer

    def flops_per_token(self) -> int:
        """Dense matmul FLOPs per token, attention scores excluded (2 FLOPs per MAC)."""
        return 2 * (self.num_hidden_layers * (self.attn_params_per_layer + self.mlp_params_per_layer)
                    + self.vocab_size * self.hidden_size)


# --------------------------------------------------------------------------------------------
# Hardware


class GpuSpec(Spec):
    """One accelerator, from its datasheet (or a measured profile)."""

    name: str
    memory_bytes: float = Field(gt=0, description="device memory usable by the framework")
    hbm_bandwidth_bytes_per_s: float = Field(gt=0, description="peak device-memory bandwidth")
    peak_flops: float = Field(gt=0, description="dense fp16/bf16 tensor-core FLOP/s (no sparsity)")
    compute_efficiency: float = Field(
        default=0.7, gt=0, le=1, description="achievable fraction of peak_flops on large GEMMs"
    )
    memory_efficiency: float = Field(
        default=0.8, gt=0, le=1, description="achievable fraction of HBM bandwidth on streaming reads"
    )
    compute_saturation_tokens: float = Field(
        default=96.0, ge=0,
        description="n0 of the GEMM efficiency curve compute_efficiency * n / (n + n0): rows (tokens) "
        "at which a GEMM reaches half of compute_efficiency (96 fits Vidur's A100 GEMM profiles)",
    )
    kernel_overhead_s: float = Field(
        default=5e-6, ge=0,
        description="fixed GPU time per GEMM/attention kernel (launch, ramp-up, tail), added to its roofline time",
    )
    price_per_hour_usd: float | None = Field(
        default=None, gt=0, description="on-demand price per GPU-hour, for cost objectives"
    )
    source: str = Field(default="", description="datasheet or measurement this comes from")


class NodeSpec(Spec):
    """A node of identical GPUs: how they talk to each other and to host memory."""

    name: str
    gpu: GpuSpec
    num_gpus: int = Field(gt=0)
    interconnect: Literal["pcie", "nvlink", "loopback"] = Field(
        description="how collectives travel; loopback: ranks of one host talking through the OS "
        "(gloo over TCP on a CPU 'node' built from a measured profile)")
    gpu_link_bandwidth_bytes_per_s: float = Field(
        gt=0, description="per-GPU unidirectional GPU-GPU bandwidth used by collectives"
    )
    host_link_bandwidth_bytes_per_s: float = Field(
        gt=0, description="per-GPU host<->device copy bandwidth (one direction)"
    )
    host_memory_bytes_per_gpu: float = Field(gt=0, description="CPU DRAM per GPU")
    allreduce_latency_s: float = Field(default=10e-6, ge=0, description="per ring step latency")
    p2p_latency_s: float = Field(default=10e-6, ge=0, description="one send/recv latency")
    step_overhead_s: float = Field(default=2e-3, ge=0, description="fixed CPU/launch cost per step")
    source: str = ""

    @property
    def host_memory_bytes(self) -> float:
        return self.host_memory_bytes_per_gpu * self.num_gpus


# --------------------------------------------------------------------------------------------
# Parallel layouts

_LAYOUT_RE = re.compile(r"([dtp])(\d+)")


class ParallelConfig(Spec):
    """Data, tensor and pipeline parallel degrees; ``str()`` gives the paper's string."""

    dp: int = Field(default=1, gt=0, description="data-parallel replicas")
    tp: int = Field(default=1, gt=0, description="tensor_parallel_size")
    pp: int = Field(default=1, gt=0, description="pipeline_parallel_size")

    @property
    def world_size(self) -> int:
        return self.dp * self.tp * self.pp

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    def __str__(self) -> str:
        parts = [f"{k}{v}" for k, v in (("D", self.dp), ("T", self.tp), ("P", self.pp)) if v > 1]
        return "".join(parts) or "T1"

    def full_name(self) -> str:
        return f"D{self.dp}T{self.tp}P{self.pp}"

    def rank(self, d: int, t: int, p: int) -> int:
        """Global rank of replica d, pipeline stage p, tensor slice t (TP-contiguous)."""
        return d * self.tp * self.pp + p * self.tp + t

    def coords(self, rank: int) -> tuple[int, int, int]:
        """Inverse of ``rank``: (d, t, p)."""
        if not 0 <= rank < self.world_size:
            raise SpecError(f"rank {rank} out of range for layout {self} (world size {self.world_size})")
        d, rest = divmod(rank, self.tp * self.pp)
        p, t = divmod(rest, self.tp)
        return d, t, p

    def check_model(self, model: ModelSpec) -> None:
        """Raise SpecError if this layout cannot shard ``model`` evenly."""
        if model.num_attention_heads % self.tp:
            raise SpecError(
                f"layout {self}: tp={self.tp} does not divide the {model.num_attention_heads} "
                f"attention heads of {model.name}"
            )
        if model.num_key_value_heads % self.tp and self.tp % model.num_key_value_heads:
            raise SpecError(
                f"layout {self}: tp={self.tp} must divide or be a multiple of the "
                f"{model.num_key_value_heads} KV heads of {model.name}"
            )
        if self.pp > model.num_hidden_layers:
            raise SpecError(
                f"layout {self}: pp={self.pp} exceeds the {model.num_hidden_layers} layers of {model.name}"
            )
        if model.intermediate_size % self.tp:  # the engine splits the MLP columns too
            raise SpecError(
                f"layout {self}: tp={self.tp} does not divide intermediate_size="
                f"{model.intermediate_size} of {model.name}"
            )


def parse_parallel(text: str) -> ParallelConfig:
    """Parse one layout string such as ``D2T4``, ``t4p2`` or ``P8`` (missing degrees are 1)."""
    s = str(text).strip().lower().replace(" ", "")
    if not s or _LAYOUT_RE.sub("", s):
        raise SpecError(
            f"invalid layout {text!r}: expected letters D, T, P each followed by a degree, e.g. T4P2, D2T4, P8"
        )
    seen: dict[str, int] = {}
    for key, deg in _LAYOUT_RE.findall(s):
        if key in seen:
            raise SpecError(f"invalid layout {text!r}: {key.upper()} given twice")
        if int(deg) < 1:
            raise SpecError(f"invalid layout {text!r}: degrees must be at least 1")
        seen[key] = int(deg)
    return ParallelConfig(dp=seen.get("d", 1), tp=seen.get("t", 1), pp=seen.get("p", 1))


def parse_layout(text: str) -> tuple[ParallelConfig, ...]:
    """Parse ``T4P2`` -> (T4P2,) or ``P8->T4P2`` -> (prefill, decode) with equal DP and size."""
    pieces = str(text).split("->")
    if len(pieces) > 2:
        raise SpecError(f"invalid layout {text!r}: at most one '->' (prefill->decode)")
    configs = tuple(parse_parallel(p) for p in pieces)
    if len(configs) == 2:
        c_p, c_d = configs
        if c_p.dp != c_d.dp:
            raise SpecError(f"invalid layout {text!r}: prefill and decode must have the same DP degree")
        if c_p.world_size != c_d.world_size:
            raise SpecError(
                f"invalid layout {text!r}: prefill uses {c_p.world_size} GPUs, decode {c_d.world_size}"
            )
    return configs


def format_layout(configs: tuple[ParallelConfig, ...] | ParallelConfig) -> str:
    if isinstance(configs, ParallelConfig):
        return str(configs)
    return "->".join(str(c) for c in configs)


def _coerce_parallel(v):
    return parse_parallel(v) if isinstance(v, str) else v


# A ParallelConfig that reads and writes as the paper's string inside policies and plans.
Layout = Annotated[
    ParallelConfig, BeforeValidator(_coerce_parallel), PlainSerializer(str, return_type=str)
]


# --------------------------------------------------------------------------------------------
# Policies


class _PolicyBase(Spec):
    max_num_seqs: int = Field(default=256, gt=0, description="max sequences in a running batch")
    max_num_batched_tokens: int = Field(
        default=8192, gt=0, description="token budget per step (the chunk size under chunked prefill)"
    )
    block_size: int = Field(default=16, gt=0, description="tokens per KV block")
    gpu_memory_utilization: float = Field(
        default=0.9, gt=0, le=1, description="fraction of device memory for weights + KV + activations"
    )


class VllmPolicy(_PolicyBase):
    """vLLM-style continuous batching under one static layout."""

    kind: Literal["vllm"] = "vllm"
    layout: Layout
    enable_chunked_prefill: bool = False

    def describe(self) -> str:
        chunk = f", chunked {self.max_num_batched_tokens}" if self.enable_chunked_prefill else ""
        return f"vllm {self.layout}{chunk}"


class SeesawPolicy(_PolicyBase):
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


# --------------------------------------------------------------------------------------------
# Results and plans


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


class Plan(Spec):
    """What the planner chose, with enough context to re-run or audit it."""

    model: ModelSpec
    node: NodeSpec
    policy: PolicySpec
    workload: str = Field(description="workload description the plan was made for")
    objective: Literal["throughput", "cost"] = "throughput"
    predicted: dict[str, float] = Field(default_factory=dict, description="predicted metrics")
    runner_up: dict | None = None
    search_space_size: int = Field(default=0, ge=0)
    explanation: str = ""
    provenance: dict[str, str] = Field(default_factory=dict)


# --------------------------------------------------------------------------------------------
# Measured profiles (``profiles/measured/*.yaml``, written by ``seesaw profile``)
#
# Tables of mean times of the engine's own pieces on one machine. A grid axis is a strictly
# increasing tuple of positive sizes; ``simulator.cost`` interpolates log-log between grid points.

_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def _check_axis(name: str, axis: tuple) -> None:
    if not axis:
        raise ValueError(f"{name} is empty")
    if any(b <= a for a, b in zip(axis, axis[1:])):
        raise ValueError(f"{name} must be strictly increasing, got {list(axis)}")


class _CurveTable(Spec):
    """A measured table of ``time_s`` by one axis: the field ``_axis[0]``, strictly increasing,
    with one time per point (``_axis[1]`` names its values in the error)."""

    _axis: ClassVar[tuple[str, str]]

    @model_validator(mode="after")
    def _check_curve(self):
        name, what = self._axis
        axis = getattr(self, name)
        _check_axis(name, axis)
        if len(self.time_s) != len(axis):
            raise ValueError(f"time_s has {len(self.time_s)} values for {len(axis)} {what}")
        return self


class OpTable(_CurveTable):
    """Seconds of one operator of one rank by the number of token rows it processes."""

    _axis = ("tokens", "tokens")

    op: Literal["linear", "layer_misc", "embed_rope", "tp_all_reduce", "tp_all_gather"] = Field(
        description="linear: one GEMM (x @ W.T); layer_misc: a decoder layer minus its GEMMs, "
        "attention and all-reduces (RMSNorms, RoPE, SiLU x up, residual adds); embed_rope: the "
        "embedding lookup (vocab-parallel under TP, before its all-reduce) plus the step's RoPE "
        "cos/sin; tp_all_reduce: one all-reduce of [tokens, hidden] inside a forward pass, timed "
        "where the engine calls it (TP ranks computing between calls); tp_all_gather: the LM "
        "head's logits gather of ``tokens`` rows inside a forward pass")
    dims: tuple[int, ...] = Field(
        description="linear: (in_features, out_features); layer_misc: (hidden_size, q_size, kv_size, "
        "intermediate_size) per rank; embed_rope: (hidden_size, head_dim, vocab rows per rank); "
        "tp_all_reduce: (hidden_size,); tp_all_gather: (vocab rows per rank,)")
    ranks: int = Field(default=1, gt=0, description="ranks running it at once while measured (TP degree)")
    tokens: tuple[Annotated[int, Field(gt=0)], ...] = Field(description="rows (tokens) grid")
    time_s: tuple[Annotated[float, Field(gt=0)], ...] = Field(description="mean seconds per call")

    @model_validator(mode="after")
    def _check(self) -> "OpTable":
        if self.op == "linear" and len(self.dims) != 2:
            raise ValueError("a linear table's dims are (in_features, out_features)")
        return self


class AttentionTable(Spec):
    """Seconds of one layer's paged attention on one rank (``seesaw.engine.attention``)."""

    kind: Literal["prefill", "decode"]
    num_heads: int = Field(gt=0, description="query heads of this rank")
    num_kv_heads: int = Field(gt=0, description="KV heads of this rank")
    head_dim: int = Field(gt=0)
    ranks: int = Field(default=1, gt=0, description="ranks running it at once while measured")
    sizes: tuple[Annotated[int, Field(gt=0)], ...] = Field(
        description="prefill: new (query) tokens of one sequence; decode: sequences in the batch")
    context_tokens: tuple[Annotated[int, Field(gt=0)], ...] = Field(
        description="prefill: the sequence's context after the step (a value below the query tokens "
        "stands for the whole-prompt case, context = query tokens); decode: context summed over the "
        "batch (a value below the batch stands for one token each)")
    time_s: tuple[tuple[Annotated[float, Field(gt=0)], ...], ...] = Field(
        description="[sizes][context_tokens] mean seconds per call")

    @model_validator(mode="after")
    def _check(self) -> "AttentionTable":
        _check_axis("sizes", self.sizes)
        _check_axis("context_tokens", self.context_tokens)
        if len(self.time_s) != len(self.sizes) or any(len(r) != len(self.context_tokens) for r in self.time_s):
            raise ValueError(f"time_s must be {len(self.sizes)} rows of {len(self.context_tokens)} values")
        return self


class CommTable(_CurveTable):
    """Seconds of one collective (torch.distributed, as ``TorchComm`` calls it) by message size."""

    _axis = ("size_bytes", "sizes")

    op: Literal["all_reduce", "all_gather", "send_recv", "broadcast", "handoff"] = Field(
        description="size_bytes is the buffer (all_reduce, broadcast), each rank's input "
        "(all_gather) or the message (send_recv: one way, half a ping-pong; handoff: one way "
        "between two busy ranks, from the later of the sender's isend and the receiver's recv "
        "until the receiver has it, the sender computing meanwhile -- a pipeline stage's hand-off)")
    ranks: int = Field(gt=0, description="ranks taking part")
    size_bytes: tuple[Annotated[int, Field(gt=0)], ...]
    time_s: tuple[Annotated[float, Field(gt=0)], ...]


class CopyTable(_CurveTable):
    """Seconds of one copy by size: host->device, device->host (pinned, on CUDA) or host->host."""

    _axis = ("size_bytes", "sizes")

    kind: Literal["h2d", "d2h", "h2h"]
    size_bytes: tuple[Annotated[int, Field(gt=0)], ...]
    time_s: tuple[Annotated[float, Field(gt=0)], ...]


class StepTable(_CurveTable):
    """Seconds of one engine step outside the model (KV slot allocation, attention metadata,
    sampling one token per sequence from logits [seqs, vocab_size]) by the sequences in the step."""

    _axis = ("seqs", "seqs")

    vocab_size: int = Field(gt=0)
    ranks: int = Field(default=1, gt=0, description="ranks running driver steps at once while measured")
    seqs: tuple[Annotated[int, Field(gt=0)], ...]
    time_s: tuple[Annotated[float, Field(gt=0)], ...]


class SwapTable(_CurveTable):
    """Seconds of one Seesaw KV swap step on the ranks of a replica, by the tokens it moves: the
    driver's message, every rank copying its box of the step's sequences between its device KV
    cache and the host pool on its prefetcher thread (``host_kv.swap_out_many`` /
    ``swap_in_many``), the wait for the copies and the ranks' agreement
    (``prefetch.ReplicaCompletions``). A swap-in lands in a KV cache allocated for it, as the
    engine's first swap-ins after a re-shard do."""

    _axis = ("tokens", "token counts")

    kind: Literal["out", "in"] = Field(description="out: device -> host pool; in: host pool -> device")
    num_layers: int = Field(gt=0, description="layers of one rank's box")
    num_kv_heads: int = Field(gt=0, description="KV heads of one rank's box")
    head_dim: int = Field(gt=0)
    ranks: int = Field(default=1, gt=0, description="ranks of the replica, all copying at once")
    tokens: tuple[Annotated[int, Field(gt=0)], ...] = Field(description="KV tokens of the step (all its sequences)")
    time_s: tuple[Annotated[float, Field(gt=0)], ...]


class ReshardTable(_CurveTable):
    """Seconds of the engine's re-shard on ``ranks`` ranks (the driver's message, then
    ``reshard.reshard``: free the old shard, load the new one from the host weight store,
    barrier; then a new runner, its KV cache left out: that scales with the run's KV, not the
    model), by the bytes the most loaded rank loads."""

    _axis = ("size_bytes", "sizes")

    ranks: int = Field(gt=0)
    size_bytes: tuple[Annotated[int, Field(gt=0)], ...]
    time_s: tuple[Annotated[float, Field(gt=0)], ...]


class MeasuredProfile(Spec):
    """Times of the engine's pieces measured on one machine (``seesaw profile``): per point the
    mean of each pass's samples, and the median of the passes' means.

    ``simulator.cost.CostModel(model, node, measured=profile)`` uses a table wherever one matches
    and the roofline of ``node`` elsewhere; ``seesaw.catalog.measured_node(profile)`` builds that
    node (one "GPU" per rank)."""

    name: str = Field(default="", description="catalog name = file stem")
    device: Literal["cpu", "cuda"]
    device_name: str = Field(description="CPU model or CUDA device name")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(description="dtype of every measured tensor")
    torch_version: str
    threads_per_rank: int = Field(gt=0, description="torch intra-op threads of each rank")
    num_ranks: int = Field(gt=0, description="most ranks (processes / devices) used at once")
    cpu_count: int = Field(gt=0, description="CPUs usable by the measuring process")
    memory_bytes: float = Field(gt=0, description="host RAM (MemTotal)")
    device_memory_bytes: float | None = Field(default=None, gt=0, description="per device (CUDA)")
    date: str = Field(description="ISO date and time of the measurement")
    command: str = ""
    wall_time_s: float = Field(default=0.0, ge=0, description="how long the measurement took")
    repeats: int = Field(default=1, gt=0, description="timed repeats per grid point, over all passes")
    passes: int = Field(default=1, gt=0, description="passes over all the tables, each taking its share of "
                        "the repeats, so every table's samples span the whole measurement")
    load_average: float | None = Field(
        default=None, ge=0, description="mean 1-minute load average of the host while measuring "
        "(the measuring ranks included): how busy a shared machine was")
    ops: tuple[OpTable, ...] = ()
    attention: tuple[AttentionTable, ...] = ()
    collectives: tuple[CommTable, ...] = ()
    copies: tuple[CopyTable, ...] = ()
    step_overhead: tuple[StepTable, ...] = ()
    swaps: tuple[SwapTable, ...] = ()
    reshards: tuple[ReshardTable, ...] = ()
    source: str = ""

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    def scaled(self, speed: float) -> "MeasuredProfile":
        """This profile on the same machine computing ``speed`` times slower (a shared VM's speed
        drifts; ``seesaw.calibrate.speed_check`` measures it): the GEMM, per-layer, embedding,
        attention and driver-step tables times ``speed``; collectives, hand-offs, copies, swaps
        and re-shards as measured."""
        if not speed > 0:
            raise SpecError(f"speed must be positive, got {speed}")

        def times(t):
            return t.model_copy(update={"time_s": _times(t.time_s, speed)})

        return self.model_copy(update={
            "ops": tuple(times(t) if t.op in _COMPUTE_OPS else t for t in self.ops),
            "attention": tuple(times(a) for a in self.attention),
            "step_overhead": tuple(times(t) for t in self.step_overhead)})


_COMPUTE_OPS = ("linear", "layer_misc", "embed_rope")  # OpTable ops that are not collectives


def _times(values, factor: float):
    """``values`` (a tuple, or a tuple of tuples) times ``factor``."""
    return tuple(_times(v, factor) if isinstance(v, tuple) else v * factor for v in values)
