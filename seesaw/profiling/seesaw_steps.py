"""Seesaw's own steps: a whole KV swap step on a replica's ranks (the driver's message, every
rank's ``Prefetcher`` copying its box between its KV cache and a shared host pool, the wait, the
ranks' agreement) by tokens, for each model's box under P_k and T_k; and the re-shard between
them (``reshard.reshard`` from a host weight store, barrier, new runner) by bytes loaded per rank.

Assumes the replica's ranks are ranks 0..k-1 of the profile (one named shared-memory host pool
for all, as under torchrun) and random weights (a re-shard's time depends on bytes, not values).
Why whole steps rather than a memcpy of their bytes: docs/profiling.md.
"""

from __future__ import annotations

import functools
import time
import uuid

import torch
import torch.distributed as dist

from seesaw.engine.model import LocalComm, Shard
from seesaw.engine.runner import ModelRunner
from seesaw.profiling.grid import BLOCK_SIZE, Task, swap_box
from seesaw.profiling.records import Table, center
from seesaw.profiling.timing import Rank
from seesaw.core import CONTROL_MESSAGE_BYTES, ModelSpec

__all__ = ["swap_tables", "reshard_table"]

_SWAP_SEQ_TOKENS = 256  # tokens of each sequence in a timed swap step


def swap_tables(r: Rank, task: Task) -> list[Table]:
    """Seconds per Seesaw swap step on ``task.ranks`` ranks, as the engine runs one
    (``seesaw_driver``): a message from rank 0, every rank queuing its box of the step's
    sequences (``_SWAP_SEQ_TOKENS`` tokens each) on its ``Prefetcher``, a second message (the
    driver's wait), the wait for the copies and the int-id agreement. The host pool is one
    named shared-memory pool for all ranks, as under torchrun. The device KV cache is allocated
    once: the engine's ``KVCache`` is zero-filled at allocation, so its pages are already touched
    when swap-ins land in it after a re-shard. Rank 0's wall time: the agreement ends together
    on every rank."""
    from seesaw.engine.host_kv import HostKVPool, kv_box
    from seesaw.engine.kv import KVCache, block_slots
    from seesaw.engine.prefetch import Prefetcher, ReplicaCompletions

    spec, layout, points, k = task.args["model"], task.args["layout"], task.args["tokens"], task.ranks
    ctrl, bs = r.ctrl[k], BLOCK_SIZE
    layers, heads = kv_box(spec, Shard.of(spec, layout, r.rank))
    top = max(points)
    seq = min(top, _SWAP_SEQ_TOKENS)
    host_blocks = -(-top // bs) + top // seq + 1
    pool_name = [f"seesaw-profile-kv-{uuid.uuid4().hex[:12]}" if r.rank == 0 else None]
    dist.broadcast_object_list(pool_name, src=0, group=ctrl)
    dims = (host_blocks, spec.num_hidden_layers, spec.num_key_value_heads, bs, spec.d_head, r.dtype)
    pool = HostKVPool(*dims[:5], dtype=r.dtype, name=pool_name[0]) if r.rank == 0 else None
    try:
        dist.barrier(group=ctrl)
        if r.rank != 0:
            pool = HostKVPool.attach(pool_name[0], *dims)
        dist.barrier(group=ctrl)
    finally:
        if r.rank == 0:
            pool.unlink()  # the mappings stay; nothing is left in /dev/shm, also if a rank fails
    filled = KVCache(layers, -(-top // bs) + 1, bs, len(heads), spec.d_head, dtype=r.dtype, device=r.device)
    for x in filled.k + filled.v:
        x.normal_()
    pf = Prefetcher(pool, filled, layers, heads, name=f"seesaw-profile-prefetch-{r.rank}")
    agree = ReplicaCompletions(ctrl, int_ids=True)
    msg = torch.zeros(CONTROL_MESSAGE_BYTES, dtype=torch.uint8)

    def step(kind: str, tokens: int) -> None:
        n = min(tokens, seq)
        per_seq = -(-n // bs)
        dist.broadcast(msg, 0, group=ctrl)  # the driver's swap_in / swap_out message
        items = []
        for i in range(max(1, tokens // n)):
            blocks = list(range(i * per_seq, (i + 1) * per_seq))
            items.append((i, blocks, block_slots(blocks, 0, n, bs)))  # as the worker's _slots
        (pf.swap_in_many if kind == "in" else pf.swap_out_many)(items)
        dist.broadcast(msg, 0, group=ctrl)  # its wait for the copies
        agree.update(pf.wait())

    key = swap_box(spec, layout)  # the largest box (uneven stages): every rank's table carries it
    out = []
    try:
        for kind in ("out", "in"):
            fns = {t: functools.partial(step, kind, t) for t in points}
            times = r.slowest(r.measure(fns, k, max_calls=50), k)
            moved = [max(1, t // min(t, seq)) * min(t, seq) for t in points]  # whole sequences
            out.append(Table("swaps", dict(kind=kind, num_layers=key[0], num_kv_heads=key[1], head_dim=spec.d_head,
                                           ranks=k, tokens=moved, time_s=[times[t] for t in points])))
    finally:
        pf.close()
    return out


class _ReplicaComm(LocalComm):
    """The ``dst`` comm of a timed re-shard: only its barrier group (``replica_group``) is used;
    the shard never runs a forward pass."""

    def __init__(self, group):
        self.replica_group = group


def _random_store(spec: ModelSpec, r: Rank):
    from seesaw.engine.hf_config import expected_shapes
    from seesaw.engine.weights import WeightStore

    tensors = {}
    for name, shape in expected_shapes(spec).items():
        x = torch.empty(shape, dtype=r.dtype)
        tensors[name] = x.normal_(0.0, 0.02) if len(shape) > 1 else x.fill_(1.0)
    return WeightStore(spec, {}, tensors)


def reshard_table(r: Rank, task: Task) -> Table:
    """Seconds per re-shard of ``task.args["pair"]`` both ways on ``task.ranks`` ranks, as the
    Seesaw worker runs one: the driver's message, ``reshard.reshard`` from the host weight store
    (barrier included), then a new ``ModelRunner``. Alternating A->B and B->A, slowest rank kept,
    keyed by the bytes the most loaded rank loads. The runner gets a token KV cache: zero-filling
    the engine's cache scales with the run's KV size, not the model's, and is left out (a device
    memset on a GPU; docs/profiling.md)."""
    from seesaw.engine.reshard import reshard
    from seesaw.engine.weights import build_shard

    spec, (a, b), k = task.args["model"], task.args["pair"], task.ranks
    comm = _ReplicaComm(r.ctrl[k])
    store = _random_store(spec, r)
    model = build_shard(store, a, r.rank, comm, dtype=r.dtype, device=r.device)
    msg = torch.zeros(CONTROL_MESSAGE_BYTES, dtype=torch.uint8)
    samples: dict[str, list[float]] = {"ab": [], "ba": []}
    loaded = {"ab": 0, "ba": 0}
    g = r.grid
    sweeps = g.per_pass(g.repeats)
    with torch.inference_mode():
        for sweep in range(g.warmup + sweeps):
            for key, (src, dst) in (("ab", (a, b)), ("ba", (b, a))):
                dist.barrier(group=r.ctrl[k])
                start = time.perf_counter()
                dist.broadcast(msg, 0, group=r.ctrl[k])  # the driver's reshard message
                stats = reshard(model, store, src, dst, r.rank, comm)
                ModelRunner(model, 16, BLOCK_SIZE)  # the worker's new runner (a token KV cache)
                r.sync()
                if sweep >= g.warmup:
                    samples[key].append(time.perf_counter() - start)
                loaded[key] = stats.bytes_loaded
            if sweep >= g.warmup:
                r.tick(2)
    times = r.slowest({key: center(samples[key]) for key in ("ab", "ba")}, k)
    sizes = torch.tensor([loaded["ab"], loaded["ba"]], dtype=torch.float64)
    dist.all_reduce(sizes, op=dist.ReduceOp.MAX, group=r.ctrl[k])
    points = sorted(zip((int(x) for x in sizes.tolist()), (times["ab"], times["ba"])))
    if points[0][0] == points[1][0]:  # the same bytes both ways: one point
        points = [(points[0][0], (points[0][1] + points[1][1]) / 2)]
    return Table("reshards", dict(ranks=k, size_bytes=[p[0] for p in points], time_s=[p[1] for p in points]))
