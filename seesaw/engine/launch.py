"""Launching a run: one process per rank of the layout, each built into a worker; rank 0 drives.

``run_batch`` spawns the ranks locally (``dist.spawn``: file:// rendezvous in a temp dir, gloo on
CPU, NCCL on CUDA) and returns rank 0's ``RunResult`` dict. Under ``torchrun`` (one node or many)
every process calls ``torchrun_job.run_torchrun_rank``, which takes rank 0's ``EngineConfig``
(the other ranks never see the input), joins the job and calls ``rank_main``; Seesaw's host
pools are then one set per node (``host_pools.named_host_pools``). ``rank_main`` picks the driver:
a ``VllmPolicy`` (one static layout) runs ``vllm_driver.Driver`` over ``worker.StepWorker``s; a
``SeesawPolicy`` (``config.seesaw``) runs ``seesaw_driver.SeesawDriver`` over ``SeesawWorker``s, with
comms and KV block counts for both layouts and one host KV pool per replica.

Assumes the process group is initialised before ``rank_main`` and that every rank is given the
same ``EngineConfig`` (under torchrun, rank 0's); only rank 0 needs the requests.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import tempfile
from pathlib import Path

import torch

from seesaw.core import interrupt_on_signals
from seesaw.engine.batch_io import BatchItem
from seesaw.engine.config import EngineConfig, EngineError
from seesaw.engine.control import ControlPlane
from seesaw.engine.dist import TorchComm, spawn
from seesaw.engine.host_pools import make_host_pools, named_host_pools
from seesaw.engine.kv_sizing import agree_num_blocks
from seesaw.engine.model import Shard
from seesaw.engine.runner import ModelRunner
from seesaw.engine.seesaw_driver import SeesawDriver
from seesaw.engine.seesaw_worker import SeesawWorker
from seesaw.engine.tokenizer import load_tokenizer
from seesaw.engine.vllm_driver import Driver
from seesaw.engine.weights import build_shard, load_checkpoint
from seesaw.engine.worker import StepWorker, warm_up

__all__ = ["run_batch", "rank_main", "seesaw_rank_main", "backend_for"]


def backend_for(device: str) -> str:
    """The torch.distributed backend of a device kind: NCCL on CUDA, gloo on CPU."""
    return "nccl" if device == "cuda" else "gloo"


def _load_items(rank: int, requests) -> list[BatchItem] | None:
    if rank != 0:
        return None
    if isinstance(requests, (str, os.PathLike)):
        with open(requests, "rb") as f:
            return pickle.load(f)
    return list(requests)


def _tokenizer(config: EngineConfig):
    """The tokenizer that decodes the outputs (none when nothing is written)."""
    if not config.output:
        return None
    return load_tokenizer(config.model_dir)


def rank_main(rank: int, world_size: int, device, store, config: EngineConfig,
              requests=None, host_pools=None) -> dict | None:
    """Everything one rank does in a run (process group already initialised). Rank 0 drives and
    returns the ``RunResult`` dict; the other ranks serve steps and return None. ``requests``
    (rank 0 only): the ``BatchItem`` list, or the path of a pickle of it. A Seesaw run
    (``config.seesaw``) goes to ``seesaw_rank_main`` with ``host_pools`` (one
    shared-memory ``HostKVPool`` per replica; None under torchrun: named pools)."""
    layout = config.layout
    if world_size != layout.world_size:
        raise EngineError(f"layout {layout} needs {layout.world_size} ranks, the job has {world_size}")
    device = torch.device(device)
    if store is None:
        store = load_checkpoint(config.model_dir, share_memory=False, name=config.model_name)
    items = _load_items(rank, requests)
    if config.seesaw:
        return seesaw_rank_main(rank, device, store, config, items, host_pools)
    comm = TorchComm(layout, rank, device, timeout_s=config.timeout_s)
    plane = ControlPlane(layout, rank, config.timeout_s)
    model = build_shard(store, layout, rank, comm, dtype=config.torch_dtype, device=device)
    num_blocks = agree_num_blocks(config, model, device, comm.control_group, items)
    runner = ModelRunner(model, num_blocks, config.block_size, seed=config.seed)
    worker = StepWorker(runner, comm, plane, config, rank)
    warm_s = warm_up(runner, config, comm.control_group, items)
    if rank != 0:
        worker.serve()
        return None
    driver = Driver(worker, items, config, num_blocks, _tokenizer(config))
    driver.warmup_s = warm_s
    return driver.run()


def seesaw_rank_main(rank: int, device, store, config: EngineConfig, items, host_pools) -> dict | None:
    """One rank of a Seesaw run (called by ``rank_main``): comms of both layouts (groups are built
    once, collectively), the model under ``c_p``, KV block counts per layout, the host pool of the
    rank's replica; rank 0 drives, the others serve."""
    c_p, c_d = config.layout, config.decode_layout
    if c_p.dp != c_d.dp or c_p.world_size != c_d.world_size:
        raise EngineError(f"cannot run {c_p}->{c_d}: both layouts need the same DP degree and world size")
    comm_p = TorchComm(c_p, rank, device, timeout_s=config.timeout_s)
    comm_d = TorchComm(c_d, rank, device, timeout_s=config.timeout_s) if c_d != c_p else comm_p
    plane = ControlPlane([c_p, c_d], rank, config.timeout_s)
    model = build_shard(store, c_p, rank, comm_p, dtype=config.torch_dtype, device=device)
    group = comm_p.control_group
    blocks = {str(c_p): agree_num_blocks(config, model, device, group, items)}
    blocks[str(c_d)] = agree_num_blocks(config, model, device, group, items, shard=Shard.of(store.spec, c_d, rank))
    if host_pools is None:
        host_pools = named_host_pools(config, store.spec, items, rank, group)
    pool = host_pools[comm_p.dp_rank]
    runner = ModelRunner(model, blocks[str(c_p)], config.block_size, seed=config.seed)
    worker = SeesawWorker(runner, {str(c_p): comm_p, str(c_d): comm_d}, plane, config, rank, store, pool, blocks)
    warm_s = warm_up(runner, config, group, items)
    if rank != 0:
        worker.serve()
        return None
    driver = SeesawDriver(worker, items, config, blocks, pool.num_blocks, _tokenizer(config))
    driver.warmup_s = warm_s
    return driver.run()


def _spawned_rank(rank, world_size, device, store, config, requests_path, host_pools=None):
    return rank_main(rank, world_size, device, store, config, requests_path, host_pools)


def run_batch(store, items: list[BatchItem], config: EngineConfig, launch_timeout_s: float | None = None) -> dict:
    """Run ``items`` under ``config.layout`` (Seesaw: ``layout`` -> ``decode_layout``) on local
    ranks (spawned; gloo on CPU, NCCL on CUDA) and return rank 0's ``RunResult`` dict. ``store``:
    a ``WeightStore`` loaded in this process (shared with the ranks) or None (each rank loads
    ``config.model_dir``). Raises ``SpecError`` before starting anything when a Seesaw host pool
    cannot hold a request, ``dist.RankError`` when a rank fails (rank 0's ``EngineError``
    line is its ``last_line``), and ``core.Interrupted`` on SIGINT or SIGTERM (in the main
    thread), once every rank has stopped."""
    backend = backend_for(config.device)
    config = dataclasses.replace(config, launcher_pid=os.getpid())  # rank 0 stops writing if this process dies
    pools = None
    if config.seesaw:
        pools = make_host_pools(config, store.spec if store is not None else None, items)
    with tempfile.TemporaryDirectory(prefix="seesaw-run-") as tmp:
        path = Path(tmp) / "requests.pkl"
        with path.open("wb") as f:
            pickle.dump(items, f, protocol=pickle.HIGHEST_PROTOCOL)
        with interrupt_on_signals():  # SIGINT/SIGTERM: spawn stops the ranks, then Interrupted goes up
            results = spawn(_spawned_rank, config.layout.world_size, (store, config, str(path), pools),
                            backend=backend, timeout_s=launch_timeout_s or 10 * 24 * 3600.0,
                            collective_timeout_s=config.timeout_s, prefer_rank=0)
    return results[0]
