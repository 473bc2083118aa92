"""The profiler: ``seesaw profile`` times the engine's own pieces on this machine into
``profiles/measured/*.yaml`` (``seesaw.core.MeasuredProfile``, the schema ``simulator.cost``
reads). What is timed, how, and the measurements behind the method: docs/profiling.md.

Modules, by what they time:
- ``grid``: the grid of shapes and the plan of tables (``Grid``, ``Task``, ``plan_tasks``);
- ``records``: named figures (``Point``) and tables (``Table``), merging the passes;
- ``timing``: a measuring rank (``Rank.measure`` over named points, ``Rank.slowest``);
- ``probe``, ``forward``, ``attention``: GEMMs, layer_misc, embed_rope and attention, timed
  inside real forward passes of the engine's ``LlamaShard``;
- ``collectives``, ``copies``, ``step_overhead``, ``seesaw_steps``: collectives, host<->device
  copies, the driver's step overhead, Seesaw's swap steps and re-shards;
- ``run``: the ranks and the whole run (``profile``); ``write``: the YAML and its summary.

It drives the engine, so it imports torch; ``seesaw.app.profile`` imports it lazily.
"""

from seesaw.profiling.attention import prefill_seqs
from seesaw.profiling.forward import steps_for
from seesaw.profiling.grid import Grid, Task, plan_tasks, shard_keys, swap_box
from seesaw.profiling.records import Point, Table, merge_passes, merged_as
from seesaw.profiling.run import cuda_available, profile, rank_main
from seesaw.profiling.timing import Rank
from seesaw.profiling.write import round_times, summary, write_profile

__all__ = [
    "Grid", "Task", "Point", "Table", "Rank", "plan_tasks", "shard_keys", "swap_box", "prefill_seqs",
    "steps_for", "profile", "rank_main", "merge_passes", "merged_as", "write_profile", "summary",
    "round_times", "cuda_available",
]
