"""Precision as a planner dimension: plan each precision asked for, keep the best.

The planner keeps the precision it is given (``Precision``: weights, KV cache); only ``--dtype auto``
asks it to search (``precisions_to_search``): the weight precisions the GPU's tensor cores run
(bf16, and fp8 where it has FP8 tensor cores; fp16 costs what bf16 does, so it is not tried) times
the KV cache (16-bit, fp8) unless one is given. Each precision is planned as a whole
(``simulator.planner.plan`` on the model costed in it) and the results merged into one ranked
table (a ``dtype`` column; candidate names end with the precision). Precision changes accuracy,
which nothing here models: that is why the search is opt-in.
"""

from __future__ import annotations

from typing import Callable

import pandas as pd

from seesaw.core import GpuSpec, ModelSpec, NodeSpec, Precision, SpecError
from simulator.planner.explain import brief
from simulator.planner.search import PlanResult, plan

__all__ = ["plan_precisions", "precisions_to_search"]


def precisions_to_search(gpu: GpuSpec, dtype: str | None = None, kv_cache_dtype: str | None = None) -> list[Precision]:
    """The precisions to plan: the one given, or (``dtype="auto"``) every weight precision ``gpu``
    runs (bf16, fp8) times the KV cache given or both KV caches (16-bit, fp8)."""
    if str(dtype).lower() != "auto":
        p = Precision.parse(dtype, kv_cache_dtype)
        gpu.gemm_peak_flops(p.dtype == "fp8")  # a GPU without FP8 tensor cores: one line
        return [p]
    weights = [d for d in ("bf16", "fp8") if d in gpu.dtypes]
    kvs = ["auto", "fp8"] if kv_cache_dtype is None else [Precision.parse(None, kv_cache_dtype).kv_cache_dtype]
    return [Precision(dtype=w, kv_cache_dtype=k) for w in weights for k in kvs]


def plan_precisions(model: ModelSpec, node: NodeSpec, requests: list, precisions: list[Precision | None], *,
                    progress: Callable[[int, int, str], None] | None = None, **options) -> PlanResult:
    """``plan`` for ``model`` costed in each of ``precisions`` (None: as ``model`` is; ``options``
    go to ``plan``); one precision: its result with a ``dtype`` column; several: one merged result
    ranked by ``options["objective"]``, whose plan is the best precision's."""
    if not precisions:
        raise SpecError("no precision to plan")
    results: dict[str, PlanResult] = {}
    offset = [0]

    def tick(done: int, total: int, what: str) -> None:
        if progress is not None:
            progress(offset[0] + done, offset[0] + total, what)

    for p in precisions:
        costed = model if p is None else p.apply(model)
        label = costed.dtype_label if p is None else p.label
        res = plan(costed, node, requests, progress=tick if progress else None, **options)
        offset[0] += res.num_simulated
        if len(res.table):
            res.table.insert(res.table.columns.get_loc("candidate") + 1, "dtype", label)
        if res.plan is not None:
            res.plan = res.plan.model_copy(update={"provenance": {**res.plan.provenance, "precision": label}})
        results[label] = res
    if len(results) == 1:
        return next(iter(results.values()))
    return _merge(results, options.get("objective", "throughput"))


def _merge(results: dict[str, PlanResult], objective: str) -> PlanResult:
    """One ranked result of several precisions' plans."""
    tables = []
    for label, res in results.items():
        if len(res.table):
            t = res.table.copy()
            t["candidate"] = t["candidate"] + " @" + label
            tables.append(t)
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    rejected = [(f"{what} @{label}", why) for label, res in results.items() for what, why in res.rejected]
    first = next(iter(results.values()))
    out = PlanResult(plan=None, table=table, rejected=rejected, num_requests=first.num_requests,
                     extrapolated_from=first.extrapolated_from,
                     num_simulated=sum(r.num_simulated for r in results.values()),
                     num_estimated=sum(r.num_estimated for r in results.values()),
                     num_shared=sum(r.num_shared for r in results.values()),
                     wall_s=sum(r.wall_s for r in results.values()),
                     notes=list(dict.fromkeys(n for r in results.values() for n in r.notes)))
    if table.empty:
        return out
    costed = objective == "cost" and table["cost_per_mtok_usd"].notna().any()
    keys = ["cost_per_mtok_usd", "makespan_s"] if costed else ["makespan_s"]
    simulated = table["source"] == "simulated"
    table = (table.assign(_sim=~simulated).sort_values(["_sim", *keys, "dtype", "rank"], kind="stable")
             .drop(columns="_sim").reset_index(drop=True))
    sim = table[table["source"] == "simulated"]
    vllm = sim[sim["kind"] == "vllm"]
    best_vllm = vllm["throughput_tok_s"].max() if len(vllm) else float("nan")
    table["speedup_vs_best_vllm"] = table["throughput_tok_s"] / best_vllm
    table["rank"] = range(1, len(table) + 1)
    out.table = table
    sim = table[table["source"] == "simulated"]
    if len(sim):
        top = sim.iloc[0]
        out.winner = {**brief(top), "dtype": top["dtype"]}
        vllm = sim[sim["kind"] == "vllm"]
        out.best_vllm = {**brief(vllm.iloc[0]), "dtype": vllm.iloc[0]["dtype"]} if len(vllm) else None
        chosen = results[top["dtype"]].plan
        if chosen is not None:
            others = ", ".join(f"{label} {r.winner['throughput_tok_s']:,.0f}" for label, r in results.items()
                               if label != top["dtype"] and r.winner)
            searched = ", ".join(results)
            out.plan = chosen.model_copy(update={
                "explanation": f"Precision {top['dtype']} (searched {searched}; best of the others, tokens/s: "
                               f"{others or 'none feasible'}). {chosen.explanation}",
                "search_space_size": sum(r.plan.search_space_size for r in results.values() if r.plan),
                "provenance": {**chosen.provenance, "precision_search": searched}})
    return out
