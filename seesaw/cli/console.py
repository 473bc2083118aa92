"""Where the CLI writes: results on stdout, progress and notes on stderr, ``--json`` last.

One pair of Rich consoles for every command; tables printed to a pipe or a file are not squeezed
to 80 columns.
"""

from __future__ import annotations

import json
import math
import sys

from rich.console import Console

__all__ = ["out", "err", "print_json", "show", "fmt"]

out = Console(soft_wrap=True)
err = Console(stderr=True)


def _json_default(o):
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


def print_json(obj: dict) -> None:
    """The last stdout line: one JSON object, as nanoGPT-style scripts do."""
    print(json.dumps(obj, default=_json_default))


def show(table) -> None:
    """Print a Rich table; when stdout is not a terminal (a pipe, a file) do not squeeze it to 80 columns."""
    (out if out.is_terminal else Console(file=sys.stdout, width=200, soft_wrap=True)).print(table)


def fmt(v, spec: str) -> str:
    """``format(v, spec)``, or ``-`` for a missing value."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, spec)
