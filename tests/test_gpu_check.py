"""The GPU check's CPU-testable parts: the offline wheel set follows pyproject.toml, and the
script's argument handling. (Its whole run on a CPU, ``benchmarks/gpu_check.sh --device cpu
--tiny``, takes minutes: README, "GPU check".)"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_wheel_set_is_the_projects_dependencies_but_torch():
    out = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_deps.py")], capture_output=True, text=True,
                         check=True).stdout.split()
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    skipped = {"torch", "matplotlib", "tokenizers"}
    assert set(out) >= {d for d in deps if d.split(">")[0].split("=")[0] not in skipped}
    assert not any(d.startswith(tuple(skipped)) for d in out)
    assert {"setuptools>=68", "wheel"} <= set(out) and any(d.startswith("pytest>") for d in out)


def test_gpu_check_rejects_an_unknown_argument_in_one_line():
    run = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--fast"], capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 2
    assert run.stdout.strip().splitlines() == ["gpu_check: unknown argument --fast (use --device cuda|cpu, --tiny)"]
    assert subprocess.run(["bash", "-n", str(REPO / "benchmarks" / "gpu_check.sh")]).returncode == 0
