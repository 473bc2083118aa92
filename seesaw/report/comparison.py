"""Predicted beside measured for an auto-tuned or planned batch run, as terminal lines.

The comparison itself (``seesaw.app.autotune.comparison``: per metric the plan's prediction, the
engine's measurement and their ratio; with a speed check also the prediction at the machine's
speed now and how much of the gap that speed explains) comes in as a dict; this module only lays
it out.
"""

from __future__ import annotations

import textwrap

from seesaw.report.calibration import speed_phrase

__all__ = ["comparison_lines", "speed_lines"]


def comparison_lines(comp: dict) -> list[str]:
    """A header and one line per metric: predicted, (at the machine's speed,) measured,
    measured/predicted; then the speed check's lines."""
    sped = any("predicted_at_speed" in r for r in comp["metrics"].values())
    lines = [f"{'':26}{'predicted':>12}" + (f"{'at speed':>10}" if sped else "")
             + f"{'measured':>12}{'measured/predicted':>20}"]
    for k, r in comp["metrics"].items():
        p = "-" if r["predicted"] is None else f"{r['predicted']:.2f}"
        at = f"{r['predicted_at_speed']:.2f}" if r.get("predicted_at_speed") is not None else "-"
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        lines.append(f"{k:26}{p:>12}" + (f"{at:>10}" if sped else "") + f"{r['measured']:>12.2f}{ratio:>20}")
    return lines + speed_lines(comp)


def speed_lines(comp: dict, width: int = 76) -> list[str]:
    """How fast the machine ran against its profile and how much of the gap that explains,
    wrapped at ``width`` columns."""
    s = comp.get("speed_check")
    if not s:
        return []
    text = (f"Machine speed: {speed_phrase(s['speed_ratio'])} than profile {s['profile']!r} assumes; "
            f"at this speed the plan predicts {s['predicted_at_speed_tok_s']:.1f} tokens/s.")
    gap, share = s.get("gap"), s.get("explained_by_speed")
    if gap is not None and share is not None and abs(gap - 1) >= 0.05:
        how = "none" if share <= 0 else "all" if share >= 1 else f"{100 * share:.0f}%"
        text += (f" Measured/predicted {gap:.2f}x, {s['gap_at_speed']:.2f}x at this speed: the machine's "
                 f"speed explains {how} of the gap (log scale); the rest is the cost model's error or noise.")
    return textwrap.wrap(text, width)
