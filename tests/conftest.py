"""Fixtures every test module can use (pytest finds them here; never import them by name).

- ``seesaw``: the one CLI runner, the console entry point run in-process.
- ``ckpt`` / ``store``: the one tiny checkpoint, written as real files and loaded through the real
  loader; module-scoped, so each test module gets its own.
- ``one_torch_thread``: one intra-op torch thread for a test; a module opts in with
  ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``.

Plain helpers (factories, the multi-rank launcher, rank functions) live in ``tests.engine_helpers``
and ``tests.factories``; torch is imported only by the fixtures that need it.
"""

from __future__ import annotations

import sys
from typing import NamedTuple

import pytest


class CliResult(NamedTuple):
    """What a ``seesaw`` run gave: ``r.returncode`` etc., or ``code, out, err = r``."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def seesaw(capsys, monkeypatch):
    """Run the console entry point ``seesaw.cli.main`` in-process, as the installed script does:
    ``seesaw(*args, cwd=None)`` -> ``CliResult(returncode, stdout, stderr)``."""
    from seesaw import cli

    def run(*args, cwd=None) -> CliResult:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["seesaw", *map(str, args)])
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return run


@pytest.fixture
def one_torch_thread():
    """Tiny tensors gain nothing from intra-op threads, and on a shared 2-core machine OpenMP
    barriers waiting on a descheduled thread make every op ~100x slower."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A tiny random LLaMA checkpoint written as safetensors (``engine_helpers.make_checkpoint``)."""
    from tests.engine_helpers import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def store(ckpt):
    """``ckpt`` loaded through the real loader."""
    from seesaw.engine.weights import load_checkpoint

    return load_checkpoint(ckpt)
