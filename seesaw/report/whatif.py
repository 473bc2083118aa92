"""The what-if report folder: ``write_report`` writes what ``seesaw whatif`` leaves behind.

``summary.json`` (the config and ``WhatIfResult.summary()``), ``options.csv`` (the options
table, best first), ``candidates_<option>.csv`` (each option's planner table), the PNG plots
(``PLOTS``), ``report.md`` and a self-contained ``report.html`` (the plots as base64 PNG data
URIs). ``result`` is a ``seesaw.app.whatif.WhatIfResult``, used through its attributes and
methods (``table()``, ``best()``, ``summary()``, ``options``): the report layer does not import
the use cases.

Throughput is total (prompt + output) tokens per second; cost is per million total tokens at the
GPU-hour price; GPU-hours = GPUs x makespan.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from seesaw.report.folders import write_run_folder
from seesaw.report.plots import plot_throughput_cost, plot_time_by_phase, plot_vs_vllm

__all__ = ["write_report", "PLOTS"]

PLOTS = ("throughput_cost.png", "seesaw_vs_vllm.png", "time_by_phase.png")


def write_report(result, out_dir: Path, config: dict | None = None) -> list[Path]:
    """The report folder (with ``config.yaml``, as every command's folder); the paths of
    ``report.md``, ``report.html``, ``options.csv``, ``summary.json`` and the plots, in that order."""
    out_dir = Path(out_dir)
    df = result.table()
    files = {"options.csv": df}
    for o in result.options:
        if o.result is not None and len(o.result.table):
            files[f"candidates_{o.name}.csv"] = o.result.table
    bars = _phase_bars(result, df)
    files[PLOTS[0]] = lambda path: plot_throughput_cost(df, path)
    files[PLOTS[1]] = lambda path: plot_vs_vllm(df, path)
    files[PLOTS[2]] = lambda path: plot_time_by_phase(bars, path)
    plots = list(PLOTS)
    files["report.md"] = _markdown(result, df, plots)
    files["report.html"] = lambda path: path.write_text(_html(result, df, plots, out_dir))  # reads the plots
    write_run_folder(out_dir, {"config": config or {}, **result.summary()}, config=config or {}, files=files)
    return [out_dir / p for p in ("report.md", "report.html", "options.csv", "summary.json", *plots)]


def _ranked(result, df: pd.DataFrame) -> list:
    """Feasible options in the order of the options table (best first)."""
    by_name = {o.name: o for o in result.options if o.feasible}
    return [by_name[n] for n in df["option"] if n in by_name] if len(df) else []


def _phase_bars(result, df: pd.DataFrame) -> list[tuple[str, dict]]:
    """(label, time by phase) of each ranked option's best plan and, when another, its best
    static vLLM layout."""
    bars = []
    for o in _ranked(result, df):
        bars.append((f"{o.name}\n{o.result.winner['candidate']}", o.result.winner["time_by_phase_s"]))
        if o.result.best_vllm and o.result.best_vllm["candidate"] != o.result.winner["candidate"]:
            bars.append((f"{o.name}\n{o.result.best_vllm['candidate']}", o.result.best_vllm["time_by_phase_s"]))
    return bars


# --------------------------------------------------------------------------------------------
# Markdown and HTML


def _fmt(v, kind: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    spec = {"tok": "{:,.0f}", "usd": "${:,.3f}", "h": "{:,.1f}", "x": "{:.2f}x", "int": "{:,.0f}"}
    return spec[kind].format(v) if kind in spec else str(v)


_OPTION_COLS = [("option", "option", ""), ("best plan", "best_plan", ""), ("makespan (h)", "makespan_h", "h"),
                ("tokens/s", "throughput_tok_s", "tok"), ("$ per M tokens", "cost_per_mtok_usd", "usd"),
                ("GPU-hours", "gpu_hours", "h"), ("best static vLLM", "best_vllm", ""),
                ("vLLM tokens/s", "vllm_throughput_tok_s", "tok"), ("vLLM $ per M tokens", "vllm_cost_per_mtok_usd", "usd"),
                ("speedup", "speedup_vs_best_vllm", "x")]


def _options_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[tuple[str, str]]]:
    header = [c[0] for c in _OPTION_COLS]
    rows, bad = [], []
    for r in df.to_dict("records"):
        if r["feasible"]:
            rows.append([_fmt(r.get(k), f) for _, k, f in _OPTION_COLS])
        else:
            bad.append((r["option"], r["reason"]))
    return header, rows, bad


def _candidate_rows(res, top: int = 6) -> tuple[list[str], list[list[str]]]:
    """The best simulated variant of each of the ``top`` best layouts (knob variants of one layout
    are often identical on a sample; the CSV has them all)."""
    header = ["rank", "best variant of the layout", "tokens/s", "makespan (h)", "$ per M tokens", "vs best vLLM"]
    t = res.table
    best = t[t["source"] == "simulated"].drop_duplicates("layout").head(top)
    rows = [[str(r["rank"]), r["candidate"], _fmt(r["throughput_tok_s"], "tok"),
             _fmt(r["makespan_s"] / 3600, "h"), _fmt(r["cost_per_mtok_usd"], "usd"),
             _fmt(r["speedup_vs_best_vllm"], "x")] for r in best.to_dict("records")]
    return header, rows


def _headline(result) -> str:
    best = result.best()
    if best is None:
        return "No option can serve this model: see the infeasible options below."
    what = "lowest cost per million tokens" if result.objective == "cost" else "highest throughput"
    cost = f", {_fmt(best['cost_per_mtok_usd'], 'usd')} per million tokens" if pd.notna(best.get("cost_per_mtok_usd")) else ""
    versus = ("a static vLLM layout wins on this node" if best["kind"] == "vllm" else
              f"{_fmt(best['speedup_vs_best_vllm'], 'x')} the best static vLLM layout on the same node")
    return (f"Best option ({what}): **{best['option']}** with **{best['best_plan']}**: "
            f"{_fmt(best['throughput_tok_s'], 'tok')} tokens/s, {_fmt(best['makespan_h'], 'h')} h for the whole "
            f"workload{cost}; {versus}.")


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _workload_line(result) -> str:
    s = result.workload_stats
    return (f"{result.num_requests:,} requests; prompt mean {s['input_len_mean']:.0f} tokens (p99 "
            f"{s['input_len_p99']:.0f}), output mean {s['output_len_mean']:.0f} (p99 {s['output_len_p99']:.0f}); "
            f"{s['total_tokens']:,} tokens in all")


def _markdown(result, df: pd.DataFrame, plots: list[str]) -> str:
    header, rows, bad = _options_rows(df)
    out = [f"# What-if: {result.model.name} on {len(result.options)} hardware options", "",
           f"Workload: {result.workload or 'requests'}: {_workload_line(result)}.", "",
           _headline(result), ""]
    out += [f"> {n}" for n in result.notes] + [""]
    out += ["## Options", "", _md_table(header, rows) if rows else "(none feasible)", ""]
    if bad:
        out += ["## Infeasible options", ""] + [f"- **{n}**: {r}" for n, r in bad] + [""]
    out += ["## Plots", ""] + [line for p in plots for line in (f"![{p}]({p})", "")]
    for o in _ranked(result, df):
        out += [f"## {o.name}", "", o.result.plan.explanation, ""]
        out += [_md_table(*_candidate_rows(o.result)), ""]
        out += [f"{o.result.num_simulated} simulations, {o.result.num_estimated} candidates estimated only; "
                f"{len(o.result.rejected)} layouts or candidates rejected; full table in "
                f"`candidates_{o.name}.csv`.", ""]
    out += ["## Assumptions", "", *_assumptions(result), ""]
    return "\n".join(out)


def _assumptions(result) -> list[str]:
    from seesaw.core import VERSION as __version__

    by_gpu = {o.gpu: o.price_per_gpu_hour for o in result.options if o.price_per_gpu_hour}
    prices = ", ".join(f"{g} ${v:g}/GPU-hour" for g, v in by_gpu.items()) or "none"
    return [
        "- Predictions come from the Seesaw simulator (roofline x efficiency cost model, datasheet profiles); "
        "calibrate with `seesaw calibrate` before trusting absolute numbers.",
        "- Throughput counts prompt + output tokens per second (`vllm bench throughput`'s total tokens/s).",
        f"- Prices: {prices} (catalog list prices unless overridden).",
        f"- Model profile `{result.model.name}`; seesaw {__version__}; objective: {result.objective}.",
    ]


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;
border-bottom:1px solid #ddd;padding-bottom:4px}table{border-collapse:collapse;margin:8px 0 16px;font-size:.9em}
th,td{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f3f3f3}
td.t,th:first-child,th:nth-child(2){text-align:left}td:first-child{white-space:nowrap}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;margin:12px 0}
.best{background:#eef7ee;border-left:4px solid #55A868;padding:6px 12px}img{max-width:100%;display:block;margin:8px 0}
.muted{color:#666;font-size:.9em}"""


def _html_table(header, rows) -> str:
    th = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    def td(c: str) -> str:                      # numbers right-aligned, text left
        numeric = c[:1].isdigit() or c[:1] in "$-"
        return f"<td>{html.escape(c)}</td>" if numeric else f"<td class='t'>{html.escape(c)}</td>"

    body = "".join("<tr>" + "".join(td(c) for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def _bold(text: str) -> str:
    parts = html.escape(text).split("**")
    return "".join(f"<b>{p}</b>" if i % 2 else p for i, p in enumerate(parts))


def _html(result, df: pd.DataFrame, plots: list[str], out_dir: Path) -> str:
    header, rows, bad = _options_rows(df)
    title = f"What-if: {result.model.name} on {len(result.options)} hardware options"
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
             f"<style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             f"<p>Workload: {html.escape(result.workload or 'requests')}: {html.escape(_workload_line(result))}.</p>",
             f"<p class='best'>{_bold(_headline(result))}</p>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in result.notes]
    parts += ["<h2>Options</h2>", _html_table(header, rows) if rows else "<p>(none feasible)</p>"]
    if bad:
        parts += ["<h2>Infeasible options</h2><ul>"] + [
            f"<li><b>{html.escape(n)}</b>: {html.escape(r)}</li>" for n, r in bad] + ["</ul>"]
    parts.append("<h2>Plots</h2>")
    for p in plots:
        data = base64.b64encode((out_dir / p).read_bytes()).decode("ascii")
        parts.append(f"<img alt='{html.escape(p)}' src='data:image/png;base64,{data}'>")
    for o in _ranked(result, df):
        parts += [f"<h2>{html.escape(o.name)}</h2>", f"<p>{html.escape(o.result.plan.explanation)}</p>",
                  _html_table(*_candidate_rows(o.result)),
                  f"<p class='muted'>{o.result.num_simulated} simulations, {o.result.num_estimated} candidates "
                  f"estimated only; {len(o.result.rejected)} layouts or candidates rejected; full table in "
                  f"candidates_{html.escape(o.name)}.csv.</p>"]
    parts += ["<h2>Assumptions</h2><ul>"] + [
        f"<li>{html.escape(a.removeprefix('- ')).replace('`', '')}</li>" for a in _assumptions(result)] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
