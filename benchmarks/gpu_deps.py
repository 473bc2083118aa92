"""The Python packages ``gpu_check.sh`` installs offline beside PyTorch, one a line (pip ``-r``):
the project's dependencies from pyproject.toml but torch and the two the check never imports
(matplotlib: plots; tokenizers: text in and out), plus pytest and pytest-timeout (the GPU tests)
and the build requirements (setuptools, wheel: the editable install). About 35 MB of wheels for
CPython 3.12 on x86-64 Linux; with matplotlib and tokenizers it would be ~69 MB, more than the
device tool carries (64 MiB with the working tree)."""

import sys
import tomllib
from pathlib import Path

SKIP = ("torch", "matplotlib", "tokenizers")

pyproject = tomllib.loads((Path(__file__).resolve().parent.parent / "pyproject.toml").read_text())
project = pyproject["project"]
deps = [d for d in project["dependencies"] if not d.replace(" ", "").startswith(SKIP)]
tests = [d for d in project["optional-dependencies"]["dev"] if d.startswith(("pytest>", "pytest-timeout"))]
sys.stdout.write("\n".join(deps + tests + pyproject["build-system"]["requires"]) + "\n")
