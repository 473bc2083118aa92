"""The CLI's one map from errors to exit codes: every failure is one line on stderr, never a
traceback.

- 2: bad input (``SpecError`` and everything derived from it: catalog, workload, scheduler,
  checkpoint, plan errors; a missing or unreadable file; a pydantic validation error);
- 1: a batch run that failed once its ranks had started (``RunFailed``);
- 130 / 143: interrupted by SIGINT (Ctrl-C) / SIGTERM (``Interrupted``; a batch run's line says
  what is saved and the exact command that continues it).

SIGINT and SIGTERM raise ``Interrupted`` for the whole command (``core.interrupt_on_signals``):
not ``KeyboardInterrupt``, which Typer would turn into a silent exit 130 before this map runs.
"""

from __future__ import annotations

import shlex
import sys

from pydantic import ValidationError

from seesaw.core import Interrupted, RunFailed, RunInterrupted, SpecError, interrupt_on_signals
from seesaw.report.claim import FolderInUse

__all__ = ["exit_code", "one_line", "resume_command", "run_with_error_map"]


def resume_command(argv: list[str]) -> str:
    """The command line that continues an interrupted ``seesaw run ARGS``: the same, with ``--resume``
    (and without ``--overwrite``, which would throw away what was saved)."""
    args = [a for a in argv[1:] if a != "--overwrite"]
    if "--resume" not in args:
        args.append("--resume")
    return shlex.join(["seesaw", *args])


def one_line(e: BaseException) -> str:
    if isinstance(e, ValidationError):
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ())) or "value"
        return f"{e.title}: {loc}: {first.get('msg')}"
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    if isinstance(e, RunInterrupted):
        return f"{e}; continue with: {resume_command(sys.argv)}"
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def exit_code(e: BaseException) -> int | None:
    """The exit code for ``e``, or None when it is not one of ours to report (a bug: re-raise)."""
    if isinstance(e, (SpecError, FileNotFoundError, IsADirectoryError, PermissionError, ValidationError)):
        return 2
    if isinstance(e, RunFailed):
        return 1
    if isinstance(e, Interrupted):
        return e.exit_code
    if isinstance(e, KeyboardInterrupt):
        return 130
    return None


def run_with_error_map(app) -> None:
    """Run the Typer ``app``; an error the map knows becomes one line and its exit code."""
    try:
        with interrupt_on_signals():
            app()
    except (Exception, KeyboardInterrupt, Interrupted) as e:
        code = exit_code(e)
        if code is None:
            raise
        if isinstance(e, FolderInUse):  # say exactly what to type
            e.again = shlex.join(["seesaw", *sys.argv[1:], "--overwrite"])
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(code)
