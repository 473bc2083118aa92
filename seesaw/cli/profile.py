"""``seesaw profile``: time the engine's pieces on this machine into a measured profile.

Registered on the main app by ``seesaw.cli``. The profiler imports
torch, so it is imported only when the command runs.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import List, Optional

import typer

from seesaw.cli.console import err
from seesaw.cli.progress import Progress
from seesaw.core import SpecError

__all__ = ["register"]


def _bad(message: str) -> None:
    raise SpecError(message)  # one line on stderr, exit code 2 (seesaw.cli.errors)


def register(app: typer.Typer) -> None:
    app.command("profile")(profile_command)


def profile_command(
    output: Path = typer.Option(..., "--output", "-o", help="profile YAML to write, e.g. profiles/measured/NAME.yaml"),
    device: str = typer.Option("cpu", "--device", "-d", help="cpu | cuda"),
    ranks: Optional[int] = typer.Option(None, "--ranks", "-r", min=1,
                                        help="ranks at once (TP degrees and collectives up to it); default 3 on CPU, every GPU on CUDA"),
    model: Optional[List[str]] = typer.Option(None, "--model", "-m",
                                              help="catalog model whose shapes to time (repeatable); default tiny and smollm2-135m"),
    tp: Optional[List[int]] = typer.Option(None, "--tp", min=1, help="TP degrees to time (repeatable); default 1 2 3"),
    quick: bool = typer.Option(False, "--quick", help="a small grid that takes seconds (CI)"),
    threads: int = typer.Option(1, "--threads", min=1, help="torch threads per rank (the engine's ranks use 1)"),
    dtype: str = typer.Option("float32", "--dtype", help="float32 | bfloat16 | float16 (the engine's CPU default: float32)"),
    repeats: Optional[int] = typer.Option(None, "--repeats", min=1, help="timed repeats per grid point, over all passes"),
    passes: Optional[int] = typer.Option(None, "--passes", min=1,
                                         help="rounds over all tables, the repeats split among them (default 3; --quick 1)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object last"),
) -> None:
    """Time the engine's linear layers, attention, collectives, copies and step overhead over a grid
    of shapes; write a measured profile for the cost model (CostModel(..., measured=...))."""
    if device not in ("cpu", "cuda"):
        _bad(f"--device {device!r}: use cpu or cuda")
    if output.exists() and output.is_dir():
        _bad(f"--output {output} is a directory; give a .yaml file")
    from seesaw import profiling as profiler
    from seesaw.catalog import load_model

    if device == "cuda" and not profiler.cuda_available():
        _bad("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    kw = {}
    if tp:
        kw["tp"] = tuple(tp)
    if repeats:
        kw["repeats"] = repeats
    if passes:
        kw["passes"] = passes
    grid = profiler.Grid.quick(**kw) if quick else profiler.Grid.default(**kw)
    if ranks is None and device == "cpu":
        ranks = 2 if quick else max([3, *(tp or [])])
    try:
        specs = [load_model(m) for m in (model or grid.models)]
        command = "seesaw " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:] else "seesaw profile"
        name = output.name.rsplit(".", 1)[0].lower()
        with Progress("profiling", every_s=30.0, eta=True, unit=" samples") as bar:
            prof = profiler.profile(grid, device=device, ranks=ranks, models=specs, threads=threads,
                                    dtype=dtype, name=name, command=command, progress=bar)
    except SpecError as e:
        _bad(str(e).splitlines()[0])
    header = (
        f"Measured by `seesaw profile` on {prof.device_name} ({prof.cpu_count} CPUs, "
        f"{prof.memory_bytes / 2**30:.1f} GiB RAM), {prof.date}.\n"
        f"command: {command}\n"
        f"wall time: {prof.wall_time_s:.0f} s; {prof.num_ranks} ranks x {prof.threads_per_rank} torch threads, "
        f"{prof.dtype}, torch {prof.torch_version}\n"
        f"{prof.repeats} timed repeats per point, taken in {prof.passes} pass(es) over all the tables; every time "
        f"is {profiler.merged_as(prof.passes)} (seconds per call; see docs/profiling.md);\n"
        f"Layer tables: timed inside {max(3, prof.repeats // 5)} forward passes per point, one sample per layer; "
        f"step_overhead: the difference of two whole driver runs, mean of {max(3, prof.repeats // 5)} each; "
        "swaps and reshards: Seesaw's whole steps on the replica's ranks.\n"
        f"Mean 1-minute load average while measuring: {prof.load_average} on {prof.cpu_count} CPUs "
        "(shared machine; this run's ranks included).\n"
        "Schema: seesaw.core.MeasuredProfile; used by simulator.cost.CostModel(model, node, measured=...)."
    )
    path = profiler.write_profile(prof, output, header)
    figures = profiler.summary(prof)
    err.print(f"wrote {path} in {prof.wall_time_s:.1f} s")
    for key, value in figures.items():
        print(f"{key}: {value:.4g}")
    if as_json:
        print(json.dumps({"path": str(path), "wall_time_s": prof.wall_time_s, **figures}))
