"""Run folders: every run writes what it was asked (config.yaml) and what came out.

A folder holds ``config.yaml`` (fully resolved inputs), ``summary.json`` (the metrics),
``requests.csv`` and ``steps.csv``; Seesaw runs add ``timeline.png``. Written explicitly at the
end of the run, never from ``atexit``.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml

__all__ = ["write_sim_folder", "plot_timeline"]


def write_sim_folder(out_dir: Path, config: dict, result) -> Path:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (out_dir / "summary.json").write_text(json.dumps(result.summary(), indent=2) + "\n")
    result.requests.to_csv(out_dir / "requests.csv", index=False)
    result.steps.to_csv(out_dir / "steps.csv", index=False)
    if result.policy == "seesaw":
        plot_timeline(result, out_dir / "timeline.png")
    return out_dir


def plot_timeline(result, path: Path) -> Path:
    """Phase over time and device/host KV occupancy (the seesaw pattern)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = result.steps
    colors = {"prefill": "tab:blue", "decode": "tab:orange", "mixed": "tab:green",
              "reshard": "tab:red", "swapin": "tab:purple", "swapout": "tab:brown"}
    fig, (ax0, ax1) = plt.subplots(2, 1, figsize=(10, 5), sharex=True,
                                   gridspec_kw={"height_ratios": [1, 2]})
    rep0 = steps[steps["replica"] == 0]
    for kind, grp in rep0.groupby("kind"):
        ax0.broken_barh(list(zip(grp["start_s"], grp["end_s"] - grp["start_s"])), (0, 1),
                        facecolors=colors.get(kind, "grey"), label=kind)
    ax0.set_yticks([])
    ax0.set_ylabel("phase")
    ax0.legend(loc="upper right", ncol=6, fontsize=8)
    ax1.plot(rep0["end_s"], 100 * rep0["kv_usage"], label="device KV used (%)", lw=1)
    if "host_kv_usage" in rep0:
        ax1.plot(rep0["end_s"], 100 * rep0["host_kv_usage"], label="host KV pool used (%)", lw=1)
    ax1.set_xlabel("simulated time (s)")
    ax1.set_ylabel("occupancy (%)")
    ax1.set_ylim(0, 105)
    ax1.legend(loc="upper right", fontsize=8)
    fig.suptitle(f"{result.policy} {result.layout}: replica 0 timeline")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
