"""The CLI's one progress helper: a Rich bar on stderr for long work (simulation, planning,
what-if, profiling).

The bar is transient and shows only when stderr is a terminal; with ``every_s`` it prints a plain
line that often instead when stderr is a log file. The total may be unknown at first or change
(the planner knows it only after pruning). Call as ``bar(done, total=None, what="")``.
"""

from __future__ import annotations

import sys
import time

from seesaw.cli.console import err

__all__ = ["Progress"]


class Progress:
    def __init__(self, what: str, total: int | None = None, *, every_s: float | None = None, eta: bool = False,
                 unit: str = ""):
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.progress import Progress as Bar

        self.what, self.total, self.every_s, self.unit = what, total, every_s, unit
        self.start = self.last = time.monotonic()
        columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                   TimeElapsedColumn()] + ([TimeRemainingColumn()] if eta else [])
        self.bar = Bar(*columns, console=err, transient=True, disable=not err.is_terminal)
        self.task = self.bar.add_task(what, total=total)

    def __enter__(self):
        self.bar.start()
        return self

    def __call__(self, done: int, total: int | None = None, what: str = "") -> None:
        if not err.is_terminal:
            now = time.monotonic()
            if self.every_s is not None and now - self.last >= self.every_s:
                self.last = now
                print(f"{self.what}: {done}/{total if total is not None else self.total}{self.unit}, "
                      f"{now - self.start:.0f} s", file=sys.stderr, flush=True)
            return
        update = {"completed": done}
        if total is not None:
            update["total"] = total
        if what:
            update["description"] = what[:48]
        self.bar.update(self.task, **update)

    def __exit__(self, *exc):
        if self.total is not None:
            self.bar.update(self.task, completed=self.total)
        self.bar.stop()
        return False
