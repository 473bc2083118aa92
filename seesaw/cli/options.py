"""Typer options shared by the commands (``simulate``, ``compare``, ``plan``, ``whatif``, ``run``,
``calibrate``): one definition each, so the flags, defaults and help read the same everywhere."""

from __future__ import annotations

import typer

MODEL = typer.Option("llama2-70b", "--model", "-m", help="catalog model name or HF config dir")
GPU = typer.Option("l4", "--gpu", "-g", help="GPU name (a10, l4, a100-40g, ...) or node name (8xl4)")
NUM_GPUS = typer.Option(None, "--num-gpus", "-N", min=1, help="GPUs in the node (default 8)")
INTERCONNECT = typer.Option(None, "--interconnect", help="pcie | nvlink (default: the GPU's)")
WORKLOAD = typer.Option("sharegpt", "--workload", "-w", help="file or sharegpt|arxiv|constant|uniform")
NUM_REQUESTS = typer.Option(None, "--num-requests", "-n", min=1)
INPUT_LEN = typer.Option(None, "--input-len", min=1, help="prompt tokens (constant, uniform)")
OUTPUT_LEN = typer.Option(None, "--output-len", min=1, help="replace every request's output length")
SEED = typer.Option(0, "--seed", min=0, help="workload sampling seed")
OBJECTIVE = typer.Option("throughput", "--objective", help="throughput | cost")
WORKERS = typer.Option(2, "--workers", min=1, help="simulation processes")
JSON = typer.Option(False, "--json", help="print one JSON object last")
OVERWRITE = typer.Option(False, "--overwrite", help="replace the earlier run in the -o folder")
