"""The CLI's one map from errors to exit codes: every failure is one line on stderr, never a
traceback.

- 2: bad input (``SpecError`` and everything derived from it: catalog, workload, scheduler,
  checkpoint, plan errors; a missing or unreadable file; a pydantic validation error);
- 1: a batch run that failed once its ranks had started (``RunFailed``);
- 130: interrupted.
"""

from __future__ import annotations

import shlex
import sys

from pydantic import ValidationError

from seesaw.core import RunFailed, SpecError
from seesaw.report.claim import FolderInUse

__all__ = ["exit_code", "one_line", "run_with_error_map"]


def one_line(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ())) or "value"
        return f"{e.title}: {loc}: {first.get('msg')}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def exit_code(e: BaseException) -> int | None:
    """The exit code for ``e``, or None when it is not one of ours to report (a bug: re-raise)."""
    if isinstance(e, (SpecError, FileNotFoundError, IsADirectoryError, PermissionError, ValidationError)):
        return 2
    if isinstance(e, RunFailed):
        return 1
    if isinstance(e, KeyboardInterrupt):
        return 130
    return None


def run_with_error_map(app) -> None:
    """Run the Typer ``app``; an error the map knows becomes one line and its exit code."""
    try:
        app()
    except (Exception, KeyboardInterrupt) as e:
        code = exit_code(e)
        if code is None:
            raise
        if isinstance(e, FolderInUse):  # say exactly what to type
            e.again = shlex.join(["seesaw", *sys.argv[1:], "--overwrite"])
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(code)
