"""Parallel layouts: data, tensor and pipeline degrees, the paper's layout strings, shardability.

Layout strings follow the Seesaw paper: ``D2T4P1``, ``T4P2``, ``P8`` and, for a re-sharding
policy, ``P8->T4P2`` (case-insensitive, degrees of 1 may be left out). Rank order is
TP-contiguous, PP-strided, DP outermost: ``rank = d * (tp * pp) + p * tp + t``.
``ParallelConfig.check_model`` holds every rule the engine needs to shard a model evenly, so a
layout the planner accepts is one the engine runs.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator, Field, PlainSerializer

from seesaw.core.base import Spec
from seesaw.core.errors import SpecError
from seesaw.core.model import ModelSpec

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
        if model.intermediate_size % self.tp:
            raise SpecError(
                f"layout {self}: tp={self.tp} does not divide intermediate_size="
                f"{model.intermediate_size} of {model.name}"
            )
        if self.pp > model.num_hidden_layers:
            raise SpecError(
                f"layout {self}: pp={self.pp} exceeds the {model.num_hidden_layers} layers of {model.name}"
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
