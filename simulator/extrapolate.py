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
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from seesaw.sampling import sample_positions

__all__ = ["Sampled", "halving_sizes", "marginal_makespan", "nested_samples", "sample_requests", "sample_workload"]


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

    def extrapolate(self, result):
        """A ``simulator.sim.SimResult`` of the sample as one of the whole: makespan and time by phase
        scaled, counts and tokens of the whole, ``extrapolated_from`` = the sample size in its
        summary. The step and request tables stay the sample's."""
        if not self.extrapolated:
            return result
        k = self.scale
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


def nested_samples(requests: list, sizes: list[int], seed: int = 0) -> list[list]:
    """Samples of ``requests`` of the given ascending ``sizes``, each inside the next: the first ``k``
    of one seeded permutation, in source order (each a uniform draw without replacement). A size
    of ``len(requests)`` or more is ``requests`` itself."""
    n = len(requests)
    perm = np.random.default_rng([seed, 0x5EE5A]).permutation(n)
    return [list(requests) if k >= n else [requests[i] for i in np.sort(perm[:k]).tolist()] for k in sizes]


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


def marginal_makespan(points: list[tuple[int, float]], target_tokens: int) -> float:
    """A makespan for ``target_tokens`` from (tokens, makespan) of nested samples, ascending.

    Two or more points: the last one plus the rest of the tokens at the marginal rate between the
    last two (a run's start-up and final drain are counted once, as in the whole workload); one
    point: scaled by the token ratio."""
    w1, m1 = points[-1]
    if len(points) < 2:
        return m1 * target_tokens / w1
    w0, m0 = points[-2]
    if w1 <= w0 or m1 <= m0:
        return m1 * target_tokens / w1
    return m1 + (target_tokens - w1) * (m1 - m0) / (w1 - w0)
