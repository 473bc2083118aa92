"""The what-if report folder: ``write_report`` writes what ``seesaw whatif`` leaves behind.

``summary.json`` (the config and ``WhatIfResult.summary()``), ``options.csv`` (the options
table, best first), ``candidates_<option>.csv`` (each option's planner table), the PNG plots
(``PLOTS``), ``report.md`` and a self-contained ``report.html`` (the plots as base64 PNG data
URIs). Both open with the planner's answers (``headline``: the fastest option, the cheapest, and
with a deadline the cheapest that finishes in time) and end with a glossary of the layout strings,
knobs and metrics they use. ``result`` is a ``seesaw.app.whatif.WhatIfResult``, used through its
attributes and methods (``table()``, ``fastest()``, ``cheapest()``, ``within_deadline()``,
``summary()``, ``options``): the report layer does not import the use cases.

Throughput is total (prompt + output) tokens per second; cost is per million total tokens at the
GPU-hour price; GPU-hours = GPUs x makespan.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import pandas as pd

from seesaw.core import DEFAULT_MAX_NUM_BATCHED_TOKENS, DEFAULT_MAX_NUM_SEQS, SeesawPolicy
from seesaw.report.folders import write_run_folder
from seesaw.report.plots import plot_throughput_cost, plot_time_by_phase, plot_vs_vllm
from simulator.planner.explain import format_duration

__all__ = ["write_report", "headline", "GLOSSARY", "PLOTS"]

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
    if kind == "dur":
        return format_duration(v)
    if kind == "h":                             # GPU-hours: 3 significant digits below 100
        return f"{v:,.0f}" if v >= 100 else f"{v:.3g}"
    if kind == "pct":                           # an estimated sampling error (a fraction)
        return f"{100 * v:.2f}%"
    spec = {"tok": "{:,.0f}", "usd": "${:,.3f}", "h": "{:,.1f}", "x": "{:.2f}x", "int": "{:,.0f}"}
    return spec[kind].format(v) if kind in spec else str(v)


_OPTION_COLS = [("option", "option", ""), ("best plan", "best_plan", ""), ("makespan", "makespan_s", "dur"),
                ("tokens/s", "throughput_tok_s", "tok"), ("$/M tokens", "cost_per_mtok_usd", "usd"),
                ("GPU-hours", "gpu_hours", "h"), ("best static vLLM", "best_vllm", ""),
                ("vLLM tokens/s", "vllm_throughput_tok_s", "tok"), ("vLLM $/M tokens", "vllm_cost_per_mtok_usd", "usd"),
                ("speedup vs vLLM", "speedup_vs_best_vllm", "x"), ("sampling error", "estimated_error", "pct"),
                ("vLLM sampling error", "vllm_estimated_error", "pct")]
_OPTION_TEXT_COLS = (0, 1, 6, len(_OPTION_COLS))  # left-aligned in HTML (names, plans, deadline); others numbers


def _options_rows(df: pd.DataFrame) -> tuple[list[str], list[list[str]], list[tuple[str, str]]]:
    """The options table; with a deadline, a last column says whether each option finishes by it."""
    deadline = "meets_deadline" in df
    header = [c[0] for c in _OPTION_COLS] + (["in time"] if deadline else [])
    rows, bad = [], []
    for r in df.to_dict("records"):
        if r["feasible"]:
            rows.append([_fmt(r.get(k), f) for _, k, f in _OPTION_COLS]
                        + (["yes" if r["meets_deadline"] else "no"] if deadline else []))
        else:
            bad.append((r["option"], r["reason"]))
    return header, rows, bad


def _candidate_rows(res, top: int = 6) -> tuple[list[str], list[list[str]]]:
    """The best simulated variant of each of the ``top`` best layouts (knob variants of one layout
    are often identical on a sample; the CSV has them all)."""
    header = ["rank", "best variant of the layout", "tokens/s", "makespan", "$/M tokens", "vs best vLLM",
              "sampling error"]
    t = res.table
    best = t[t["source"].isin(("converged", "simulated"))].drop_duplicates("layout").head(top)
    rows = [[str(r["rank"]), r["candidate"], _fmt(r["throughput_tok_s"], "tok"),
             _fmt(r["makespan_s"], "dur"), _fmt(r["cost_per_mtok_usd"], "usd"),
             _fmt(r["speedup_vs_best_vllm"], "x"), _fmt(r.get("estimated_error"), "pct")]
            for r in best.to_dict("records")]
    return header, rows


def _option_text(r: dict) -> str:
    """``**4xl4** with **seesaw P4->T4**: 1,605 tokens/s, the whole workload in 12 min, $1.155 per
    million tokens, 1.07x the best static vLLM layout on the same node``."""
    cost = (f", {_fmt(r['cost_per_mtok_usd'], 'usd')} per million tokens" if pd.notna(r.get("cost_per_mtok_usd"))
            else ", no price")
    versus = ("a static vLLM layout is best on this node" if r["kind"] == "vllm" else
              f"{_fmt(r['speedup_vs_best_vllm'], 'x')} the best static vLLM layout on the same node")
    return (f"**{r['option']}** with **{r['best_plan']}**: {_fmt(r['throughput_tok_s'], 'tok')} tokens/s, the "
            f"whole workload in {_fmt(r['makespan_s'], 'dur')}{cost}, {_fmt(r['gpu_hours'], 'h')} GPU-hours; {versus}")


def headline(result) -> list[str]:
    """The planner's answers, one Markdown line each: the fastest option, the cheapest (by cost per
    million tokens), and with a deadline the cheapest option that finishes by it (or that none does)."""
    fastest, cheapest = result.fastest(), result.cheapest()
    if fastest is None:
        return ["No option can serve this model: see the infeasible options below."]
    if cheapest is not None and cheapest["option"] == fastest["option"]:
        lines = [f"Fastest and cheapest: {_option_text(fastest)}."]
    else:
        lines = [f"Fastest: {_option_text(fastest)}."]
        lines.append(f"Cheapest: {_option_text(cheapest)}." if cheapest is not None else
                     "Cheapest: no option has a price (give --price-per-gpu-hour).")
    if result.deadline_s is not None:
        deadline = format_duration(result.deadline_s)
        best = result.within_deadline()
        same = [what for what, r in (("the cheapest option", cheapest), ("the fastest option", fastest))
                if best is not None and r is not None and r["option"] == best["option"]]
        if best is not None:
            what = (f"**{best['option']}**, {same[0]} above: the whole workload in {_fmt(best['makespan_s'], 'dur')}"
                    if same else _option_text(best))
            lines.append(f"Best within the {deadline} deadline (the cheapest option that finishes in time): {what}.")
        else:
            lines.append(f"Deadline {deadline}: no option finishes in time; the fastest, {fastest['option']}, "
                         f"takes {_fmt(fastest['makespan_s'], 'dur')}.")
    return lines


def _glossary() -> list[tuple[str, str]]:
    seesaw_default = SeesawPolicy.model_fields
    return [
        ("D, T, P", "data parallel (whole-model replicas, each serving its share of the requests), tensor "
                    "parallel (every layer split over GPUs, two all-reduces per layer), pipeline parallel "
                    "(consecutive layers in stages); a degree of 1 is left out, the product is the GPU count"),
        ("T4P2", "4-way tensor parallel x 2 pipeline stages = 8 GPUs, one replica"),
        ("D2", "two replicas of the whole model, one GPU each"),
        ("P8->T4P2", "Seesaw: prefill under P8, then re-shard the weights and decode under T4P2, the KV cache "
                     "moving through a host-memory pool; back to P8 when the pool is empty"),
        ("vllm X / seesaw A->B", "the scheduling policy: vLLM-style continuous batching under one static "
                                 "layout X, or Seesaw's prefill layout A and decode layout B"),
        ("chunk=8192", "chunked prefill on, at most 8192 tokens per step (max_num_batched_tokens); when not "
                       f"shown, prompts are prefilled whole, up to {DEFAULT_MAX_NUM_BATCHED_TOKENS} tokens per step"),
        ("seqs=512", f"at most 512 sequences per step (max_num_seqs; {DEFAULT_MAX_NUM_SEQS} when not shown)"),
        ("pool=0.5x", "Seesaw host KV pool at 0.5x the default (80% of host memory less the weights)"),
        ("wm=0.5", "Seesaw switches to decode when the host pool is 50% full "
                   f"(host_full_watermark; {seesaw_default['host_full_watermark'].default:g} when not shown)"),
        ("dl=1", "Seesaw switches back to prefill once device KV use falls below 100%, i.e. as soon as the "
                 "host pool is empty (decode_low_watermark; "
                 f"{seesaw_default['decode_low_watermark'].default:g} when not shown)"),
        ("tokens/s", "prompt + output tokens per second over the whole workload (vllm bench throughput's "
                     "total tokens/s)"),
        ("makespan", "time to finish the whole workload (s, min or h as written)"),
        ("$/M tokens", "USD per million prompt + output tokens at the GPU-hour price"),
        ("GPU-hours", "GPUs x makespan in hours"),
        ("speedup vs vLLM", "the best plan's throughput over the best static vLLM layout's on the same node"),
        ("in time", "with --deadline: whether the option finishes the whole workload by the deadline"),
    ]


GLOSSARY = _glossary()


def _md_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _workload_line(result) -> str:
    s = result.workload_stats
    return (f"{result.num_requests:,} requests; prompt mean {s['input_len_mean']:,.0f} tokens (p99 "
            f"{s['input_len_p99']:,.0f} tokens), output mean {s['output_len_mean']:,.0f} tokens (p99 "
            f"{s['output_len_p99']:,.0f} tokens); {s['total_tokens']:,} tokens in all")


def _markdown(result, df: pd.DataFrame, plots: list[str]) -> str:
    header, rows, bad = _options_rows(df)
    out = [f"# What-if: {result.model.name} on {len(result.options)} hardware options", "",
           f"Workload: {result.workload or 'requests'}: {_workload_line(result)}.", ""]
    out += [f"- {line}" for line in headline(result)] + [""]
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
    out += ["## Glossary", ""] + [f"- `{term}`: {text}" for term, text in GLOSSARY] + [""]
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
        f"- Model profile `{result.model.name}`; seesaw {__version__}; options ranked by {result.objective} "
        "(`--objective`).",
    ]


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:24px auto;
padding:0 16px;color:#222;line-height:1.45}h1{font-size:1.6em}h2{font-size:1.25em;margin-top:1.6em;
border-bottom:1px solid #ddd;padding-bottom:4px}table{border-collapse:collapse;margin:8px 0 16px;font-size:.9em}
th,td{border:1px solid #ccc;padding:4px 7px;text-align:right}th{background:#f3f3f3}
.t{text-align:left}td{white-space:nowrap}.best li{margin:4px 0}.gloss td{white-space:normal;vertical-align:top}
.gloss td:first-child{white-space:nowrap}code{font-size:1.05em}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:6px 12px;margin:12px 0}
.best{background:#eef7ee;border-left:4px solid #55A868;padding:6px 12px 6px 32px}img{max-width:100%;display:block;margin:8px 0}
.muted{color:#666;font-size:.9em}"""


def _html_table(header, rows, text_cols=(1,)) -> str:
    """Numbers right-aligned, the ``text_cols`` (names, plans) left-aligned."""
    th = "".join(f"<th class='t'>{html.escape(h)}</th>" if i in text_cols else f"<th>{html.escape(h)}</th>"
                 for i, h in enumerate(header))

    def td(i: int, c: str) -> str:
        return f"<td class='t'>{html.escape(c)}</td>" if i in text_cols else f"<td>{html.escape(c)}</td>"

    body = "".join("<tr>" + "".join(td(i, c) for i, c in enumerate(r)) + "</tr>" for r in rows)
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
             "<ul class='best'>" + "".join(f"<li>{_bold(line)}</li>" for line in headline(result)) + "</ul>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in result.notes]
    parts += ["<h2>Options</h2>", _html_table(header, rows, _OPTION_TEXT_COLS) if rows else "<p>(none feasible)</p>"]
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
    parts += ["<h2>Glossary</h2><table class='gloss'><tbody>"] + [
        f"<tr><td class='t'><code>{html.escape(t)}</code></td><td class='t'>{html.escape(x)}</td></tr>"
        for t, x in GLOSSARY] + ["</tbody></table>"]
    parts += ["<h2>Assumptions</h2><ul>"] + [
        f"<li>{html.escape(a.removeprefix('- ')).replace('`', '')}</li>" for a in _assumptions(result)] + ["</ul>"]
    parts.append("</body></html>\n")
    return "\n".join(parts)
