"""Predicted beside measured for an auto-tuned or planned batch run, as terminal lines.

The comparison itself (``seesaw.app.autotune.comparison``: per metric the plan's prediction, the
engine's measurement and their ratio) comes in as a dict; this module only lays it out.
"""

from __future__ import annotations

__all__ = ["comparison_lines"]


def comparison_lines(comp: dict) -> list[str]:
    """A header and one line per metric: predicted, measured, measured/predicted."""
    lines = [f"{'':26}{'predicted':>12}{'measured':>12}{'measured/predicted':>20}"]
    for k, r in comp["metrics"].items():
        p = "-" if r["predicted"] is None else f"{r['predicted']:.2f}"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"{k:26}{p:>12}{r['measured']:>12.2f}{ratio:>20}")
    return lines
