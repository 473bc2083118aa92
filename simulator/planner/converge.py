"""Contenders' throughputs that hold beyond the screening sample: the plan of a large workload.

The search ranks candidates on one screening sample. On a node that holds about as many sequences
as the sample (LLaMA3.1-70B, 8xH200, vLLM D2T4 at 512 sequences per replica: 1,024 at once against
a 1,000-request sample), a run is mostly start-up and drain: scaled to a million requests it reads
34% low, and knob variants that only differ at scale (the batch cap) rank by their start-up.

``converge_contenders`` takes the ``RERANK_MAX`` best simulated candidates of each policy kind
within ``RERANK_WITHIN`` of their kind's best on the screening sample, and simulates them on
nested samples that double beyond it (the runner's rungs after ``final``, drawn from a pool of
``simulator.extrapolate.converge_pool_size`` requests): after each size, each one's whole-workload
throughput is estimated at the marginal rate between its last two samples
(``simulator.extrapolate.marginal_makespan``). From the third estimate on (the first is the
screening sample scaled), a candidate whose estimate trails its kind's leader by more than both
their stated errors (at least ``MIN_ERROR`` each) drops out, and one whose last two estimates agree
within the tolerance stops: it converged. At the largest sample the rest stop as they are, with
their estimated error. The caller ranks the contenders on these estimates: the winner and the
best vLLM plan are the best converged of their kinds.
"""

from __future__ import annotations

from seesaw.core import SpecError
from simulator.extrapolate import CONVERGE_TOL, Convergence, marginal_makespan, tokens

__all__ = ["MIN_ERROR", "RERANK_MAX", "RERANK_WITHIN", "contenders", "converge_contenders", "converged_note",
           "converged_rows"]

RERANK_WITHIN = 0.10   # contenders: within this fraction of their kind's best on the screening sample
RERANK_MAX = 3         # at most this many per kind
MIN_ERROR = 0.01       # a stated error counts as at least this much when a contender is dropped


def contenders(runner, kinds: dict[int, str]) -> list[int]:
    """Per kind, the best simulated candidates on the screening sample (``runner.final``): at most
    ``RERANK_MAX``, each within ``RERANK_WITHIN`` of the kind's best makespan, best first."""
    done = runner.results[runner.final]
    shared = runner.same_as[runner.final]    # a variant that shares a simulation: that one contends
    ok = sorted((res["makespan_s"], i) for i, res in done.items()
                if "makespan_s" in res and i in kinds and i not in shared)
    out, per_kind, best = [], {}, {}
    for makespan, i in ok:
        k = kinds[i]
        best.setdefault(k, makespan)
        if per_kind.get(k, 0) < RERANK_MAX and makespan <= best[k] * (1 + RERANK_WITHIN):
            per_kind[k] = per_kind.get(k, 0) + 1
            out.append(i)
    return out


def converge_contenders(runner, candidates: list, kinds: dict[int, str], whole_tokens: int, whole: bool,
                        tol: float = CONVERGE_TOL) -> dict[int, Convergence]:
    """Each contender's ``Convergence`` over the runner's growing rungs (module docstring).
    ``kinds``: candidate index -> policy kind, for those that may contend; ``whole``: the last
    rung is the whole workload (its estimate is exact). A contender dropped as behind comes back
    when its kind's leader falls back to it on a larger sample; at the end none that is not behind
    stops short of the largest sample unless it converged."""
    final, last = runner.final, len(runner.rungs) - 1
    ids = contenders(runner, kinds)
    points = {i: [_point(runner.rungs[final], runner.results[final][i])] for i in ids}
    estimates = {i: [whole_tokens / marginal_makespan(points[i], whole_tokens)] for i in ids}
    convs = {i: Convergence((len(runner.rungs[final]),), tuple(estimates[i]), tol) for i in ids}
    out: set[int] = set()       # cannot be simulated on a larger sample
    runner.bound = None

    def todo(rung: int) -> list[int]:
        return [i for i in ids if i not in out and not convs[i].converged and not _behind(i, convs, kinds)
                and convs[i].sizes[-1] < len(runner.rungs[rung])]

    rung = final + 1
    while rung <= last and (jobs := todo(rung)):
        runner.run([(i, candidates[i].policy) for i in jobs], rung)
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
    """Candidate ``i`` trails the best estimate of its kind by more than both stated errors."""
    c = convs[i]
    if c.error is None or len(c.throughputs) < 3:
        return False
    rivals = [convs[j] for j in convs if kinds[j] == kinds[i] and j != i and convs[j].error is not None
              and len(convs[j].throughputs) >= 3]
    if not rivals:
        return False
    lead = max(rivals, key=lambda r: r.throughputs[-1])
    return (c.throughputs[-1] * (1 + max(c.error, MIN_ERROR))
            < lead.throughputs[-1] * (1 - max(lead.error, MIN_ERROR)))


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
