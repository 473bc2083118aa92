"""The one progress bar of the product: a Rich bar on stderr for long work (simulation, planning,
what-if, profiling, an engine run).

The bar is transient and shows only when stderr is a terminal (and ``enabled``), so logs and
captured output stay clean; with ``every_s`` it prints a plain line that often instead when
stderr is a log file. The total may be unknown at first or change (the planner knows it only
after pruning). Call as ``bar(done, total=None, what="")`` or ``bar.advance()``. Rich is imported
only when a bar is shown. Used by the CLI and, inside rank 0's process, by the engine.
"""

from __future__ import annotations

import sys
import time

__all__ = ["Progress"]


class Progress:
    def __init__(self, what: str, total: int | None = None, *, every_s: float | None = None, eta: bool = False,
                 unit: str = "", enabled: bool = True):
        self.what, self.total, self.every_s, self.unit = what, total, every_s, unit
        self.start = self.last = time.monotonic()
        self.bar = None
        self.done = 0
        self.terminal = sys.stderr.isatty()
        if enabled and self.terminal:
            from rich.console import Console
            from rich.progress import BarColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
            from rich.progress import Progress as Bar

            columns = [TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                       TimeElapsedColumn()] + ([TimeRemainingColumn()] if eta else [])
            self.bar = Bar(*columns, console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(what, total=total)
        elif not enabled:
            self.every_s = None

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __call__(self, done: int, total: int | None = None, what: str = "") -> None:
        self.done = done
        if self.bar is None:
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

    def advance(self, n: int = 1) -> None:
        """One more (or ``n`` more) done."""
        self(self.done + n)

    def __exit__(self, *exc):
        if self.bar is not None:
            if self.total is not None:
                self.bar.update(self.task, completed=self.total)
            self.bar.stop()
        return False
