"""Errors the product raises for bad user input: one line naming the problem, no traceback.

Every layer's own errors (catalog, workload, scheduler, engine) derive from ``SpecError`` so the CLI
maps them all to exit code 2 in one place; ``RunFailed`` is a real run that failed once started
(exit code 1).
"""

from __future__ import annotations


class SpecError(ValueError):
    """Bad user-supplied specification (layout string, profile, plan). One-line message."""


class RunFailed(RuntimeError):
    """A run that failed once its ranks had started (a rank died or timed out). One-line message;
    what finished is already in the output file."""
