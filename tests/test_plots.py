"""The plots checked as images: each is rendered with Agg as it is saved, then matplotlib's
renderer gives every text's box: no two texts (tick labels, axis labels, titles, annotations)
overlap, and no legend covers plotted data (bars, lines, points, bands)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from seesaw.app.calibrate import Row
from seesaw.report.plots import plot_calibration, plot_timeline


@pytest.fixture
def saved(monkeypatch):
    """Every figure a plot function saves (the figure itself, to measure after the save)."""
    from matplotlib.figure import Figure

    figs, real = [], Figure.savefig

    def save(self, *args, **kwargs):
        figs.append(self)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", save)
    return figs


def _tick_labels(axis) -> list:
    """The tick labels drawn on ``axis``: visible, non-empty, at a tick inside the view."""
    lo, hi = sorted(axis.get_view_interval())
    out = []
    for which in ("major", "minor"):
        labels = axis.get_majorticklabels() if which == "major" else axis.get_minorticklabels()
        del labels  # (refreshes the ticks' locations and texts)
        locs = axis.get_majorticklocs() if which == "major" else axis.get_minorticklocs()
        ticks = axis.get_major_ticks(len(locs)) if which == "major" else axis.get_minor_ticks(len(locs))
        for loc, tick in zip(locs, ticks):
            lab = tick.label1
            if lab.get_visible() and lab.get_text().strip() and lo - 1e-9 * abs(lo) <= loc <= hi + 1e-9 * abs(hi):
                out.append(lab)
    return out


def _texts(fig) -> list:
    texts = [t for t in fig.texts if t.get_visible() and t.get_text()]  # the suptitle is one of them
    for ax in fig.axes:
        texts += _tick_labels(ax.xaxis) + _tick_labels(ax.yaxis)
        texts += [t for t in (ax.xaxis.label, ax.yaxis.label, ax.title) if t.get_visible() and t.get_text()]
        texts += [t for t in ax.texts if t.get_visible() and t.get_text()]
    return texts


def _overlap(a, b, slack: float = 1.0) -> bool:
    return (a.x0 + slack < b.x1 and b.x0 + slack < a.x1) and (a.y0 + slack < b.y1 and b.y0 + slack < a.y1)


def _dense(points: np.ndarray, per_segment: int = 16) -> np.ndarray:
    """Points along a polyline in display space (a segment can cross a box between its ends)."""
    if len(points) < 2:
        return points
    t = np.linspace(0, 1, per_segment)[:, None, None]
    return (points[:-1] + t * (points[1:] - points[:-1])).reshape(-1, 2)


def _data_hits(ax, box, renderer) -> list[str]:
    """What of ``ax``'s plotted data lies under ``box`` (display coordinates)."""
    from matplotlib.collections import LineCollection, PathCollection

    hits = []

    def inside(pts):
        pts = pts[np.isfinite(pts).all(axis=1)]
        return bool(((pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)).any())

    for line in ax.lines:
        if len(line.get_xydata()) and inside(_dense(ax.transData.transform(line.get_xydata()))):
            hits.append(f"line {line.get_label()}")
    for c in ax.collections:
        if isinstance(c, PathCollection):      # scatter: markers at the offsets
            if len(c.get_offsets()) and inside(c.get_offset_transform().transform(c.get_offsets())):
                hits.append("points")
        elif isinstance(c, LineCollection):    # error bars
            if any(len(s) and inside(_dense(c.get_transform().transform(s))) for s in c.get_segments()):
                hits.append("error bars")
        else:                                  # bars and bands: their area
            if any(_overlap(p.get_extents(c.get_transform()), box, 0) for p in c.get_paths()):
                hits.append(f"area {c.get_label()}")
    hits += [f"bar {p.get_label()}" for p in ax.patches if _overlap(p.get_window_extent(renderer), box, 0)]
    return hits


def check_layout(fig) -> list[str]:
    """Problems of a rendered figure: overlapping texts, legends over data."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)  # a closed figure keeps no canvas of its own
    canvas.draw()
    renderer = canvas.get_renderer()
    problems = []
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in _texts(fig)]
    for (ta, a), (tb, b) in itertools.combinations(boxes, 2):
        if _overlap(a, b):
            problems.append(f"texts overlap: {ta!r} and {tb!r}")
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None] + list(fig.legends)
    for leg in legends:
        box = leg.get_window_extent(renderer)
        for ax in fig.axes:
            problems += [f"legend covers {what}" for what in _data_hits(ax, box, renderer)]
    return problems


def _calibration_rows() -> list:
    """Three layouts whose points lie close together on two workloads (as on a 2-core machine)."""
    rows = []
    for wl, base in (("constant:256/8", 410.0), ("sharegpt", 150.0)):
        for lay, k in (("T2", 1.0), ("P2", 1.025), ("P2->T2", 0.975)):
            meas = base * k
            rows.append(Row(lay, wl, 8, meas, meas * (1.1 - 0.05 * (k - 1) * 40), 1.0, 1.0,
                            measured_runs=[meas * 0.93, meas, meas * 1.05], speed_ratio=1.2,
                            predicted_at_speed_tok_s=meas * 0.9))
    return rows


def test_calibration_plot_is_legible(tmp_path, saved):
    plot_calibration(_calibration_rows(), tmp_path / "calibration.png")
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert check_layout(saved[-1]) == []


def test_timeline_plot_is_legible(tmp_path, saved):
    from seesaw.app.simulate import simulate

    done = simulate(model="llama2-13b", gpu="l4", num_gpus=4, workload="sharegpt", num_requests=200,
                    layout="P4->T4")
    plot_timeline(done.result, tmp_path / "timeline.png")
    assert (tmp_path / "timeline.png").stat().st_size > 0
    assert check_layout(saved[-1]) == []


def test_the_checker_sees_overlaps(saved):
    """The checks themselves: a legend over a bar and two labels on one spot are found."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    ax.bar([0, 1], [1, 1], label="bars")
    ax.legend(loc="center")
    ax.annotate("abc", (0.5, 0.5))
    ax.annotate("abd", (0.5, 0.5))
    problems = check_layout(fig)
    plt.close(fig)
    assert any(p.startswith("legend covers bar") for p in problems), problems
    assert "texts overlap: 'abc' and 'abd'" in problems, problems
