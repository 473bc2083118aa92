"""``seesaw whatif``: compare hardware options for one model and workload, write a report folder
(``seesaw.app.whatif``, ``seesaw.report.whatif``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from seesaw.cli import options as opt
from seesaw.cli.console import err, fmt, out, print_json, show
from seesaw.cli.plan import print_notes
from seesaw.core import WHATIF_GPUS, WHATIF_MODEL, WHATIF_NUM_GPUS
from seesaw.progress import Progress

__all__ = ["register", "DEFAULT_WHATIF_DIR"]

DEFAULT_WHATIF_DIR = Path("whatif-report")


def register(app: typer.Typer) -> None:
    app.command("whatif")(whatif)


def _count_options(gpu: str, num_gpus: str, num_nodes: str | None = None) -> int | None:
    """GPU x count (x node count) options, as the use case splits them (None if it will reject them anyway)."""
    gpus = {g.strip().lower() for g in gpu.split(",") if g.strip()}
    counts = {c.strip() for c in num_gpus.split(",") if c.strip()}
    nodes = {c.strip() for c in (num_nodes or "1").split(",") if c.strip()}
    return len(gpus) * len(counts) * len(nodes) or None


class _OptionTicks:
    """The use case's ``progress(option, done, total, what)`` as options done on one display (the
    options are planned side by side: an option counts once it says ``OPTION_DONE``); the option
    that reported last shows its simulations as the detail."""

    def __init__(self, bar: Progress):
        self.bar, self.seen, self.ended = bar, set(), set()

    def __call__(self, option: str, done: int, total: int, what: str) -> None:
        from seesaw.app.whatif import OPTION_DONE

        self.seen.add(option)
        if what == OPTION_DONE:
            self.ended.add(option)
        total_options = max(self.bar.total or 0, len(self.seen))
        detail = f"{option} done" if what == OPTION_DONE else f"{option}: {done}/{total} {what}"
        self.bar(len(self.ended), total_options, detail)


def whatif(
    model: str = typer.Option(WHATIF_MODEL, "--model", "-m", metavar="NAME", rich_help_panel=opt.MODEL_PANEL,
                              help="catalog model or HF config dir"),
    dtype: Optional[str] = opt.DTYPE_SEARCH,
    kv_cache_dtype: Optional[str] = opt.KV_CACHE_DTYPE,
    gpu: str = typer.Option(WHATIF_GPUS, "--gpu", "-g", metavar="NAMES",
                            rich_help_panel=opt.HARDWARE_PANEL, help="GPUs or nodes, comma-separated (or YAML; 2x8xl4: 2 nodes)"),
    node: Optional[str] = typer.Option(None, "--node", metavar="NAMES", rich_help_panel=opt.HARDWARE_PANEL,
                                       help="node templates or YAMLs, comma-separated"),
    num_gpus: str = typer.Option(WHATIF_NUM_GPUS, "--num-gpus", "-N", metavar="COUNTS", rich_help_panel=opt.HARDWARE_PANEL,
                                 help="comma-separated GPU counts"),
    num_nodes: Optional[str] = typer.Option(None, "--num-nodes", metavar="COUNTS", rich_help_panel=opt.HARDWARE_PANEL,
                                            help="comma-separated node counts (clusters)"),
    interconnect: Optional[str] = typer.Option(None, "--interconnect", metavar="KIND", rich_help_panel=opt.HARDWARE_PANEL,
                                               help="pcie | nvlink | xgmi (default: per GPU)"),
    workload: str = opt.WORKLOAD,
    num_requests: Optional[int] = typer.Option(1_000_000, "--num-requests", "-n", min=1, metavar="N",
                                               rich_help_panel=opt.WORKLOAD_PANEL, help="requests in the batch"),
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    objective: str = opt.OBJECTIVE,
    price: Optional[str] = typer.Option(None, "--price-per-gpu-hour", metavar="USD", rich_help_panel=opt.SEARCH_PANEL,
                                        help="USD per GPU-hour: 1.5 or l4=1.2,a10=1.8"),
    sample_size: int = typer.Option(1000, "--sample-size", min=1, metavar="N", rich_help_panel=opt.SEARCH_PANEL,
                                    help="screen candidates on this many; the best then grow to 16,000"),
    deadline: Optional[str] = typer.Option(None, "--deadline", metavar="TIME", rich_help_panel=opt.SEARCH_PANEL,
                                           help="cheapest option done by then: 24h, 90m, 1h30m, s"),
    workers: Optional[int] = opt.WORKERS,
    dask: Optional[str] = opt.DASK,
    as_json: bool = opt.JSON,
    out_dir: Path = typer.Option(DEFAULT_WHATIF_DIR, "--output-dir", "-o", metavar="DIR",
                                 rich_help_panel=opt.OUTPUT_PANEL, help="the report folder"),
    overwrite: bool = opt.OVERWRITE,
) -> None:
    """Compare hardware options for one model and workload; write a report folder (md, html, csv, png).

    With no arguments: LLaMA-3.1-70B, 1M ShareGPT-like requests, 8 x H100 / H200 / L40S / A100-80G.
    """
    from seesaw.app.simulate import hardware_option
    from seesaw.app.whatif import whatif as run_whatif
    from seesaw.report.whatif import headline

    # the default GPU list gives way to --node (only a --gpu of one's own conflicts with it)
    gpu = hardware_option(None if gpu == WHATIF_GPUS else gpu, node, default=WHATIF_GPUS, many=True)

    with Progress("whatif", _count_options(gpu, num_gpus, num_nodes), unit="options") as bar:
        done = run_whatif(model=model, gpu=gpu, num_gpus=num_gpus, num_nodes=num_nodes, interconnect=interconnect,
                          workload=workload, num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
                          objective=objective, price_per_gpu_hour=price, sample_size=sample_size, workers=workers,
                          output_dir=out_dir, overwrite=overwrite, progress=_OptionTicks(bar), dask=dask,
                          deadline=deadline, dtype=dtype, kv_cache_dtype=kv_cache_dtype)
        bar(len(done.result.options))  # the last option is done too
    result, paths = done.result, done.paths
    df = result.table()
    precision = f" ({done.config['dtype']})" if dtype or kv_cache_dtype else ""
    table = Table(title=f"{done.model.name}{precision}, {done.num_requests:,} {workload} requests", title_justify="left")
    for col in ("option", "best plan", "hours", "tokens/s", "$/M tok", "GPU-hours", "best vLLM", "speedup"):
        table.add_column(col, justify="left" if col in ("option", "best plan", "best vLLM") else "right")
    for r in df.to_dict("records"):
        if r["feasible"]:
            table.add_row(r["option"], r["best_plan"], fmt(r["makespan_h"], ",.1f"), fmt(r["throughput_tok_s"], ",.0f"),
                          fmt(r["cost_per_mtok_usd"], ".3f"), fmt(r["gpu_hours"], ",.0f"), r["best_vllm"] or "-",
                          fmt(r["speedup_vs_best_vllm"], ".2f") + "x")
    show(table)
    for r in df.to_dict("records"):
        if not r["feasible"]:
            out.print(f"infeasible {r['option']}: {r['reason']}", highlight=False)
    for line in headline(result):
        out.print(line.replace("**", ""), highlight=False)
    print_notes(result.notes)
    err.print(f"wrote {', '.join(str(p) for p in paths[:4])} and {len(paths) - 4} plots ({result.wall_s:.1f} s)",
              highlight=False)
    if as_json:
        print_json({"config": done.config, "report": str(out_dir), **result.summary()})
