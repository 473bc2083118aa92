"""Which requests a seeded draw of ``n`` from a source of ``m`` holds, without building the ``n``.

``load_workload`` draws ``n`` requests from a file of ``m``: without replacement when ``n <= m``;
otherwise every request ``n // m`` times plus a draw without replacement for the rest (copy ``k``
of request ``i``). ``Draw`` is that list as index arithmetic: ``Draw.source(j)`` says which
request and which copy position ``j`` holds, and ``Draw.total(lengths)`` sums a length over all
``n`` positions, so a sample of a billion-request workload costs the sample, not the billion.

``sample_positions(n, k, seed)`` is the one seeded choice of ``k`` of ``n`` positions (sorted,
so a sample keeps the source order) that the planner's ``sample_requests`` also makes: a sample
drawn here from the positions is the sample the planner would draw from the built list.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

__all__ = ["Draw", "sample_positions", "draw_requests", "MAX_BUILT"]

MAX_BUILT = 1_000_000  # with a sample size, a larger workload is sampled, never built (~300 bytes a request)


@dataclass(frozen=True)
class Draw:
    """``n`` positions drawn from ``m`` source requests (see the module docstring)."""

    m: int
    n: int
    picked: np.ndarray | None = None   # n < m: the sorted source indices drawn
    extra: np.ndarray | None = None    # n > m: the sorted source indices of the last, partial copy

    @classmethod
    def of(cls, m: int, n: int | None, rng: np.random.Generator) -> Draw:
        """The draw ``load_workload`` makes (``rng``: seeded with its seed); ``n=None``: all ``m``."""
        if n is None or n == m:
            return cls(m, m)
        if n < m:
            return cls(m, n, picked=np.sort(rng.choice(m, n, replace=False)))
        return cls(m, n, extra=np.sort(rng.choice(m, n % m, replace=False)))

    @property
    def reps(self) -> int:
        """How many whole copies of the source the draw holds (n > m)."""
        return self.n // self.m if self.extra is not None else 0

    def source(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(source index, copy number) of each position (0-based, < n)."""
        j = np.asarray(positions, dtype=np.int64)
        if self.picked is not None:
            return self.picked[j], np.zeros_like(j)
        if self.extra is None:
            return j, np.zeros_like(j)
        whole = self.reps * self.m
        tail = j >= whole
        i = np.where(tail, self.extra[np.minimum(np.maximum(j - whole, 0), max(len(self.extra) - 1, 0))]
                     if len(self.extra) else 0, j % self.m)
        return i, np.where(tail, self.reps, j // self.m)

    def total(self, lengths: np.ndarray) -> int:
        """``lengths`` (one per source request) summed over all ``n`` positions."""
        x = np.asarray(lengths, dtype=np.int64)
        if self.picked is not None:
            return int(x[self.picked].sum())
        if self.extra is None:
            return int(x.sum())
        return int(self.reps * x.sum() + x[self.extra].sum())


def sample_positions(n: int, k: int, seed: int) -> np.ndarray:
    """``k`` of ``n`` positions, without replacement, sorted: ``default_rng(seed).choice(n, k)``.

    numpy draws a small ``k`` of a large ``n`` with Floyd's algorithm: memory ``O(k)``."""
    return np.sort(np.random.default_rng(seed).choice(n, k, replace=False))


def draw_requests(reqs: list, n: int | None, sample_size: int | None = None,
                  seed: int = 0) -> tuple[list, tuple[int, tuple[int, int]] | None]:
    """``n`` of the requests ``reqs`` (dataclasses with ``id``, ``arrival_time_s``, ``prompt_len``,
    ``output_len``) as ``load_workload`` draws them, in source order: (requests, None).

    Copy ``k`` of a request gets id ``<id>#k`` and arrives ``k`` trace spans later. With a
    ``sample_size`` smaller than an ``n`` too large to build (``> MAX_BUILT``), only the requests
    at ``sample_positions(n, sample_size, seed)`` are built: (sample, (n, (prompt, output) tokens
    of all n)).
    """
    draw = Draw.of(len(reqs), n, np.random.default_rng(seed))
    if draw.n == len(reqs) and draw.picked is None:
        return reqs, None
    sampled = sample_size is not None and draw.n > max(sample_size, MAX_BUILT)
    src, copy = draw.source(sample_positions(draw.n, sample_size, seed) if sampled else np.arange(draw.n))
    times = [r.arrival_time_s for r in reqs]
    span = (max(times) - min(times)) * (1 + 1 / max(1, len(reqs) - 1))  # + one mean gap between copies
    out = [reqs[i] if k == 0 else replace(reqs[i], id=f"{reqs[i].id}#{k}", arrival_time_s=reqs[i].arrival_time_s + k * span)
           for i, k in zip(src.tolist(), copy.tolist())]
    if not sampled:
        return out, None
    totals = tuple(draw.total(np.array([getattr(r, f) for r in reqs])) for f in ("prompt_len", "output_len"))
    return out, (draw.n, totals)
