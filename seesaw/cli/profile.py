"""``seesaw profile``: time the engine's pieces on this machine into a measured profile.

The use case is ``seesaw.app.profile``; the profiler imports torch, so it is imported only when
the command runs.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from seesaw.cli import options as opt
from seesaw.cli.console import err
from seesaw.progress import Progress

__all__ = ["register"]


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)


def profile_command(
    output: Path = typer.Option(..., "--output", "-o", metavar="FILE", rich_help_panel=opt.OUTPUT_PANEL,
                                help="profile YAML, e.g. profiles/measured/NAME.yaml"),
    device: str = typer.Option("cpu", "--device", "-d", metavar="DEV", rich_help_panel=opt.HARDWARE_PANEL,
                               help="cpu | cuda"),
    ranks: Optional[int] = typer.Option(None, "--ranks", "-r", min=1, metavar="N", rich_help_panel=opt.HARDWARE_PANEL,
                                        help="ranks at once (default: 3 on CPU, all GPUs)"),
    threads: int = typer.Option(1, "--threads", min=1, max=1024, metavar="N", rich_help_panel=opt.HARDWARE_PANEL,
                                help="torch threads per rank (the engine uses 1)"),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m", metavar="NAME", rich_help_panel=opt.MODEL_PANEL,
                                              help="model whose shapes to time (repeatable)"),
    dtype: str = typer.Option("float32", "--dtype", metavar="TYPE", rich_help_panel=opt.MODEL_PANEL,
                              help="float32 | bfloat16 | float16"),
    tp: Optional[List[int]] = typer.Option(None, "--tp", min=1, metavar="N", rich_help_panel=opt.GRID_PANEL,
                                           help="TP degrees to time (repeatable; default 1 2 3)"),
    quick: bool = typer.Option(False, "--quick", rich_help_panel=opt.GRID_PANEL,
                               help="a small grid that takes seconds (CI)"),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, metavar="N", rich_help_panel=opt.GRID_PANEL,
                                          help="timed repeats per grid point"),
    passes: Optional[int] = typer.Option(None, "--passes", min=1, metavar="N", rich_help_panel=opt.GRID_PANEL,
                                         help="rounds over all tables (default 3; --quick 1)"),
    as_json: bool = opt.JSON,
) -> None:
    """Time the engine's pieces over a grid of shapes; write a measured profile.

    Linear layers, attention, collectives, copies and step overhead.
    Default models: tiny and smollm2-135m. The repeats are split among the passes.
    """
    from seesaw.app.profile import profile

    command = "seesaw " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "seesaw profile"
    with Progress("profile", unit="samples") as bar:  # bad input: one line, exit 2
        done = profile(output, device=device, ranks=ranks, models=model, tp=tp, quick=quick, threads=threads,
                       dtype=dtype, repeats=repeats, passes=passes, command=command, progress=bar)
    prof, path, figures = done.profile, done.path, done.figures
    err.print(f"wrote {path} in {prof.wall_time_s:.1f} s")
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    if as_json:
        print(json.dumps({"path": str(path), "wall_time_s": prof.wall_time_s, **figures}))
