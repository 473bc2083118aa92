"""Measured profiles (``profiles/measured/*.yaml``, written by ``seesaw profile``) as data.

Tables of mean times of the engine's own pieces on one machine. A grid axis is a strictly
increasing tuple of positive sizes; ``simulator.cost`` interpolates log-log between grid points.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from seesaw.core.base import Spec
from seesaw.core.constants import DTYPE_BYTES
from seesaw.core.errors import SpecError


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
        return DTYPE_BYTES[self.dtype]

    def scaled(self, speed: float) -> "MeasuredProfile":
        """This profile on the same machine computing ``speed`` times slower (a shared VM's speed
        drifts; ``seesaw.app.calibrate.speed_check`` measures it): the GEMM, per-layer, embedding,
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
