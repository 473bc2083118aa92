"""Startup speed (issue 23 item 5): ``import seesaw`` and ``seesaw --help``, best of N runs.

Target: ``seesaw --help`` under 0.5 s wall (``help_wall_s``). Also reports the CPU seconds of the
help run (children's rusage: wall time on a shared machine depends on the load, printed too) and
``python -X importtime``'s cumulative time of ``import seesaw`` and ``import seesaw.cli``. Last
line: one JSON object.

    .venv/bin/python benchmarks/startup_speed.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time


def _children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _import_s(module: str) -> float:
    """Cumulative import time of ``module`` as ``-X importtime`` reports it (seconds)."""
    err = subprocess.run([sys.executable, "-X", "importtime", "-c", f"import {module}"],
                         capture_output=True, text=True, check=True).stderr
    rows = [m for m in re.finditer(r"import time:\s+\d+ \|\s+(\d+) \| (\S+)", err) if m.group(2) == module]
    return int(rows[-1].group(1)) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    exe = shutil.which("seesaw", path=os.path.dirname(sys.executable)) or shutil.which("seesaw")
    load = os.getloadavg()[0]
    walls, cpus = [], []
    for _ in range(args.repeats):
        w, c = time.perf_counter(), _children_cpu_s()
        subprocess.run([exe, "--help"], capture_output=True, check=True)
        walls.append(time.perf_counter() - w)
        cpus.append(_children_cpu_s() - c)
    imp = {m: min(_import_s(m) for _ in range(args.repeats)) for m in ("seesaw", "seesaw.cli")}
    print(f"load average {load:.1f} on {os.cpu_count()} cores")
    print(f"seesaw --help: best {min(walls):.3f} s wall, {min(cpus):.3f} s CPU (of {args.repeats})")
    print(f"import seesaw {imp['seesaw']:.3f} s, import seesaw.cli {imp['seesaw.cli']:.3f} s (-X importtime)")
    print(json.dumps({"benchmark": "startup_speed", "load_average": round(load, 2), "help_wall_s": round(min(walls), 3),
                      "help_cpu_s": round(min(cpus), 3), "import_seesaw_s": round(imp["seesaw"], 3),
                      "import_cli_s": round(imp["seesaw.cli"], 3)}))


if __name__ == "__main__":
    main()
