"""Placement of a batch of requests on data-parallel replicas (before any scheduling).

Each request goes to the replica with the fewest tokens (prompt + output) so far, so replicas get
similar work; the simulator, the planner's estimate and the engine all place requests this way.
"""

from __future__ import annotations

from seesaw.scheduling.state import SchedulerError

__all__ = ["split_across_replicas"]


def split_across_replicas(requests: list, dp: int) -> list[list]:
    """Assign requests to ``dp`` replicas, each to the one with the fewest tokens so far.

    Deterministic: ties go to the lowest replica index; order within a replica is kept.
    """
    if dp < 1:
        raise SchedulerError(f"dp must be >= 1, got {dp}")
    buckets: list[list] = [[] for _ in range(dp)]
    load = [0] * dp
    for req in requests:
        i = min(range(dp), key=load.__getitem__)
        buckets[i].append(req)
        load[i] += int(req.prompt_len) + int(req.output_len)
    return buckets
