"""What-if capacity planning: one model and workload over several hardware options -> a report.

``run_whatif`` plans every (GPU, count) option with ``simulator.planner.plan`` (an option where no
layout fits is kept with the reason); ``write_report`` writes the folder: ``report.md``, a
self-contained ``report.html`` (tables, plots as base64 PNG data URIs), ``options.csv``,
``summary.json``, ``candidates_<option>.csv`` and the PNG plots. ``write_plan_folder`` writes what
``seesaw plan`` leaves behind (``plan.json``, ``candidates.csv``).

Throughput is total (prompt + output) tokens per second; cost is per million total tokens at the
GPU-hour price (catalog list price unless overridden); GPU-hours = GPUs x makespan.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pandas as pd

from seesaw.core import ModelSpec, NodeSpec, SpecError

__all__ = ["WhatIfOption", "WhatIfResult", "run_whatif", "write_report", "write_plan_folder",
           "parse_prices", "PLOTS"]

PLOTS = ("throughput_cost.png", "seesaw_vs_vllm.png", "time_by_phase.png")
_PHASES = ("prefill", "decode", "mixed", "reshard", "swap_stall", "idle")
_PHASE_COLORS = {"prefill": "#4C72B0", "decode": "#DD8452", "mixed": "#55A868", "reshard": "#C44E52",
                 "swap_stall": "#8172B3", "idle": "#BBBBBB"}
_PHASE_LABELS = {"prefill": "prefill", "decode": "decode", "mixed": "prefill + decode in flight",
                 "reshard": "re-shard", "swap_stall": "swap stall", "idle": "idle"}
_KIND_COLORS = {"seesaw": "#55A868", "vllm": "#4C72B0"}


@dataclass
class WhatIfOption:
    gpu: str
    num_gpus: int
    node: NodeSpec | None
    result: object | None = None        # simulator.planner.PlanResult
    reason: str | None = None           # why the option is infeasible
    price_per_gpu_hour: float | None = None

    @property
    def name(self) -> str:
        return self.node.name if self.node is not None else f"{self.num_gpus}x{self.gpu}"

    @property
    def feasible(self) -> bool:
        return self.reason is None and self.result is not None and self.result.winner is not None


@dataclass
class WhatIfResult:
    model: ModelSpec
    workload: str
    workload_stats: dict
    num_requests: int
    objective: str
    options: list[WhatIfOption]
    wall_s: float = 0.0
    notes: list[str] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per option, feasible ones ranked by the objective, infeasible ones last."""
        rows = []
        for o in self.options:
            row = {"option": o.name, "gpu": o.gpu, "num_gpus": o.num_gpus, "feasible": o.feasible,
                   "price_per_gpu_hour_usd": o.price_per_gpu_hour}
            if o.feasible:
                w, v = o.result.winner, o.result.best_vllm or {}
                row.update(
                    best_plan=w["candidate"], kind=w["kind"], layout=w["layout"],
                    makespan_s=w["makespan_s"], makespan_h=w["makespan_s"] / 3600,
                    throughput_tok_s=w["throughput_tok_s"], cost_per_mtok_usd=w["cost_per_mtok_usd"],
                    gpu_hours=w["gpu_hours"], best_vllm=v.get("candidate"),
                    vllm_throughput_tok_s=v.get("throughput_tok_s"), vllm_makespan_s=v.get("makespan_s"),
                    vllm_cost_per_mtok_usd=v.get("cost_per_mtok_usd"),
                    speedup_vs_best_vllm=w.get("speedup_vs_best_vllm"),
                    num_simulated=o.result.num_simulated, num_estimated=o.result.num_estimated,
                    extrapolated_from=o.result.extrapolated_from, reason="")
            else:
                row["reason"] = o.reason or "no candidate could be simulated"
            rows.append(row)
        df = pd.DataFrame(rows)
        if "throughput_tok_s" not in df:
            return df
        cost_first = self.objective == "cost" and df["cost_per_mtok_usd"].notna().any()
        keys = ["cost_per_mtok_usd", "throughput_tok_s"] if cost_first else ["throughput_tok_s", "cost_per_mtok_usd"]
        asc = [True, False] if cost_first else [False, True]
        return df.sort_values(["feasible"] + keys, ascending=[False] + asc, kind="stable").reset_index(drop=True)

    def best(self) -> dict | None:
        df = self.table()
        return df.iloc[0].to_dict() if len(df) and df.iloc[0]["feasible"] else None

    def summary(self) -> dict:
        df = self.table()
        return {
            "model": self.model.name, "workload": self.workload, "num_requests": self.num_requests,
            "objective": self.objective, "best": _clean(self.best()),
            "options": [_clean(r) for r in df.to_dict("records")],
            "plans": {o.name: o.result.summary() for o in self.options if o.feasible},
            "workload_stats": self.workload_stats, "notes": self.notes, "wall_s": round(self.wall_s, 2),
        }


def _clean(d):
    if d is None:
        return None
    out = {}
    for k, v in d.items():
        if hasattr(v, "item"):
            v = v.item()
        out[k] = None if isinstance(v, float) and math.isnan(v) else v
    return out


def parse_prices(text: str | None, gpus: list[str]) -> dict[str, float]:
    """``"1.5"`` (every GPU) or ``"l4=1.2,a10=1.8"`` -> {gpu: USD per GPU-hour}."""
    if not text:
        return {}
    text = text.strip()
    try:
        if "=" not in text:
            value = float(text)
            prices = {g.lower(): value for g in gpus}
        else:
            prices = {}
            for part in text.split(","):
                name, _, value = part.partition("=")
                prices[name.strip().lower()] = float(value)
    except ValueError:
        raise SpecError(f"invalid price {text!r}: expected a number or gpu=price pairs such as l4=1.2,a10=1.8") from None
    for g, v in prices.items():
        if not v > 0:
            raise SpecError(f"invalid price for {g}: {v} (must be > 0)")
    return prices


def run_whatif(
    model: ModelSpec,
    gpus: list[str],
    counts: list[int],
    requests: list,
    *,
    workload_name: str = "",
    interconnect: str | None = None,
    objective: str = "throughput",
    prices: dict[str, float] | None = None,
    sample_size: int | None = 2000,
    space=None,
    screen: dict[str, int] | None = None,
    refine: dict[str, int] | None = None,
    seed: int = 0,
    workers: int = 2,
    progress: Callable[[str, int, int, str], None] | None = None,
) -> WhatIfResult:
    """Plan ``model`` on every ``gpu`` x ``count`` node (``simulator.planner.plan`` with ``space``,
    ``screen``, ``refine``, ``sample_size``). progress(option, done, total, what)."""
    import time

    from seesaw import catalog as cat
    from seesaw.workload import describe
    from simulator.planner import SearchSpace, plan

    t0 = time.perf_counter()
    prices = prices or {}
    options = []
    for gpu in dict.fromkeys(g.lower() for g in gpus):
        for n in dict.fromkeys(counts):
            node = cat.make_node(gpu, n, interconnect)
            price = prices.get(gpu.lower(), node.gpu.price_per_hour_usd)
            opt = WhatIfOption(gpu, n, node, price_per_gpu_hour=price)
            tick = None if progress is None else (lambda d, t, w, _o=opt.name: progress(_o, d, t, w))
            res = plan(model, node, requests, objective=objective, price_per_gpu_hour=price,
                       space=space or SearchSpace(), screen=screen, refine=refine,
                       sample_size=sample_size, seed=seed, workers=workers,
                       workload_name=workload_name, progress=tick)
            if res.plan is None:
                opt.reason = _infeasible_reason(model, node, res.rejected)
            opt.result = res
            options.append(opt)
    stats = describe(requests)
    out = WhatIfResult(model, workload_name, stats, len(requests), objective, options,
                       wall_s=time.perf_counter() - t0)
    sampled = [o.result.extrapolated_from for o in options if o.feasible and o.result.extrapolated_from]
    if sampled:
        out.notes.append(
            f"Large request counts are extrapolated: each option was simulated on a seeded sample of "
            f"{sampled[0]:,} of the {len(requests):,} requests and its makespan scaled by the ratio of "
            f"total tokens, so throughput is the sample's throughput, its start-up and final drain included "
            f"(which makes a long run look slightly slower than it is).")
    if objective == "cost" and any(o.price_per_gpu_hour is None for o in options):
        out.notes.append("Some GPUs have no price: their cost columns are empty.")
    return out


def _infeasible_reason(model: ModelSpec, node: NodeSpec, rejected: list[tuple[str, str]]) -> str:
    """One line: why nothing runs; the single-replica layout with the most tensor parallelism (the
    least memory per GPU) says it best."""
    from seesaw.core import parse_parallel

    single = [(parse_parallel(w), r) for w, r in rejected if w.startswith("D1T")]
    if single:
        layout, reason = max(single, key=lambda x: (x[0].tp, -x[0].pp))
        return f"{model.name} does not fit {node.name}: {layout}: {reason}"
    if rejected:
        return f"{model.name} on {node.name}: {rejected[0][0]}: {rejected[0][1]}"
    return f"{model.name} on {node.name}: no candidate could be simulated"


# --------------------------------------------------------------------------------------------
# Writing


def write_plan_folder(out_dir: Path, result, config: dict) -> list[Path]:
    """``plan.json`` (the Plan), ``candidates.csv`` (the ranked table), ``summary.json``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    if result.plan is not None:
        paths.append(out_dir / "plan.json")
        paths[-1].write_text(result.plan.model_dump_json(indent=2) + "\n")
    paths.append(out_dir / "candidates.csv")
    result.table.to_csv(paths[-1], index=False)
    paths.append(out_dir / "summary.json")
    paths[-1].write_text(json.dumps({"config": config, **result.summary()}, indent=2, default=str) + "\n")
    return paths


def write_report(result: WhatIfResult, out_dir: Path, config: dict | None = None) -> list[Path]:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    df = result.table()
    df.to_csv(out_dir / "options.csv", index=False)
    summary = {"config": config or {}, **result.summary()}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    for o in result.options:
        if o.result is not None and len(o.result.table):
            o.result.table.to_csv(out_dir / f"candidates_{o.name}.csv", index=False)
    plots = _plots(result, df, out_dir)
    (out_dir / "report.md").write_text(_markdown(result, df, plots))
    (out_dir / "report.html").write_text(_html(result, df, plots, out_dir))
    return [out_dir / p for p in ("report.md", "report.html", "options.csv", "summary.json", *plots)]


def _ranked(result: WhatIfResult, df: pd.DataFrame) -> list[WhatIfOption]:
    """Feasible options in the order of the options table (best first)."""
    by_name = {o.name: o for o in result.options if o.feasible}
    return [by_name[n] for n in df["option"] if n in by_name] if len(df) else []


def _plots(result: WhatIfResult, df: pd.DataFrame, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = df[df["feasible"]] if len(df) else df
    names = list(ok["option"]) if len(ok) else []
    written = []

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
        ax.tick_params(axis="x", labelrotation=20)
        ax.set_ylim(0, ax.get_ylim()[1] * 1.3)         # headroom for the labels and the legend
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[0], dpi=100)
    plt.close(fig)
    written.append(PLOTS[0])

    fig, ax = plt.subplots(figsize=(11, 3.8))
    x = range(len(names))
    if names:
        ax.bar([i - 0.2 for i in x], ok["vllm_throughput_tok_s"].fillna(0), 0.4, label="best static vLLM", color="#4C72B0")
        ax.bar([i + 0.2 for i in x], ok["throughput_tok_s"], 0.4, label="best plan", color="#55A868")
        for i, (s, v) in enumerate(zip(ok["speedup_vs_best_vllm"], ok["throughput_tok_s"])):
            if pd.notna(s):
                ax.annotate(f"{s:.2f}x", (i + 0.2, v), ha="center", va="bottom", fontsize=8)
        ax.legend(fontsize=8, loc="upper right")
    ax.set_xticks(list(x), names, rotation=20)
    ax.set_ylabel("total tokens/s")
    ax.set_title("best plan vs best static vLLM layout, per option")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.3)
    fig.tight_layout()
    fig.savefig(out_dir / PLOTS[1], dpi=100)
    plt.close(fig)
    written.append(PLOTS[1])

    bars = []
    for o in _ranked(result, df):
        bars.append((f"{o.name}\n{o.result.winner['candidate']}", o.result.winner["time_by_phase_s"]))
        if o.result.best_vllm and o.result.best_vllm["candidate"] != o.result.winner["candidate"]:
            bars.append((f"{o.name}\n{o.result.best_vllm['candidate']}", o.result.best_vllm["time_by_phase_s"]))
    fig, ax = plt.subplots(figsize=(10, max(2.5, 0.55 * len(bars) + 1.2)))
    left = [0.0] * len(bars)
    for ph in _PHASES:
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
    fig.savefig(out_dir / PLOTS[2], dpi=100)
    plt.close(fig)
    written.append(PLOTS[2])
    return written


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


def _headline(result: WhatIfResult) -> str:
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


def _workload_line(result: WhatIfResult) -> str:
    s = result.workload_stats
    return (f"{result.num_requests:,} requests; prompt mean {s['input_len_mean']:.0f} tokens (p99 "
            f"{s['input_len_p99']:.0f}), output mean {s['output_len_mean']:.0f} (p99 {s['output_len_p99']:.0f}); "
            f"{s['total_tokens']:,} tokens in all")


def _markdown(result: WhatIfResult, df: pd.DataFrame, plots: list[str]) -> str:
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


def _assumptions(result: WhatIfResult) -> list[str]:
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


def _html(result: WhatIfResult, df: pd.DataFrame, plots: list[str], out_dir: Path) -> str:
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
