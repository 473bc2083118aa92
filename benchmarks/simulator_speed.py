"""Simulator speed: wall and CPU time to simulate ShareGPT-like batches of LLaMA2-70B on 8xL4.

Targets (issue 23): 10,000 requests in <= 1.0 CPU-s of simulation for the static T4P2 layout
(``sim_cpu_s_10k``) and for Seesaw P8->T4P2 (``seesaw_cpu_s_10k``); 100,000 requests (T4P2) in
<= 10 CPU-s (``sim_cpu_s_100k``). Every case really simulates its N requests (the workload is
drawn with ``sample_size=N``). CPU seconds are this process's (``time.process_time``), best of
``--repeats`` (the 100k case runs once); the load average is printed since the machine is shared.
Prints one line per case; the last line is one JSON object (with the cost model's per-call time).

    .venv/bin/python benchmarks/simulator_speed.py [--repeats N] [--no-100k]
"""

from __future__ import annotations

import argparse
import json
import os
import time

from seesaw.catalog import load_model, load_node
from seesaw.core import SeesawPolicy, VllmPolicy, parse_parallel
from seesaw.workload import load_workload
from simulator.cost import BatchShape, CostModel
from simulator.sim import simulate

CASES = [
    ("vllm T4P2", lambda: VllmPolicy(layout="T4P2"), 2000),
    ("vllm T4P2", lambda: VllmPolicy(layout="T4P2"), 10_000),
    ("seesaw P8->T4P2", lambda: SeesawPolicy(prefill_layout="P8", decode_layout="T4P2"), 2000),
    ("seesaw P8->T4P2", lambda: SeesawPolicy(prefill_layout="P8", decode_layout="T4P2"), 10_000),
    ("vllm T4P2", lambda: VllmPolicy(layout="T4P2"), 100_000),
]
KEYS = {("vllm T4P2", 10_000): "sim_cpu_s_10k", ("seesaw P8->T4P2", 10_000): "seesaw_cpu_s_10k",
        ("vllm T4P2", 100_000): "sim_cpu_s_100k"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per case; the best is reported")
    ap.add_argument("--no-100k", action="store_true", help="skip the 100,000-request case")
    args = ap.parse_args()
    model, node = load_model("llama2-70b"), load_node("8xl4")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f} on {os.cpu_count()} cores")
    rows, keys = [], {}
    for name, make_policy, n in CASES:
        if n > 10_000 and args.no_100k:
            continue
        reqs = load_workload("sharegpt", num_requests=n, seed=0, sample_size=n)
        assert len(reqs) == n, (len(reqs), n)
        best_wall = best_cpu = float("inf")
        for _ in range(args.repeats if n <= 10_000 else 1):
            w0, c0 = time.perf_counter(), time.process_time()
            res = simulate(model, node, make_policy(), reqs)
            best_wall = min(best_wall, time.perf_counter() - w0)
            best_cpu = min(best_cpu, time.process_time() - c0)
        row = {"case": name, "num_requests": n, "wall_s": round(best_wall, 3), "cpu_s": round(best_cpu, 3),
               "num_steps": res.num_steps, "steps_per_s": round(res.num_steps / best_cpu),
               "simulated_s": round(res.elapsed_time, 1), "output_tokens_per_s": round(res.output_tokens_per_second, 1)}
        rows.append(row)
        if (name, n) in KEYS:
            keys[KEYS[name, n]] = row["cpu_s"]
        print(f"{name:18s} {n:6d} requests: {best_wall:6.3f} s wall, {best_cpu:6.3f} s CPU, "
              f"{res.num_steps} steps ({row['steps_per_s']} steps/s CPU); simulated makespan {res.elapsed_time:.0f} s")
    stage_us = _stage_time_call_us(model, node)
    print(f"CostModel.stage_time_s: {stage_us:.2f} us per call (T4P2, a mixed step)")
    print(json.dumps({"benchmark": "simulator_speed", "model": "llama2-70b", "node": "8xl4",
                      "load_average": round(load, 2), **keys, "rows": rows, "stage_time_call_us": round(stage_us, 3)}))


def _stage_time_call_us(model, node, n: int = 20_000) -> float:
    """Wall time of one cost-model call, the simulator's inner loop (best of three rounds)."""
    cm = CostModel(model, node)
    layout = parse_parallel("T4P2")
    shape = BatchShape(prefill_tokens=512, prefill_attn_pairs=512 * 256.5, decode_seqs=64,
                       decode_context_tokens=64_000, sampled_seqs=65)
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(n):
            cm.stage_time_s(layout, 1, shape)
        best = min(best, (time.perf_counter() - start) / n)
    return best * 1e6


if __name__ == "__main__":
    main()
