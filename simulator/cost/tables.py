"""Measured tables: a ``seesaw profile`` indexed for look-ups, interpolated monotone in log-log.

``Curve`` (time by one size) and ``Surface`` (time by two sizes) interpolate log time over log
size between measured points, after making noisy means non-decreasing; below the grid they clamp
to the smallest time (a latency floor), above it they grow in proportion to the size (every table
here becomes throughput bound). ``MeasuredTables`` finds the table of an op, attention kind,
collective, copy, swap or re-shard; a table measured with the wanted number of busy ranks wins,
else the nearest count. No roofline here: ``simulator.cost.measured`` decides what falls back.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from typing import Sequence

from seesaw.core import MeasuredProfile

__all__ = ["Curve", "MeasuredTables", "Surface", "pooled_curve"]


def _running_max(values: Sequence[float]) -> list[float]:
    out, top = [], 1e-15
    for v in values:
        top = v if v > top else top
        out.append(top)
    return out


def _isotonic(values: Sequence[float]) -> list[float]:
    """Closest non-decreasing sequence in least squares (pool adjacent violators): noisy means
    become monotone without one outlier lifting everything after it; monotone input is kept."""
    blocks: list[list[float]] = []  # [sum, count]
    for v in values:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            total, count = blocks.pop()
            blocks[-1][0] += total
            blocks[-1][1] += count
    return _running_max([total / count for total, count in blocks for _ in range(int(count))])


def _locate(log_axis: list[float], lx: float) -> tuple[int, float]:
    """Cell index i and fraction f in [0, 1] of ``lx`` on a log grid (clamped to the grid)."""
    n = len(log_axis)
    if n == 1 or lx <= log_axis[0]:
        return 0, 0.0
    if lx >= log_axis[-1]:
        return n - 2, 1.0
    i = bisect_right(log_axis, lx) - 1
    return i, (lx - log_axis[i]) / (log_axis[i + 1] - log_axis[i])


class Curve:
    """Time by size from a measured table: linear interpolation of log time over log size.

    Noisy means are made non-decreasing first (isotonic regression), so the curve is monotone.
    Below the smallest size the time is the smallest one (a latency floor); above the largest
    it grows in proportion to the size (every table here becomes throughput bound: GEMM rows,
    bytes, context tokens), which keeps it monotone and continuous.
    """

    __slots__ = ("xs", "ys", "_lx", "_ly")

    def __init__(self, sizes: Sequence[float], times: Sequence[float]):
        self.xs = [float(x) for x in sizes]
        self.ys = _isotonic(times)
        self._lx = [math.log(x) for x in self.xs]
        self._ly = [math.log(y) for y in self.ys]

    def __call__(self, x: float) -> float:
        xs = self.xs
        if x <= xs[0]:
            return self.ys[0]
        if x >= xs[-1]:
            return self.ys[-1] * x / xs[-1]
        i, f = _locate(self._lx, math.log(x))
        return math.exp(self._ly[i] + f * (self._ly[i + 1] - self._ly[i]))


class Surface:
    """Time by two sizes from a measured grid ``z[i][j]`` at ``(xs[i], ys[j])``: bilinear in log
    space, made non-decreasing along both axes first (isotonic, then running maxima); clamped below, proportional above (on each
    axis separately), like ``Curve``."""

    __slots__ = ("xs", "ys", "z", "_lx", "_ly", "_lz")

    def __init__(self, xs: Sequence[float], ys: Sequence[float], z: Sequence[Sequence[float]]):
        self.xs = [float(x) for x in xs]
        self.ys = [float(y) for y in ys]
        rows = [_isotonic(r) for r in z]  # along y
        cols = [_isotonic(c) for c in zip(*rows)]  # then along x
        # pooling along x may break rows where columns pooled differently; running maxima along
        # both axes restore monotonicity (a running max along x keeps rows non-decreasing)
        rows = [_running_max(r) for r in zip(*cols)]
        cols = [_running_max(c) for c in zip(*rows)]
        self.z = [list(r) for r in zip(*cols)]
        self._lx = [math.log(x) for x in self.xs]
        self._ly = [math.log(y) for y in self.ys]
        self._lz = [[math.log(v) for v in r] for r in self.z]

    def __call__(self, x: float, y: float) -> float:
        scale = 1.0
        if x > self.xs[-1]:
            scale, x = x / self.xs[-1], self.xs[-1]
        if y > self.ys[-1]:
            scale, y = scale * y / self.ys[-1], self.ys[-1]
        i, fx = _locate(self._lx, math.log(max(x, self.xs[0])))
        j, fy = _locate(self._ly, math.log(max(y, self.ys[0])))
        z = self._lz
        i1, j1 = min(i + 1, len(z) - 1), min(j + 1, len(z[0]) - 1)
        lo = z[i][j] + fy * (z[i][j1] - z[i][j])
        hi = z[i1][j] + fy * (z[i1][j1] - z[i1][j])
        return scale * math.exp(lo + fx * (hi - lo))


def pooled_curve(points: dict[float, list[float]]) -> Curve:
    """One curve through measured points by size, the mean where several tables share a size."""
    xs = sorted(points)
    return Curve(xs, [sum(points[x]) / len(points[x]) for x in xs])



class MeasuredTables:
    """A measured profile indexed for look-ups; tables measured under the wanted number of ranks
    win, else the nearest."""

    def __init__(self, profile: MeasuredProfile):
        self.profile = profile
        self._ops: dict[tuple, list[tuple[int, Curve]]] = {}
        for t in profile.ops:
            self._ops.setdefault((t.op, tuple(t.dims)), []).append((t.ranks, Curve(t.tokens, t.time_s)))
        self._attn: dict[tuple, list[tuple[int, Surface]]] = {}
        for a in profile.attention:
            key = (a.kind, a.num_heads, a.num_kv_heads, a.head_dim)
            self._attn.setdefault(key, []).append((a.ranks, Surface(a.sizes, a.context_tokens, a.time_s)))
        self._comm = {(c.op, c.ranks): Curve(c.size_bytes, c.time_s) for c in profile.collectives}
        self._copy = {c.kind: Curve(c.size_bytes, c.time_s) for c in profile.copies}
        self._steps = [(s.vocab_size, s.ranks, Curve(s.seqs, s.time_s)) for s in profile.step_overhead]
        self._swaps = {(t.kind, t.num_layers, t.num_kv_heads, t.head_dim, t.ranks): Curve(t.tokens, t.time_s)
                       for t in profile.swaps}
        # every box's swaps of one kind on k ranks make one curve by the bytes a rank moves, and
        # every model's re-shards on k ranks one by the bytes a rank loads (same bytes: mean)
        swaps: dict[tuple[str, int], dict[float, list[float]]] = {}
        for t in profile.swaps:
            per_token = 2 * t.num_layers * t.num_kv_heads * t.head_dim * profile.dtype_bytes  # K and V
            for n, sec in zip(t.tokens, t.time_s):
                swaps.setdefault((t.kind, t.ranks), {}).setdefault(n * per_token, []).append(sec)
        self._swap_bytes = {k: pooled_curve(pts) for k, pts in swaps.items()}
        reshards: dict[int, dict[float, list[float]]] = {}
        for t in profile.reshards:
            for b, sec in zip(t.size_bytes, t.time_s):
                reshards.setdefault(t.ranks, {}).setdefault(b, []).append(sec)
        self._reshards = {k: pooled_curve(pts) for k, pts in reshards.items()}

    @staticmethod
    def _nearest(found: list | None, ranks: int):
        if not found:
            return None
        return min(found, key=lambda rc: (abs(rc[0] - ranks), rc[0]))[1]

    def op(self, op: str, dims: tuple[float, ...], ranks: int = 1) -> Curve | None:
        return self._nearest(self._ops.get((op, tuple(int(round(d)) for d in dims))), ranks)

    def op_exact(self, op: str, dims: tuple[float, ...], ranks: int) -> Curve | None:
        """An op table measured under exactly ``ranks`` ranks (collectives), else None."""
        found = self._ops.get((op, tuple(int(round(d)) for d in dims))) or []
        return next((c for k, c in found if k == ranks), None)

    def attention(self, kind: str, heads: float, kv_heads: int, head_dim: int, ranks: int) -> Surface | None:
        return self._nearest(self._attn.get((kind, int(round(heads)), kv_heads, head_dim)), ranks)

    def comm(self, op: str, ranks: int) -> Curve | None:
        return self._comm.get((op, ranks))

    def comm_ranks(self, op: str) -> list[int]:
        """The rank counts a collective ``op`` was measured on, in the profile's order."""
        return [r for (o, r) in self._comm if o == op]

    def handoff(self) -> Curve | None:
        """One stage's activations to the next: the hand-off between busy ranks where measured
        (CPU), else half a ping-pong."""
        return self._comm.get(("handoff", 2)) or self._comm.get(("send_recv", 2))

    def copy(self) -> Curve | None:
        """Host<->device copies: the slower of h2d and d2h where measured, else host->host."""
        both = [self._copy[k] for k in ("h2d", "d2h") if k in self._copy]
        if len(both) == 2:
            return both[0] if both[0].ys[-1] / both[0].xs[-1] >= both[1].ys[-1] / both[1].xs[-1] else both[1]
        return both[0] if both else self._copy.get("h2h")

    def swap(self, kind: str, box: tuple[int, int, int], ranks: int) -> Curve | None:
        """A Seesaw swap step ("out" / "in") of a rank box (layers, KV heads, head_dim) on
        ``ranks`` ranks, by tokens, where measured exactly."""
        return self._swaps.get((kind, *box, ranks))

    def swap_bytes(self, kind: str, ranks: int) -> Curve | None:
        """Swap steps of ``kind`` by the bytes each rank moves, every measured box pooled, on
        ``ranks`` ranks (else the nearest count)."""
        found = [(k, c) for (knd, k), c in self._swap_bytes.items() if knd == kind]
        return self._nearest(found, ranks)

    def reshard(self, ranks: int) -> Curve | None:
        """Re-shards by bytes loaded per rank, measured on ``ranks`` ranks (else the nearest)."""
        return self._nearest(list(self._reshards.items()), ranks)

    def step(self, vocab_size: int, ranks: int = 1) -> Curve | None:
        if not self._steps:
            return None
        return min(self._steps, key=lambda v: (abs(math.log(v[0] / vocab_size)), abs(v[1] - ranks), v[0], v[1]))[2]
