"""The one progress display of the product, on stderr, for work that takes more than a second or
two (simulation, planning, what-if, calibration, profiling, an engine run).

Two renderings of the same counts:
- stderr is a terminal: a transient Rich bar with the count, tokens/s (when the work reports
  tokens), elapsed time and ETA;
- stderr is a file or a pipe: one plain line every ``every_s`` seconds (default 5, or the
  ``SEESAW_PROGRESS_EVERY_S`` environment variable; 0: a line at every update), such as
  ``run T1: 12/64 requests, 1,234 tok/s, ETA 0:41``, and a last line when the work ends well if
  any line was printed. Once the work has reported (``bar(0)`` says it started), a helper thread
  keeps the lines coming while nothing finishes (a long prefill); before that nothing is
  printed, so input checked up front still fails in one line. Work shorter than ``every_s``
  prints nothing.

The total may be unknown at first or change (the planner knows it only after pruning). Call as
``bar(done, total=None, what="", tokens=None)`` (``tokens``: the running token count) or
``bar.advance(n, tokens=k)``; with ``tokens_total`` (the most tokens the work can count: an
engine run counts output tokens, ``rate_label="output tok/s"``) the ETA comes from the token rate,
so it is known before the first request finishes. Rich is imported only when a bar is shown. Used by the CLI and,
inside rank 0's process, by the engine; the use cases (``seesaw.app``) only call callbacks.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Callable, TextIO

__all__ = ["Progress", "DEFAULT_EVERY_S", "format_eta"]

DEFAULT_EVERY_S = 5.0


def format_eta(seconds: float) -> str:
    """``0:41``, ``12:05``, ``1:02:03``."""
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _every_s_from_env() -> float:
    text = os.environ.get("SEESAW_PROGRESS_EVERY_S", "").strip()
    try:
        return max(0.0, float(text)) if text else DEFAULT_EVERY_S
    except ValueError:
        return DEFAULT_EVERY_S


class Progress:
    """``Progress(what, total, unit="requests")`` as a context manager; see the module docstring.

    stream / clock / terminal / heartbeat: for tests (a fake clock, a string buffer, no thread).
    """

    def __init__(self, what: str, total: int | None = None, *, unit: str = "", tokens_total: int | None = None,
                 rate_label: str = "tok/s", every_s: float | None = None,
                 enabled: bool = True, stream: TextIO | None = None, clock: Callable[[], float] = time.monotonic,
                 terminal: bool | None = None, heartbeat: bool = True):
        self.what, self.total, self.unit, self.tokens_total = what, total, unit, tokens_total
        self.rate_label = rate_label
        self.every_s = _every_s_from_env() if every_s is None else every_s
        self.enabled, self.clock, self.heartbeat = enabled, clock, heartbeat
        self.stream = stream
        self.terminal = (self._stream().isatty() if terminal is None else terminal) and enabled
        self.done, self.tokens, self.detail = 0, None, ""
        self.started = False  # the work reported once: the helper thread may print
        self.start = self.last = clock()
        self.lines = 0
        self.bar = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _stream(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    # -- what is shown ------------------------------------------------------------------------
    def rate(self, now: float | None = None) -> float | None:
        """Tokens per second so far, or None when the work counts no tokens (or no time passed)."""
        elapsed = (self.clock() if now is None else now) - self.start
        return self.tokens / elapsed if self.tokens is not None and elapsed > 0 else None

    def eta_s(self, now: float | None = None) -> float | None:
        """Seconds left at the pace so far (of tokens when ``tokens_total`` is known, else of the
        count), or None while the total or the pace is unknown."""
        elapsed = (self.clock() if now is None else now) - self.start
        if self.tokens_total is not None and self.tokens:
            done, total = self.tokens, self.tokens_total
        else:
            done, total = self.done, self.total
        if total is None or done <= 0 or elapsed <= 0:
            return None
        return elapsed * max(0, total - done) / done

    def line(self, now: float | None = None, final: bool = False) -> str:
        """The plain line: ``what: done/total unit, N tok/s, ETA m:ss (detail)``."""
        now = self.clock() if now is None else now
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
        parts = [count + (f" {self.unit}" if self.unit else "")]
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{rate:,.0f} {self.rate_label}")
        if final:
            parts.append(f"done in {format_eta(now - self.start)}")
        else:
            eta = self.eta_s(now)
            parts.append(f"ETA {format_eta(eta)}" if eta is not None else f"{format_eta(now - self.start)} elapsed")
        detail = f" ({self.detail})" if self.detail and not final else ""
        return f"{self.what}: {', '.join(parts)}{detail}"

    # -- updates ------------------------------------------------------------------------------
    def __enter__(self):
        self.start = self.last = self.clock()
        if self.terminal:
            self._start_bar()
        elif self.enabled and self.heartbeat and self.every_s > 0:
            self._thread = threading.Thread(target=self._beat, name="progress", daemon=True)
            self._thread.start()
        return self

    def __call__(self, done: int, total: int | None = None, what: str = "", *, tokens: int | None = None) -> None:
        with self._lock:
            self.started = True
            self.done = done
            if total is not None:
                self.total = total
            if what:
                self.detail = what
            if tokens is not None:
                self.tokens = tokens
            if self.bar is not None:
                self._update_bar()
            else:
                self._maybe_print()

    def advance(self, n: int = 1, *, tokens: int = 0) -> None:
        """``n`` more done (and ``tokens`` more tokens, when the work counts them)."""
        self(self.done + n, tokens=(self.tokens or 0) + tokens if tokens else None)

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.bar is not None:
            if self.total is not None and exc[0] is None:
                self.bar.update(self.task, completed=self.total)
            self.bar.stop()
        elif self.lines and self.enabled and exc[0] is None:
            self._print(self.line(final=True))
        return False

    # -- plain lines --------------------------------------------------------------------------
    def _maybe_print(self) -> None:
        if not self.enabled or self.terminal:
            return
        now = self.clock()
        if now - self.last >= self.every_s:
            self.last = now
            self._print(self.line(now))

    def _print(self, text: str) -> None:
        self.lines += 1
        print(text, file=self._stream(), flush=True)

    def _beat(self) -> None:
        while not self._stop.wait(min(1.0, self.every_s)):
            with self._lock:
                if self.started:
                    self._maybe_print()

    # -- the Rich bar -------------------------------------------------------------------------
    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
        from rich.progress import Progress as Bar

        columns = [TextColumn("{task.description}"), BarColumn(bar_width=24),
                   TextColumn("{task.fields[count]}"), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TextColumn("{task.fields[eta]}")]
        console = Console(file=self.stream, stderr=self.stream is None)
        self.bar = Bar(*columns, console=console, transient=True)
        self.task = self.bar.add_task(self.what, total=self.total, count="", rate="", eta="")
        self._update_bar()
        self.bar.start()

    def _update_bar(self) -> None:
        rate, eta = self.rate(), self.eta_s()
        count = f"{self.done:,}" + (f"/{self.total:,}" if self.total is not None else "")
        desc = self.what + (f" ({self.detail})" if self.detail else "")
        self.bar.update(self.task, completed=self.done, total=self.total, description=desc[:40],
                        count=count + (f" {self.unit}" if self.unit else ""),
                        rate=f"{rate:,.0f} {self.rate_label}" if rate is not None else "",
                        eta=f"ETA {format_eta(eta)}" if eta is not None else "")
