"""Per-step cost model: how long one pipeline stage takes for one micro-batch, and memory sizing.

Roofline x efficiency per stage and per micro-batch from ``ModelSpec`` + ``NodeSpec`` (whose
``gpu`` is a ``GpuSpec``), or a measured profile's tables where they match; SI units in every
name; no torch, no simpy. The model, its assumptions and the measurements behind them are in
``docs/cost-model.md``.

- ``shapes``    ``BatchShape``, ``attn_pairs``: one micro-batch as the scheduler hands it over
- ``stages``    how a layout shards the model; per-(layout, stage) constants
- ``roofline``  the datasheet roofline (one function for step times and breakdowns)
- ``tables``    measured tables: ``Curve``, ``Surface``, ``MeasuredTables``
- ``measured``  measured tables wired to a layout's stages, as the engine runs a step
- ``model``     ``CostModel``: stage times, pipelines, transfers, memory
"""

from simulator.cost.model import CostModel
from simulator.cost.shapes import BatchShape, attn_pairs
from simulator.cost.tables import Curve, Surface

__all__ = ["BatchShape", "CostModel", "Curve", "Surface", "attn_pairs"]
