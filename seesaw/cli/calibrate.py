"""``seesaw calibrate``: run workloads through the engine and the simulator (with a measured
profile) for several layouts; print the prediction error per layout and the planner's regret.
See ``seesaw.app.calibrate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from seesaw.cli import options as opt
from seesaw.cli.console import out, show
from seesaw.progress import Progress

__all__ = ["register", "calibrate_cmd"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)


def calibrate_cmd(
    model: str = typer.Option("tiny", "--model", "-m", metavar="NAME", rich_help_panel=opt.MODEL_PANEL,
                              help="tiny | smollm2-135m | a checkpoint dir"),
    profile: Optional[str] = typer.Option(None, "--profile", "-p", metavar="NAME", rich_help_panel=opt.MODEL_PANEL,
                                          help="measured profile, name or YAML (default cpu-2core)"),
    gpu: Optional[str] = typer.Option(None, "--gpu", "-g", metavar="NAME", rich_help_panel=opt.HARDWARE_PANEL,
                                      help="predict on this GPU's datasheet profile instead"),
    node: Optional[str] = opt.NODE,
    layouts: str = typer.Option("T2,P2,P2->T2", "--layouts", "-l", metavar="LIST", rich_help_panel=opt.LAYOUT_PANEL,
                                help="comma-separated layouts and Seesaw pairs"),
    workload: str = typer.Option("constant", "--workload", "-w", metavar="LIST", rich_help_panel=opt.WORKLOAD_PANEL,
                                 help="comma-separated sources; constant:256/8 sets lengths"),
    num_requests: Optional[int] = typer.Option(8, "--num-requests", "-n", min=1, metavar="N",
                                               rich_help_panel=opt.WORKLOAD_PANEL, help="requests per workload"),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, metavar="TOK", rich_help_panel=opt.WORKLOAD_PANEL,
                                            help="default prompt tokens (constant, uniform)"),
    output_len: Optional[int] = typer.Option(None, "--output-len", min=1, metavar="TOK",
                                             rich_help_panel=opt.WORKLOAD_PANEL, help="default output tokens"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, metavar="TOK",
                                             rich_help_panel=opt.WORKLOAD_PANEL, help="cap every request's max_tokens"),
    seed: int = typer.Option(0, "--seed", min=0, metavar="N", rich_help_panel=opt.WORKLOAD_PANEL,
                             help="sampling and synthetic-prompt seed"),
    timeout_s: float = typer.Option(120.0, "--timeout", min=1, metavar="S", rich_help_panel=opt.ENGINE_PANEL,
                                    help="collective and step timeout, seconds"),
    repeat: int = typer.Option(1, "--repeat", "-r", min=1, max=100, metavar="N", rich_help_panel=opt.ENGINE_PANEL,
                               help="engine runs per pair; the median is kept"),
    no_speed_check: bool = typer.Option(False, "--no-speed-check", rich_help_panel=opt.ENGINE_PANEL,
                                        help="skip timing the machine against the profile"),
    output_dir: Path = typer.Option(Path("seesaw-calibrate"), "--output-dir", "-o", metavar="DIR",
                                    rich_help_panel=opt.OUTPUT_PANEL, help="folder for the CSV, plot and summary"),
    as_json: bool = opt.JSON,
    overwrite: bool = opt.OVERWRITE,
) -> None:
    """Predicted (simulator + measured profile) vs measured (engine) throughput per layout and workload.

    --gpu/--node predict on that hardware's datasheet roofline instead
    (e.g. a YAML you wrote for this machine), scaled to each layout's ranks.

    Engine runs go in rounds over all pairs (--repeat).
    The speed check times a few profile tables (~3 s) before every round
    and after the last, and predicts again at the machine's speed then.
    """
    check_speed = not no_speed_check
    from seesaw.app import calibrate as cal
    from seesaw.app.simulate import hardware_option
    from seesaw.report import calibration as cal_report

    hardware = hardware_option(gpu, node, default=None)
    if hardware is not None and profile is not None:
        raise cal.CalibrationError(f"--profile {profile} and --{'gpu' if gpu else 'node'} {hardware}: "
                                   "give one (the hardware the engine runs are predicted on)")
    profile = profile or "cpu-2core"

    wls = cal.parse_workloads(workload, input_len, output_len)
    lay = [x for x in layouts.split(",") if x.strip()]
    with Progress("calibrate", unit="engine runs") as bar:  # a failed engine run: RunFailed, exit 1
        rows = cal.calibrate(model, lay, wls, profile=profile, num_requests=num_requests, max_tokens=max_tokens,
                             seed=seed, output_dir=output_dir, timeout_s=timeout_s, repeat=repeat,
                             check_speed=check_speed, progress=_say, tick=bar, overwrite=overwrite,
                             hardware=hardware)
    meta = {"model": model, "profile": profile if hardware is None else None, "hardware": hardware, "layouts": lay, "workloads": [w.label for w in wls],
            "num_requests": num_requests, "repeat": repeat}
    summ = cal.write_outputs(rows, output_dir, meta)
    show(cal_report.table(rows, width=out.width if out.is_terminal else None))
    for line in cal_report.summary_lines(summ, repeat):
        print(line)
    print(f"wrote {output_dir}/calibration.csv, calibration.png, summary.json", file=sys.stderr)
    if as_json:
        print(json.dumps(summ, default=str))
