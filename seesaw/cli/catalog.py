"""``seesaw catalog`` and ``seesaw workload describe``: what is built in, and what a workload holds."""

from __future__ import annotations

from typing import Optional

import typer
from rich.table import Table

from seesaw.cli import options as opt
from seesaw.cli.console import out, print_json

__all__ = ["register"]

DESCRIBE_SAMPLE_SIZE = 100_000  # workload describe: a workload too large to build is described from a sample


def register(app: typer.Typer, workload_app: typer.Typer) -> None:
    app.command()(catalog)
    workload_app.command("describe")(workload_describe)


def catalog(as_json: bool = typer.Option(False, "--json", rich_help_panel=opt.OUTPUT_PANEL,
                                         help="print one JSON object"),
            template: Optional[str] = typer.Option(None, "--template", metavar="KIND",
                                                   rich_help_panel=opt.OUTPUT_PANEL,
                                                   help="print a commented gpu | node YAML")) -> None:
    """List the built-in GPUs, nodes and models with their key figures and sources; ``--template``
    prints a commented GPU or node file to describe your own hardware (``--gpu FILE``)."""
    from seesaw import catalog as cat

    if template is not None:
        print(cat.template(template.strip().lower()), end="")
        return
    rows = cat.catalog_table()
    if as_json:
        print_json({"profiles": rows})
        return
    for kind in dict.fromkeys(r["kind"] for r in rows):
        table = Table(title=kind, title_justify="left")
        for col in ("name", "figures", "source"):
            table.add_column(col, overflow="fold")
        for r in rows:
            if r["kind"] == kind:
                table.add_row(r["name"], r["figures"], r["source"])
        out.print(table)


def workload_describe(
    source: str = typer.Argument(..., metavar="SRC",
                                 help=".json, .csv, .jsonl, or sharegpt | arxiv | constant | uniform"),
    num_requests: Optional[int] = opt.NUM_REQUESTS,
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    as_json: bool = typer.Option(False, "--json", rich_help_panel=opt.OUTPUT_PANEL, help="print one JSON object"),
) -> None:
    """Count, length percentiles and prefill:decode ratio of a workload."""
    from seesaw.workload import describe, load_workload

    reqs = load_workload(source, num_requests=num_requests, seed=seed, input_len=input_len, output_len=output_len,
                         sample_size=DESCRIBE_SAMPLE_SIZE)  # a larger workload is described from a sample
    stats = describe(reqs)
    if as_json:
        print_json(stats)
        return
    table = Table(title=f"workload {source}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in stats.items():
        table.add_row(k, f"{v:,.2f}" if isinstance(v, float) else str(v))
    out.print(table)
