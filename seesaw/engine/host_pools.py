"""The host KV pools of a Seesaw run: how many blocks each replica's pool holds, and creating them.

``host_blocks_for`` sizes a replica's pool (``config.host_kv_blocks``, or the policy's
``host_kv_bytes``, default 1 GiB, split over the DP replicas, capped at what the workload can
fill) and refuses, before anything starts, a pool that cannot hold the largest request below
the switch watermark. Spawned ranks get anonymous shared-memory pools made by the launching
process (``make_host_pools``, passed by pickling). Under ``torchrun`` each node has pools of its
own, named in its ``/dev/shm`` (``named_host_pools``: the node's first rank creates them, the node's
other ranks attach), so KV never crosses nodes between the layouts: ``check_node_pools`` refuses,
before anything starts, a pair whose decode ranks on a node would read KV written on another node.
"""

from __future__ import annotations

import math
import os
import uuid

import torch.distributed as dist

from seesaw.engine.batch_io import BatchItem
from seesaw.engine.config import EngineConfig
from seesaw.engine.hf_config import read_config, spec_from_config
from seesaw.engine.host_kv import HostKVPool, kv_box
from seesaw.engine.kv import KVCache
from seesaw.engine.kv_sizing import workload_blocks
from seesaw.engine.model import Shard
from seesaw.core import GiB, ParallelConfig, SpecError

__all__ = ["host_blocks_for", "make_host_pools", "named_host_pools", "check_node_pools", "node_of_rank"]


def _host_bytes_per_block(spec, config: EngineConfig) -> int:
    elem = config.torch_dtype.itemsize
    return KVCache.bytes_per_block(config.block_size, spec.num_hidden_layers, spec.num_key_value_heads,
                                   spec.d_head, elem)


def host_blocks_for(config: EngineConfig, spec, items: list[BatchItem]) -> int:
    """Host KV blocks per replica: ``config.host_kv_blocks``, or the policy's ``host_kv_bytes``
    (None: 1 GiB) over the DP replicas, capped at what the workload can fill. Raises ``SpecError`` (one line)
    when the pool cannot hold the largest request (prompt + max_tokens) below the switch
    watermark, before anything starts."""
    bs, dp, pol = config.block_size, config.layout.dp, config.policy
    per_block = _host_bytes_per_block(spec, config)
    if config.host_kv_blocks is not None:
        n = int(config.host_kv_blocks)
    else:
        total = GiB if pol.host_kv_bytes is None else float(pol.host_kv_bytes)
        n = int(total / dp // per_block)
        if items:
            n = min(n, max(workload_blocks(items, dp, bs)) + 1)
    if not items or config.layout == config.decode_layout:
        return max(n, 1)
    big = max(items, key=lambda it: it.prompt_len + it.max_tokens)
    tokens = big.prompt_len + big.max_tokens
    need = -(-tokens // bs)
    limit = int(pol.host_full_watermark * n)
    if need > limit:
        blocks = -(-need // pol.host_full_watermark) if pol.host_full_watermark < 1 else need
        gib = blocks * per_block * dp / GiB
        raise SpecError(
            f"host KV pool too small: {n} block(s) of {bs} tokens per replica ({n * per_block / GiB:.3g} GiB "
            f"in all) cannot hold request {big.custom_id!r} ({tokens} tokens, prompt + max_tokens); "
            f"give --host-kv-gib {_round_up(gib)} or more")
    return n


def _round_up(x: float) -> str:
    """``x`` rounded up to 2 significant digits, as text."""
    if x <= 0:
        return "0"
    e = math.floor(math.log10(x)) - 1
    return f"{math.ceil(x / 10**e) * 10**e:.{max(0, -e)}f}"


def make_host_pools(config: EngineConfig, spec, items: list[BatchItem]) -> list[HostKVPool]:
    """One anonymous shared-memory pool per replica (handed to spawned ranks by pickling)."""
    if spec is None:
        spec = spec_from_config(read_config(config.model_dir), config.model_name)
    n = host_blocks_for(config, spec, items)
    return [HostKVPool.for_model(spec, n, config.block_size, dtype=config.torch_dtype)
            for _ in range(config.layout.dp)]


def node_of_rank() -> tuple[int, int]:
    """(this process's node, its rank on the node) in a torchrun job (``GROUP_RANK``, ``LOCAL_RANK``);
    (0, ``RANK``) without them."""
    return int(os.environ.get("GROUP_RANK", 0)), int(os.environ.get("LOCAL_RANK", os.environ.get("RANK", 0)))


def check_node_pools(spec, c_p: ParallelConfig, c_d: ParallelConfig | None, per_node: int) -> None:
    """``SpecError`` (one line) unless a Seesaw pair can run on nodes of ``per_node`` consecutive
    ranks (torchrun numbers a node's ranks consecutively) with one host KV pool per node: every
    (replica, layer, KV head) that a node's ranks read under ``c_d`` is written by the same node's
    ranks under ``c_p``. TP inside a node and PP across keep that (``P4->T2P2`` on nodes of 2)."""
    world = c_p.world_size
    if c_d is None or c_d == c_p or per_node >= world:
        return

    def boxes(layout: ParallelConfig, ranks) -> set[tuple[int, int, int]]:
        out = set()
        for r in ranks:
            layers, heads = kv_box(spec, Shard.of(spec, layout, r))
            out.update((layout.coords(r)[0], layer, h) for layer in layers for h in heads)
        return out

    for node, first in enumerate(range(0, world, per_node)):
        ranks = range(first, min(first + per_node, world))
        missing = boxes(c_d, ranks) - boxes(c_p, ranks)
        if missing:
            d, layer, h = min(missing)
            raise SpecError(
                f"cannot run {c_p}->{c_d} on nodes of {per_node} ranks: under {c_d} node {node} reads the KV of "
                f"layer {layer}, KV head {h} (replica {d}) that another node writes under {c_p}, and each node "
                f"has its own host KV pool; keep a node's layers in both layouts (TP inside a node, PP across)")


def named_host_pools(config: EngineConfig, spec, items, rank: int, group) -> list[HostKVPool]:
    """torchrun: rank 0 sizes the pools and names the run; on every node the first rank
    (``LOCAL_RANK`` 0) creates that node's pools in its ``/dev/shm`` (named after the node, so two
    "nodes" on one machine never collide), the node's other ranks attach by name. All ranks call
    it together (``group``: all ranks). ``check_node_pools`` has checked that no node needs another
    node's KV."""
    node, local = node_of_rank()
    info = [None]
    if rank == 0:
        info = [(f"seesaw-kv-{uuid.uuid4().hex[:12]}", host_blocks_for(config, spec, items))]
    dist.broadcast_object_list(info, src=0, group=group)
    base, n = info[0]
    names = [f"{base}-n{node}-{d}" for d in range(config.layout.dp)]
    pools = []
    if local == 0:
        pools = [HostKVPool.for_model(spec, n, config.block_size, config.torch_dtype, name=name) for name in names]
    dist.barrier(group=group)
    if local != 0:
        pools = [HostKVPool.attach(name, n, spec.num_hidden_layers, spec.num_key_value_heads,
                                   config.block_size, spec.d_head, config.torch_dtype)
                 for name in names]
    dist.barrier(group=group)
    for p in pools:
        p.unlink()  # mappings stay valid; nothing is left in /dev/shm if a rank dies
    return pools
