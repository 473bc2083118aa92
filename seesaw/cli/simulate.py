"""``seesaw simulate``: one layout and policy on a simulated node (``seesaw.app.simulate``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seesaw.cli import options as opt
from seesaw.cli.console import err, print_json
from seesaw.core import SIMULATE_SAMPLE_SIZE
from seesaw.progress import Progress

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command()(simulate)


def describe_run(done, workload: str, seed: int) -> str:
    """What was simulated, before the result: model, node, policy and layout, workload."""
    node, dtype = done.node, done.config["dtype"]
    precision = f" ({dtype})" if dtype != "bf16" else ""  # bf16: the default, not repeated
    nodes = f"{node.num_nodes} nodes x " if node.num_nodes > 1 else ""
    return (f"Simulated {done.model.name}{precision} on {node.name} ({nodes}{node.num_gpus} x "
            f"{node.gpu.name.upper()}, {node.interconnect}), {done.policy.describe()}; workload {workload}: "
            f"{done.num_requests:,} requests, seed {seed}")


def simulate(
    model: str = opt.MODEL,
    dtype: Optional[str] = opt.DTYPE,
    kv_cache_dtype: Optional[str] = opt.KV_CACHE_DTYPE,
    gpu: Optional[str] = opt.GPU,
    node: Optional[str] = opt.NODE,
    num_gpus: Optional[int] = opt.NUM_GPUS,
    num_nodes: Optional[int] = opt.NUM_NODES,
    interconnect: Optional[str] = opt.INTERCONNECT,
    workload: str = opt.WORKLOAD,
    num_requests: Optional[int] = opt.NUM_REQUESTS,
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    layout: Optional[str] = typer.Option(None, "--layout", "-l", metavar="LAYOUT", rich_help_panel=opt.LAYOUT_PANEL,
                                         help="T4P2, D2T4 or P8->T4P2 (default T4 x PP)"),
    chunked_prefill: bool = typer.Option(False, "--chunked-prefill", rich_help_panel=opt.POLICY_PANEL,
                                         help="vLLM chunked prefill"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=16, metavar="TOK",
                                             rich_help_panel=opt.POLICY_PANEL, help="token budget per step"),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", min=1, metavar="N", rich_help_panel=opt.POLICY_PANEL,
                                     help="sequences per step"),
    host_kv_gib: Optional[float] = typer.Option(None, "--host-kv-gib", min=0, metavar="GIB",
                                                rich_help_panel=opt.SEESAW_PANEL, help="Seesaw host KV pool"),
    sample_size: int = typer.Option(SIMULATE_SAMPLE_SIZE, "--sample-size", min=1, metavar="N",
                                    rich_help_panel=opt.SEARCH_PANEL, help="simulate at most N; more extrapolated"),
    as_json: bool = opt.JSON,
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", metavar="DIR", rich_help_panel=opt.OUTPUT_PANEL,
                                           help="write config, summary, CSVs here"),
    overwrite: bool = opt.OVERWRITE,
) -> None:
    """Simulate a workload on a node under one layout and policy; print vLLM-style throughput."""
    from seesaw.app.simulate import hardware_option
    from seesaw.app.simulate import simulate as run_sim
    from seesaw.report import write_sim_folder
    from seesaw.report.claim import check_folder, start_folder

    gpu = hardware_option(gpu, node)
    if out_dir is not None:  # one run, one folder: refused before the work when it holds a run
        check_folder(out_dir, overwrite=overwrite)

    with Progress(f"simulate {layout or ''}".rstrip(), unit="requests") as bar:  # the simulator ticks (done, total)
        done = run_sim(model=model, gpu=gpu, num_gpus=num_gpus, num_nodes=num_nodes, interconnect=interconnect, workload=workload,
                       num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
                       layout=layout, chunked_prefill=chunked_prefill, chunk_size=chunk_size,
                       max_num_seqs=max_num_seqs, host_kv_gib=host_kv_gib, progress=bar, sample_size=sample_size,
                       dtype=dtype, kv_cache_dtype=kv_cache_dtype)
    result = done.result
    print(describe_run(done, workload, seed))
    for note in done.notes:
        err.print(f"note: {note}", highlight=False)
    print(result.to_run_result().throughput_line())
    total = result.elapsed_time or 1.0
    parts = [f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in result.time_by_phase.items() if v > 0]
    print(f"Elapsed: {result.elapsed_time:.2f}s simulated; " + ", ".join(parts))
    if out_dir is not None:
        write_sim_folder(start_folder(out_dir, "simulate", overwrite=overwrite), done.config, result)
        err.print(f"wrote {out_dir}/")
    if as_json:
        print_json({**result.summary(), "dtype": done.config["dtype"]})

