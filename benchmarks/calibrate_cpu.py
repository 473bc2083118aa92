"""Calibration benchmark on CPU: the simulator (measured profile ``cpu-2core``) versus the real
engine on 2 ranks, for T2, P2 and the Seesaw pair P2->T2 on a prefill-heavy (256 in / 8 out) and a
decode-heavy (16 in / 128 out) constant workload: six pairs.

Prints the table, the median and worst absolute relative error of total tokens/s (target: median
<= 10%, worst <= 20%), the planner regret per workload and overall, and as its last line one JSON
object. The machine's load average is printed too: the profile was measured at one load, and
timing on a shared box moves with it; and so is its speed against the profile's
(``calibrate.speed_check`` before every round and after the last: the tiny model's GEMM and layer
tables timed again), with a second prediction per pair at the kept run's speed (the profile's
compute tables scaled by it). The targets are about the plain prediction.

    .venv/bin/python benchmarks/calibrate_cpu.py [--model tiny] [-n 128] [-r 5] [-o bench-calibrate]

128 requests: a prefill-heavy run then has four 8192-token prefill steps, not one. With 32
requests a 256/8 run took ~0.25 s, one prefill step made up most of it, and the same pair's five
runs spread by up to 54% (T2: 22,079-34,051 tok/s); with 128, measured minutes apart, by 11-26%.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--profile", default="cpu-2core")
    ap.add_argument("--layouts", default="T2,P2,P2->T2")
    ap.add_argument("--workloads", default="constant:256/8,constant:16/128")
    ap.add_argument("-n", "--num-requests", type=int, default=128)
    ap.add_argument("-r", "--repeat", type=int, default=5,
                    help="engine runs per pair (in rounds over all pairs), median kept, range reported")
    ap.add_argument("-o", "--output-dir", default="bench-calibrate")
    ap.add_argument("--overwrite", action="store_true", help="replace the earlier run in the -o folder")
    args = ap.parse_args()

    from rich.console import Console

    from seesaw.app import calibrate as cal
    from seesaw.catalog import load_measured
    from seesaw.report import calibration as cal_report

    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()
    wls = cal.parse_workloads(args.workloads)
    rows = cal.calibrate(args.model, args.layouts.split(","), wls, profile=args.profile,
                         num_requests=args.num_requests, repeat=args.repeat, output_dir=Path(args.output_dir),
                         check_speed=True, progress=lambda m: print(m, file=sys.stderr, flush=True),
                         overwrite=args.overwrite)
    prof = load_measured(args.profile)
    meta = {"benchmark": "calibrate_cpu", "model": args.model, "profile": args.profile,
            "profile_load_average": prof.load_average, "load_average_start": load0,
            "load_average_end": os.getloadavg()[0], "num_requests": args.num_requests, "repeat": args.repeat,
            "wall_s": time.perf_counter() - t0}
    summ = cal.write_outputs(rows, Path(args.output_dir), meta)
    Console(width=170).print(cal_report.table(rows))
    for line in cal_report.summary_lines(summ, args.repeat, targets=True):
        print(line)
    print(f"load average {load0:.1f} -> {meta['load_average_end']:.1f} (profile measured at "
          f"{prof.load_average:.1f}); wall {meta['wall_s']:.0f}s")
    print(json.dumps({k: v for k, v in summ.items() if k != "rows"}, default=str))


if __name__ == "__main__":
    main()
