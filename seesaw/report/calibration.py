"""The calibration report: ``seesaw calibrate``'s folder, its terminal table and its lines.

``write_calibration_folder`` writes ``calibration.csv`` (one row per (layout, workload) pair,
``Row.record()``), ``calibration.png`` (predicted against measured) and ``summary.json`` (the
summary it is given: ``seesaw.app.calibrate.summary`` and the run's metadata). ``table`` builds
a Rich table for the terminal and returns it (the caller prints it); ``range_line``,
``regret_lines`` and ``speed_line`` return the summary's lines as text. Rows are
``seesaw.app.calibrate.Row`` objects, used through their attributes: the report layer does not
import the use cases.
"""

from __future__ import annotations

import csv
from pathlib import Path

from seesaw.report.folders import write_run_folder
from seesaw.report.plots import plot_calibration

__all__ = ["write_calibration_folder", "table", "summary_lines", "range_line", "regret_lines", "speed_line",
           "speed_phrase", "STALE_SPEED"]


def write_calibration_folder(rows: list, out_dir: Path, summary: dict, config: dict | None = None) -> dict:
    """``config.yaml``, ``calibration.csv``, ``calibration.png``, ``summary.json`` in ``out_dir``;
    returns ``summary``."""
    files = {"calibration.csv": lambda path: _write_csv([r.record() for r in rows], path),
             "calibration.png": lambda path: plot_calibration(rows, path)}
    write_run_folder(out_dir, summary, config=config or {}, files=files)
    return summary


def _write_csv(records: list[dict], path: Path) -> None:
    keys = list(dict.fromkeys(k for rec in records for k in rec))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=keys)
        w.writeheader()
        for rec in records:
            w.writerow(rec)


STALE_SPEED = 1.25  # speed checks all this much slower (or faster) than the profile: a stale profile


def speed_phrase(r: float) -> str:
    """A speed ratio against the profile in words: ``as fast (1.01x)``, ``1.30x slower``, ``1.33x faster``."""
    if abs(r - 1) < 0.03:
        return f"as fast ({r:.2f}x)"
    return f"{r:.2f}x slower" if r > 1 else f"{1 / r:.2f}x faster"


def speed_line(summ: dict) -> str | None:
    """One line on the speed checks (``calibrate(check_speed=True)``) and the predictions at the
    kept runs' speed; None without them."""
    if summ.get("median_abs_rel_error_at_speed") is None:
        return None
    lo, hi = summ["speed_ratio_min"], summ["speed_ratio_max"]
    span = speed_phrase(lo) if abs(hi - lo) < 0.01 else f"{lo:.2f}x-{hi:.2f}x the profile's step times"
    # every check this far off: the machine has changed since the profile (a shared VM's host
    # can run it 1.8x slower for an hour), not drifted within a run
    stale = (f"; every check read the machine {speed_phrase(lo if lo > 1 else hi)} or more than the profile: "
             f"measure it again (seesaw profile) for predictions at today's speed"
             if lo >= STALE_SPEED or hi <= 1 / STALE_SPEED else "")
    return (f"machine speed against the profile's over the runs: {span} (tiny model's GEMM and layer tables); "
            f"predicted at the kept runs' speed: median |error| {100 * summ['median_abs_rel_error_at_speed']:.1f}%, "
            f"worst {100 * summ['worst_abs_rel_error_at_speed']:.1f}% ({summ['worst_pair_at_speed']}){stale}")


def table(rows: list, title: str = "Calibration: simulator vs engine", width: int | None = None):
    """A Rich table: throughput and prefill/decode seconds, measured vs predicted. For a terminal
    ``width`` columns wide, the less important figures are left out so the rest stay readable
    (under 150: the phase seconds; under 110: the runs' range, beyond-range error and slowdown);
    calibration.csv has them all."""
    from rich.table import Table

    wide, mid = width is None or width >= 150, width is None or width >= 110
    t = Table(title=title, caption=None if wide else "(more columns in calibration.csv)")
    ranged = any(len(r.measured_runs) > 1 for r in rows)
    sped = any(r.predicted_at_speed_tok_s is not None for r in rows)
    cols = ["layout", "workload", "meas tok/s", *(["runs min-max"] if ranged and mid else []), "pred tok/s", "err",
            *(["beyond range"] if ranged and mid else []), *(["slowdown"] if sped and mid else []),
            *(["pred @speed", "err @speed"] if sped else []),
            *(["prefill meas s", "prefill pred s", "prefill err", "decode meas s", "decode pred s", "decode err"]
              if wide else [])]
    # what tells rows apart is never cut: the identifying columns keep their full width and the
    # figures' headers wrap instead
    widths = {"layout": max([len("layout")] + [len(r.layout) for r in rows]),
              "workload": max([len("workload")] + [len(r.workload) for r in rows])}
    for col in cols:
        if col in widths:
            t.add_column(col, justify="left", no_wrap=True, min_width=widths[col])
        else:
            t.add_column(col, justify="right")

    def pct(x):
        return "-" if x is None else f"{100 * x:+.1f}%"

    for r in rows:
        cells = [r.layout, r.workload, f"{r.measured_tok_s:,.1f}"]
        if ranged and mid:
            cells.append(f"{r.measured_min_tok_s:,.0f}-{r.measured_max_tok_s:,.0f}")
        cells += [f"{r.predicted_tok_s:,.1f}", pct(r.rel_error)]
        if ranged and mid:
            cells.append(pct(r.error_beyond_range))
        if sped:
            at = r.predicted_at_speed_tok_s
            if mid:
                cells.append(f"{r.speed_ratio:.2f}x" if r.speed_ratio else "-")
            cells += ["-" if at is None else f"{at:,.1f}", pct(r.rel_error_at_speed)]
        if wide:
            for ph in ("prefill", "decode"):
                cells += [f"{r.measured_phases.get(ph, 0.0):.3f}", f"{r.predicted_phases.get(ph, 0.0):.3f}",
                          pct(r.phase_error(ph))]
        t.add_row(*cells)
    return t


def range_line(summ: dict) -> str:
    """How many predictions fall inside their pair's measured range, and the worst miss beyond it."""
    return (f"{summ['num_within_range']} of {summ['num_pairs']} predictions inside the measured runs' range; "
            f"worst beyond it {100 * summ['worst_abs_error_beyond_range']:.1f}%")


def regret_lines(summ: dict) -> list[str]:
    """One line per workload on the planner's regret, then the overall mean and max."""
    reg = summ["regret"]
    lines = []
    for wl, v in reg["per_workload"].items():
        lines.append(f"regret {wl}: simulator picks {v['predicted_best']}, fastest measured {v['measured_best']}: "
                     f"{100 * v['regret']:.1f}%")
    lines.append(f"regret overall: mean {100 * reg['mean']:.1f}%, max {100 * reg['max']:.1f}%")
    return lines


def summary_lines(summ: dict, repeat: int = 1, targets: bool = False) -> list[str]:
    """The lines under the table: median and worst error (with the targets when ``targets``), the
    measured range (``repeat`` > 1), the planner's regret, the speed checks."""
    med, worst = 100 * summ["median_abs_rel_error"], 100 * summ["worst_abs_rel_error"]
    if targets:
        lines = [f"median |error| {med:.1f}% (target <= 10%), worst {worst:.1f}% (target <= 20%; {summ['worst_pair']})"]
    else:
        lines = [f"median |error| {med:.1f}%, worst {worst:.1f}% ({summ['worst_pair']})"]
    if repeat > 1:
        lines.append(range_line(summ))
    lines += regret_lines(summ)
    speed = speed_line(summ)
    return lines + ([speed] if speed else [])
