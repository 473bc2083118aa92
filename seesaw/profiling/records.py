"""Named records of a profile run: a timed point (``Point``), a measured table (``Table``), and
how a run's passes are merged into one table per measured table.

Every figure a rank measures is a ``Point`` keyed by its table, its op (or kind) and its shape,
so figures are matched by name, never by their position in a list. A ``Table`` is one table of
``seesaw.core.MeasuredProfile`` (``ops``, ``attention``, ...) as the plain dict its schema
reads. Assumes every pass measures the same tables (same keys, same number of samples a point).
This module is pure Python: no torch.
"""

from __future__ import annotations

import statistics
from collections import Counter
from typing import Hashable, NamedTuple

__all__ = ["Point", "Table", "TABLES", "center", "merge_passes", "merged_as", "median_of"]

# the tables of a measured profile, in the order ``MeasuredProfile`` lists them
TABLES = ("ops", "attention", "collectives", "copies", "step_overhead", "swaps", "reshards")


class Point(NamedTuple):
    """One timed figure: ``table`` (ops, attention, ...), ``op`` (the GEMM, the attention kind,
    the collective, ...) and ``shape`` (its grid coordinates: tokens, (size, context), bytes)."""

    table: str
    op: str
    shape: Hashable


class Table(NamedTuple):
    """One measured table: ``name`` is the profile's field (``TABLES``), ``fields`` the table as
    the schema reads it (``time_s`` the figures, every other field its identity)."""

    name: str
    fields: dict

    @property
    def key(self) -> tuple:
        """The table's identity: its name and every field but ``time_s``."""
        ident = tuple((k, _frozen(v)) for k, v in self.fields.items() if k != "time_s")
        return (self.name, ident)


def _frozen(value):
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple((k, _frozen(v)) for k, v in value.items())
    return value


def center(samples: list[float]) -> float:
    """The figure a table keeps of a point's samples: their mean. An engine step is a sum of
    calls, so its expected time is the sum of the calls' means (docs/profiling.md: why a pass
    keeps means, not medians)."""
    return statistics.fmean(samples)


def median_of(values: list):
    """Element-wise median of equally shaped (nested) lists of numbers."""
    if isinstance(values[0], (list, tuple)):
        return [median_of(list(xs)) for xs in zip(*values)]
    return statistics.median(values)


def _keyed(tables: list[Table]) -> dict[tuple, Table]:
    """``tables`` by key; a key measured twice in one pass gets its occurrence as well."""
    seen: Counter = Counter()
    out = {}
    for t in tables:
        seen[t.key] += 1
        out[(t.key, seen[t.key])] = t
    return out


def merge_passes(passes: list[list[Table]]) -> list[Table]:
    """One table per measured table, matched by key across the passes (each measured every
    table, each point with the same number of samples), in the first pass's order. A point
    keeps the median of the passes' means (with two passes, their mean): a pass's mean keeps
    the calls' tail, and a stall that spoils one pass's few samples of a point is outvoted. The
    passes' means differ by the machine's drift over minutes, for which their median is as
    fair a centre as their mean; it can lean a few percent faster than the mean where the
    passes are skewed (docs/profiling.md)."""
    keyed = [_keyed(p) for p in passes]
    assert all(k.keys() == keyed[0].keys() for k in keyed), "passes measured different tables"
    merged = []
    for key, first in keyed[0].items():
        times = median_of([k[key].fields["time_s"] for k in keyed])
        merged.append(Table(first.name, {**first.fields, "time_s": times}))
    return merged


def merged_as(passes: int) -> str:
    """What a profile's time per point is, for ``passes`` passes (``merge_passes``), in words."""
    return {1: "a mean", 2: "the mean of the passes' means"}.get(passes, "the median of the passes' means")
