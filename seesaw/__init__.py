"""Seesaw: throughput-oriented offline LLM inference with dynamic re-sharding.

The public Python API (``seesaw.api``): ``simulate``, ``compare``, ``plan``, ``whatif``,
``run_batch``, ``calibrate``, ``load_workload`` and the catalog loaders, with the CLI's option
names; the boundary types (``ModelSpec``, ``NodeSpec``, ``Plan``, ``RunResult``, ...) from
``seesaw.core``. Heavy modules load on first use.
"""

from seesaw.api import (
    calibrate,
    compare,
    default_host_kv_bytes,
    describe_workload,
    list_catalog,
    load_gpu,
    load_measured,
    load_model,
    load_node,
    load_workload,
    make_node,
    plan,
    run_batch,
    simulate,
    whatif,
)
from seesaw.core import (
    PHASES,
    GiB,
    GpuSpec,
    MeasuredProfile,
    ModelSpec,
    NodeSpec,
    ParallelConfig,
    Plan,
    RunFailed,
    RunInterrupted,
    RunResult,
    SeesawPolicy,
    SpecError,
    VllmPolicy,
    parse_layout,
)

from seesaw.core import VERSION as __version__  # noqa: E402

# Research building blocks, imported on first use so that ``import seesaw`` stays cheap.
_LAZY = {"CostModel": "simulator.cost", "BatchShape": "simulator.cost", "SearchSpace": "simulator.planner",
         "COMPARE_SPACE": "simulator.planner", "SimResult": "simulator.sim", "PlanResult": "simulator.planner"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'seesaw' has no attribute {name!r}")


__all__ = [
    "simulate", "compare", "plan", "whatif", "run_batch", "calibrate", "load_workload", "describe_workload",
    "load_model", "load_gpu", "load_node", "make_node", "load_measured", "list_catalog", "default_host_kv_bytes",
    "PHASES", "GiB", "GpuSpec", "MeasuredProfile", "ModelSpec", "NodeSpec", "ParallelConfig", "Plan", "RunFailed", "RunInterrupted", "RunResult", "SeesawPolicy",
    "SpecError", "VllmPolicy", "parse_layout", "__version__", *_LAZY,
]
