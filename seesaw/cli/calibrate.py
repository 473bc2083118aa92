"""``seesaw calibrate``: run workloads through the engine and the simulator (with a measured
profile) for several layouts; print the prediction error per layout and the planner's regret.
See ``seesaw.app.calibrate``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from seesaw.cli.console import show
from seesaw.progress import Progress

__all__ = ["register", "calibrate_cmd"]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)


def calibrate_cmd(
    model: str = typer.Option("tiny", "--model", "-m", help="tiny | smollm2-135m | a checkpoint dir"),
    profile: str = typer.Option("cpu-2core", "--profile", "-p", help="measured profile (name or YAML path)"),
    layouts: str = typer.Option("T2,P2,P2->T2", "--layouts", "-l", help="comma-separated layouts / Seesaw pairs"),
    workload: str = typer.Option("constant", "--workload", "-w",
                                 help="comma-separated seesaw-run sources; NAME:IN/OUT sets lengths (constant:256/8)"),
    num_requests: Optional[int] = typer.Option(8, "--num-requests", "-n", min=1),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, help="default prompt length (constant/uniform)"),
    output_len: Optional[int] = typer.Option(None, "--output-len", min=1, help="default output length"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="cap every request's max_tokens"),
    seed: int = typer.Option(0, "--seed", min=0),
    output_dir: Path = typer.Option(Path("seesaw-calibrate"), "--output-dir", "-o",
                                    help="folder for calibration.csv, calibration.png, summary.json"),
    timeout_s: float = typer.Option(120.0, "--timeout", min=1.0, help="engine collective/step timeout (s)"),
    repeat: int = typer.Option(1, "--repeat", "-r", min=1, help="engine runs per pair, in rounds over all pairs; the median run is kept and the range reported (noisy machines)"),
    check_speed: bool = typer.Option(True, "--speed-check/--no-speed-check",
                                     help="time a few of the profile's tables again before every round and after the "
                                          "last (~3 s each), and predict also at the machine's speed then"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object last"),
) -> None:
    """Predicted (simulator + measured profile) vs measured (engine) throughput per layout and workload."""
    from seesaw.app import calibrate as cal
    from seesaw.report import calibration as cal_report

    wls = cal.parse_workloads(workload, input_len, output_len)
    lay = [x for x in layouts.split(",") if x.strip()]
    with Progress("calibrate", unit="engine runs") as bar:  # a failed engine run: RunFailed, exit 1
        rows = cal.calibrate(model, lay, wls, profile=profile, num_requests=num_requests, max_tokens=max_tokens,
                             seed=seed, output_dir=output_dir, timeout_s=timeout_s, repeat=repeat,
                             check_speed=check_speed, progress=_say, tick=bar)
    meta = {"model": model, "profile": profile, "layouts": lay, "workloads": [w.label for w in wls],
            "num_requests": num_requests, "repeat": repeat}
    summ = cal.write_outputs(rows, output_dir, meta)
    show(cal_report.table(rows))
    for line in cal_report.summary_lines(summ, repeat):
        print(line)
    print(f"wrote {output_dir}/calibration.csv, calibration.png, summary.json", file=sys.stderr)
    if as_json:
        print(json.dumps(summ, default=str))
