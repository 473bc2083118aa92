"""Simulations for the planner: in-process or in a pool of worker processes, each result kept.

A simulation that fails (a layout that does not fit, a request it cannot serve) becomes a one-line
error in its result. Candidates with the same equivalence key (``estimate.equivalence_key``)
run once and share the result.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable

from seesaw.scheduling import SchedulerError
from seesaw.core import ModelSpec, NodeSpec, SpecError
from simulator.cost import CostModel
from simulator.sim import simulate

__all__ = ["SimRunner", "simulate_one"]


def simulate_one(model: ModelSpec, node: NodeSpec, policy, requests: list, measured=None) -> dict:
    try:
        r = simulate(model, node, policy, requests,
                     cost=CostModel(model, node, measured=measured) if measured is not None else None)
    except (SpecError, SchedulerError) as e:
        return {"error": str(e).splitlines()[0]}
    return {"makespan_s": r.elapsed_time, "time_by_phase": dict(r.time_by_phase),
            "num_preemptions": r.num_preemptions, "num_transitions": int(r.extra.get("num_transitions", 0))}


class SimRunner:
    """Runs simulations in a process pool (started on the first batch of two or more) or in-process,
    and remembers every result. Candidates with the same ``equiv`` key run once."""

    def __init__(self, model, node, requests, workers: int, progress: Callable | None, equiv: dict[int, tuple],
                 measured=None):
        self.model, self.node, self.requests, self.measured = model, node, requests, measured
        self.workers, self.progress, self.equiv = workers, progress, equiv
        self.results: dict[int, dict] = {}
        self.same_as: dict[int, int] = {}
        self._by_key: dict[tuple, int] = {}
        self.pool: ProcessPoolExecutor | None = None
        self.done = 0
        self.planned = 0

    def run(self, jobs: list[tuple[int, object]]) -> None:
        todo = []
        for i, pol in jobs:
            if i in self.results or any(i == j for j, _ in todo):
                continue
            key = self.equiv.get(i)
            if key is not None and key in self._by_key:
                self.same_as[i] = self._by_key[key]
                continue
            if key is not None:
                self._by_key[key] = i
            todo.append((i, pol))
        self.planned += len(todo)
        if len(todo) > 1 and self.workers > 1 and self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=self.workers)
        if self.pool is None:
            for i, pol in todo:
                self._done(i, pol, simulate_one(self.model, self.node, pol, self.requests, self.measured))
        else:
            futures = {self.pool.submit(simulate_one, self.model, self.node, pol, self.requests, self.measured):
                       (i, pol) for i, pol in todo}
            for fut in as_completed(futures):
                self._done(*futures[fut], fut.result())
        for i, j in self.same_as.items():
            if j in self.results:
                self.results[i] = self.results[j]

    def _done(self, i: int, pol, res: dict) -> None:
        self.results[i] = res
        self.done += 1
        if self.progress:
            self.progress(self.done, self.planned, pol.describe())

    def close(self, cancel: bool = False) -> None:
        """Shut the pool down; ``cancel`` (Ctrl-C, a failure): drop the queued simulations instead of
        waiting for them."""
        if self.pool is not None:
            self.pool.shutdown(wait=not cancel, cancel_futures=cancel)
