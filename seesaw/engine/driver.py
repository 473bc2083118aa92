"""Where callers outside the engine found the driver's names before the engine was split by concept.

Re-exports only, kept until those callers import from the modules that define the names:
``launch`` (``run_batch``, ``rank_main``), ``config`` (``EngineConfig``, ``EngineError``,
``PHASES``), ``vllm_driver`` (``Driver``), ``control`` (``ControlPlane``), ``worker``
(``StepWorker``) and ``kv_sizing`` (``kv_blocks_for_budget``, ``workload_blocks``). Nothing in the
engine imports this module.
"""

from __future__ import annotations

from seesaw.engine.config import PHASES, EngineConfig, EngineError
from seesaw.engine.control import ControlPlane
from seesaw.engine.kv_sizing import kv_blocks_for_budget, workload_blocks
from seesaw.engine.launch import rank_main, run_batch
from seesaw.engine.vllm_driver import Driver
from seesaw.engine.worker import StepWorker

__all__ = ["EngineConfig", "EngineError", "ControlPlane", "StepWorker", "Driver", "rank_main", "run_batch",
           "PHASES", "kv_blocks_for_budget", "workload_blocks"]
