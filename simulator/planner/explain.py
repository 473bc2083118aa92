"""Why a plan wins and why a candidate is out: the one-line texts of the planner's results.

``explain`` compares the winner's simulated time by phase with the best static vLLM layout (or,
when vLLM wins, with the best Seesaw pair); ``unservable_reason`` rejects a candidate before
simulating it; ``brief``/``predicted`` are the rows of the ranked table as a plan reports them.
"""

from __future__ import annotations

import math

import pandas as pd

from seesaw.core import PHASES, Predicted, SeesawPolicy, VllmPolicy
from simulator.cost import CostModel
from simulator.planner.estimate import ReplicaWork, host_limit_tokens

__all__ = ["brief", "explain", "format_duration", "predicted", "unservable_reason"]


def unservable_reason(policy, works: list[ReplicaWork], cost: CostModel) -> str | None:
    """A reason the policy cannot serve some request of the sample, before simulating it."""
    longest = max(int((w.prompts + w.outputs).max()) for w in works)
    if isinstance(policy, VllmPolicy) and not policy.enable_chunked_prefill \
            and longest > policy.max_num_batched_tokens:
        return (f"a request of {longest} tokens exceeds max_num_batched_tokens="
                f"{policy.max_num_batched_tokens} without chunked prefill")
    if isinstance(policy, SeesawPolicy):
        limit = host_limit_tokens(policy, cost)
        if longest > limit:
            return f"a request of {longest} tokens does not fit the host KV pool ({limit} tokens per replica)"
    return None


def brief(row) -> dict:
    out = {k: row[k] for k in ("candidate", "kind", "layout", "source")}
    for k in ("throughput_tok_s", "makespan_s", "cost_per_mtok_usd", "speedup_vs_best_vllm", "gpu_hours"):
        v = float(row[k])
        out[k] = None if math.isnan(v) else v
    out["time_by_phase_s"] = {k: round(float(row[f"{k}_s"]), 3) for k in PHASES if row[f"{k}_s"]}
    if "sample_size" in row.index:     # converged beyond the screening sample (``converge``)
        n, e = float(row["sample_size"]), float(row["estimated_error"])
        out["sample_size"] = None if math.isnan(n) else int(n)
        out["estimated_error"] = None if math.isnan(e) else e
    return out


def predicted(row, best_vllm: dict | None, output_fraction: float, num_requests: int) -> Predicted:
    """The plan's prediction from its row of the ranked table: ``output_fraction`` of the workload's
    tokens are output tokens (throughput counts prompt + output), ``num_requests`` of them finish
    within the makespan."""
    makespan = float(row["makespan_s"])
    cost = float(row["cost_per_mtok_usd"])
    return Predicted(
        throughput_tok_s=float(row["throughput_tok_s"]), makespan_s=makespan, gpu_hours=float(row["gpu_hours"]),
        output_throughput_tok_s=float(row["throughput_tok_s"]) * output_fraction,
        requests_per_s=num_requests / makespan if makespan > 0 else None,
        cost_per_mtok_usd=None if math.isnan(cost) else cost,
        speedup_vs_best_vllm=float(row["speedup_vs_best_vllm"]) if best_vllm else None,
        **{f"{k}_s": float(row[f"{k}_s"]) for k in PHASES if row[f"{k}_s"]})


def format_duration(seconds: float) -> str:
    """A duration in the unit a reader wants: seconds, minutes or hours."""
    if seconds < 600:
        return f"{seconds:,.0f} s"
    return f"{seconds / 60:,.0f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def _vllm_text(r) -> str:
    pf = r["prefill_s"] + r["mixed_s"]
    return f"{r['candidate']}: prefill in flight {format_duration(pf)}, decode only {format_duration(r['decode_s'])}"


def _seesaw_text(r) -> str:
    n = int(r["num_transitions"] or 0)
    extra = r["reshard_s"] + r["swap_stall_s"] + r["mixed_s"] + r["idle_s"]
    return (f"{r['candidate']}: prefill {format_duration(r['prefill_s'])} under {r['prefill_layout']}, decode "
            f"{format_duration(r['decode_s'])} under {r['decode_layout']}, re-shard and swap stalls {format_duration(extra)} "
            f"({n} transition{'s' if n != 1 else ''})")


def explain(win, vllm, sim: pd.DataFrame) -> str:
    """Why the winner wins, from simulated time by phase against the best static vLLM layout."""
    head = f"{win['candidate']} wins: {win['throughput_tok_s']:,.0f} tok/s over {format_duration(win['makespan_s'])}"
    if vllm is None:
        return head + "; no static vLLM layout could be simulated to compare with."
    if win["kind"] == "vllm":
        see = sim[sim["kind"] == "seesaw"]
        if not len(see):
            return head + (f". {_vllm_text(win)}. No Seesaw pair could be simulated (a pair needs two "
                           "feasible layouts with the same DP degree).")
        s = see.iloc[0]
        v_pf = win["prefill_s"] + win["mixed_s"]
        return (head + f"; the best Seesaw pair, {s['candidate']}, is "
                f"{100 * (1 - s['throughput_tok_s'] / win['throughput_tok_s']):.1f}% slower. Time by phase "
                f"(simulated): {_vllm_text(win)}; {_seesaw_text(s)}. Seesaw's separate prefill phase takes "
                f"{format_duration(s['prefill_s'])} against {format_duration(v_pf)} with prefill in flight, and its decode "
                f"phase {format_duration(s['decode_s'])} against {format_duration(win['decode_s'])}: re-sharding does not pay here.")
    v_pf = vllm["prefill_s"] + vllm["mixed_s"]
    saved, more = v_pf - win["prefill_s"], win["decode_s"] - vllm["decode_s"]
    return (head + f", {win['speedup_vs_best_vllm']:.2f}x the best static vLLM layout, {vllm['candidate']} "
            f"({vllm['throughput_tok_s']:,.0f} tok/s over {format_duration(vllm['makespan_s'])}). Time by phase "
            f"(simulated): {_seesaw_text(win)}; {_vllm_text(vllm)}. Prefilling under {win['prefill_layout']} "
            f"{'saves' if saved >= 0 else 'costs'} {format_duration(abs(saved))} against the time {vllm['layout']} has "
            f"prefill in flight, and decoding under {win['decode_layout']} takes {format_duration(abs(more))} "
            f"{'more' if more >= 0 else 'less'} than its decode-only time (the decode phase also does the "
            "decodes vLLM overlaps with prefill).")
