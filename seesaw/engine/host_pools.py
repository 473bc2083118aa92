"""The host KV pools of a Seesaw run: how many blocks each replica's pool holds, and creating them.

``host_blocks_for`` sizes a replica's pool (``config.host_kv_blocks``, or the policy's
``host_kv_bytes``, default 1 GiB, split over the DP replicas, capped at what the workload can
fill) and refuses, before anything starts, a pool that cannot hold the largest request below
the switch watermark. Spawned ranks get anonymous shared-memory pools made by the launching
process (``make_host_pools``, passed by pickling); under ``torchrun`` (one node) rank 0 creates
named pools in ``/dev/shm`` and the other ranks attach (``named_host_pools``).
"""

from __future__ import annotations

import math
import uuid

import torch.distributed as dist

from seesaw.engine.batch_io import BatchItem
from seesaw.engine.config import EngineConfig
from seesaw.engine.hf_config import read_config, spec_from_config
from seesaw.engine.host_kv import HostKVPool
from seesaw.engine.kv import KVCache
from seesaw.engine.kv_sizing import workload_blocks
from seesaw.core import GiB, SpecError

__all__ = ["host_blocks_for", "make_host_pools", "named_host_pools"]


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


def named_host_pools(config: EngineConfig, spec, items, rank: int, group) -> list[HostKVPool]:
    """torchrun (one node): rank 0 creates the pools in /dev/shm, the others attach by name."""
    info = [None]
    pools = []
    if rank == 0:
        n = host_blocks_for(config, spec, items)
        base = f"seesaw-kv-{uuid.uuid4().hex[:12]}"
        pools = [HostKVPool.for_model(spec, n, config.block_size, config.torch_dtype, name=f"{base}-{d}")
                 for d in range(config.layout.dp)]
        info = [(base, n)]
    dist.broadcast_object_list(info, src=0, group=group)
    base, n = info[0]
    if rank != 0:
        pools = [HostKVPool.attach(f"{base}-{d}", n, spec.num_hidden_layers, spec.num_key_value_heads,
                                   config.block_size, spec.d_head, config.torch_dtype)
                 for d in range(config.layout.dp)]
    dist.barrier(group=group)
    for p in pools:
        p.unlink()  # mappings stay valid; nothing is left in /dev/shm if a rank dies
    return pools
