"""Typer options shared by the commands (``simulate``, ``compare``, ``plan``, ``whatif``, ``run``,
``calibrate``): one definition each, so the flags, defaults and help read the same everywhere.

Help is short (it must read at 80 columns: one line of ~50 characters), every option has some,
every number has a lower bound (an upper one where a larger value means nothing or would
exhaust the machine), and options sit in named help panels (``MODEL``, ``HARDWARE``, ...), the
same names in every command.
"""

from __future__ import annotations

import typer

# help panels, in the order a reader meets them
MODEL_PANEL = "Model"
HARDWARE_PANEL = "Hardware"
WORKLOAD_PANEL = "Workload"
LAYOUT_PANEL = "Layout"
POLICY_PANEL = "Policy"
SEESAW_PANEL = "Seesaw"
SEARCH_PANEL = "Search"
GRID_PANEL = "Grid"
ENGINE_PANEL = "Engine"
OUTPUT_PANEL = "Output"

MODEL = typer.Option("llama2-70b", "--model", "-m", metavar="NAME", rich_help_panel=MODEL_PANEL,
                     help="catalog model or HF config dir")
GPU = typer.Option(None, "--gpu", "-g", metavar="NAME", rich_help_panel=HARDWARE_PANEL,
                   help="GPU or node: name or YAML file (default l4)")
NODE = typer.Option(None, "--node", metavar="NAME", rich_help_panel=HARDWARE_PANEL,
                    help="node template (8xh100) or node YAML; not with --gpu")
# precision (``seesaw.core.Precision``): weights / GEMMs, and the KV cache, as vLLM names them
DTYPE = typer.Option(None, "--dtype", metavar="TYPE", rich_help_panel=MODEL_PANEL,
                     help="weights: bf16 | fp16 | fp8 (default bf16)")
DTYPE_SEARCH = typer.Option(None, "--dtype", metavar="TYPE", rich_help_panel=MODEL_PANEL,
                            help="bf16 | fp16 | fp8 | auto: search (default bf16)")
KV_CACHE_DTYPE = typer.Option(None, "--kv-cache-dtype", metavar="TYPE", rich_help_panel=MODEL_PANEL,
                              help="auto (16-bit) | fp8")
NUM_GPUS = typer.Option(None, "--num-gpus", "-N", min=1, max=1024, metavar="N", rich_help_panel=HARDWARE_PANEL,
                        help="GPUs in the node (default 8)")
NUM_NODES = typer.Option(None, "--num-nodes", min=1, max=1024, metavar="N", rich_help_panel=HARDWARE_PANEL,
                         help="identical nodes, a cluster (default 1)")
INTERCONNECT = typer.Option(None, "--interconnect", metavar="KIND", rich_help_panel=HARDWARE_PANEL,
                            help="pcie | nvlink | xgmi (default: the GPU's)")
WORKLOAD = typer.Option("sharegpt", "--workload", "-w", metavar="SRC", rich_help_panel=WORKLOAD_PANEL,
                        help="file, or sharegpt | arxiv | constant | uniform")
NUM_REQUESTS = typer.Option(None, "--num-requests", "-n", min=1, metavar="N", rich_help_panel=WORKLOAD_PANEL,
                            help="requests (default: the whole file, or 1000)")
INPUT_LEN = typer.Option(None, "--input-len", min=1, metavar="TOK", rich_help_panel=WORKLOAD_PANEL,
                         help="prompt tokens (constant, uniform)")
OUTPUT_LEN = typer.Option(None, "--output-len", min=1, metavar="TOK", rich_help_panel=WORKLOAD_PANEL,
                          help="output tokens of every request")
SEED = typer.Option(0, "--seed", min=0, metavar="N", rich_help_panel=WORKLOAD_PANEL,
                    help="workload sampling seed")
OBJECTIVE = typer.Option("throughput", "--objective", metavar="WHAT", rich_help_panel=SEARCH_PANEL,
                         help="throughput | cost")
WORKERS = typer.Option(None, "--workers", min=1, max=256, metavar="N", rich_help_panel=SEARCH_PANEL,
                       help="simulation processes (default: every core)")
DASK = typer.Option(None, "--dask", metavar="ADDRESS", envvar="SEESAW_DASK", rich_help_panel=SEARCH_PANEL,
                    help="run the simulations on this Dask scheduler")
SAMPLE_SIZE = typer.Option(2000, "--sample-size", min=1, metavar="N", rich_help_panel=SEARCH_PANEL,
                           help="screen candidates on this many; the best then grow to 16,000")
JSON = typer.Option(False, "--json", rich_help_panel=OUTPUT_PANEL, help="print one JSON object last")
OVERWRITE = typer.Option(False, "--overwrite", rich_help_panel=OUTPUT_PANEL,
                         help="replace the earlier run in the -o folder")
