"""The core layer: pure data shared by every other layer; it imports nothing else of Seesaw.

Specs of models, GPUs and nodes; parallel layouts and their shardability rules; the scheduling
policy specs (the one definition of every knob and default); typed results and plans; measured
profile tables; the error every layer's user errors derive from; shared constants.
"""

from seesaw.core.constants import (
    CONTROL_MESSAGE_BYTES, DTYPE_BYTES, DTYPE_SHORT_NAMES, PHASES, SIMULATE_SAMPLE_SIZE, VERSION, WHATIF_GPUS, WHATIF_MODEL,
    WHATIF_NUM_GPUS, GiB,
)
from seesaw.core.errors import Interrupted, RunFailed, RunInterrupted, SpecError, interrupt_on_signals
from seesaw.core.base import Spec
from seesaw.core.model import DTYPES, KV_CACHE_DTYPES, PRECISION_BYTES, ModelSpec, Precision
from seesaw.core.hardware import GpuSpec, NetworkSpec, NodeSpec, UnsupportedPrecision
from seesaw.core.parallel import Layout, ParallelConfig, format_layout, parse_layout, parse_parallel
from seesaw.core.policy import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
    PolicyBase,
    PolicySpec,
    SeesawPolicy,
    VllmPolicy,
)
from seesaw.core.results import EngineStats, Plan, Predicted, RunResult, SeesawStats
from seesaw.core.measured import (
    AttentionTable,
    CommTable,
    CopyTable,
    MeasuredProfile,
    OpTable,
    ReshardTable,
    StepTable,
    SwapTable,
)

__all__ = [
    "CONTROL_MESSAGE_BYTES", "DTYPE_BYTES", "DTYPE_SHORT_NAMES", "PHASES", "SIMULATE_SAMPLE_SIZE", "VERSION", "GiB", "WHATIF_GPUS",
    "WHATIF_MODEL", "WHATIF_NUM_GPUS", "Interrupted", "RunFailed", "RunInterrupted", "SpecError",
    "interrupt_on_signals", "Spec", "ModelSpec", "Precision", "DTYPES", "KV_CACHE_DTYPES", "PRECISION_BYTES",
    "GpuSpec", "NetworkSpec", "NodeSpec", "UnsupportedPrecision",
    "Layout", "ParallelConfig", "format_layout", "parse_layout", "parse_parallel",
    "DEFAULT_BLOCK_SIZE", "DEFAULT_MAX_NUM_BATCHED_TOKENS", "DEFAULT_MAX_NUM_SEQS",
    "PolicyBase", "PolicySpec", "SeesawPolicy", "VllmPolicy", "Plan", "Predicted", "RunResult", "SeesawStats", "EngineStats",
    "AttentionTable", "CommTable", "CopyTable", "MeasuredProfile", "OpTable", "ReshardTable",
    "StepTable", "SwapTable",
]
