"""One rank of a ``torchrun`` job, on one node of one or many: how it learns the run and joins.

``run_torchrun_rank`` is what ``seesaw run`` calls in every process of the job (``RANK``,
``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT`` set):

- **Bound to its agent.** torchrun starts each rank in a session of its own, so a killed agent
  (even ``kill -9``) would leave its ranks serving until the run ended; each rank is bound to its
  parent, the agent (``lifecycle.bind_to_launcher``), and dies with it. SIGINT stays with the
  rank: rank 0 seals the output on a signal as a spawned run's launcher does.
- **The run comes from rank 0.** Only rank 0 reads the input, checks it and plans (on its node,
  which holds the input and gets the output). It posts its ``EngineConfig`` (pickled; None:
  nothing to run) in the job's store (torchrun's own, at ``MASTER_ADDR:MASTER_PORT``; a plain
  ``env://`` job's is hosted by rank 0) under a key of this run and restart. The other ranks wait
  for it there for as long as the store answers, however long rank 0 takes to load the weights,
  tokenize the input or plan: a wait bounded by the collective timeout would end a job whose
  rank 0 is only slow. A store that stops answering (rank 0's node is gone) ends the wait at once.
- **Then everyone joins** the process group through that store, with the collective timeout,
  and runs ``launch.rank_main`` (rank 0 drives and returns the result; the others serve and
  return None). Any failed collective or store operation becomes an ``EngineError``: one line
  naming this rank, its node and what it was doing.
"""

from __future__ import annotations

import os
import pickle
import time
from datetime import timedelta

import torch.distributed as dist

from seesaw.engine.config import EngineConfig, EngineError, reason
from seesaw.engine.dist import init_process
from seesaw.engine.host_pools import node_of_rank
from seesaw.engine.launch import backend_for, rank_main
from seesaw.engine.lifecycle import bind_to_launcher

__all__ = ["run_torchrun_rank", "run_key", "wait_for_run", "POLL_S"]

POLL_S = 0.2  # a waiting rank asks the store this often whether rank 0 posted the run


def run_key() -> str:
    """The store key of this job's run: one per torchrun run id and restart."""
    return "seesaw/run/{}/{}".format(os.environ.get("TORCHELASTIC_RUN_ID", "job"),
                                     os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def _job_store(rank: int, world: int, timeout_s: float) -> dist.TCPStore:
    """The job's store: torchrun's agent hosts it (all ranks are clients); in a plain ``env://``
    job (no agent store) rank 0 hosts it, as ``init_process_group`` would."""
    agent = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
    return dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                         is_master=rank == 0 and not agent, timeout=timedelta(seconds=timeout_s),
                         wait_for_workers=False)


def wait_for_run(store: dist.TCPStore, key: str) -> EngineConfig | None:
    """Rank 0's config, once posted (``check`` polls: a timed-out ``wait`` logs C++ warnings);
    a store that stops answering raises ``DistNetworkError``. Counts this rank as having read it."""
    while not store.check([key]):  # rank 0 is still loading, reading or planning
        time.sleep(POLL_S)
    config = pickle.loads(store.get(key))
    store.add(key + "/read", 1)
    return config


def _wait_for_readers(store: dist.TCPStore, key: str, world: int, timeout_s: float) -> None:
    """Rank 0 with nothing to run: let the other ranks read that before this process (which may
    host the store) goes; a rank that never comes is not waited for past ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while store.add(key + "/read", 0) < world - 1 and time.monotonic() < deadline:
        time.sleep(0.05)


def run_torchrun_rank(store, items, config: EngineConfig | None, timeout_s: float = 120.0):
    """Run this process's rank of the torchrun job (see the module docstring). Rank 0 passes the
    weights it loaded, the requests and its ``EngineConfig`` (None: nothing to run) and gets the
    result dict; the other ranks pass None for all three (``timeout_s`` from their command line,
    to reach the store) and get None."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    node, _ = node_of_rank()
    if "TORCHELASTIC_RUN_ID" in os.environ:  # started by torchrun's agent
        bind_to_launcher(os.getppid(), ignore_sigint=False)
    if config is not None:
        timeout_s = config.timeout_s
    stage = "reaching the job's store"
    try:
        job = _job_store(rank, world, timeout_s)
        if rank == 0:
            job.set(run_key(), pickle.dumps(config, protocol=pickle.HIGHEST_PROTOCOL))
        else:
            stage = "waiting for rank 0's run"
            config = wait_for_run(job, run_key())
        if config is None:
            if rank == 0 and world > 1:
                _wait_for_readers(job, run_key(), world, timeout_s)
            return None
        stage = "joining the job"
        job.set_timeout(timedelta(seconds=config.timeout_s))
        dev = init_process(rank, world, None, backend_for(config.device), config.timeout_s, store=job)
        stage = "running"
        return rank_main(rank, world, dev, store, config, items)
    except EngineError:
        raise
    except dist.DistNetworkError as e:
        if stage != "waiting for rank 0's run":
            raise EngineError(f"rank {rank} of {world} (node {node}): {stage} failed: {reason(e)}") from None
        raise EngineError(f"rank {rank} of {world} (node {node}): the job's store closed before rank 0 posted the "
                          "run: rank 0 or its node stopped (its own error is in node 0's log)") from None
    except (RuntimeError, TimeoutError) as e:  # a DistError (store, gloo, NCCL) or a collective's timeout
        raise EngineError(f"rank {rank} of {world} (node {node}): {stage} failed: {reason(e)}") from None
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
