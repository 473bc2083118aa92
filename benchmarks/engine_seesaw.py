"""Seesaw on the real engine: static layouts against dynamic re-sharding, on this machine's CPU.

Workloads (seeded random token prompts, EOS ignored, exact output lengths, as ``vllm bench
throughput`` runs random data):
- prefill-heavy: ``--num-prompts`` prompts of ``--long-len`` tokens, ``--short-len`` new tokens;
- decode-heavy: ``--num-prompts`` prompts of ``--short-len`` tokens, ``--long-len`` new tokens;
- balanced: ``--long-len`` prompt tokens, a quarter as many new tokens (both phases matter: the
  case dynamic re-sharding is for).

Layouts: the tiny model on 2 ranks under T2, P2 and P2->T2; SmolLM2-135M (9 heads, 3 KV heads:
it needs 3 ranks to split by TP) under T3, P3 and P3->T3. Every run goes through
``seesaw.engine.launch.run_batch`` (spawned gloo ranks, one torch thread each); the time is the
driver's measured makespan (model loading and process start excluded). Seesaw runs use the
default host pool (1 GiB, capped at what the workload fills: here it holds every request, so
there is one prefill phase and one re-shard) unless ``--host-kv-gib`` is given.

Per layout: total tokens/s (the median of ``--repeats`` runs, layouts taken round robin; every
run's figure is in the JSON), the ratio to the best static layout of the same model and workload, the
re-shard time (the phase, and the slowest rank's own re-shard), the KV bytes swapped (all ranks
together, and the busiest rank), and the swap stall. The machine is a shared 2-core box, so the
load average is printed with the table: absolute figures move with it, ratios less. The last
stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np


def _items(n: int, prompt_len: int, new_tokens: int, vocab: tuple[int, int], seed: int):
    from seesaw.engine.batch_io import BatchItem

    rng = np.random.default_rng(seed)
    return [BatchItem(f"b{i}", rng.integers(*vocab, prompt_len).tolist(), new_tokens, ignore_eos=True)
            for i in range(n)]


def _run(model_dir, store, items, layout: str, host_kv_gib: float | None, timeout_s: float) -> dict:
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.launch import run_batch
    from seesaw.app.run import parse_run_layout, run_policy

    policy = run_policy(*parse_run_layout(layout), host_kv_gib=host_kv_gib)
    cfg = EngineConfig(policy, model_dir=str(model_dir), timeout_s=timeout_s)
    return run_batch(store, items, cfg)


def _row(model: str, workload: str, layout: str, res: dict) -> dict:
    row = {"model": model, "workload": workload, "layout": layout, "elapsed_s": round(res["elapsed_time"], 3),
           "tokens_per_s": round(res["tokens_per_second"], 2),
           "output_tokens_per_s": round(res["output_tokens_per_second"], 2),
           "time_by_phase": {k: round(v, 3) for k, v in res["time_by_phase"].items() if v}}
    if res["policy"] == "seesaw":
        per_rank = res["swap_bytes_per_rank"]
        row.update(num_transitions=res["num_transitions"], reshard_s=round(res["reshard_time"], 4),
                   reshard_rank_max_s=round(max((max(r["rank_s"]) for r in res["reshards"]), default=0.0), 4),
                   swapped_bytes=int(res["swapped_bytes"]),
                   swap_bytes_busiest_rank=max(v["in"] + v["out"] for v in per_rank.values()),
                   swap_stall_s=round(res["swap_stall_time"], 4))
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="*", default=["tiny", "smollm2-135m"])
    ap.add_argument("--num-prompts", type=int, default=32)
    ap.add_argument("--long-len", type=int, default=256)
    ap.add_argument("--short-len", type=int, default=8)
    ap.add_argument("--smollm2-num-prompts", type=int, default=8, help="SmolLM2 is ~100x slower per token")
    ap.add_argument("--smollm2-long-len", type=int, default=128)
    ap.add_argument("--workloads", nargs="*", default=["prefill-heavy", "decode-heavy", "balanced"])
    ap.add_argument("--host-kv-gib", type=float, default=None)
    ap.add_argument("--repeats", type=int, default=3, help="runs per layout for the tiny model (median reported)")
    ap.add_argument("--smollm2-repeats", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=600.0)
    args = ap.parse_args()

    from seesaw.engine.checkpoint import resolve_model
    from seesaw.engine.weights import load_checkpoint

    plans = {"tiny": (("T2", "P2", "P2->T2"), (0, 256), args.num_prompts, args.long_len),
             "smollm2-135m": (("T3", "P3", "P3->T3"), (100, 49000), args.smollm2_num_prompts,
                              args.smollm2_long_len)}
    repeats = {"tiny": args.repeats, "smollm2-135m": args.smollm2_repeats}
    rows = []
    loads = [os.getloadavg()[0]]
    for name in args.models:
        layouts, vocab, n, long_len = plans[name]
        model_dir = resolve_model(name)
        store = load_checkpoint(model_dir)
        workloads = {"prefill-heavy": (long_len, args.short_len), "decode-heavy": (args.short_len, long_len),
                     "balanced": (long_len, max(args.short_len, long_len // 4))}
        workloads = {k: v for k, v in workloads.items() if k in args.workloads}
        for wl, (p_len, o_len) in workloads.items():
            items = _items(n, p_len, o_len, vocab, args.seed)
            runs: dict[str, list[dict]] = {layout: [] for layout in layouts}
            for _ in range(repeats[name]):  # round robin: load drifts hit every layout alike
                for layout in layouts:
                    res = _run(model_dir, store, items, layout, args.host_kv_gib, args.timeout)
                    assert res["total_output_tokens"] == n * o_len, res["total_output_tokens"]
                    runs[layout].append(res)
                    loads.append(os.getloadavg()[0])
                    print(f"{name} {wl} {layout}: {res['tokens_per_second']:.1f} tok/s", flush=True)
            group = []
            for layout, results in runs.items():
                results.sort(key=lambda r: r["tokens_per_second"])
                row = _row(name, f"{wl} ({n}x{p_len}->{o_len})", layout, results[len(results) // 2])  # median run
                row["tokens_per_s_runs"] = [round(r["tokens_per_second"], 2) for r in results]
                group.append(row)
            best = max(r["tokens_per_s"] for r in group if "->" not in r["layout"])
            for r in group:
                r["vs_best_static"] = round(r["tokens_per_s"] / best, 3)
            rows += group
    load = round(float(np.mean(loads)), 2)
    print(f"\nCPU ({os.cpu_count()} cores, load average ~{load} during the runs), fp32, 1 torch thread per rank; "
          "random prompts, EOS ignored")
    head = (f"{'model':<13}{'workload':<28}{'layout':<8}{'tok/s':>9}{'vs best':>9}{'reshard s':>11}"
            f"{'rank max s':>11}{'swap MB':>9}{'busiest MB':>11}{'stall s':>9}")
    print(head)
    for r in rows:
        s = "->" in r["layout"]
        extra = (f"{r['reshard_s']:>11.3f}{r['reshard_rank_max_s']:>11.3f}{r['swapped_bytes'] / 1e6:>9.2f}"
                 f"{r['swap_bytes_busiest_rank'] / 1e6:>11.2f}{r['swap_stall_s']:>9.3f}") if s else f"{'-':>11}" * 2 + f"{'-':>9}{'-':>11}{'-':>9}"
        print(f"{r['model']:<13}{r['workload']:<28}{r['layout']:<8}{r['tokens_per_s']:>9.1f}{r['vs_best_static']:>9.2f}"
              + extra)
    print(json.dumps({"benchmark": "engine_seesaw", "load_average": load, "cpu_count": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()
