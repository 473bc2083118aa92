"""What-if capacity planning: one model and workload over several hardware options.

``run_whatif`` plans every (GPU, count) option with ``simulator.planner.plan`` (an option where no
layout fits is kept with the reason) and returns a ``WhatIfResult``: the options ranked by the
objective (``table()``), the best one, the planner's answers (``fastest()``, ``cheapest()``, and with a
deadline ``within_deadline()``: the cheapest option that finishes in time), and a JSON-ready
``summary()``. Nothing is printed or
written here: ``seesaw.report.whatif.write_report`` writes the report folder. ``whatif`` is the use
case with the CLI's option names (resolve, validate, run, optionally write the report).

Throughput is total (prompt + output) tokens per second; cost is per million total tokens at the
GPU-hour price (catalog list price unless overridden); GPU-hours = GPUs x makespan.
"""

from __future__ import annotations

import math
import re
import threading
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Callable

import pandas as pd

from seesaw.core import (
    WHATIF_GPUS, WHATIF_MODEL, WHATIF_NUM_GPUS, ModelSpec, NodeSpec, Precision, SpecError, UnsupportedPrecision,
)

__all__ = ["OPTION_DONE", "WhatIfOption", "WhatIfResult", "WhatIf", "run_whatif", "whatif", "parse_prices",
           "parse_duration"]

OPTION_DONE = "done"   # ``progress(option, n, n, OPTION_DONE)``: that option's plan has ended

_DURATION_UNITS_S = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "d": 86400}


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
    deadline_s: float | None = None     # ``within_deadline``: the workload must finish by then

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
                    dtype=o.result.plan.provenance.get("precision") if o.result.plan else None,
                    makespan_s=w["makespan_s"], makespan_h=w["makespan_s"] / 3600,
                    throughput_tok_s=w["throughput_tok_s"], cost_per_mtok_usd=w["cost_per_mtok_usd"],
                    gpu_hours=w["gpu_hours"], best_vllm=v.get("candidate"),
                    vllm_throughput_tok_s=v.get("throughput_tok_s"), vllm_makespan_s=v.get("makespan_s"),
                    vllm_cost_per_mtok_usd=v.get("cost_per_mtok_usd"),
                    speedup_vs_best_vllm=w.get("speedup_vs_best_vllm"),
                    num_simulated=o.result.num_simulated, num_estimated=o.result.num_estimated,
                    extrapolated_from=o.result.extrapolated_from, sample_size=w.get("sample_size"),
                    estimated_error=w.get("estimated_error"), vllm_sample_size=v.get("sample_size"),
                    vllm_estimated_error=v.get("estimated_error"), reason="")
            else:
                row["reason"] = o.reason or "no candidate could be simulated"
            rows.append(row)
        df = pd.DataFrame(rows)
        if "throughput_tok_s" not in df:
            return df
        if self.deadline_s is not None:
            df["meets_deadline"] = df["makespan_s"].le(self.deadline_s) & df["feasible"]
        cost_first = self.objective == "cost" and df["cost_per_mtok_usd"].notna().any()
        keys = ["cost_per_mtok_usd", "throughput_tok_s"] if cost_first else ["throughput_tok_s", "cost_per_mtok_usd"]
        asc = [True, False] if cost_first else [False, True]
        return df.sort_values(["feasible"] + keys, ascending=[False] + asc, kind="stable").reset_index(drop=True)

    def best(self) -> dict | None:
        df = self.table()
        return df.iloc[0].to_dict() if len(df) and df.iloc[0]["feasible"] else None

    def _feasible(self) -> pd.DataFrame:
        df = self.table()
        return df[df["feasible"]] if len(df) and "throughput_tok_s" in df else df.iloc[0:0]

    def fastest(self) -> dict | None:
        """The feasible option that finishes the workload first (highest throughput); the cheaper on a tie."""
        df = self._feasible()
        return df.sort_values(["makespan_s", "cost_per_mtok_usd"], kind="stable").iloc[0].to_dict() if len(df) else None

    def cheapest(self) -> dict | None:
        """The feasible option with the lowest cost per million tokens (priced options only); the
        faster on a tie."""
        df = self._feasible()
        df = df[df["cost_per_mtok_usd"].notna()] if len(df) else df
        return df.sort_values(["cost_per_mtok_usd", "makespan_s"], kind="stable").iloc[0].to_dict() if len(df) else None

    def within_deadline(self) -> dict | None:
        """With ``deadline_s``: the cheapest feasible option whose makespan is at most the deadline
        (unpriced options after priced ones, fewer GPU-hours first); None when none finishes in time."""
        df = self._feasible()
        if self.deadline_s is None or not len(df):
            return None
        df = df[df["makespan_s"] <= self.deadline_s].assign(_unpriced=lambda d: d["cost_per_mtok_usd"].isna())
        keys = ["_unpriced", "cost_per_mtok_usd", "gpu_hours", "makespan_s"]
        return df.sort_values(keys, kind="stable").drop(columns="_unpriced").iloc[0].to_dict() if len(df) else None

    def summary(self) -> dict:
        df = self.table()
        return {
            "model": self.model.name, "workload": self.workload, "num_requests": self.num_requests,
            "objective": self.objective, "best": _clean(self.best()),
            "fastest": _clean(self.fastest()), "cheapest": _clean(self.cheapest()), "deadline_s": self.deadline_s,
            "best_within_deadline": _clean(self.within_deadline()),
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


def parse_duration(text: str | float | int) -> float:
    """A duration in seconds from ``"24h"``, ``"90m"``, ``"1h30m"``, ``"2d"``, ``"3600"`` or ``"3600s"``
    (units s, m/min, h, d; a bare number is seconds)."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = str(text).strip().lower().replace(" ", "")
        parts = re.fullmatch(r"(?:\d+(?:\.\d*)?(?:sec|min|hr|s|m|h|d))+|\d+(?:\.\d*)?", t) and \
            re.findall(r"(\d+(?:\.\d*)?)(sec|min|hr|s|m|h|d)?", t)
        if not parts:
            raise SpecError(f"--deadline {text!r}: expected a duration such as 24h, 90m, 1h30m or 3600 (seconds)")
        value = sum(float(n) * _DURATION_UNITS_S[u or "s"] for n, u in parts)
    if not value > 0 or math.isinf(value):
        raise SpecError(f"--deadline {text!r}: must be a positive duration")
    return value


def run_whatif(
    model: ModelSpec,
    gpus: list[str],
    counts: list[int],
    requests: list,
    *,
    workload_name: str = "",
    interconnect: str | None = None,
    node_counts: list[int] | None = None,
    objective: str = "throughput",
    prices: dict[str, float] | None = None,
    sample_size: int | None = 2000,
    space=None,
    screen: dict[str, int] | None = None,
    refine: dict[str, int] | None = None,
    seed: int = 0,
    workers: int | None = None,
    progress: Callable[[str, int, int, str], None] | None = None,
    deadline_s: float | None = None,
    dtype: str | None = None,
    kv_cache_dtype: str | None = None,
    executor=None,
) -> WhatIfResult:
    """Plan ``model`` on every ``gpu`` x ``count`` (x ``node_counts``: clusters of that many nodes;
    None: as the entry says, ``2x8xl4`` is 2 nodes) node (``simulator.planner.plan`` with ``space``,
    ``screen``, ``refine``, ``sample_size``), the options side by side (``seesaw.app.executors``:
    one pool for all, one thread per option). progress(option, done, total, what), one call at a
    time, from any thread; ``what`` is ``OPTION_DONE`` when that option has ended. ``deadline_s``:
    the result also names the cheapest option that finishes within it. ``dtype``/``kv_cache_dtype``:
    the precision (``seesaw.app.simulate.search_precisions``); an option whose GPU cannot run it is
    infeasible, with the reason. Simulations run on ``executor`` (any
    ``concurrent.futures.Executor``) or else in ``workers`` local processes (None: one per core)."""
    import time

    from seesaw.app.executors import run_side_by_side, shared_executor
    from seesaw.app.simulate import resolve_node, search_precisions
    from seesaw.workload import describe
    from simulator.extrapolate import sample_workload
    from simulator.planner import SearchSpace

    t0 = time.perf_counter()
    prices = prices or {}
    options = []
    for gpu in dict.fromkeys(g if Path(g).suffix in (".yaml", ".yml") else g.lower() for g in gpus):
        for n, k in ((n, k) for n in dict.fromkeys(counts) for k in dict.fromkeys(node_counts or [None])):
            node = resolve_node(gpu, n, interconnect, k)
            price = prices.get(gpu.lower(), prices.get(node.gpu.name, node.gpu.price_per_hour_usd))
            options.append(WhatIfOption(gpu, node.total_gpus, node, price_per_gpu_hour=price))
    lock = threading.Lock()     # the options are planned side by side: one progress call at a time

    def tick(option: str, done: int, total: int, what: str) -> None:
        with lock:
            progress(option, done, total, what)

    def plan_option(opt: WhatIfOption, ex) -> None:
        try:
            res, _ = search_precisions(model, opt.node, requests, None, dtype, kv_cache_dtype, objective=objective,
                                       price_per_gpu_hour=opt.price_per_gpu_hour, space=space or SearchSpace(),
                                       screen=screen, refine=refine, sample_size=sample_size, seed=seed,
                                       workers=workers, executor=ex, workload_name=workload_name,
                                       progress=None if progress is None else partial(tick, opt.name))
        except UnsupportedPrecision as e:  # a precision this GPU cannot run: an infeasible option
            opt.reason = str(e)
        else:
            if res.plan is None:
                opt.reason = _infeasible_reason(model, opt.node, res.rejected)
            opt.result = res
        if progress is not None:
            n = 0 if opt.result is None else opt.result.num_simulated
            tick(opt.name, n, n, OPTION_DONE)

    with shared_executor(executor, workers, len(options)) as (ex, side_by_side, stop):
        run_side_by_side(partial(plan_option, ex=ex), options, side_by_side, on_failure=stop)
    stats = describe(requests)
    sampled = sample_workload(requests, sample_size, seed)  # what each option's plan simulated
    out = WhatIfResult(model, workload_name, stats, sampled.num_requests, objective, options,
                       wall_s=time.perf_counter() - t0, deadline_s=deadline_s)
    if any(o.feasible and o.result.extrapolated_from for o in options):
        out.notes.append(_sampling_note(options, sampled))
    if objective == "cost" and any(o.price_per_gpu_hour is None for o in options):
        out.notes.append("Some GPUs have no price: their cost columns are empty.")
    return out


def _sampling_note(options: list[WhatIfOption], sampled) -> str:
    """How the options' figures were sampled: screened on ``sampled``, each option's best plans of
    each kind converged beyond it (``simulator.planner.converge``), the largest stated error and
    the plans whose estimate did not converge."""
    from simulator.planner.converge import TOL

    plans = [(o.name, p) for o in options if o.feasible for p in (o.result.winner, o.result.best_vllm) if p]
    errors = [p["estimated_error"] for _, p in plans if p.get("estimated_error") is not None]
    largest = max((p["sample_size"] for _, p in plans if p.get("sample_size")), default=len(sampled.requests))
    text = (f"Each option's candidates were screened on a seeded sample of {len(sampled.requests):,} of "
            f"{sampled.num_requests:,} requests; the best of each kind were then simulated on nested samples "
            f"doubling from it (up to {largest:,}) until their whole-workload throughput estimates (the marginal rate "
            f"between the last two samples) agreed within {100 * TOL:g}%, and ranked on them.")
    if errors:
        text += f" Estimated sampling error: up to {100 * max(errors):.2f}% (columns estimated_error, vllm_estimated_error)."
    loose = [f"{name} {p['candidate']} ({100 * p['estimated_error']:.2f}%)" for name, p in plans
             if (p.get("estimated_error") or 0) > TOL]
    if loose:
        text += f" Not within {100 * TOL:g}% at the largest sample: " + ", ".join(dict.fromkeys(loose)) + "."
    return text


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


@dataclass
class WhatIf:
    """A what-if study: its result, the resolved config and the report files written (if any)."""

    result: WhatIfResult
    config: dict
    model: ModelSpec
    num_requests: int
    paths: list = field(default_factory=list)


def _counts(value, option: str) -> list[int]:
    """Positive counts from a comma-separated string or a list (``--num-gpus``, ``--num-nodes``)."""
    try:
        counts = [int(x) for x in _split(value, option)]
    except ValueError:
        raise SpecError(f"{option}: expected comma-separated integers, got {value!r}") from None
    if any(c < 1 for c in counts):
        raise SpecError(f"{option}: counts must be positive, got {value!r}")
    return counts


def _split(value, what: str) -> list[str]:
    items = [x.strip() for x in (value.split(",") if isinstance(value, str) else map(str, value)) if x.strip()]
    if not items:
        raise SpecError(f"{what}: give at least one value")
    return items


def whatif(model: str = WHATIF_MODEL, gpu=WHATIF_GPUS, num_gpus=WHATIF_NUM_GPUS, *, interconnect: str | None = None,
           num_nodes=None,
           workload: str = "sharegpt", num_requests: int | None = 1_000_000, input_len: int | None = None,
           output_len: int | None = None, seed: int = 0, objective: str = "throughput", price_per_gpu_hour=None,
           sample_size: int = 1000, workers: int | None = None, output_dir=None, overwrite: bool = False,
           progress: Callable[[str, int, int, str], None] | None = None, deadline=None,
           dtype: str | None = None, kv_cache_dtype: str | None = None, executor=None,
           dask: str | None = None) -> WhatIf:
    """Compare hardware options (``gpu`` x ``num_gpus`` x ``num_nodes``, comma-separated or lists; an
    entry may carry its counts: ``8xa100-80g``, ``2x8xl4`` = 2 nodes of 8 L4) for one model and
    workload; with ``output_dir`` write the report folder (md, html, csv, png): a folder that holds
    an earlier run is refused before any work unless ``overwrite`` (``seesaw.report.claim``).
    ``deadline`` (``"24h"``, ``"90m"``, seconds): also name the cheapest option that finishes the
    workload by then. ``dtype``/``kv_cache_dtype``: the precision (``run_whatif``). ``executor`` /
    ``dask`` (a Dask scheduler address): where the simulations run (``seesaw.app.executors``)."""
    from seesaw.app.executors import simulation_executor
    from seesaw.app.simulate import check_counts, check_objective, load_inputs, resolve_node
    from seesaw.report.claim import check_folder, start_folder
    from seesaw.report.whatif import write_report

    check_objective(objective)
    if output_dir is not None:
        check_folder(output_dir, overwrite=overwrite)
    gpus = _split(gpu, "--gpu")
    counts = _counts(num_gpus, "--num-gpus")
    node_counts = None if num_nodes is None else _counts(num_nodes, "--num-nodes")
    prices = parse_prices(None if price_per_gpu_hour is None else str(price_per_gpu_hour), gpus)
    deadline_s = None if deadline is None else parse_duration(deadline)
    for g in gpus:                               # unknown GPUs, nodes, bad files, nodes without a network fail
        for k in node_counts or [None]:          # before any work
            resolve_node(g, counts[0], interconnect, k)
    check_counts(sample_size=sample_size, workers=workers)
    if dtype is not None or kv_cache_dtype is not None:
        Precision.parse(None if str(dtype).lower() == "auto" else dtype, kv_cache_dtype)  # bad names before work
    from simulator.extrapolate import converge_pool_size

    # a workload too large to build: as many requests as the contenders converge on (``plan``)
    model_spec, reqs = load_inputs(model, workload, num_requests, seed, input_len, output_len,
                                   sample_size=converge_pool_size(sample_size))
    with simulation_executor(executor, dask) as ex:
        result = run_whatif(model_spec, gpus, counts, reqs, workload_name=workload, interconnect=interconnect,
                            node_counts=node_counts, objective=objective, prices=prices, sample_size=sample_size,
                            seed=seed, workers=workers, progress=progress, deadline_s=deadline_s, dtype=dtype,
                            kv_cache_dtype=kv_cache_dtype, executor=ex)
    config = {"command": "whatif", "model": model_spec.name, "gpus": gpus, "num_gpus": counts, "num_nodes": node_counts,
              "dtype": dtype or model_spec.dtype_label, "kv_cache_dtype": kv_cache_dtype or "auto",
              "interconnect": interconnect, "workload": workload, "num_requests": result.num_requests, "seed": seed,
              "objective": objective, "prices": prices, "sample_size": sample_size,
              "deadline_s": deadline_s}
    done = WhatIf(result=result, config=config, model=model_spec, num_requests=result.num_requests)
    if output_dir is not None:
        start_folder(output_dir, "whatif", overwrite=overwrite)
        done.paths = write_report(result, Path(output_dir), config)
    return done
