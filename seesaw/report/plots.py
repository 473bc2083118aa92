"""Plots of the report layer: each function draws one figure and saves it as a PNG at ``path``.

``plot_timeline``: a simulated Seesaw run's phases and KV occupancy (``seesaw simulate -o``).
The what-if figures (``plot_throughput_cost``, ``plot_vs_vllm``, ``plot_time_by_phase``) take the
options table of ``WhatIfResult.table()`` (feasible rows, best first) or the phase bars;
``plot_calibration`` takes ``seesaw calibrate``'s rows. matplotlib runs headless (Agg) and is
imported only when a figure is drawn.
"""

from __future__ import annotations

import math
from pathlib import Path

from seesaw.core import PHASES

__all__ = ["plot_timeline", "timeline_figure", "calibration_figure", "plot_throughput_cost", "plot_vs_vllm", "plot_time_by_phase", "plot_calibration"]

_PHASE_COLORS = {"prefill": "#4C72B0", "decode": "#DD8452", "mixed": "#55A868", "reshard": "#C44E52",
                 "swap_stall": "#8172B3", "idle": "#BBBBBB"}
_PHASE_LABELS = {"prefill": "prefill", "decode": "decode", "mixed": "prefill + decode in flight",
                 "reshard": "re-shard", "swap_stall": "swap stall", "idle": "idle"}
_KIND_COLORS = {"seesaw": "#55A868", "vllm": "#4C72B0"}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_timeline(result, path: Path) -> Path:
    """Phase over time and device/host KV occupancy (the seesaw pattern)."""
    return _save(timeline_figure(result), path, dpi=110)


def timeline_figure(result):
    """The figure of ``plot_timeline``; the legends sit right of the axes, clear of the data."""
    plt = _pyplot()
    steps = result.steps
    colors = {"prefill": "tab:blue", "decode": "tab:orange", "mixed": "tab:green",
              "reshard": "tab:red", "swapin": "tab:purple", "swapout": "tab:brown"}
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(11, 5), sharex=True, layout="constrained",
                                   gridspec_kw={"height_ratios": [1, 2]})
    rep0 = steps[steps["replica"] == 0]
    for kind, grp in rep0.groupby("kind"):
        ax0.broken_barh(list(zip(grp["start_s"], grp["end_s"] - grp["start_s"])), (0, 1),
                        facecolors=colors.get(kind, "grey"), label=kind)
    ax0.set_yticks([])
    ax0.set_ylabel("phase")
    ax0.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), ncol=2, fontsize=8, frameon=False)
    ax1.plot(rep0["end_s"], 100 * rep0["kv_usage"], label="device KV used", lw=1)
    if "host_kv_usage" in rep0:
        ax1.plot(rep0["end_s"], 100 * rep0["host_kv_usage"], label="host KV pool used", lw=1)
    ax1.set_xlabel("simulated time (s)")
    ax1.set_ylabel("occupancy (%)")
    ax1.set_ylim(0, 105)
    ax1.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.suptitle(f"{result.policy} {result.layout}: replica 0 timeline")
    return fig


def _save(fig, path: Path, dpi: int) -> Path:
    fig.savefig(path, dpi=dpi)
    _pyplot().close(fig)
    return path


def _feasible(df):
    """The feasible rows of the options table and their names."""
    ok = df[df["feasible"]] if len(df) else df
    return ok, (list(ok["option"]) if len(ok) else [])


def plot_throughput_cost(df, path: Path) -> Path:
    """Each feasible option's best plan: throughput and cost per million tokens, side by side."""
    import pandas as pd

    plt = _pyplot()
    ok, names = _feasible(df)
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 3.8))
    if names:
        from matplotlib.patches import Patch

        colors = [_KIND_COLORS.get(k, "grey") for k in ok["kind"]]
        ax0.bar(names, ok["throughput_tok_s"], color=colors)
        ax1.bar(names, ok["cost_per_mtok_usd"].fillna(0), color=colors)
        ax0.legend(handles=[Patch(color=c, label=f"best plan is {k}") for k, c in _KIND_COLORS.items()],
                   fontsize=8, loc="upper right")
        for ax, col, fmt in ((ax0, "throughput_tok_s", "{:,.0f}"), (ax1, "cost_per_mtok_usd", "${:.2f}")):
            for i, v in enumerate(ok[col]):
                if pd.notna(v):
                    ax.annotate(fmt.format(v), (i, v), ha="center", va="bottom", fontsize=8)
    else:
        for ax in (ax0, ax1):
            ax.text(0.5, 0.5, "no feasible option", ha="center", va="center", transform=ax.transAxes)
    ax0.set_title("best plan: throughput (total tokens/s)")
    ax1.set_title("best plan: cost per million tokens (USD)")
    for ax in (ax0, ax1):
        ax.tick_params(axis="x", labelrotation=25)
        plt.setp(ax.get_xticklabels(), ha="right", rotation_mode="anchor")  # long names end under their bar
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)         # headroom for the labels and the legend
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_vs_vllm(df, path: Path) -> Path:
    """Each feasible option's best plan against its best static vLLM layout (the speedup)."""
    import pandas as pd

    plt = _pyplot()
    ok, names = _feasible(df)
    fig, ax = plt.subplots(figsize=(11, 3.8))
    x = range(len(names))
    if names:
        ax.bar([i - 0.2 for i in x], ok["vllm_throughput_tok_s"].fillna(0), 0.4, label="best static vLLM", color="#4C72B0")
        ax.bar([i + 0.2 for i in x], ok["throughput_tok_s"], 0.4, label="best plan", color="#55A868")
        for i, (s, v) in enumerate(zip(ok["speedup_vs_best_vllm"], ok["throughput_tok_s"])):
            if pd.notna(s):
                ax.annotate(f"{s:.2f}x", (i + 0.2, v), ha="center", va="bottom", fontsize=8)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xticks(list(x), names, rotation=25, ha="right", rotation_mode="anchor")
    ax.set_ylabel("total tokens/s")
    ax.set_title("best plan vs best static vLLM layout, per option")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_time_by_phase(bars: list[tuple[str, dict]], path: Path) -> Path:
    """One stacked bar per (label, {phase: seconds}), in hours, top to bottom."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.55 * len(bars) + 1.2)))
    left = [0.0] * len(bars)
    for ph in PHASES:
        vals = [b[1].get(ph, 0.0) / 3600 for b in bars]
        if any(vals):
            ax.barh(range(len(bars)), vals, left=left, color=_PHASE_COLORS[ph], label=_PHASE_LABELS[ph])
            left = [a + b for a, b in zip(left, vals)]
    ax.set_yticks(range(len(bars)), [b[0] for b in bars], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(left, default=1.0) * 1.05 or 1.0)
    ax.set_xlabel("hours (extrapolated makespan)")
    ax.set_title("time by phase: best plan and best static vLLM per option")
    if bars:
        ax.legend(fontsize=8, ncol=6, loc="upper center", bbox_to_anchor=(0.5, -0.18 if len(bars) < 4 else -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_calibration(rows: list, path: Path) -> Path:
    """Predicted against measured throughput, one point per (layout, workload) row of
    ``seesaw calibrate`` (the measured runs' range as error bars; hollow: the prediction at the
    machine's speed), y = x and a +-10% band."""
    return _save(calibration_figure(rows), path, dpi=120)


def _log_ticks(ax, lo: float, hi: float) -> None:
    """Plain-number ticks on both log axes, as many as the span leaves room for (no 2x10^2)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    span = math.log10(hi / lo)
    subs = (1.0, 2.0, 5.0) if span > 1.5 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0) if span > 0.6 else \
        (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(LogLocator(base=10, subs=subs))
        axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.0f}" if v >= 10 else f"{v:g}"))
        axis.set_minor_formatter(NullFormatter())


def calibration_figure(rows: list):
    """The figure of ``plot_calibration``: colour = workload, marker = layout (no text beside the
    points, so no label can cover another); the legend sits right of the axes."""
    from matplotlib.lines import Line2D

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), layout="constrained")
    wls = list(dict.fromkeys(r.workload for r in rows))
    lays = list(dict.fromkeys(r.layout for r in rows))
    markers = "osD^v<>p*hX"
    mark = {lay: markers[i % len(markers)] for i, lay in enumerate(lays)}
    color = {wl: f"C{j % 10}" for j, wl in enumerate(wls)}
    for r in rows:
        c, m = color[r.workload], mark[r.layout]
        ax.scatter([r.measured_tok_s], [r.predicted_tok_s], marker=m, color=c, s=45, zorder=3)
        if len(r.measured_runs) > 1:  # the measured runs' range
            ax.errorbar([r.measured_tok_s], [r.predicted_tok_s],
                        xerr=[[r.measured_tok_s - r.measured_min_tok_s], [r.measured_max_tok_s - r.measured_tok_s]],
                        fmt="none", ecolor=c, elinewidth=1, capsize=2, zorder=2)
        if r.predicted_at_speed_tok_s is not None:  # hollow: the prediction at the kept run's speed
            ax.scatter([r.measured_tok_s], [r.predicted_at_speed_tok_s], marker=m, s=45, facecolors="none",
                       edgecolors=c, zorder=3)
    vals = [v for r in rows for v in (r.measured_min_tok_s, r.measured_max_tok_s, r.predicted_tok_s,
                                      r.predicted_at_speed_tok_s or 0.0) if v > 0] or [1.0]
    lo, hi = min(vals) * 0.8, max(vals) * 1.25
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.fill_between([lo, hi], [lo * 0.9, hi * 0.9], [lo * 1.1, hi * 1.1], color="grey", alpha=0.15)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    _log_ticks(ax, lo, hi)
    ax.set_xlabel("measured throughput (tokens/s, engine)")
    ax.set_ylabel("predicted throughput (tokens/s, simulator)")
    ax.set_title("seesaw calibrate: predicted vs measured")
    handles = [Line2D([], [], ls="none", marker="s", color=color[wl], label=f"workload {wl}") for wl in wls]
    handles += [Line2D([], [], ls="none", marker=mark[lay], color="0.3", label=f"layout {lay}") for lay in lays]
    if any(r.predicted_at_speed_tok_s is not None for r in rows):
        handles.append(Line2D([], [], ls="none", marker="o", markerfacecolor="none", color="0.3",
                              label="hollow: at the run's speed"))
    handles += [Line2D([], [], ls="--", color="k", lw=1, label="y = x"),
                Line2D([], [], lw=6, color="grey", alpha=0.3, label="±10%")]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize=8, frameon=False)
    return fig
