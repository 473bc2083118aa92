"""KV cache sizing: how many KV blocks each rank holds, agreed by every rank of the run.

A rank's budget is ``config.num_blocks`` blocks, or its share of device memory (CUDA: free memory
less ``1 - gpu_memory_utilization`` of the device and room for activations) or of
``config.kv_cache_bytes`` (CPU, default 1 GiB), capped by what the workload could ever hold at
once (every request at full length, per DP replica as the driver splits them). The ranks take the
smallest count (an all-reduce), so every replica's block manager matches every rank's cache.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from seesaw.engine.config import EngineConfig, EngineError
from seesaw.engine.kv import KVCache
from seesaw.scheduling import split_across_replicas

__all__ = ["replica_buckets", "kv_blocks_for_budget", "workload_blocks", "agree_num_blocks"]


def replica_buckets(items: list, dp: int) -> list[list]:
    """The workload's requests (``BatchItem``s) as the driver splits them over ``dp`` replicas."""
    return split_across_replicas(list(items), dp)


def kv_blocks_for_budget(model, budget_bytes: float, block_size: int, shard=None) -> int:
    """How many KV blocks of ``block_size`` tokens fit ``budget_bytes`` on this rank (holding
    ``shard``, default the model's own)."""
    spec, shard = model.spec, shard or model.shard
    per_block = KVCache.bytes_per_block(block_size, len(shard.layers), len(shard.kv_heads(spec)),
                                        spec.d_head, model.dtype.itemsize)
    return int(budget_bytes // per_block)


def _rank_kv_budget(config: EngineConfig, device: torch.device) -> float:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # leave (1 - utilization) of the device, plus room for activations and logits
        act = config.max_num_batched_tokens * 64 * 1024
        return max(0.0, free - (1 - config.gpu_memory_utilization) * total - act)
    return config.kv_cache_bytes if config.kv_cache_bytes is not None else 1024**3


def workload_blocks(items: list, dp: int, block_size: int) -> list[int]:
    """KV blocks every request of each DP replica needs at full length, summed per replica."""
    need = [0] * dp
    for d, bucket in enumerate(replica_buckets(items, dp)):
        need[d] = sum(-(-(r.prompt_len + r.output_len) // block_size) for r in bucket)
    return need


def agree_num_blocks(config: EngineConfig, model, device, group, items: list | None,
                      shard=None) -> int:
    """Every rank's KV block count: ``config.num_blocks``, or the smallest that fits any rank's
    budget, capped by what the workload could ever hold at once (rank 0 knows the workload).
    ``shard``: size for this rank's shard under another layout (Seesaw's decode layout)."""
    if config.num_blocks is not None:
        return config.num_blocks
    n = kv_blocks_for_budget(model, _rank_kv_budget(config, device), config.block_size, shard)
    if items is not None:
        need = max(workload_blocks(items, config.layout.dp, config.block_size))
        n = min(n, need + need // 100 + 1)  # + the scheduler's 1% admission watermark
    x = torch.tensor([n], dtype=torch.long)
    dist.all_reduce(x, op=dist.ReduceOp.MIN, group=group)
    if int(x) < 1:
        raise EngineError("no memory left for the KV cache on some rank; lower the model size or raise the budget")
    return int(x)
