"""The progress bar of a run: finished requests of all, on stderr.

Silent unless enabled and stderr is a terminal, so logs and captured output stay clean. Rich is
imported only when a bar is shown.
"""

from __future__ import annotations

__all__ = ["Progress"]


class Progress:
    """Rich progress bar on stderr (silent when stderr is not a terminal or when disabled)."""

    def __init__(self, total: int, what: str, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(stderr=True)
            if console.is_terminal:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                    console=console, transient=True)
                self.task = self.bar.add_task(what, total=total)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
