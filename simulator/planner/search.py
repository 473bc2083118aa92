"""The search: estimate every candidate, simulate the promising ones, rank, build the ``Plan``.

Every candidate gets the closed-form estimate (``simulator.planner.estimate``); the search
(``_search``) simulates the best-estimated layouts of each policy kind, then tunes the knobs of
the best simulated ones by coordinate descent, every step a full ``simulate`` (in worker
processes on every core, or on any ``concurrent.futures.Executor``: ``runner``). Seesaw variants
that provably behave alike share one simulation: before simulating, when the host pool holds the
whole sample (``estimate.equivalence_key``); after, when a finished run of the same layouts never
switched back to prefill and its host pool peak stayed under the variant's limit (``_reuse_rule``).
With ``halving_min``, every batch of simulations is a successive-halving race over nested samples
(``_race``): off by default, since on ShareGPT the simulated ranking of near-tied candidates flips
between a sample and its half (see ``HALVING_TOL``). ``exhaustive=True`` simulates everything (``seesaw compare``, and the regret check in
``benchmarks/planner_speed.py``). Large workloads are screened on a seeded sample of at most
``sample_size`` requests (makespans scaled by the full/sample token ratio, ``extrapolated_from``
says so); the best few of each kind are then converged on nested samples growing beyond it
(``simulator.planner.converge``): they rank first, on the whole workload's estimated throughput,
with its sample size and estimated error. Throughput is total (prompt + output) tokens per second,
as ``vllm bench throughput`` counts it; cost is per million total tokens.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

import pandas as pd

from seesaw.core import (
    PHASES, VERSION, GiB, MeasuredProfile, ModelSpec, NodeSpec, Plan, SeesawPolicy, SpecError, VllmPolicy,
)
from simulator.cost import CostModel
from simulator.extrapolate import (
    CONVERGE_MAX, converge_pool_size, doubling_sizes, halving_sizes, nested_samples, sample_workload, tokens,
)
from simulator.planner.converge import converge_contenders, converged_note, converged_rows
from simulator.planner.enumerate import Candidate, SearchSpace, enumerate_candidates, enumerate_layouts
from simulator.planner.estimate import (
    ReplicaWork, equivalence_key, estimate_makespan_s, host_limit_tokens, replica_works,
)
from simulator.planner.explain import brief, explain, predicted, unservable_reason
from simulator.planner.runner import SimRunner
from simulator.sim import over_context_note

__all__ = ["DEFAULT_REFINE", "DEFAULT_SCREEN", "KNOBS", "TRAILING", "Objective", "PlanResult", "plan"]

Objective = Literal["throughput", "cost"]


@dataclass
class PlanResult:
    """Ranked candidates, the winning ``Plan`` and the rejected layouts."""

    plan: Plan | None
    table: pd.DataFrame
    rejected: list[tuple[str, str]]            # (layout or candidate, one-line reason)
    num_requests: int
    extrapolated_from: int | None              # sample size when the workload was sampled
    num_simulated: int                         # simulations run
    num_estimated: int                         # candidates left with their estimate (pruned)
    num_shared: int = 0                        # candidates that share an equivalent one's simulation
    num_stopped: int = 0                       # simulations stopped once slower than the best (bound)
    num_screened: int = 0                      # candidates simulated only on a smaller nested sample
    rungs: list[dict] = field(default_factory=list)   # successive halving: sample size, simulations run
    sampling: dict | None = None               # a sampled workload: the winner's Convergence.summary()
    wall_s: float = 0.0
    best_vllm: dict | None = None
    winner: dict | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "plan": self.plan.model_dump(mode="json") if self.plan else None,
            "winner": self.winner, "best_vllm": self.best_vllm,
            "num_requests": self.num_requests, "extrapolated_from": self.extrapolated_from,
            "num_candidates": len(self.table), "num_simulated": self.num_simulated,
            "num_estimated": self.num_estimated, "num_shared": self.num_shared,
            "num_screened": self.num_screened, "num_stopped": self.num_stopped, "rungs": self.rungs, "sampling": self.sampling, "wall_s": round(self.wall_s, 3),
            "rejected": [{"what": w, "reason": r} for w, r in self.rejected], "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# The search

DEFAULT_SCREEN = {"vllm": 3, "seesaw": 4}
DEFAULT_REFINE = {"vllm": 2, "seesaw": 2}
TRAILING = 0.10
KNOBS = {"vllm": ("chunk", "max_num_seqs"),
         "seesaw": ("host_fraction", "host_full_watermark", "decode_low_watermark", "max_num_seqs")}


def _search(rows: list[dict], candidates: list[Candidate], runner: SimRunner, screen: dict[str, int],
            refine: dict[str, int], keep_within: float, bound: bool = True) -> None:
    """Screen layouts by estimate, then tune the knobs of the best simulated layouts; every batch
    of simulations is a successive-halving race (``_race``) over the runner's nested samples.

    1. Per kind, the ``screen[kind]`` layouts (or Seesaw pairs) with the best estimates, plus any
       within ``keep_within`` of the kind's best estimate (at most twice as many), are simulated
       with their best-estimated knobs: the estimate ranks layouts well, knobs poorly. A Seesaw
       pair is also simulated at each batch cap (its best-estimated variant per ``max_num_seqs``):
       the cap moves a pipelined decode layout by several % (LLaMA2-70B, 8xL4, 2000 ShareGPT:
       P8->T4P2 5% faster at 512 than at 256, the exhaustive winner), which the descent, tuning
       only the best layouts, would not find.
    2. The ``refine[kind]`` best simulated layouts then get coordinate descent over their knobs
       (``KNOBS``: chunked prefill and chunk size, batch cap; host pool, watermark, batch cap): one
       knob at a time, every value, keep the best simulated, next knob. A kind whose best simulated
       layout trails the best of all by more than ``TRAILING`` tunes only that layout (knobs move
       a layout's makespan by a few %; it still gets the best of its kind right for the report).

    ``bound``: simulations on the whole sample stop once their result cannot change a decision
    (``_bound_rule``): the same simulations are started and the same plan comes out.
    """
    ok = [r for r in rows if r["error"] is None]
    results = runner.results[runner.final]
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(ok, key=lambda r: (r["est_makespan_s"], r["index"])):
        groups.setdefault((r["kind"], r["layout"]), []).append(r)
    jobs = []
    for kind, k in screen.items():
        ranked = [g for g in groups if g[0] == kind]        # by best estimate (dict keeps order)
        if not ranked:
            continue
        best = groups[ranked[0]][0]["est_makespan_s"]
        for n, g in enumerate(ranked):
            if n < k or (n < 2 * k and groups[g][0]["est_makespan_s"] <= best * (1 + keep_within)):
                jobs.append(groups[g][0]["index"])
                if kind == "seesaw":    # the batch cap moves a pipelined decode layout by several %
                    caps = {}
                    for r in groups[g]:
                        caps.setdefault(r["max_num_seqs"], r["index"])
                    jobs += list(caps.values())
    if bound:   # each kind's best-estimated first, kinds interleaved: every kind gets a bound early
        kind_best = {kind: min(r["est_makespan_s"] for r in ok if r["kind"] == kind) for kind in {r["kind"] for r in ok}}
        runner.priority = lambda i: (rows[i]["est_makespan_s"] / kind_best[rows[i]["kind"]], i)
        runner.bound = _bound_rule(rows, {kind: max(2, k) for kind, k in refine.items()})
    _race(runner, candidates, rows, jobs)

    def sim_best(g):
        done = [r for r in groups[g] if runner.ok(r["index"])]
        return min(done, key=lambda r: (results[r["index"]]["makespan_s"], r["index"])) if done else None

    current = {}
    done = [results[i]["makespan_s"] for i in results if runner.ok(i)]
    for kind, k in refine.items():
        ranked = sorted((g for g in groups if g[0] == kind and sim_best(g) is not None),
                        key=lambda g: results[sim_best(g)["index"]]["makespan_s"])
        if ranked and results[sim_best(ranked[0])["index"]]["makespan_s"] > min(done) * (1 + TRAILING):
            k = min(k, 1)       # a kind far behind the best: only its best layout's knobs (its best for the report)
        current.update({g: sim_best(g) for g in ranked[:k]})
    if bound:
        runner.bound = _bound_rule(rows, None)
    for step in range(max(len(v) for v in KNOBS.values())):
        jobs = []
        for g, base in current.items():
            dims = KNOBS[g[0]]
            if step < len(dims):
                others = [d for d in dims if d != dims[step]]
                jobs += [r["index"] for r in groups[g] if all(r[d] == base[d] for d in others)]
        _race(runner, candidates, rows, jobs)
        current = {g: sim_best(g) for g in current}


# successive halving: per rung below the whole sample, how far behind the best of its kind a
# candidate may be there and still go on to the next rung (measured: LLaMA2-70B, 8xL4, ShareGPT,
# the whole sample's winner was 2% behind on half the sample and 11% behind on a quarter)
HALVING_TOL = 0.03


def _race(runner: SimRunner, candidates: list[Candidate], rows: list[dict], jobs: list[int]) -> None:
    """Simulate ``jobs`` by successive halving over the nested samples ``runner.rungs`` (smallest
    first, the last the whole sample): each rung simulates the survivors of the one before; a
    candidate survives while its makespan on a sample of ``1/2**k`` of the whole is within
    ``2**k * HALVING_TOL`` of the best of its kind (policy) there. Only the whole sample's results
    rank candidates; the ones dropped on the way count as worse."""
    alive = list(dict.fromkeys(jobs))
    for rung in range(runner.final):
        if len({rows[i]["kind"] for i in alive}) == len(alive):   # one per kind: nothing to drop
            break
        _run(runner, candidates, alive, rung)
        res = runner.results[rung]
        alive = [i for i in alive if runner.ok(i, rung)]
        best: dict[str, float] = {}
        for i in alive:
            best[rows[i]["kind"]] = min(best.get(rows[i]["kind"], math.inf), res[i]["makespan_s"])
        tol = HALVING_TOL * len(runner.rungs[-1]) / len(runner.rungs[rung])
        alive = [i for i in alive if res[i]["makespan_s"] <= best[rows[i]["kind"]] * (1 + tol)]
    _run(runner, candidates, alive)


def _bound_rule(rows: list[dict], keep: dict[str, int] | None) -> Callable[[int, dict[int, dict]], float]:
    """The makespan past which candidate ``i``'s simulation cannot change the search (``SimRunner``'s
    ``bound``), from the finished ``results``: a makespan can only grow as a simulation runs.

    Knob descent (``keep`` None): the best finished makespan of ``i``'s layout: slower, it cannot
    become its layout's best. Screen (``keep[kind]``: the layouts per kind that go on, at least 2
    so the runner-up layout stays exact): also the ``keep``-th best layout of its kind among the
    others: slower, its layout is not among those tuned and not the best of its kind, so only its
    own row changes, "stopped". The best of each kind (the winner, the best vLLM) always finishes;
    so do the best variant of every tuned layout and the ranking of all finished candidates."""
    def bound(i: int, results: dict[int, dict]) -> float:
        kind, layout = rows[i]["kind"], rows[i]["layout"]
        best: dict[str, float] = {}
        for j, res in results.items():
            if "makespan_s" in res and rows[j]["kind"] == kind:
                g = rows[j]["layout"]
                best[g] = min(best.get(g, math.inf), res["makespan_s"])
        own = best.pop(layout, math.inf)
        if keep is None:
            return own
        others, k = sorted(best.values()), keep.get(kind, 2)
        return min(own, others[k - 1] if len(others) >= k else math.inf)
    return bound


def _run(runner: SimRunner, candidates: list[Candidate], indices: list[int], rung: int | None = None) -> None:
    runner.run([(i, candidates[i].policy) for i in indices], rung)


def _price(node: NodeSpec, price_per_gpu_hour: float | None) -> float | None:
    if price_per_gpu_hour is not None:
        if not price_per_gpu_hour > 0:
            raise SpecError(f"price per GPU-hour must be > 0, got {price_per_gpu_hour}")
        return float(price_per_gpu_hour)
    return node.gpu.price_per_hour_usd


def plan(
    model: ModelSpec,
    node: NodeSpec,
    requests: list,
    *,
    objective: Objective = "throughput",
    price_per_gpu_hour: float | None = None,
    space: SearchSpace = SearchSpace(),
    exhaustive: bool = False,
    screen: dict[str, int] | None = None,
    refine: dict[str, int] | None = None,
    keep_within: float = 0.03,
    sample_size: int | None = 2000,
    seed: int = 0,
    workers: int | None = None,
    executor: Executor | None = None,
    halving_min: int | None = None,
    bound: bool = True,
    converge_max: int | None = CONVERGE_MAX,
    workload_name: str = "",
    progress: Callable[[int, int, str], None] | None = None,
    measured: MeasuredProfile | None = None,
) -> PlanResult:
    """Search ``space`` for ``model`` on ``node`` serving ``requests``; see the module docstring.

    measured: a profile of the machine (``seesaw profile``; ``node`` then from
    ``catalog.measured_node``): estimates and simulations use its tables instead of the roofline.

    screen / refine: per policy kind, how many layouts to simulate after the estimate and how many
    of those to tune knob by knob (defaults in ``DEFAULT_SCREEN``/``DEFAULT_REFINE``; see
    ``_search``); ignored when ``exhaustive``. keep_within: also screen layouts whose estimate is
    within this fraction of the kind's best. progress(done, total_so_far, what) is called after
    each simulation. workers: simulation processes (None: one per core; 1: in this process);
    executor: any ``concurrent.futures.Executor`` to run the simulations on instead (a
    ``dask.distributed`` client's ``get_executor()``; not shut down here). halving_min: with a
    size, every batch of simulations is a successive-halving race (``_race``) over nested samples
    of the whole sample, the smallest at least this size; None (the default): whole sample only.
    bound: stop a simulation once its clock passes the makespan that its result would have to beat
    to change the search (``_bound_rule``); the plan is the same, the table says "stopped".
    converge_max: a workload larger than ``sample_size`` is screened on that sample, then the best
    candidates of each kind are simulated on nested samples doubling from it up to this many
    requests (or the whole workload when smaller) until their throughput converges
    (``simulator.planner.converge``); they rank first, with ``sample_size`` and ``estimated_error``.
    None: the same screening sample, no growing samples (every row only screened).
    """
    if objective not in ("throughput", "cost"):
        raise SpecError(f"unknown objective {objective!r}; known: throughput, cost")
    if not requests:
        raise SpecError("the workload has no requests")
    t0 = time.perf_counter()
    price = _price(node, price_per_gpu_hour)
    if objective == "cost" and price is None:
        raise SpecError(f"no price for GPU '{node.gpu.name}': give a price per GPU-hour for the cost objective")
    pool = sample_workload(requests, converge_pool_size(sample_size, converge_max or CONVERGE_MAX) if sample_size else None,
                           seed)   # converge_max None: the same screening sample, no growing ones
    sample = pool.requests if not sample_size or len(pool.requests) <= sample_size else \
        nested_samples(pool.requests, [sample_size], seed)[0]
    sampled = replace(pool, requests=sample)    # the screening sample, standing for the whole
    num_requests = sampled.num_requests
    growing = doubling_sizes(len(sample), len(pool.requests), len(pool.requests))[1:] \
        if sampled.extrapolated and converge_max is not None else []
    full_tokens = sampled.total_tokens
    output_fraction = sampled.output_tokens / full_tokens if full_tokens else 0.0
    scale = sampled.scale
    cost = CostModel(model, node, measured=measured)
    layouts, rejected = enumerate_layouts(model, node, cost, space)
    candidates, more = enumerate_candidates(model, node, layouts, space)
    rejected += more
    rows: list[dict] = []
    memo: dict[tuple[int, int], list[ReplicaWork]] = {}

    def _works(reqs: list, dp: int) -> list[ReplicaWork]:  # each sample's replica shares, once per DP
        if (id(reqs), dp) not in memo:
            memo[id(reqs), dp] = replica_works(reqs, dp)
        return memo[id(reqs), dp]

    # estimated on the requests the contenders converge on: on a screening sample smaller than the
    # node's concurrency the estimate, like a simulation, ranks many-replica layouts far too low
    est_reqs = pool.requests if growing else sample
    est_scale = full_tokens / tokens(est_reqs) if full_tokens else 1.0
    for i, cand in enumerate(candidates):
        pol = cand.policy
        w = _works(est_reqs, pol.layout.dp)
        est, phases = estimate_makespan_s(cost, pol, w)
        rows.append(_row(i, cand, est * est_scale, {k: v * est_scale for k, v in phases.items()},
                         unservable_reason(pol, w, cost)))
    screen = dict(DEFAULT_SCREEN if screen is None else screen)
    refine = dict(DEFAULT_REFINE if refine is None else refine)
    sizes = [len(sample)] if exhaustive or not halving_min else halving_sizes(len(sample), halving_min)
    rungs = nested_samples(sample, sizes, seed)
    equiv = [{i: k for i, c in enumerate(candidates) if rows[i]["error"] is None
              and (k := equivalence_key(c, _works(r, c.policy.layout.dp), cost))} for r in rungs]
    runner = SimRunner(model, node, rungs + nested_samples(pool.requests, growing, seed), workers=workers,
                       executor=executor, progress=progress, equiv=equiv, measured=measured,
                       reuse=_reuse_rule(candidates, cost), final=len(rungs) - 1)
    try:
        if exhaustive:
            _run(runner, candidates, [r["index"] for r in rows if r["error"] is None])
        else:
            _search(rows, candidates, runner, screen, refine, keep_within, bound)
        convs = converge_contenders(runner, candidates, rows, full_tokens, whole=not pool.extrapolated) \
            if growing else {}
    except BaseException:  # Ctrl-C or a failure: do not wait for the queued simulations
        runner.close(cancel=True)
        raise
    runner.close()
    final, shared = runner.results[runner.final], runner.same_as[runner.final]
    for rung in range(runner.final):      # screened out on a smaller sample: that sample's makespan, scaled
        for i, res in runner.results[rung].items():
            if i not in final and "error" not in res:
                k = scale * tokens(sample) / tokens(runner.rungs[rung])
                rows[i].update(source="screened", makespan_s=res["makespan_s"] * k,
                               note=f"screened out on a sample of {len(runner.rungs[rung]):,} requests")
    for i, res in final.items():
        row = rows[i]
        if "error" in res:
            row["error"] = res["error"]
            continue
        if "stopped_at_s" in res:      # a lower bound on its makespan, no throughput
            row.update(source="stopped", makespan_s=res["stopped_at_s"] * scale,
                       note=f"stopped at {res['stopped_at_s'] * scale:,.1f} s: slower than the best it had to beat")
            continue
        if i in shared:
            row["note"] = f"same as {candidates[shared[i]].name} (the host pool never fills: same run)"
        row.update(source="simulated", makespan_s=res["makespan_s"] * scale,
                   num_transitions=res["num_transitions"], num_preemptions=res["num_preemptions"],
                   **{f"{k}_s": v * scale for k, v in res["time_by_phase"].items()})
    converged_rows(rows, runner, convs, full_tokens)
    for r in rows:
        if r["error"]:
            rejected.append((r["candidate"], r["error"]))
    table = _table(rows, full_tokens, node.total_gpus, price, objective)
    result = PlanResult(plan=None, table=table, rejected=rejected, num_requests=num_requests,
                        extrapolated_from=len(sample) if sampled.extrapolated else None,
                        num_simulated=runner.done, num_shared=len(shared),
                        num_stopped=int((table["source"] == "stopped").sum()) if len(table) else 0,
                        num_estimated=int((table["source"] == "estimated").sum()) if len(table) else 0,
                        num_screened=int((table["source"] == "screened").sum()) if len(table) else 0,
                        rungs=[{"requests": len(r), "simulations": n} for r, n in zip(runner.rungs, runner.by_rung)])
    same = len(shared)
    if same:
        result.notes.append(f"{same} Seesaw variants share a simulation with an equivalent one: their host "
                            "pool never fills, so pool size and watermarks cannot matter")
    sim = table[table["source"].isin(("converged", "simulated"))] if len(table) else table
    if result.extrapolated_from:
        result.notes.append(f"screened the candidates on a seeded sample of {len(sample):,} of {num_requests:,} "
                            f"requests (times scaled by the token ratio {scale:,.1f}x: start-up and final drain "
                            "included, so a row only screened reads low)")
        if len(sim) and (win := convs.get(int(sim.iloc[0]["index"]))):
            result.sampling = win.summary()
            result.notes.append(converged_note(sim, num_requests))
    if (note := over_context_note(model, sample)) is not None:
        result.notes.append(note)
    if len(sim):
        result.winner = brief(sim.iloc[0])
        vllm = sim[sim["kind"] == "vllm"]
        result.best_vllm = brief(vllm.iloc[0]) if len(vllm) else None
        # the runner-up is the best other layout: knob variants of the winner are often identical
        others = sim[sim["layout"] != sim.iloc[0]["layout"]]
        runner_up = brief(others.iloc[0]) if len(others) else None
        if runner_up:
            runner_up["worse_by_pct"] = round(
                100 * (1 - runner_up["throughput_tok_s"] / result.winner["throughput_tok_s"]), 2)
        result.plan = Plan(
            model=model, node=node, policy=candidates[int(sim.iloc[0]["index"])].policy,
            workload=workload_name or f"{num_requests} requests", objective=objective,
            predicted=predicted(sim.iloc[0], result.best_vllm, output_fraction, num_requests),
            runner_up=runner_up, search_space_size=len(candidates),
            explanation=explain(sim.iloc[0], vllm.iloc[0] if len(vllm) else None, sim),
            provenance={
                "model_profile": model.name, "node_profile": node.name, "gpu_profile": node.gpu.name,
                "seesaw_version": VERSION,
                "simulated_requests": str(result.sampling["sample_size"] if result.sampling else len(sample)),
                "workload_requests": str(num_requests), "sample_seed": str(seed),
                "price_per_gpu_hour_usd": "" if price is None else f"{price:g}",
                "sample_estimated_error": "" if not (result.sampling and result.sampling["estimated_error"] is not None)
                else f"{result.sampling['estimated_error']:.4f}",
                "cost_model": f"measured profile {measured.name or measured.device_name!r}" if measured is not None
                else "roofline",
                "search": f"exhaustive: {runner.done} simulations" if exhaustive else
                f"estimate all {len(candidates)}; simulate the best-estimated layouts {screen}, tune the "
                f"knobs of the best simulated {refine}"
                + (f" on {len(rungs[0]):,} requests, then successive halving on nested samples of "
                   f"{', '.join(f'{len(r):,}' for r in rungs[1:])}" if len(rungs) > 1 else "")
                + f": {runner.done} simulations",
            })
    result.wall_s = time.perf_counter() - t0
    return result


def _reuse_rule(candidates: list[Candidate], cost: CostModel) -> Callable[[int, dict[int, dict]], int | None]:
    """A Seesaw variant repeats a finished simulation of the same layouts, batch cap and budget that
    never switched back to prefill (one transition: every prompt prefilled in one go, so the decode
    low watermark never decides) and whose host pool never came near this variant's limit (its
    peak, plus 5% for the pool's free-block watermark, within this variant's pool size times host
    watermark): every admission and eviction check then decides alike, so the run is the same."""
    def same_run(p) -> tuple:
        return (p.prefill_layout, p.decode_layout, p.max_num_seqs, p.max_num_batched_tokens, p.block_size,
                p.gpu_memory_utilization)

    def reuse(i: int, results: dict[int, dict]) -> int | None:
        p = candidates[i].policy
        if not isinstance(p, SeesawPolicy):
            return None
        limit = host_limit_tokens(p, cost) // p.block_size
        for j, res in results.items():
            q = candidates[j].policy
            if ("host_peak_blocks" in res and res["num_transitions"] <= 1 and isinstance(q, SeesawPolicy)
                    and res["host_peak_blocks"] * 1.05 <= limit and same_run(q) == same_run(p)):
                return j
        return None
    return reuse


def _row(i: int, cand: Candidate, est: float, phases: dict, error: str | None) -> dict:
    p = cand.policy
    vllm = isinstance(p, VllmPolicy)
    row = {
        "index": i, "candidate": cand.name, "kind": p.kind,
        "layout": str(p.layout) if vllm else f"{p.prefill_layout}->{p.decode_layout}",
        "prefill_layout": str(p.layout if vllm else p.prefill_layout),
        "decode_layout": str(p.layout if vllm else p.decode_layout),
        "chunk": (p.max_num_batched_tokens if p.enable_chunked_prefill else 0) if vllm else None,
        "max_num_seqs": p.max_num_seqs,
        "host_pool_gib": None if vllm else p.host_kv_bytes / GiB,
        "host_full_watermark": None if vllm else p.host_full_watermark,
        "decode_low_watermark": None if vllm else p.decode_low_watermark,
        "source": "estimated", "est_makespan_s": est, "makespan_s": est,
        "host_fraction": None if vllm else cand.host_fraction,
        "num_transitions": None, "num_preemptions": None, "error": error, "note": "",
    }
    row.update({f"{k}_s": phases.get(k, 0.0) for k in PHASES})
    return row


def _table(rows: list[dict], full_tokens: int, num_gpus: int, price: float | None, objective: str) -> pd.DataFrame:
    df = pd.DataFrame([r for r in rows if r["error"] is None])
    if df.empty:
        return df
    df["throughput_tok_s"] = full_tokens / df["makespan_s"]
    df["est_throughput_tok_s"] = full_tokens / df["est_makespan_s"]
    df["gpu_hours"] = num_gpus * df["makespan_s"] / 3600
    df["cost_per_mtok_usd"] = df["gpu_hours"] * price / (full_tokens / 1e6) if price else float("nan")
    df["converged"] = df["source"] == "converged"
    df["simulated"] = df["converged"] | (df["source"] == "simulated")
    # converged first (beyond the screening sample), then simulated; objective first; cost ties go to
    # throughput and vice versa; then enumeration order
    keys = ["makespan_s", "index"] if objective == "throughput" or not price else ["cost_per_mtok_usd", "makespan_s", "index"]
    df = df.sort_values(["converged", "simulated"] + keys, ascending=[False, False] + [True] * len(keys), kind="stable")
    vllm = df[(df["kind"] == "vllm") & df["simulated"]]
    vllm = vllm[vllm["converged"]] if vllm["converged"].any() else vllm
    best_vllm = vllm["throughput_tok_s"].max() if len(vllm) else float("nan")
    df["speedup_vs_best_vllm"] = df["throughput_tok_s"] / best_vllm
    stopped = df["source"] == "stopped"     # makespan_s is a lower bound: no throughput, cost or speedup
    df.loc[stopped, ["throughput_tok_s", "cost_per_mtok_usd", "speedup_vs_best_vllm"]] = float("nan")
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.drop(columns=["converged", "simulated", "error"]).reset_index(drop=True)
