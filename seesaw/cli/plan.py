"""``seesaw compare`` and ``seesaw plan``: the planner's commands (``seesaw.app.simulate``).

Progress goes to stderr (a bar in a terminal, a plain line every few seconds otherwise); ``--json`` prints the
summary last; ``-o DIR`` writes the plan folder (``plan.json``, ``candidates.csv``, ``summary.json``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seesaw.cli import options as opt
from seesaw.cli.console import err, fmt, out, print_json, show
from seesaw.progress import Progress
from seesaw.core import SpecError
from seesaw.report.claim import check_folder, start_folder

__all__ = ["register", "print_notes"]


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("plan")(plan_cmd)


def _print_ranked(result, title: str, top: int | None = None, per_layout: bool = False) -> None:
    """The ranked table (``top`` rows); ``per_layout``: only the best variant of each layout."""
    table = Table(title=title, title_justify="left")
    for col, just in (("#", "right"), ("candidate", "left"), ("source", "left"), ("tokens/s", "right"),
                      ("makespan s", "right"), ("$/M tok", "right"), ("vs best vLLM", "right")):
        table.add_column(col, justify=just)
    rows = result.table.drop_duplicates("layout") if per_layout else result.table
    rows = rows if top is None else rows.head(top)
    for r in rows.to_dict("records"):
        speedup = r["speedup_vs_best_vllm"]
        table.add_row(str(r["rank"]), r["candidate"], r["source"], fmt(r["throughput_tok_s"], ",.1f"),
                      fmt(r["makespan_s"], ",.1f"), fmt(r["cost_per_mtok_usd"], ".3f"),
                      fmt(speedup, ".2f") + ("x" if speedup == speedup else ""))
    show(table)


def _print_rejected(result) -> None:
    if result.rejected:
        out.print("[bold]Rejected[/bold]")
        for what, why in result.rejected:
            out.print(f"  {what}: {why}", highlight=False)


def print_notes(notes) -> None:
    for n in notes:
        err.print(f"note: {n}", highlight=False)


def compare(
    model: str = opt.MODEL,
    dtype: Optional[str] = opt.DTYPE_SEARCH,
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
    sample_size: int = opt.SAMPLE_SIZE,
    workers: Optional[int] = opt.WORKERS,
    as_json: bool = opt.JSON,
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", metavar="DIR", rich_help_panel=opt.OUTPUT_PANEL,
                                           help="write candidates.csv, summary.json here"),
    overwrite: bool = opt.OVERWRITE,
) -> None:
    """Simulate every feasible static layout (vLLM, chunked prefill on/off) and every Seesaw pair."""
    from seesaw.app.simulate import compare as run_compare
    from seesaw.app.simulate import hardware_option
    from seesaw.report import write_plan_folder

    gpu = hardware_option(gpu, node)
    if out_dir is not None:
        check_folder(out_dir, overwrite=overwrite)

    with Progress("compare", unit="simulations") as bar:
        done = run_compare(model=model, gpu=gpu, num_gpus=num_gpus, num_nodes=num_nodes, interconnect=interconnect, workload=workload,
                           num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
                           sample_size=sample_size, workers=workers, progress=bar, dtype=dtype,
                           kv_cache_dtype=kv_cache_dtype)
    result = done.result
    print_notes(result.notes)
    if len(result.table):
        _print_ranked(result, f"{done.model.name} on {done.node.name}: {done.num_requests} requests, "
                              "every candidate simulated")
    _print_rejected(result)
    if result.winner:
        w, v = result.winner, result.best_vllm
        line = f"Best: {w['candidate']} {w['throughput_tok_s']:,.1f} tokens/s"
        if v:
            line += (f"; best vLLM: {v['candidate']} {v['throughput_tok_s']:,.1f} tokens/s "
                     f"({w['speedup_vs_best_vllm']:.2f}x)")
        print(line)
    if out_dir is not None:
        write_plan_folder(start_folder(out_dir, "compare", overwrite=overwrite), result, done.config)
        err.print(f"wrote {out_dir}/")
    if as_json:
        print_json({"config": done.config, **result.summary()})
    if not result.winner:  # the reasons are printed above; one error line, exit 2
        raise SpecError(f"no feasible layout for {done.model.name} on {done.node.name}: see the reasons above")


def plan_cmd(
    model: str = opt.MODEL,
    dtype: Optional[str] = opt.DTYPE_SEARCH,
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
    objective: str = opt.OBJECTIVE,
    price: Optional[float] = typer.Option(None, "--price-per-gpu-hour", min=0, metavar="USD",
                                         rich_help_panel=opt.SEARCH_PANEL, help="price per GPU-hour (default: catalog)"),
    sample_size: int = opt.SAMPLE_SIZE,
    exhaustive: bool = typer.Option(False, "--exhaustive", rich_help_panel=opt.SEARCH_PANEL,
                                    help="simulate every candidate (no pruning)"),
    workers: Optional[int] = opt.WORKERS,
    dask: Optional[str] = opt.DASK,
    top: int = typer.Option(10, "--top", min=1, metavar="N", rich_help_panel=opt.OUTPUT_PANEL,
                            help="rows of the ranked table to print"),
    as_json: bool = opt.JSON,
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", metavar="DIR", rich_help_panel=opt.OUTPUT_PANEL,
                                           help="write plan.json, candidates.csv, ... here"),
    overwrite: bool = opt.OVERWRITE,
) -> None:
    """Search layouts, policies and host-pool settings; print why the winner wins, write plan.json."""
    from seesaw.app.simulate import hardware_option
    from seesaw.app.simulate import plan as run_plan
    from seesaw.report import write_plan_folder

    gpu = hardware_option(gpu, node)
    if out_dir is not None:
        check_folder(out_dir, overwrite=overwrite)

    with Progress("plan", unit="simulations") as bar:
        done = run_plan(model=model, gpu=gpu, num_gpus=num_gpus, num_nodes=num_nodes, interconnect=interconnect, workload=workload,
                        num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
                        objective=objective, price_per_gpu_hour=price, sample_size=sample_size,
                        exhaustive=exhaustive, workers=workers, dask=dask, progress=bar, dtype=dtype,
                        kv_cache_dtype=kv_cache_dtype)
    result = done.result
    print_notes(result.notes)
    if result.plan is None:
        _print_rejected(result)
        raise SpecError(f"no feasible plan for {done.model.name} on {done.node.name}: every layout was rejected")
    print(result.plan.explanation)
    if result.plan.runner_up:
        r = result.plan.runner_up
        print(f"Runner-up: {r['candidate']}, {r['worse_by_pct']:.1f}% lower throughput.")
    shared = f" (+{result.num_shared} sharing an equivalent's simulation)" if result.num_shared else ""
    print(f"Searched {len(result.table)} candidates ({done.config['dtype']}): {result.num_simulated} simulated{shared}, "
          f"{result.num_estimated} estimated only; {len(result.rejected)} layouts or candidates rejected; "
          f"{result.wall_s:.1f} s.")
    _print_ranked(result, "best variant of each layout (simulated first; all candidates in candidates.csv)",
                  top, per_layout=True)
    if out_dir is not None:
        write_plan_folder(start_folder(out_dir, "plan", overwrite=overwrite), result, done.config)
        err.print(f"wrote {out_dir}/plan.json, candidates.csv, summary.json")
    if as_json:
        print_json({"config": done.config, **result.summary()})
