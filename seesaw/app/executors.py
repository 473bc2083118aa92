"""Where the planner's and what-if's simulations run: a ``concurrent.futures.Executor``.

By default the planner starts a local process pool (``simulator.planner.runner``: one process per
core, or ``workers``). ``simulation_executor(dask=ADDRESS)`` connects to a running
``dask.distributed`` scheduler (``seesaw plan --dask tcp://host:8786``, or the ``SEESAW_DASK``
environment variable) and yields its ``Client.get_executor()``, so every simulation of a plan or
a what-if is spread over the cluster's workers; the workers need ``seesaw`` installed (the same
version) to import the simulator. Without ``dask`` installed (the ``seesaw[dask]`` extra) or with
a scheduler that does not answer, one clear ``SpecError`` line.

Several plans at once (the what-if's options): ``shared_executor`` gives them one executor (the one
given, or a local process pool) and ``run_side_by_side`` runs each plan in its own thread on it, so
that one option's last simulations (a few long runs on growing samples, ``simulator.planner.
converge``) overlap the next option's screening instead of leaving cores idle. The local pool's
workers are all forked when it starts, before any thread (``shared_executor``).
"""

from __future__ import annotations

import contextlib
import multiprocessing
from concurrent.futures import FIRST_EXCEPTION, Executor, ProcessPoolExecutor, ThreadPoolExecutor, wait
from typing import Callable, Iterator, TypeVar

from seesaw.core import SpecError

__all__ = ["DASK_ENV", "DASK_CONNECT_TIMEOUT_S", "run_side_by_side", "shared_executor", "simulation_executor"]

T = TypeVar("T")

DASK_ENV = "SEESAW_DASK"
DASK_CONNECT_TIMEOUT_S = 10


@contextlib.contextmanager
def simulation_executor(executor: Executor | None = None, dask: str | None = None) -> Iterator[Executor | None]:
    """The executor to give the planner: ``executor`` as given, a Dask client's for ``dask`` (an
    address such as ``tcp://10.0.0.5:8786``; closed on exit), or None (the planner's local pool)."""
    if executor is not None and dask:
        raise SpecError("give either an executor or a Dask scheduler address, not both")
    if not dask:
        yield executor
        return
    try:
        from dask.distributed import Client
    except ImportError:
        raise SpecError(f"--dask {dask}: dask.distributed is not installed; pip install 'seesaw[dask]'") from None
    try:
        client = Client(dask, timeout=DASK_CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError, ValueError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise SpecError(f"--dask {dask}: cannot reach the Dask scheduler: {why}") from None
    try:
        yield client.get_executor()
    finally:
        client.close()


@contextlib.contextmanager
def shared_executor(executor: Executor | None, workers: int | None,
                    plans: int) -> Iterator[tuple[Executor | None, bool, Callable[[], None]]]:
    """(executor, side by side, stop) for ``plans`` plans: a given executor is shared as is;
    without one, with more than one plan and more than one worker (None: one per core), a local
    process pool of ``workers`` processes, shut down on exit (queued simulations dropped when
    leaving on an error); otherwise (None, False): each plan runs alone, as it would by itself.
    ``stop()`` ends the local pool's workers (every plan waiting on a simulation then fails)."""
    from simulator.planner.runner import default_workers

    if executor is not None:
        yield executor, plans > 1, lambda: None
        return
    n = default_workers() if workers is None else workers
    if plans < 2 or n < 2:
        yield None, False, lambda: None
        return
    # forked (where the platform forks) and all at once, before the plans' threads start: a worker
    # is never forked from a process with threads, and a script without a ``__main__`` guard is not
    # run again in each worker (as spawn or a fork server would)
    fork = "fork" in multiprocessing.get_all_start_methods()
    before = set(multiprocessing.active_children())
    pool = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("fork" if fork else None))
    pool.submit(int).result()    # with fork, the first job starts every worker
    workers = [p for p in multiprocessing.active_children() if p not in before]

    def stop() -> None:
        # end the workers: the pool breaks, so every queued or running simulation fails at once and
        # the plans waiting on them wake (a future cancelled by ``shutdown(cancel_futures=True)``
        # never wakes a ``wait()`` on it: the plans' threads would hang)
        for w in workers:
            w.kill()     # SIGKILL: a forked worker keeps this process's SIGTERM handler

    ok = False
    try:
        yield pool, True, stop
        ok = True
    finally:
        pool.shutdown(wait=ok, cancel_futures=not ok)


def run_side_by_side(fn: Callable[[T], object], items: list[T], side_by_side: bool,
                     on_failure: Callable[[], None] | None = None) -> None:
    """``fn(item)`` for each item: one after the other, or each in its own thread. The first
    failure (or Ctrl-C) calls ``on_failure`` (e.g. to drop the queued simulations, so the other
    threads stop soon), waits for the other threads and is raised."""
    if not side_by_side or len(items) < 2:
        for item in items:
            fn(item)
        return
    threads = ThreadPoolExecutor(max_workers=len(items), thread_name_prefix="seesaw-plan")
    futures = [threads.submit(fn, item) for item in items]
    try:
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = next((f for f in futures if f in done and f.exception() is not None), None)
        if failed is not None:
            raise failed.exception()
    except BaseException:
        if on_failure is not None:
            on_failure()
        for f in futures:
            f.cancel()
        threads.shutdown(wait=True)
        raise
    threads.shutdown(wait=True)
