"""Where the planner's and what-if's simulations run: a ``concurrent.futures.Executor``.

By default the planner starts a local process pool (``simulator.planner.runner``: one process per
core, or ``workers``). ``simulation_executor(dask=ADDRESS)`` connects to a running
``dask.distributed`` scheduler (``seesaw plan --dask tcp://host:8786``, or the ``SEESAW_DASK``
environment variable) and yields its ``Client.get_executor()``, so every simulation of a plan or
a what-if is spread over the cluster's workers; the workers need ``seesaw`` installed (the same
version) to import the simulator. Without ``dask`` installed (the ``seesaw[dask]`` extra) or with
a scheduler that does not answer, one clear ``SpecError`` line.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import Executor
from typing import Iterator

from seesaw.core import SpecError

__all__ = ["DASK_ENV", "DASK_CONNECT_TIMEOUT_S", "simulation_executor"]

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
