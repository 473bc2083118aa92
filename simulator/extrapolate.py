"""A large workload simulated on a sample, its times scaled to the whole: the one definition that
``simulate``, ``compare``, ``plan`` and ``whatif`` share.

``sample_workload(requests, sample_size, seed)`` keeps at most ``sample_size`` requests
(``sample_requests``: seeded, without replacement, in source order) and returns a ``Sampled``: the
sample, the size of the whole and its token totals. A ``seesaw.workload.Workload`` that is
already a sample of a workload too large to build (``load_workload(sample_size=...)``) says so
itself: it ``represents`` more requests than it holds, with their ``totals``.

Extrapolation scales every time of the sample (makespan, time by phase) by the ratio of the whole
workload's tokens (prompt + output) to the sample's, so throughput in tokens/s is the sample's,
its start-up and final drain included (which makes a long run look slightly slower than it is).

Sampling with a stated error (``converge``): ``simulate`` of a workload larger than its sample
simulates growing nested samples (``growing_sizes``: doubling up to the sample size from at
least 1,000, e.g. 1,250, 2,500, 5,000, 10,000, each inside the next, ``nested_samples``). From the
second size on, the whole workload's makespan is the last sample's plus the rest of the tokens at
the marginal rate between the last two (``marginal_makespan``: start-up and drain counted once).
The marginal rate is measured up to each run's last admission (``steady_points``: per replica, the
end of its last step that prefilled or swapped a sequence in; the drain after it is a few long
requests finishing, whose length varies from sample to sample): between two runs, the work done by
then over the time, summed over the replicas. Measured (LLaMA3.1-70B, ShareGPT, nested samples of
1,000 to 16,000 against a full simulation of 100,000): within 0.6% at 4,000 and more for vLLM D2T4
on 8xA100-80G and 8xH200, within 1.5% for Seesaw on 8xH100 and 8xL40S from 8,000, where the
difference of whole makespans was 2-5% off; LLaMA2-70B on 8xL4: ``benchmarks/sampling_error.py``.
Work done counts recomputed prefills (preemption), so it is scaled to the run's tokens. It stops when two
successive marginal estimates of the whole workload's throughput (three samples at least) agree
within ``CONVERGE_TOL`` (0.5%) or at the sample size; the estimated error is the relative
difference of the last two estimates (``Convergence``; 0 when the last sample is the whole).
``plan`` and ``whatif`` converge their contenders on samples that grow beyond the screening
sample, up to ``converge_pool_size`` (``simulator.planner.converge``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np

from seesaw.sampling import sample_positions

__all__ = ["CONVERGE_MAX", "CONVERGE_TOL", "FIRST_SAMPLE", "Convergence", "Sampled", "balanced_order", "converge",
           "converge_pool_size", "doubling_sizes", "growing_sizes", "halving_sizes", "marginal_makespan",
           "nested_samples", "sample_requests", "sample_workload", "steady_points", "tokens"]

CONVERGE_TOL = 0.005   # two successive throughput estimates this close: converged
FIRST_SAMPLE = 1000    # the first of the growing samples
CONVERGE_MAX = 16_000  # plan/whatif: the largest growing sample (1,000 or 2,000 doubled 4 or 3 times)


def sample_requests(requests: list, sample_size: int | None, seed: int = 0) -> list:
    """At most ``sample_size`` requests drawn without replacement (seeded), in source order."""
    if not sample_size or len(requests) <= sample_size:
        return list(requests)
    return [requests[i] for i in sample_positions(len(requests), sample_size, seed)]


@dataclass(frozen=True)
class Sampled:
    """The requests to simulate and the workload they stand for."""

    requests: list        # the sample (the whole workload when it is small enough)
    num_requests: int     # requests in the whole workload
    prompt_tokens: int    # of the whole workload (a generator's beyond what is built: the sample's mean x N)
    output_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    @property
    def extrapolated(self) -> bool:
        return len(self.requests) < self.num_requests

    @property
    def scale(self) -> float:
        """What a time of the sample is multiplied by to stand for the whole: the token ratio."""
        return self.total_tokens / sum(r.prompt_len + r.output_len for r in self.requests)

    def note(self) -> str:
        return (f"simulated a seeded sample of {len(self.requests):,} of {self.num_requests:,} requests, extrapolated "
                f"to all: times scaled by the token ratio {self.scale:,.1f}x, so throughput is the sample's (start-up and final "
                "drain included: a long run looks slightly slower than it is)")

    def extrapolate(self, result, factor: float | None = None):
        """A ``simulator.sim.SimResult`` of the sample as one of the whole: makespan and time by phase
        scaled (by ``factor``, default ``scale``), counts and tokens of the whole,
        ``extrapolated_from`` = the sample size in its summary. The step and request tables stay
        the sample's."""
        if not self.extrapolated:
            return result
        k = self.scale if factor is None else factor
        return replace(result, elapsed_time=result.elapsed_time * k, num_requests=self.num_requests,
                       total_prompt_tokens=self.prompt_tokens, total_output_tokens=self.output_tokens,
                       time_by_phase={p: v * k for p, v in result.time_by_phase.items()},
                       extra={**result.extra, "extrapolated_from": len(self.requests)})


def sample_workload(requests: list, sample_size: int | None, seed: int = 0) -> Sampled:
    """At most ``sample_size`` of ``requests`` and the whole they stand for (module docstring)."""
    sample = sample_requests(requests, sample_size, seed)
    if hasattr(requests, "totals"):  # a Workload: what it represents (a sample's whole, or itself)
        return Sampled(sample, requests.represents, *requests.totals)
    return Sampled(sample, len(requests), sum(r.prompt_len for r in requests), sum(r.output_len for r in requests))


STRATUM = 16   # nested samples: requests of similar length, one of which each round draws


def nested_samples(requests: list, sizes: list[int], seed: int = 0) -> list[list]:
    """Samples of ``requests`` of the given ascending ``sizes``, each inside the next: the first ``k``
    of one seeded order (``balanced_order``), in source order. A size of ``len(requests)`` or more
    is ``requests`` itself."""
    n = len(requests)
    perm = balanced_order(requests, seed) if any(k < n for k in sizes) else None
    return [list(requests) if k >= n else [requests[i] for i in np.sort(perm[:k]).tolist()] for k in sizes]


def balanced_order(requests: list, seed: int = 0) -> np.ndarray:
    """A seeded order of ``requests`` whose every prefix has about the whole's mix of lengths.

    Sorted by output then prompt length (ties at random), the requests fall into strata of
    ``STRATUM`` neighbours; each round takes one request of every stratum (a random one not taken
    yet), the strata in bit-reversed order so that a part of a round is spread over all lengths.
    A prefix of whole rounds holds the same share of every stratum; each request is equally likely
    at every position. Growing samples then differ in how many requests they hold, hardly in
    their mix: the throughput of nested samples (decode-heavy or prefill-heavy) moves less between
    sizes (measured on LLaMA3.1-70B, ShareGPT: vLLM on 8xL40S, the estimate from 1,000 and 2,000
    requests 0.4% off instead of 5.7%)."""
    n = len(requests)
    rng = np.random.default_rng([seed, 0x5EE5A])
    out = np.fromiter((r.output_len for r in requests), np.int64, n)
    inp = np.fromiter((r.prompt_len for r in requests), np.int64, n)
    by_len = np.lexsort((rng.random(n), inp, out))          # sorted position -> request
    stratum = np.arange(n) // STRATUM
    m = int(stratum[-1]) + 1 if n else 0
    within = np.lexsort((rng.random(n), stratum))            # shuffled inside each stratum
    rank = np.empty(n, np.int64)
    rank[within] = np.arange(n) - stratum[within] * STRATUM  # a request's round in its stratum
    bits = max(1, (m - 1).bit_length())
    rev = np.array([int(f"{i:0{bits}b}"[::-1], 2) for i in range(1 << bits)], np.int64)
    spread = np.empty(m, np.int64)
    spread[rev[rev < m]] = np.arange(m)                      # stratum -> its turn in a round
    return by_len[np.lexsort((spread[stratum], rank))]


def halving_sizes(n: int, smallest: int, rungs: int = 3) -> list[int]:
    """Sample sizes of the search's rungs, ascending: ``n``, ``n/2``, ``n/4``, ... while at least
    ``smallest`` (at most ``rungs`` of them)."""
    sizes = [n]
    while len(sizes) < rungs and sizes[0] // 2 >= smallest:
        sizes.insert(0, sizes[0] // 2)
    return sizes


def tokens(requests: list) -> int:
    """Prompt plus output tokens of ``requests``."""
    return sum(r.prompt_len + r.output_len for r in requests)


def steady_points(steps) -> tuple[tuple[float, int, int], ...]:
    """Per replica (ascending id), (time, work done, work in all) at its last admission: the end of
    its last step that prefilled or swapped a sequence in; work counts prefill tokens plus one per
    decoding sequence per step, recomputed prefills (preemption) included. ``steps``: a
    ``SimResult.steps`` table."""
    if steps is None or not len(steps):
        return ()
    out = []
    for _, s in steps.sort_values("end_s", kind="stable").groupby("replica", sort=True):
        admits = np.flatnonzero(((s["prefill_tokens"] > 0) | (s["kind"] == "swapin")).to_numpy())
        if not len(admits):
            return ()
        work = (s["prefill_tokens"] + s["decode_seqs"]).to_numpy()
        k = admits[-1]
        out.append((float(s["end_s"].iloc[k]), int(work[:k + 1].sum()), int(work.sum())))
    return tuple(out)


def _steady_rate(p0: tuple, p1: tuple) -> float | None:
    """Tokens per second between two runs' last admissions, summed over the replicas: the work done
    by then as a share of the run's tokens (recomputed prefills are work, not tokens); None when a
    point has none or a replica did not move forward."""
    s0, s1 = (p0[2] if len(p0) > 2 else ()), (p1[2] if len(p1) > 2 else ())
    if not s0 or len(s0) != len(s1):
        return None
    k0, k1 = p0[0] / sum(x[2] for x in s0), p1[0] / sum(x[2] for x in s1)    # tokens per unit of work
    rate = 0.0
    for (t0, d0, _), (t1, d1, _) in zip(s0, s1):
        if t1 <= t0 or d1 * k1 <= d0 * k0:
            return None
        rate += (d1 * k1 - d0 * k0) / (t1 - t0)
    return rate


def marginal_makespan(points: list[tuple], target_tokens: int) -> float:
    """A makespan for ``target_tokens`` from (tokens, makespan[, steady points]) of nested samples,
    ascending.

    Two or more points: the last one plus the rest of the tokens at the marginal rate between the
    last two (a run's start-up and final drain are counted once, as in the whole workload); the
    rate between their last admissions (``steady_points``) where both have them, else between
    their makespans; one point: scaled by the token ratio."""
    w1, m1 = points[-1][:2]
    if len(points) < 2:
        return m1 * target_tokens / w1
    w0, m0 = points[-2][:2]
    if w1 <= w0:
        return m1 * target_tokens / w1
    rate = _steady_rate(points[-2], points[-1])
    if rate is not None:
        return m1 + (target_tokens - w1) / rate
    if m1 <= m0:
        return m1 * target_tokens / w1
    return m1 + (target_tokens - w1) * (m1 - m0) / (w1 - w0)


def converge_pool_size(sample_size: int, cap: int = CONVERGE_MAX) -> int:
    """Requests a plan/whatif draws from a large workload to converge its contenders on: ``cap``,
    or the screening sample doubled twice when that is more."""
    return max(cap, 4 * sample_size)


def doubling_sizes(first: int, n: int, cap: int) -> list[int]:
    """``first``, ``2 first``, ... up to ``min(n, cap)``; then ``n`` itself when it is at most ``cap``
    and not reached (the last sample is then the whole)."""
    sizes = [min(first, n)]
    while sizes[-1] * 2 <= min(n, cap):
        sizes.append(sizes[-1] * 2)
    if n <= cap and sizes[-1] < n:
        sizes.append(n)
    return sizes


def growing_sizes(n: int, first: int = FIRST_SAMPLE) -> list[int]:
    """Sample sizes that double up to ``n``: ``n``, ``n/2``, ``n/4``, ... down to the smallest at
    least ``first`` (10,000: 1,250, 2,500, 5,000, 10,000), ascending; each estimate then rests on a
    marginal rate over as many requests as the sample before it."""
    return halving_sizes(n, first, rungs=64)


@dataclass(frozen=True)
class Convergence:
    """The growing samples simulated and the whole workload's throughput estimated after each."""

    sizes: tuple[int, ...]            # requests in each nested sample simulated, ascending
    throughputs: tuple[float, ...]    # whole-workload total tokens/s estimated after each
    tol: float = CONVERGE_TOL
    whole: bool = False               # the last sample is the whole workload: its estimate is exact

    @property
    def error(self) -> float | None:
        """Estimated relative error of the last estimate: its difference from the one before."""
        if self.whole:
            return 0.0
        if len(self.throughputs) < 2:
            return None
        return abs(self.throughputs[-1] - self.throughputs[-2]) / self.throughputs[-1]

    @property
    def converged(self) -> bool:
        """Two successive marginal estimates (three samples or more) agree within ``tol``: the first
        estimate is the smallest sample's scaled throughput, which carries its start-up and drain
        and can agree with the next by chance (arXiv, Seesaw P8->T4P2: 0.13% apart, 8% off)."""
        return self.whole or (len(self.throughputs) >= 3 and self.error <= self.tol)

    def summary(self) -> dict:
        """``sample_size``, ``estimated_error`` (fraction), the sizes and estimates: JSON-ready."""
        e = self.error
        return {"sample_size": self.sizes[-1], "estimated_error": None if e is None else round(e, 6),
                "converged": self.converged, "sample_sizes": list(self.sizes),
                "throughput_estimates": [round(t, 3) for t in self.throughputs]}

    def note(self, num_requests: int) -> str:
        sizes = ", ".join(f"{k:,}" for k in self.sizes)
        if self.error is None:
            return f"simulated a sample of {self.sizes[-1]:,} of {num_requests:,} requests; no error estimate (one sample)"
        how = (f"converged within {100 * self.tol:g}%" if self.converged
               else f"not within {100 * self.tol:g}% at the largest sample (raise --sample-size)")
        return (f"simulated nested samples of {sizes} of {num_requests:,} requests: the throughput estimate "
                f"{how}; estimated error {100 * self.error:.2f}%")


def converge(run: Callable[[list], object], sampled: Sampled, seed: int = 0, tol: float = CONVERGE_TOL,
             first: int = FIRST_SAMPLE):
    """Simulate growing nested samples of ``sampled.requests`` (``run(requests)`` -> ``SimResult``)
    until the whole workload's throughput estimate converges (module docstring). Returns (the last
    sample's result extrapolated to the whole, ``Convergence``); a workload no larger than its
    sample is simulated once, whole, with no error."""
    sample = sampled.requests
    if not sampled.extrapolated:
        result = run(sample)
        return result, Convergence((len(sample),), (sampled.total_tokens / result.elapsed_time,), tol)
    sizes = growing_sizes(len(sample), first)
    points: list[tuple[int, float]] = []
    estimates: list[float] = []
    for reqs in nested_samples(sample, sizes, seed):
        result = run(reqs)
        points.append((tokens(reqs), result.elapsed_time, steady_points(result.steps)))
        whole = sampled.total_tokens
        estimates.append(whole / marginal_makespan(points[-2:], whole))
        if len(estimates) >= 3 and abs(estimates[-1] - estimates[-2]) <= tol * estimates[-1]:
            break
    ratio = sampled.total_tokens / estimates[-1] / points[-1][1]
    part = Sampled(reqs, sampled.num_requests, sampled.prompt_tokens, sampled.output_tokens)
    conv = Convergence(tuple(sizes[:len(estimates)]), tuple(estimates), tol)
    out = part.extrapolate(result, factor=ratio)
    return replace(out, extra={**out.extra, "sampling": conv.summary()}), conv
