"""Sampling error: extrapolated throughput against a full simulation of 100,000 requests (issue 23).

For two workloads (ShareGPT-like and arXiv summarisation) and two policies (static vLLM T4P2 and
Seesaw P8->T4P2) of LLaMA2-70B on 8xL4, simulates the whole workload once, then as ``seesaw
simulate`` does for a large ``-n`` (``simulator.extrapolate.converge``: growing nested samples
doubling up to ``--sample-size`` from at least 1,000, until two successive estimates agree within
0.5%), for each sample size given. Prints per case the extrapolated and full throughput, the actual
error, the error the sampling stated and the CPU seconds of each. Key ``extrapolation_error``: the
worst actual error (a fraction) at the first sample size (target <= 0.01); per size in
``extrapolation_error_by_sample_size``. Last line: one JSON object.

    .venv/bin/python benchmarks/sampling_error.py [-n 100000] [--sample-size 10000,32000]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from seesaw import catalog as cat
from seesaw.app.simulate import build_policy
from seesaw.app.simulate import simulate as app_simulate
from seesaw.core import SIMULATE_SAMPLE_SIZE
from seesaw.workload import load_workload
from simulator.sim import simulate

CASES = [("sharegpt", "T4P2"), ("sharegpt", "P8->T4P2"), ("arxiv", "T4P2"), ("arxiv", "P8->T4P2")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="llama2-70b")
    ap.add_argument("--gpu", default="l4")
    ap.add_argument("--num-gpus", type=int, default=8)
    ap.add_argument("-n", "--num-requests", type=int, default=100_000)
    ap.add_argument("--sample-size", default=f"{SIMULATE_SAMPLE_SIZE},32000",
                    help="comma-separated sample caps (the first gives extrapolation_error)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    caps = [int(x) for x in args.sample_size.split(",")]
    model, node = cat.load_model(args.model), cat.make_node(args.gpu, args.num_gpus)
    print(f"{model.name} on {node.name}, {args.num_requests:,} requests (load average {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} cores)")
    cases, worst = [], {c: 0.0 for c in caps}
    for workload, layout in CASES:
        reqs = load_workload(workload, num_requests=args.num_requests, seed=args.seed)
        policy = build_policy(layout)
        cpu = time.process_time()
        full = simulate(model, node, policy, list(reqs))
        full_cpu = time.process_time() - cpu
        case = {"workload": workload, "policy": f"{policy.kind} {layout}", "full_tok_s": round(full.tokens_per_second, 3),
                "full_cpu_s": round(full_cpu, 2), "by_sample_size": {}}
        for cap in caps:
            cpu = time.process_time()
            done = app_simulate(model=model, node=node, policy=policy, requests=reqs, workload=workload,
                                seed=args.seed, sample_size=cap)
            ext_cpu = time.process_time() - cpu
            conv = done.convergence
            err = abs(done.result.tokens_per_second / full.tokens_per_second - 1)
            worst[cap] = max(worst[cap], err)
            case["by_sample_size"][str(cap)] = {
                "extrapolated_tok_s": round(done.result.tokens_per_second, 3), "error": round(err, 5),
                "stated_error": None if conv.error is None else round(conv.error, 5), "converged": conv.converged,
                "sample_sizes": list(conv.sizes), "cpu_s": round(ext_cpu, 2)}
            print(f"{workload:9s} {case['policy']:18s} cap {cap:>6,}: full {full.tokens_per_second:8.1f} tok/s "
                  f"({full_cpu:5.1f} CPU-s), extrapolated {done.result.tokens_per_second:8.1f} from "
                  f"{conv.sizes[-1]:,} ({ext_cpu:4.1f} CPU-s): error {100 * err:.2f}%, stated "
                  f"{'-' if conv.error is None else f'{100 * conv.error:.2f}%'}"
                  f"{'' if conv.converged else ' (not converged)'}", flush=True)
        cases.append(case)
    print(json.dumps({"model": model.name, "node": node.name, "num_requests": args.num_requests,
                      "extrapolation_error": round(worst[caps[0]], 5), "sample_size": caps[0],
                      "extrapolation_error_by_sample_size": {str(c): round(w, 5) for c, w in worst.items()},
                      "cases": cases}))


if __name__ == "__main__":
    main()
