"""Seesaw: throughput-oriented offline LLM inference with dynamic re-sharding.

The public Python API (``seesaw.api``): ``simulate``, ``compare``, ``plan``, ``whatif``,
``run_batch``, ``calibrate``, ``load_workload`` and the catalog loaders, with the CLI's option
names; the boundary types (``ModelSpec``, ``NodeSpec``, ``Plan``, ``RunResult``, ...) from
``seesaw.core``. Heavy modules load on first use.
"""

from seesaw.api import (
    calibrate,
    compare,
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
    GpuSpec,
    MeasuredProfile,
    ModelSpec,
    NodeSpec,
    ParallelConfig,
    Plan,
    RunResult,
    SeesawPolicy,
    SpecError,
    VllmPolicy,
    parse_layout,
)

from seesaw.core import VERSION as __version__  # noqa: E402

__all__ = [
    "simulate", "compare", "plan", "whatif", "run_batch", "calibrate", "load_workload", "describe_workload",
    "load_model", "load_gpu", "load_node", "make_node", "load_measured", "list_catalog",
    "GpuSpec", "MeasuredProfile", "ModelSpec", "NodeSpec", "ParallelConfig", "Plan", "RunResult", "SeesawPolicy",
    "SpecError", "VllmPolicy", "parse_layout", "__version__",
]
