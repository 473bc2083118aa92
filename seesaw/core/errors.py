"""Errors the product raises for bad user input: one line naming the problem, no traceback.

Every layer's own errors (catalog, workload, scheduler, engine) derive from ``SpecError`` so the CLI
maps them all to exit code 2 in one place; ``RunFailed`` is a real run that failed once started
(exit code 1). ``Interrupted`` is a SIGINT or SIGTERM turned into an exception by
``interrupt_on_signals`` (exit code 128 + the signal: 130, 143), so that ``finally`` blocks run
(a launcher stops its ranks) and the CLI prints one line; ``RunInterrupted`` is one that stopped a
batch run, with what was saved.
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager


class SpecError(ValueError):
    """Bad user-supplied specification (layout string, profile, plan). One-line message."""


class RunFailed(RuntimeError):
    """A run that failed once its ranks had started (a rank died or timed out). One-line message;
    what finished is already in the output file."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived (``interrupt_on_signals``). A ``BaseException`` like
    ``KeyboardInterrupt``, so ``except Exception`` does not swallow it, but not one, so Typer does
    not turn it into a silent exit. Built from its ``args`` alone (simpy and pickling re-create
    exceptions as ``type(e)(*e.args)``)."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    @property
    def exit_code(self) -> int:
        """The shell's convention: 128 + the signal number (SIGINT 130, SIGTERM 143)."""
        return 128 + self.signum

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}"


class RunInterrupted(Interrupted):
    """A batch run stopped by a signal after its ranks were stopped and its output sealed: ``saved``
    of ``total`` requests are in ``output`` (each once); ``--resume`` runs the rest."""

    def __init__(self, signum: int, saved: int, total: int, output: str):
        BaseException.__init__(self, signum, saved, total, output)
        self.signum, self.saved, self.total, self.output = int(signum), saved, total, output

    def __str__(self) -> str:
        return f"interrupted by {self.signal_name}: {self.saved} of {self.total} requests saved in {self.output}"


@contextmanager
def interrupt_on_signals(signals=(signal.SIGINT, signal.SIGTERM)):
    """While inside, SIGINT and SIGTERM raise ``Interrupted`` in the main thread (once: a signal
    that comes while the first is being handled is ignored, so the clean-up it started finishes).
    The previous handlers come back on exit. Outside the main thread it does nothing (Python
    delivers signals to the main thread only)."""
    if threading.current_thread() is not threading.main_thread() or all(
            getattr(signal.getsignal(s), "raises_interrupted", False) for s in signals):
        yield  # not the main thread, or an outer interrupt_on_signals is in charge
        return
    fired: list[int] = []

    def handler(signum, frame):
        if fired:
            return
        fired.append(signum)
        raise Interrupted(signum)

    handler.raises_interrupted = True
    previous = {s: signal.signal(s, handler) for s in signals}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
