"""``seesaw compare``, ``seesaw plan`` and ``seesaw whatif``: the planner's commands.

Registered on the main Typer app by ``seesaw.cli`` (``cli_plan.register(app)``); they reuse its
helpers (node resolution, one-line errors in ``cli.main``, ``--json`` as the last stdout line).
Progress bars go to stderr and vanish when stderr is not a terminal.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from seesaw import cli_options as opt

__all__ = ["register"]

DEFAULT_WHATIF_DIR = Path("whatif-report")


def register(app: typer.Typer) -> None:
    app.command("compare")(compare)
    app.command("plan")(plan_cmd)
    app.command("whatif")(whatif)


class _Bar:
    """Rich progress bar on stderr whose total may change (the planner knows it only after pruning)."""

    def __init__(self, what: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        from seesaw.cli import err

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
        self.task = self.bar.add_task(what, total=None)

    def __enter__(self):
        self.bar.start()
        return self

    def __call__(self, done: int, total: int, what: str = "") -> None:
        self.bar.update(self.task, completed=done, total=total, description=what[:48])

    def __exit__(self, *exc):
        self.bar.stop()
        return False


def _load(model: str, workload: str, num_requests: Optional[int], seed: int,
          input_len: Optional[int] = None, output_len: Optional[int] = None):
    from seesaw import catalog as cat
    from seesaw.workload import load_workload

    model_spec = cat.load_model(model)
    reqs = load_workload(workload, num_requests=num_requests, seed=seed, input_len=input_len, output_len=output_len)
    return model_spec, reqs


def _fmt(v, spec: str) -> str:
    import math

    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)


def _print_ranked(result, title: str, top: int | None = None, per_layout: bool = False) -> None:
    """The ranked table (``top`` rows); ``per_layout``: only the best variant of each layout."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, just in (("#", "right"), ("candidate", "left"), ("source", "left"), ("tokens/s", "right"),
                      ("makespan s", "right"), ("$/M tok", "right"), ("vs best vLLM", "right")):
        table.add_column(col, justify=just)
    rows = result.table.drop_duplicates("layout") if per_layout else result.table
    rows = rows if top is None else rows.head(top)
    for r in rows.to_dict("records"):
        table.add_row(str(r["rank"]), r["candidate"], r["source"], _fmt(r["throughput_tok_s"], ",.1f"),
                      _fmt(r["makespan_s"], ",.1f"), _fmt(r["cost_per_mtok_usd"], ".3f"),
                      _fmt(r["speedup_vs_best_vllm"], ".2f") + ("x" if r["speedup_vs_best_vllm"] == r["speedup_vs_best_vllm"] else ""))
    _show(table)


def _show(table) -> None:
    """Print a Rich table; when stdout is not a terminal (a pipe, a file) do not squeeze it to 80 columns."""
    import sys

    from rich.console import Console

    from seesaw.cli import out

    (out if out.is_terminal else Console(file=sys.stdout, width=200, soft_wrap=True)).print(table)


def _print_rejected(result) -> None:
    from seesaw.cli import out

    if result.rejected:
        out.print("[bold]Rejected[/bold]")
        for what, why in result.rejected:
            out.print(f"  {what}: {why}", highlight=False)


def _notes(result) -> None:
    from seesaw.cli import err

    for n in result.notes:
        err.print(f"note: {n}", highlight=False)


# --------------------------------------------------------------------------------------------
# compare


def compare(
    model: str = opt.MODEL,
    gpu: str = opt.GPU,
    num_gpus: Optional[int] = opt.NUM_GPUS,
    interconnect: Optional[str] = opt.INTERCONNECT,
    workload: str = opt.WORKLOAD,
    num_requests: Optional[int] = opt.NUM_REQUESTS,
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    sample_size: int = typer.Option(2000, "--sample-size", min=1, help="simulate at most this many requests"),
    workers: int = opt.WORKERS,
    as_json: bool = opt.JSON,
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="write candidates.csv and summary.json"),
) -> None:
    """Simulate every feasible static layout (vLLM, chunked prefill on/off) and every Seesaw pair."""
    from seesaw.cli import _print_json, err, resolve_node
    from seesaw.report import write_plan_folder
    from simulator.planner import COMPARE_SPACE, plan

    model_spec, reqs = _load(model, workload, num_requests, seed, input_len, output_len)
    node = resolve_node(gpu, num_gpus, interconnect)
    with _Bar("simulating") as bar:
        result = plan(model_spec, node, reqs, space=COMPARE_SPACE, exhaustive=True, sample_size=sample_size,
                      seed=seed, workers=workers, workload_name=getattr(reqs, "name", workload), progress=bar)
    _notes(result)
    if len(result.table):
        _print_ranked(result, f"{model_spec.name} on {node.name}: {len(reqs)} requests, every candidate simulated")
    _print_rejected(result)
    if result.winner:
        w, v = result.winner, result.best_vllm
        line = f"Best: {w['candidate']} {w['throughput_tok_s']:,.1f} tokens/s"
        if v:
            line += f"; best vLLM: {v['candidate']} {v['throughput_tok_s']:,.1f} tokens/s ({w['speedup_vs_best_vllm']:.2f}x)"
        print(line)
    else:
        err.print("no feasible layout: see the reasons above", highlight=False)
    config = {"command": "compare", "model": model_spec.name, "node": node.name, "workload": workload,
              "num_requests": len(reqs), "seed": seed, "sample_size": sample_size}
    if out_dir is not None:
        write_plan_folder(out_dir, result, config)
        err.print(f"wrote {out_dir}/")
    if as_json:
        _print_json({"config": config, **result.summary()})


# --------------------------------------------------------------------------------------------
# plan


def plan_cmd(
    model: str = opt.MODEL,
    gpu: str = opt.GPU,
    num_gpus: Optional[int] = opt.NUM_GPUS,
    interconnect: Optional[str] = opt.INTERCONNECT,
    workload: str = opt.WORKLOAD,
    num_requests: Optional[int] = opt.NUM_REQUESTS,
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    objective: str = opt.OBJECTIVE,
    price: Optional[float] = typer.Option(None, "--price-per-gpu-hour", help="USD per GPU-hour (default: catalog)"),
    sample_size: int = typer.Option(2000, "--sample-size", min=1, help="simulate at most this many requests"),
    exhaustive: bool = typer.Option(False, "--exhaustive", help="simulate every candidate (no pruning)"),
    workers: int = opt.WORKERS,
    top: int = typer.Option(10, "--top", min=1, help="rows of the ranked table to print"),
    as_json: bool = opt.JSON,
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="write plan.json, candidates.csv, summary.json"),
) -> None:
    """Search layouts, policies and host-pool settings; print why the winner wins, write plan.json."""
    from seesaw.cli import UserError, _print_json, err, resolve_node
    from seesaw.report import write_plan_folder
    from simulator.planner import plan

    if objective not in ("throughput", "cost"):
        raise UserError(f"unknown objective {objective!r}; known: throughput, cost")
    model_spec, reqs = _load(model, workload, num_requests, seed, input_len, output_len)
    node = resolve_node(gpu, num_gpus, interconnect)
    with _Bar("planning") as bar:
        result = plan(model_spec, node, reqs, objective=objective, price_per_gpu_hour=price,
                      exhaustive=exhaustive, sample_size=sample_size, seed=seed, workers=workers,
                      workload_name=getattr(reqs, "name", workload), progress=bar)
    _notes(result)
    if result.plan is None:
        _print_rejected(result)
        raise UserError(f"no feasible plan for {model_spec.name} on {node.name}: every layout was rejected")
    print(result.plan.explanation)
    if result.plan.runner_up:
        r = result.plan.runner_up
        print(f"Runner-up: {r['candidate']}, {r['worse_by_pct']:.1f}% lower throughput.")
    shared = f" (+{result.num_shared} sharing an equivalent's simulation)" if result.num_shared else ""
    print(f"Searched {len(result.table)} candidates: {result.num_simulated} simulated{shared}, "
          f"{result.num_estimated} estimated only; {len(result.rejected)} layouts or candidates rejected; "
          f"{result.wall_s:.1f} s.")
    _print_ranked(result, "best variant of each layout (simulated first; all candidates in candidates.csv)",
                  top, per_layout=True)
    config = {"command": "plan", "model": model_spec.name, "node": node.name, "workload": workload,
              "num_requests": len(reqs), "seed": seed, "objective": objective, "price_per_gpu_hour": price,
              "sample_size": sample_size, "exhaustive": exhaustive}
    if out_dir is not None:
        write_plan_folder(out_dir, result, config)
        err.print(f"wrote {out_dir}/plan.json, candidates.csv, summary.json")
    if as_json:
        _print_json({"config": config, **result.summary()})


# --------------------------------------------------------------------------------------------
# whatif


def _split(text: str, what: str) -> list[str]:
    from seesaw.cli import UserError

    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise UserError(f"{what}: give at least one value")
    return items


def whatif(
    model: str = opt.MODEL,
    gpu: str = typer.Option("a10,l4,a100-40g", "--gpu", "-g", help="comma-separated GPU names"),
    num_gpus: str = typer.Option("4,8", "--num-gpus", "-N", help="comma-separated GPU counts"),
    interconnect: Optional[str] = typer.Option(None, "--interconnect", help="pcie | nvlink (default: per GPU)"),
    workload: str = opt.WORKLOAD,
    num_requests: Optional[int] = typer.Option(1_000_000, "--num-requests", "-n", min=1),
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    objective: str = opt.OBJECTIVE,
    price: Optional[str] = typer.Option(None, "--price-per-gpu-hour", help="USD per GPU-hour: 1.5 or l4=1.2,a10=1.8"),
    sample_size: int = typer.Option(1000, "--sample-size", min=1, help="simulate at most this many requests per option"),
    workers: int = opt.WORKERS,
    as_json: bool = opt.JSON,
    out_dir: Path = typer.Option(DEFAULT_WHATIF_DIR, "--output-dir", "-o", help="report folder"),
) -> None:
    """Compare hardware options for one model and workload; write a report folder (md, html, csv, png).

    With no arguments: LLaMA2-70B, 1M ShareGPT-like requests, 4 and 8 x A10 / L4 / A100-40G.
    """
    from rich.table import Table

    from seesaw.cli import UserError, _print_json, err, out
    from seesaw.app.whatif import parse_prices, run_whatif
    from seesaw.report.whatif import write_report

    if objective not in ("throughput", "cost"):
        raise UserError(f"unknown objective {objective!r}; known: throughput, cost")
    gpus = _split(gpu, "--gpu")
    try:
        counts = [int(x) for x in _split(num_gpus, "--num-gpus")]
    except ValueError:
        raise UserError(f"--num-gpus: expected comma-separated integers, got {num_gpus!r}") from None
    if any(c < 1 for c in counts):
        raise UserError(f"--num-gpus: counts must be positive, got {num_gpus!r}")
    prices = parse_prices(price, gpus)
    from seesaw import catalog as cat

    for g in gpus:
        cat.load_gpu(g)                          # unknown GPU names fail before any work
    model_spec, reqs = _load(model, workload, num_requests, seed, input_len, output_len)
    with _Bar("what-if") as bar:
        result = run_whatif(model_spec, gpus, counts, reqs, workload_name=workload, interconnect=interconnect,
                            objective=objective, prices=prices, sample_size=sample_size, seed=seed,
                            workers=workers, progress=lambda o, d, t, w: bar(d, t, f"{o}: {w}"))
    config = {"command": "whatif", "model": model_spec.name, "gpus": gpus, "num_gpus": counts,
              "interconnect": interconnect, "workload": workload, "num_requests": len(reqs), "seed": seed,
              "objective": objective, "prices": prices, "sample_size": sample_size}
    paths = write_report(result, out_dir, config)
    df = result.table()
    table = Table(title=f"{model_spec.name}, {len(reqs):,} {workload} requests", title_justify="left")
    for col in ("option", "best plan", "hours", "tokens/s", "$/M tok", "GPU-hours", "best vLLM", "speedup"):
        table.add_column(col, justify="left" if col in ("option", "best plan", "best vLLM") else "right")
    for r in df.to_dict("records"):
        if r["feasible"]:
            table.add_row(r["option"], r["best_plan"], _fmt(r["makespan_h"], ",.1f"), _fmt(r["throughput_tok_s"], ",.0f"),
                          _fmt(r["cost_per_mtok_usd"], ".3f"), _fmt(r["gpu_hours"], ",.0f"), r["best_vllm"] or "-",
                          _fmt(r["speedup_vs_best_vllm"], ".2f") + "x")
    _show(table)
    for r in df.to_dict("records"):
        if not r["feasible"]:
            out.print(f"infeasible {r['option']}: {r['reason']}", highlight=False)
    for n in result.notes:
        err.print(f"note: {n}", highlight=False)
    err.print(f"wrote {', '.join(str(p) for p in paths[:4])} and {len(paths) - 4} plots ({result.wall_s:.1f} s)",
              highlight=False)
    if as_json:
        _print_json({"config": config, "report": str(out_dir), **result.summary()})
