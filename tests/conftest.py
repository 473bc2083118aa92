"""Fixtures every test module can use."""

import sys
from types import SimpleNamespace

import pytest


@pytest.fixture
def seesaw(capsys, monkeypatch):
    """Run the console entry point ``seesaw.cli.main`` in-process, as the installed script does:
    ``seesaw(*args, cwd=None)`` -> ``returncode``, ``stdout``, ``stderr``."""
    from seesaw import cli

    def run(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        monkeypatch.setattr(sys, "argv", ["seesaw", *map(str, args)])
        code = 0
        try:
            cli.main()
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        captured = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=captured.out, stderr=captured.err)

    return run
