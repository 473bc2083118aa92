"""Simulations for the planner: on any ``concurrent.futures.Executor`` or in-process, each result kept.

A simulation that fails (a layout that does not fit, a request it cannot serve) becomes a one-line
error in its result. The runner holds one or more nested samples (``rungs``: the search's successive
halving simulates a candidate on a small sample first, ``simulator.extrapolate.nested_samples``);
results are kept per rung. Candidates with the same equivalence key at a rung
(``estimate.equivalence_key``, computed on that rung's sample) run once and share the result.

Executors: by default a local ``ProcessPoolExecutor`` with ``workers`` processes (``None``: every
core), started on the first batch of two or more, each worker given the samples once at start (a job
names its sample by index: 2,000 requests pickled per job cost ~10 ms each way); ``workers=1``
simulates in this process. Any
other ``Executor`` (a ``dask.distributed`` client's ``get_executor()``, a thread pool) may be given:
the runner submits ``simulate_one`` with picklable arguments and never shuts a given executor down.
"""

from __future__ import annotations

import os
from concurrent.futures import FIRST_COMPLETED, Executor, ProcessPoolExecutor, wait
from typing import Callable

from seesaw.scheduling import SchedulerError
from seesaw.core import ModelSpec, NodeSpec, SpecError
from simulator.cost import CostModel
from simulator.extrapolate import steady_points
from simulator.sim import SimulationStopped, default_host_kv_bytes, host_blocks_per_replica, simulate

__all__ = ["SimRunner", "default_workers", "simulate_one"]


def default_workers() -> int:
    """Simulation processes when none are asked for: one per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def simulate_one(model: ModelSpec, node: NodeSpec, policy, requests: list, measured=None,
                 bound: float | None = None, steady: bool = False) -> dict:
    """One simulation's result: makespan, phases, ...; ``{"error": ...}`` if it cannot run;
    ``{"stopped_at_s": t}`` if its makespan exceeds ``bound`` (it stopped at the first event past it).
    ``steady``: also each replica's last admission (``simulator.extrapolate.steady_points``)."""
    try:
        r = simulate(model, node, policy, requests,
                     cost=CostModel(model, node, measured=measured) if measured is not None else None,
                     stop_after_s=None if bound is None else (lambda: bound))
    except (SpecError, SchedulerError) as e:
        return {"error": str(e).splitlines()[0]}
    except SimulationStopped as e:
        return {"stopped_at_s": e.clock_s}
    out = {"makespan_s": r.elapsed_time, "time_by_phase": dict(r.time_by_phase),
           "num_preemptions": r.num_preemptions, "num_transitions": int(r.extra.get("num_transitions", 0))}
    if steady:
        out["steady"] = steady_points(r.steps)
    if "host_kv_peak_usage" in r.extra:      # Seesaw: the most host-pool blocks one replica held
        host = policy.host_kv_bytes if policy.host_kv_bytes is not None else default_host_kv_bytes(model, node)
        out["host_peak_blocks"] = r.extra["host_kv_peak_usage"] * host_blocks_per_replica(model, policy, host)
    return out


_RUNGS: list[list] = []     # in a worker of the runner's own pool: its samples, given once at start


def _init_worker(rungs: list[list]) -> None:
    global _RUNGS
    _RUNGS = rungs


def _simulate_rung(model: ModelSpec, node: NodeSpec, policy, rung: int, measured=None, bound: float | None = None,
                   steady: bool = False) -> dict:
    """``simulate_one`` on sample ``rung`` of this worker's samples (sent once, not with every job)."""
    return simulate_one(model, node, policy, _RUNGS[rung], measured, bound, steady)


class SimRunner:
    """Runs simulations on an executor (module docstring) or in-process and remembers every result.

    rungs: the samples a candidate can be simulated on, smallest first; ``final`` (default the last)
    is the whole sample the search ranks on, rungs after it the growing samples that contenders
    converge on (``simulator.planner.converge``);
    equiv[r]: candidate index -> equivalence key on rung ``r``'s sample (absent or None: unique).
    ``results[r][i]`` is candidate ``i``'s result on rung ``r``; ``same_as[r][i]`` the candidate
    whose simulation it shares. progress(done, planned, what) after each simulation. reuse(i,
    results): a candidate whose finished result on the rung candidate ``i`` provably repeats
    (``search._reuse_rule``), or None.

    Bounded simulations (the whole sample only): with ``bound`` set (``bound(i, results)``: the
    makespan past which candidate ``i``'s result cannot matter, ``search._bound_rule``), a batch is
    submitted lowest ``priority(i)`` first and, on the runner's own pool or in-process, one job per
    worker at a time, so each job's bound counts every result finished before it starts; a job
    that passes its bound ends as ``{"stopped_at_s": t}`` (``simulate_one``)."""

    def __init__(self, model, node, rungs: list[list], *, workers: int | None = None,
                 executor: Executor | None = None, progress: Callable | None = None,
                 equiv: list[dict[int, tuple | None]] | None = None, measured=None,
                 reuse: Callable[[int, dict[int, dict]], int | None] | None = None, final: int | None = None):
        self.model, self.node, self.rungs, self.measured = model, node, rungs, measured
        self.final = len(rungs) - 1 if final is None else final
        self.steady = self.final < len(rungs) - 1     # growing samples: results carry their last admissions
        self.workers = default_workers() if workers is None else workers
        self.progress, self.reuse = progress, reuse
        self.equiv = (equiv or []) + [{} for _ in rungs[len(equiv or []):]]
        self.results: list[dict[int, dict]] = [{} for _ in rungs]
        self.same_as: list[dict[int, int]] = [{} for _ in rungs]
        self._by_key: list[dict[tuple, int]] = [{} for _ in rungs]
        self.executor, self._own = executor, False
        self._pending: list = []
        self.done = 0
        self.planned = 0
        self.by_rung = [0] * len(rungs)        # simulations run per rung
        self.bound: Callable[[int, dict[int, dict]], float] | None = None
        self.priority: Callable[[int], float] | None = None

    def ok(self, i: int, rung: int | None = None) -> bool:
        res = self.results[self.final if rung is None else rung].get(i)
        return res is not None and "makespan_s" in res

    def run(self, jobs: list[tuple[int, object]], rung: int | None = None) -> None:
        """Simulate each (candidate index, policy) on ``rung`` (default the last, the whole sample)
        unless it already was or shares an equivalent candidate's simulation."""
        r = self.final if rung is None else rung
        results, same, by_key, equiv = self.results[r], self.same_as[r], self._by_key[r], self.equiv[r]
        todo, seen = [], set()
        for i, pol in jobs:
            if i in results or i in seen or i in same:
                continue
            key = equiv.get(i)
            if key is not None and key in by_key:
                same[i] = by_key[key]
                continue
            if self.reuse is not None and (j := self.reuse(i, results)) is not None:
                same[i] = j
                continue
            if key is not None:
                by_key[key] = i
            seen.add(i)
            todo.append((i, pol))
        self.planned += len(todo)
        self.by_rung[r] += len(todo)
        reqs = self.rungs[r]
        bounded = self.bound is not None and r == self.final
        if bounded and self.priority is not None:
            todo.sort(key=lambda job: self.priority(job[0]))

        def job_bound(i: int) -> float | None:
            b = self.bound(i, results) if bounded else None
            return None if b is None or b == float("inf") else b

        self._start(len(todo))
        if self.executor is None:
            for i, pol in todo:
                self._done(results, i, pol, simulate_one(self.model, self.node, pol, reqs, self.measured, job_bound(i),
                                                         self.steady))
        else:   # bounded on a local pool: one job per worker in flight, so each starts with the latest bound
            cap = self.workers if bounded and isinstance(self.executor, ProcessPoolExecutor) else len(todo)
            queue, futures = list(reversed(todo)), {}
            while queue or futures:
                while queue and len(futures) < cap:
                    i, pol = queue.pop()
                    fut = self.executor.submit(_simulate_rung if self._own else simulate_one, self.model, self.node,
                                               pol, r if self._own else reqs, self.measured, job_bound(i), self.steady)
                    futures[fut] = (i, pol)
                self._pending = list(futures)
                finished, _ = wait(futures, return_when=FIRST_COMPLETED)
                for fut in finished:
                    self._done(results, *futures.pop(fut), fut.result())
            self._pending = []
        for i, j in same.items():
            if j in results:
                results[i] = results[j]

    def _start(self, jobs: int) -> None:
        """Our own pool, on the first batch of two or more jobs (``workers`` > 1, no executor given)."""
        if self.executor is None and jobs > 1 and self.workers > 1:
            self.executor, self._own = ProcessPoolExecutor(max_workers=self.workers, initializer=_init_worker,
                                                           initargs=(self.rungs,)), True

    def run_rungs(self, jobs: list[tuple[int, object, int]]) -> None:
        """Simulate each (candidate index, policy, rung) not simulated on that rung yet, all at once
        (largest samples first): no bound, no sharing (the growing samples of
        ``simulator.planner.converge``, where a rung's job and the next rung's may run side by side)."""
        todo = sorted({(i, r): (i, pol, r) for i, pol, r in jobs if i not in self.results[r]}.values(),
                      key=lambda job: (-len(self.rungs[job[2]]), job[0]))
        self.planned += len(todo)
        for _, _, r in todo:
            self.by_rung[r] += 1
        self._start(len(todo))
        if self.executor is None:
            for i, pol, r in todo:
                self._done(self.results[r], i, pol, simulate_one(self.model, self.node, pol, self.rungs[r], self.measured,
                                                                 None, True))
            return
        futures = {self.executor.submit(_simulate_rung if self._own else simulate_one, self.model, self.node, pol,
                                        r if self._own else self.rungs[r], self.measured, None, True): (i, pol, r)
                   for i, pol, r in todo}
        self._pending = list(futures)
        while futures:
            finished, _ = wait(futures, return_when=FIRST_COMPLETED)
            for fut in finished:
                i, pol, r = futures.pop(fut)
                self._done(self.results[r], i, pol, fut.result())
        self._pending = []

    def _done(self, results: dict, i: int, pol, res: dict) -> None:
        results[i] = res
        self.done += 1
        if self.progress:
            self.progress(self.done, self.planned, pol.describe())

    def close(self, cancel: bool = False) -> None:
        """Shut down the pool this runner started; ``cancel`` (Ctrl-C, a failure): drop the queued
        simulations instead of waiting for them. A given executor stays up (its queued simulations
        of this runner are cancelled on ``cancel``)."""
        if cancel:
            for fut in self._pending:
                fut.cancel()
        if self.executor is not None and self._own:
            self.executor.shutdown(wait=not cancel, cancel_futures=cancel)
            self.executor = None
