"""``--help`` reads at 80 columns: every option of every command is documented, in short lines,
grouped in panels, and no help column is squeezed narrower than 30 characters."""

import re
import typing

import pytest
import typer
from typer.testing import CliRunner

from seesaw.cli import app

MIN_HELP_WIDTH = 30
MAX_HELP_CHARS = 80  # the help text itself, defaults and all: one or two short lines


def _commands():
    """(path, click command) for every leaf command, ``workload describe`` included."""
    root = typer.main.get_command(app)
    todo = [((), root)]
    while todo:
        path, cmd = todo.pop()
        if hasattr(cmd, "commands"):
            todo += [((*path, name), sub) for name, sub in cmd.commands.items()]
        else:
            yield path, cmd


COMMANDS = sorted(_commands(), key=lambda pc: pc[0])
IDS = [" ".join(p) for p, _ in COMMANDS]


def _is_argument(param) -> bool:
    return getattr(param, "param_type_name", "") == "argument"


def _is_number(param) -> bool:
    """An int or float option (or a list of them): Typer keeps the annotation."""
    todo, seen = [param.type_descriptor.annotation], set()
    while todo:
        kind = todo.pop()
        seen.add(kind)
        todo += typing.get_args(kind)
    return bool({int, float} & seen)


def _help_of(param) -> str:
    return (getattr(param, "help", None) or "").strip()


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_every_option_has_short_help(path, cmd):
    for param in cmd.params:
        if param.name == "help":
            continue
        text = _help_of(param)
        assert text, f"{' '.join(path)} {param.opts[0]}: no help"
        assert len(text) <= MAX_HELP_CHARS, f"{' '.join(path)} {param.opts[0]}: help of {len(text)} chars"
        if not _is_argument(param):
            assert getattr(param, "rich_help_panel", None), f"{' '.join(path)} {param.opts[0]}: in no help panel"
        if _is_number(param):
            assert getattr(param, "min", None) is not None, f"{' '.join(path)} {param.opts[0]}: no bounds"


@pytest.mark.parametrize("path,cmd", COMMANDS, ids=IDS)
def test_help_at_80_columns_keeps_a_wide_help_column(path, cmd):
    res = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": "80"})
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert max(len(line) for line in lines) <= 80
    checked = 0
    for param in cmd.params:
        if param.name == "help" or _is_argument(param):
            continue
        name = max(param.opts, key=len)
        first_word = _help_of(param).split()[0]
        rows = [line for line in lines if re.search(rf"^│[ *]+{re.escape(name)}(?=\s)", line)]
        assert rows, f"{' '.join(path)} {name}: not in\n{res.output}"
        row = rows[0]
        col = row.index(first_word, row.index(name) + len(name))
        width = row.rstrip().rindex("│") - 1 - col
        assert width >= MIN_HELP_WIDTH, f"{' '.join(path)} {name}: help column of {width} chars\n{res.output}"
        checked += 1
    assert checked == len([p for p in cmd.params if not _is_argument(p) and p.name != "help"])
