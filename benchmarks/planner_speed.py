"""Planner speed and regret: LLaMA2-70B on 8xL4 with 2000 ShareGPT requests, and a grid (issues 5, 23).

Times the full plan (closed-form estimate of every candidate, then simulation of the best-estimated
layouts and knob tuning of the best simulated ones in worker processes on every core), counts
candidates simulated versus estimate-only, then runs the exhaustive search over the same space and
reports the regret of the planner's winner and of its best static vLLM layout (0% = the same
makespan as the exhaustive best). The same check runs on a grid of other models, nodes and
workloads (``GRID``, ``--grid-n`` requests each); ``plan_regret`` is the worst winner regret over
the main case and the grid. ``--halving N``: plan with successive halving (smallest sample N).
``--no-bound``: plan without stopping the simulations that cannot change the search (``num_stopped``).

CPU seconds (this process plus its workers: ``RUSAGE_CHILDREN``) are printed beside wall time: on a
shared machine the wall time depends on the load, which is printed too. Issue 23's keys:
``plan_cpu_s`` (target <= 4), ``plan_regret`` (the worst winner regret in %, target 0),
``whatif_wall_s`` (``seesaw whatif`` with no arguments, into a temporary folder; target <= 20 s) and
``whatif_max_error`` (the largest sampling error its options state, a fraction: target ~<= 0.01; the
winners against a slow reference: ``benchmarks/plan_winners.py``).
Last line: one JSON object.

    .venv/bin/python benchmarks/planner_speed.py [--no-exhaustive] [--no-grid] [--no-whatif] [-n 2000] ...
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

from seesaw import catalog as cat
from seesaw.workload import load_workload
from simulator.planner import plan


def _cpu_s() -> float:
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


# (model, GPU, count, workload): other shapes of the regret check
GRID = [("llama2-70b", "l4", 8, "arxiv"), ("llama2-13b", "a10", 4, "sharegpt"), ("codellama-34b", "a10", 4, "arxiv"),
        ("mistral-7b", "l4", 2, "sharegpt")]


def _timed(**kw):
    wall, cpu = time.perf_counter(), _cpu_s()
    result = plan(**kw)
    return result, time.perf_counter() - wall, _cpu_s() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama2-70b")
    ap.add_argument("--gpu", default="l4")
    ap.add_argument("--num-gpus", type=int, default=8)
    ap.add_argument("--workload", default="sharegpt")
    ap.add_argument("-n", "--num-requests", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=None, help="simulation processes (default: every core)")
    ap.add_argument("--halving", type=int, default=None, metavar="N", help="successive halving from N requests")
    ap.add_argument("--no-bound", action="store_true", help="do not stop simulations slower than the best they must beat")
    ap.add_argument("--grid-n", type=int, default=1000, help="requests per grid case")
    ap.add_argument("--no-grid", action="store_true", help="skip the regret check on the grid")
    ap.add_argument("--no-exhaustive", action="store_true", help="skip the exhaustive regret check")
    ap.add_argument("--no-whatif", action="store_true", help="skip timing `seesaw whatif` with no arguments")
    args = ap.parse_args()

    model = cat.load_model(args.model)
    node = cat.make_node(args.gpu, args.num_gpus)
    reqs = load_workload(args.workload, num_requests=args.num_requests, seed=args.seed)
    load = os.getloadavg()[0]
    common = dict(model=model, node=node, requests=reqs, workers=args.workers, seed=args.seed,
                  workload_name=args.workload, halving_min=args.halving, bound=not args.no_bound)
    fast, wall, cpu = _timed(**common)
    n_cand = len(fast.table)
    print(f"{model.name} on {node.name}, {len(reqs)} {args.workload} requests "
          f"(load average {load:.1f} on {os.cpu_count()} cores)")
    print(f"plan: {wall:.1f} s wall, {cpu:.1f} s CPU; {n_cand} candidates: {fast.num_simulated} simulated "
          f"(+{fast.num_shared} sharing an equivalent's simulation; {fast.num_stopped} of them stopped once slower "
          f"than the best they had to beat), {fast.num_estimated} estimate-only "
          f"(pruned); {len(fast.rejected)} layouts rejected")
    w, v = fast.winner, fast.best_vllm
    print(f"winner: {w['candidate']} {w['throughput_tok_s']:,.1f} tok/s ({w['makespan_s']:,.1f} s); "
          f"runner-up (other layout): {fast.plan.runner_up['candidate']} "
          f"({fast.plan.runner_up['worse_by_pct']:.2f}% lower)")
    print(f"best vLLM: {v['candidate']} {v['throughput_tok_s']:,.1f} tok/s; speedup {w['speedup_vs_best_vllm']:.3f}x")
    out = {"model": model.name, "node": node.name, "num_requests": len(reqs), "load_average": round(load, 2),
           "plan_wall_s": round(wall, 2), "plan_cpu_s": round(cpu, 2), "num_candidates": n_cand,
           "num_simulated": fast.num_simulated, "num_shared": fast.num_shared, "num_stopped": fast.num_stopped, "num_pruned": fast.num_estimated,
           "winner": w["candidate"], "winner_tok_s": round(w["throughput_tok_s"], 2),
           "best_vllm": v["candidate"], "best_vllm_tok_s": round(v["throughput_tok_s"], 2),
           "speedup": round(w["speedup_vs_best_vllm"], 4)}
    if not args.no_exhaustive:
        full, ewall, ecpu = _timed(exhaustive=True, **common)
        regret = 100 * (w["makespan_s"] / full.winner["makespan_s"] - 1)
        vregret = 100 * (v["makespan_s"] / full.best_vllm["makespan_s"] - 1)
        print(f"exhaustive: {ewall:.1f} s wall, {ecpu:.1f} s CPU, {full.num_simulated} simulations; best "
              f"{full.winner['candidate']} ({full.winner['makespan_s']:,.1f} s), best vLLM "
              f"{full.best_vllm['candidate']}")
        print(f"regret: winner {regret:.4f}%, best vLLM {vregret:.4f}%")
        out.update(exhaustive_wall_s=round(ewall, 2), exhaustive_cpu_s=round(ecpu, 2),
                   exhaustive_simulations=full.num_simulated, exhaustive_winner=full.winner["candidate"],
                   regret_pct=round(regret, 6), best_vllm_regret_pct=round(vregret, 6), plan_regret=round(regret, 6))
        if not args.no_grid:
            grid = [_grid_case(*case, args) for case in GRID]
            out.update(grid=grid, plan_regret=round(max([regret] + [g["regret_pct"] for g in grid]), 6))
    if not args.no_whatif:
        wall, cpu, error = _whatif_default()
        print(f"seesaw whatif (no arguments): {wall:.1f} s wall, {cpu:.1f} s CPU; largest stated sampling error "
              f"{'-' if error is None else f'{100 * error:.2f}%'}")
        out.update(whatif_wall_s=round(wall, 2), whatif_cpu_s=round(cpu, 2),
                   whatif_max_error=None if error is None else round(error, 5))
    print(json.dumps(out))


def _grid_case(model_name: str, gpu: str, num_gpus: int, workload: str, args) -> dict:
    """The planner's winner against the exhaustive search's for one grid case: regret in %."""
    model, node = cat.load_model(model_name), cat.make_node(gpu, num_gpus)
    reqs = load_workload(workload, num_requests=args.grid_n, seed=args.seed)
    common = dict(model=model, node=node, requests=reqs, workers=args.workers, seed=args.seed, workload_name=workload)
    fast, wall, cpu = _timed(halving_min=args.halving, bound=not args.no_bound, **common)
    full, ewall, ecpu = _timed(exhaustive=True, **common)
    regret = 100 * (fast.winner["makespan_s"] / full.winner["makespan_s"] - 1)
    print(f"grid {model.name} on {node.name}, {len(reqs)} {workload}: plan {cpu:.1f} CPU-s, {fast.num_simulated} "
          f"simulations, winner {fast.winner['candidate']}; exhaustive {ecpu:.1f} CPU-s, {full.num_simulated} "
          f"simulations, best {full.winner['candidate']}; regret {regret:.4f}%", flush=True)
    return {"model": model.name, "node": node.name, "workload": workload, "num_requests": len(reqs),
            "plan_cpu_s": round(cpu, 2), "num_simulated": fast.num_simulated, "num_stopped": fast.num_stopped, "winner": fast.winner["candidate"],
            "exhaustive_cpu_s": round(ecpu, 2), "exhaustive_simulations": full.num_simulated,
            "exhaustive_winner": full.winner["candidate"], "regret_pct": round(regret, 6)}


def _whatif_default() -> tuple[float, float, float | None]:
    """Wall and CPU seconds of ``seesaw whatif`` with no arguments (its report in a temporary folder)
    and the largest sampling error it states (its options' ``estimated_error`` and
    ``vllm_estimated_error``, a fraction)."""
    exe = shutil.which("seesaw", path=os.path.dirname(sys.executable)) or shutil.which("seesaw")
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), _cpu_s()
        subprocess.run([exe, "whatif", "-o", os.path.join(tmp, "report")], check=True, capture_output=True)
        wall, cpu = time.perf_counter() - wall, _cpu_s() - cpu
        with open(os.path.join(tmp, "report", "summary.json")) as f:
            options = json.load(f)["options"]
        errors = [o[k] for o in options for k in ("estimated_error", "vllm_estimated_error") if o.get(k) is not None]
        return wall, cpu, max(errors) if errors else None


if __name__ == "__main__":
    main()
