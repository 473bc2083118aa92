"""Facts shared by every layer: the phases a run's time is split into, dtype sizes, units.

Units are SI everywhere (1e9, 1e12) except ``GiB``, for capacities that datasheets and users state
in powers of two.
"""

from __future__ import annotations

GiB = 1024**3

# Time by phase of a run, simulated or real, in this order (summary.json, reports, plots).
PHASES = ("prefill", "decode", "mixed", "reshard", "swap_stall", "idle")

# The engine's control-plane message: every step is pickled into a buffer of this size, broadcast
# from rank 0 to its replica (``seesaw.engine.control``); the cost model and the profiler price it.
CONTROL_MESSAGE_BYTES = 1 << 15

# Bytes per element of the dtypes the engine and the profiles use.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# their short names (the simulator's ``--dtype`` vocabulary, ``seesaw.core.model.PRECISION_BYTES``)
DTYPE_SHORT_NAMES = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16"}

# simulate: a workload of more requests is simulated on a seeded sample of this many and the result
# extrapolated (``simulator.extrapolate``); about a CPU-second of simulation
SIMULATE_SAMPLE_SIZE = 10_000

# whatif with no arguments: a current model on the 8-GPU servers people buy or rent now (catalog
# names). The paper's study stays a flag away: --model llama2-70b --gpu a10,l4,a100-40g --num-gpus 4,8.
WHATIF_MODEL, WHATIF_GPUS, WHATIF_NUM_GPUS = "llama3.1-70b", "h100,h200,l40s,a100-80g", "8"

VERSION = "0.1.0"  # the distribution's version (pyproject.toml says the same)
