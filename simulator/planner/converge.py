"""Contenders' throughputs that hold beyond the screening sample: the plan of a large workload.

The search ranks candidates on one screening sample. On a node that holds about as many sequences
as the sample (LLaMA3.1-70B, 8xH200, vLLM D2T4 at 512 sequences per replica: 1,024 at once against
a 1,000-request sample), a run is mostly start-up and drain: scaled to a million requests it reads
34% low, and knob variants that only differ at scale rank by their start-up (8xH100: vLLM D2T4
without chunked prefill ahead on the sample, 18% behind chunk=8192 at scale).

``contenders``: per policy kind, the ``RERANK_MAX`` best layouts on the screening sample (within
``RERANK_WITHIN`` of the kind's best) and the ``RERANK_ESTIMATED`` best others by the closed-form
estimate, which the planner computes on the whole pool when it converges (on 8xH200 the screening
sample ranks vLLM D4T2, 2,048 sequences at once, below D2T4; on 16,000 requests it is 24% faster);
for each, its best variant, and for the best simulated vLLM layout its best variant with chunked
prefill and its best without (the best simulated, or else the best estimated: one the search
stopped or never simulated is simulated on the screening sample first).
``converge_contenders`` simulates them on nested samples doubling beyond the screening sample (the
runner's rungs after ``final``, drawn from a pool of ``simulator.extrapolate.converge_pool_size``
requests); after each size, each one's whole-workload throughput is estimated at the marginal rate
between its last two samples (``simulator.extrapolate.marginal_makespan``). A contender goes on to
the next size unless it converged (its last two estimates, three at least, agree within ``TOL``)
or it is behind: its estimate is below its kind's leader's, by more than ``EARLY_MARGIN`` while
either has only one marginal estimate (the first, from the screening sample, is noisy), by
anything after. A contender left behind comes back when the leader falls below it on a larger
sample. The caller ranks the contenders on their last estimates: the winner and the best vLLM plan
are the best of their kinds.
"""

from __future__ import annotations

from seesaw.core import SpecError
from simulator.extrapolate import Convergence, marginal_makespan, tokens

__all__ = ["EARLY_MARGIN", "RERANK_ESTIMATED", "RERANK_MAX", "RERANK_WITHIN", "TOL", "contenders", "converge_contenders",
           "converged_note", "converged_rows"]

RERANK_WITHIN = 0.10   # contender layouts: within this fraction of their kind's best on the screening sample
RERANK_MAX = 1         # this many best simulated layouts per kind,
RERANK_ESTIMATED = 1   # and this many best estimated (on the pool) besides
EARLY_MARGIN = 0.05    # behind by more than this on the first marginal estimate: left behind
TOL = 0.01             # converged: the last two estimates this close


def contenders(rows: list[dict], results: dict[int, dict], shared: dict[int, int]) -> list[int]:
    """The candidates to converge (module docstring), best layouts first. ``rows``: the ranked
    table's rows (index, kind, layout, chunk, est_makespan_s, error); ``results``: the screening
    sample's results; ``shared``: candidates whose screening simulation is another's."""
    ok = [r for r in rows if r["error"] is None]
    done = {i: res["makespan_s"] for i, res in results.items() if "makespan_s" in res and i not in shared}
    layouts: dict[tuple, float] = {}
    for r in ok:
        if r["index"] in done:
            g = (r["kind"], r["layout"])
            layouts[g] = min(layouts.get(g, float("inf")), done[r["index"]])
    estimated: dict[tuple, float] = {}
    for r in ok:
        g = (r["kind"], r["layout"])
        estimated[g] = min(estimated.get(g, float("inf")), r["est_makespan_s"])
    out = []
    for kind in dict.fromkeys(r["kind"] for r in ok):
        ranked = sorted((m, g) for g, m in layouts.items() if g[0] == kind)
        chosen = [g for m, g in ranked[:RERANK_MAX] if m <= ranked[0][0] * (1 + RERANK_WITHIN)]
        by_estimate = sorted((m, g) for g, m in estimated.items() if g[0] == kind and g not in chosen)
        chosen += [g for _, g in by_estimate[:RERANK_ESTIMATED]]
        for n, g in enumerate(chosen):
            members = [r for r in ok if (r["kind"], r["layout"]) == g and r["index"] not in shared]
            classes = [[r for r in members if bool(r["chunk"]) == c] for c in (True, False)] \
                if kind == "vllm" and n == 0 else [members]
            for cls in filter(None, classes):
                fin = [r for r in cls if r["index"] in done]
                best = min(fin, key=lambda r: (done[r["index"]], r["index"])) if fin else \
                    min(cls, key=lambda r: (r["est_makespan_s"], r["index"]))
                out.append(best["index"])
    return out


def converge_contenders(runner, candidates: list, rows: list[dict], whole_tokens: int, whole: bool,
                        tol: float = TOL) -> dict[int, Convergence]:
    """Each contender's ``Convergence`` over the runner's growing rungs (module docstring);
    ``whole``: the last rung is the whole workload (its estimate is exact)."""
    final, last = runner.final, len(runner.rungs) - 1
    runner.bound = None
    ids = contenders(rows, runner.results[final], runner.same_as[final])
    redo = [i for i in ids if "makespan_s" not in runner.results[final].get(i, {})]
    for i in redo:                       # stopped or never simulated on the screening sample
        runner.results[final].pop(i, None)
    runner.run([(i, candidates[i].policy) for i in redo], final)
    ids = [i for i in ids if "makespan_s" in runner.results[final][i]]
    kinds = {i: rows[i]["kind"] for i in ids}
    points = {i: [_point(runner.rungs[final], runner.results[final][i])] for i in ids}
    estimates = {i: [whole_tokens / marginal_makespan(points[i], whole_tokens)] for i in ids}
    convs = {i: Convergence((len(runner.rungs[final]),), tuple(estimates[i]), tol) for i in ids}
    out: set[int] = set()       # cannot be simulated on a larger sample

    def todo(rung: int) -> list[int]:
        return [i for i in ids if i not in out and not convs[i].converged and not _behind(i, convs, kinds)
                and convs[i].sizes[-1] < len(runner.rungs[rung])]

    rung = final + 1
    while rung <= last and (jobs := todo(rung)):
        # a worker left idle starts a contender on the next size too (wall time; CPU if it converges)
        ahead = [] if rung == last else jobs[:max(0, runner.workers - len(jobs))]
        runner.run_rungs([(i, candidates[i].policy, rung) for i in jobs]
                         + [(i, candidates[i].policy, rung + 1) for i in ahead])
        for i in jobs:
            res = runner.results[rung][i]
            if "makespan_s" not in res:    # a larger sample it cannot serve: it stays at the last size
                if "error" in res:
                    raise SpecError(f"{candidates[i].name}: {res['error']}")
                out.add(i)
                continue
            points[i].append(_point(runner.rungs[rung], res))
            estimates[i].append(whole_tokens / marginal_makespan(points[i][-2:], whole_tokens))
            convs[i] = Convergence(convs[i].sizes + (len(runner.rungs[rung]),), tuple(estimates[i]), tol,
                                   whole=whole and rung == last)
        rung = min(rung + 1, last) if rung < last or todo(last) else last + 1
    return convs


def _point(requests: list, res: dict) -> tuple:
    return tokens(requests), res["makespan_s"], tuple(tuple(p) for p in res.get("steady", ()))


def _behind(i: int, convs: dict[int, Convergence], kinds: dict[int, str]) -> bool:
    """Candidate ``i``'s last estimate is below its kind's leader's (module docstring); the first
    estimate (the screening sample scaled) decides nothing."""
    c = convs[i]
    if len(c.throughputs) < 2:
        return False
    for j, d in convs.items():
        if j != i and kinds[j] == kinds[i] and len(d.throughputs) >= 2:
            margin = 0.0 if min(len(c.throughputs), len(d.throughputs)) >= 3 else EARLY_MARGIN
            if c.throughputs[-1] < d.throughputs[-1] * (1 - margin):
                return True
    return False


def converged_rows(rows: list[dict], runner, convs: dict[int, Convergence], whole_tokens: int) -> None:
    """Rows of the ranked table for the converged contenders: source "converged", the whole
    workload's makespan at the last estimate, time by phase of the largest sample scaled to it,
    ``sample_size`` and ``estimated_error``. A variant that shared a contender's simulation on the
    screening sample keeps its screening row: on a larger sample its host pool may fill."""
    for row in rows:
        i = row["index"]
        conv = convs.get(i)
        if conv is None or row["error"] is not None:
            continue
        rung = [len(r) for r in runner.rungs].index(conv.sizes[-1], runner.final)
        res = runner.results[rung][i]
        makespan = whole_tokens / conv.throughputs[-1]
        k = makespan / res["makespan_s"]
        how = "converged" if conv.converged else "not converged"
        row.update(source="converged", makespan_s=makespan, num_transitions=res["num_transitions"],
                   num_preemptions=res["num_preemptions"], sample_size=conv.sizes[-1], estimated_error=conv.error,
                   **{f"{p}_s": v * k for p, v in res["time_by_phase"].items()},
                   note=(row["note"] + "; " if row["note"] else "") + f"{how} on nested samples of "
                   + ", ".join(f"{n:,}" for n in conv.sizes) + " requests")


def converged_note(sim, num_requests: int) -> str:
    """The console/report note: the winner's (and the best vLLM plan's) throughput, its sample and
    error. ``sim``: the ranked table's simulated rows, converged first."""
    parts = []
    for what, rows in (("the winner", sim.iloc[:1]), ("the best vLLM plan", sim[sim["kind"] == "vllm"].iloc[:1])):
        if not len(rows) or rows.iloc[0]["source"] != "converged" or (what != "the winner" and rows.index[0] == sim.index[0]):
            continue
        r = rows.iloc[0]
        err = r["estimated_error"]
        parts.append(f"{what} {r['candidate']} {r['throughput_tok_s']:,.0f} tok/s from nested samples up to "
                     f"{int(r['sample_size']):,} of {num_requests:,} requests, estimated error "
                     + ("-" if err != err else f"{100 * err:.2f}%"))
    return ("throughput beyond the screening sample (marginal rate between growing nested samples): "
            + "; ".join(parts))
