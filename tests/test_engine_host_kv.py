"""Host KV pool: block allocator, shared memory, layout conversion inside the swap copies
(bitwise, for prefill/decode layout pairs including replicated KV heads), the background
prefetcher, and a multi-rank prefill under ``c_p`` -> swap-out -> re-shard -> swap-in -> decode
under ``c_d`` against the single-process model."""

import os
import pickle
import threading
import time
import uuid
from multiprocessing.reduction import ForkingPickler

import pytest
import torch

from seesaw.engine.host_kv import (
    HostBlockAllocator, HostKVFull, HostKVPool, kv_box, kv_writer, swap_in, swap_in_many, swap_out,
    swap_out_many,
)
from seesaw.engine.kv import BlockManager, KVCache
from seesaw.engine.model import Shard
from seesaw.engine.prefetch import PrefetchError, Prefetcher, ReplicaCompletions
from seesaw.engine.runner import ModelRunner
from seesaw.engine.hf_config import spec_from_config
from seesaw.engine.weights import build_shard, load_checkpoint
from seesaw.core import parse_parallel
from seesaw.engine.tiny import tiny_config
from tests.engine_helpers import make_checkpoint, random_prompts, run_ranks

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

TINY = spec_from_config(tiny_config())  # 4 layers, 4 query / 2 KV heads, d 16
# SmolLM2-like head counts (3 KV heads) on a small model: 6 layers, 6 query / 3 KV heads
SMOLISH = spec_from_config(tiny_config(num_hidden_layers=6, hidden_size=96, num_attention_heads=6,
                                       num_key_value_heads=3, intermediate_size=192))


# --------------------------------------------------------------------------------------------
# allocator and pool


def test_host_allocator_tables_free_and_full():
    host = HostBlockAllocator(num_blocks=5, block_size=4)
    assert host.allocate("a", 9) == [0, 1, 2]
    assert host.allocate("b", 4) == [3]
    assert host.num_free_blocks == 1 and host.num_used_blocks == 4 and host.num_tokens["a"] == 9
    with pytest.raises(HostKVFull):
        host.allocate("c", 5)
    with pytest.raises(ValueError, match="already holds"):
        host.allocate("a", 1)
    host.free("a")
    host.free("unknown")
    assert host.allocate("c", 12) == [0, 1, 2] and "a" not in host.block_tables


def test_pool_layout_and_sizes():
    pool = HostKVPool.for_model(TINY, num_blocks=3, block_size=8)
    assert pool.shape == (3, 4, 2, 2, 8, 16) and pool.data.is_shared()
    assert pool.bytes_per_block == KVCache.bytes_per_block(8, 4, 2, 16, 4) == pool.nbytes // 3
    clone = pickle.loads(ForkingPickler.dumps(pool))  # what a spawned rank receives
    clone.data[2, 1, 0, 1, 3, 5] = 7.0
    assert pool.data[2, 1, 0, 1, 3, 5] == 7.0  # same pages


def test_named_pool_attach_and_unlink():
    name = f"seesaw-test-kv-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    pool = HostKVPool(2, 3, 2, 4, 8, torch.bfloat16, name=name)
    try:
        with pytest.raises(FileExistsError):
            HostKVPool(2, 3, 2, 4, 8, torch.bfloat16, name=name)  # never clobbers a live pool
        other = HostKVPool.attach(name, 2, 3, 2, 4, 8, torch.bfloat16)
        other.data[1, 2, 1, 1, 3, 7] = 2.5
        assert pool.data[1, 2, 1, 1, 3, 7] == 2.5
        assert pickle.loads(pickle.dumps(pool)).data[1, 2, 1, 1, 3, 7] == 2.5  # re-opened by name
        assert pool.data.sum() == 2.5  # created zeroed
    finally:
        pool.unlink()
    assert not HostKVPool.path_of(name).exists()
    with pytest.raises(FileNotFoundError):
        HostKVPool.attach(name, 2, 3, 2, 4, 8)


def test_kv_writer_picks_one_rank_per_replicated_head():
    for layout, writers in [("T4", [True, False, True, False]), ("T2", [True, True]), ("P2", [True, True])]:
        cfg = parse_parallel(layout)
        assert [kv_writer(TINY, Shard.of(TINY, cfg, r)) for r in range(cfg.world_size)] == writers
    t6 = parse_parallel("T6")  # 3 KV heads over 6 ranks
    assert [kv_writer(SMOLISH, Shard.of(SMOLISH, t6, r)) for r in range(6)] == [True, False] * 3


# --------------------------------------------------------------------------------------------
# layout conversion, every rank of a layout emulated in one process


def _reference_kv(spec, lengths, seed=0):
    """Random per-sequence KV: {seq: (K, V)} each [layers, n, kv_heads, d]."""
    g = torch.Generator().manual_seed(seed)
    shape = lambda n: (spec.num_hidden_layers, n, spec.num_key_value_heads, spec.d_head)  # noqa: E731
    return {s: (torch.randn(shape(n), generator=g), torch.randn(shape(n), generator=g))
            for s, n in lengths.items()}


def _device_cache(spec, shard, lengths, block_size, num_blocks=64):
    """A rank's cache and block manager, sequences allocated interleaved (scattered slots)."""
    layers, heads = kv_box(spec, shard)
    cache = KVCache(layers, num_blocks, block_size, len(heads), spec.d_head)
    blocks = BlockManager(num_blocks, block_size)
    for chunk in range(0, max(lengths.values()), 3):
        for s, n in lengths.items():
            if chunk < n:
                blocks.allocate(s, min(3, n - chunk))
    return cache, blocks


PAIRS = [
    (TINY, "P2", "T2"), (TINY, "T2", "P2"), (TINY, "P4", "T4"), (TINY, "T4", "P4"),
    (TINY, "T2P2", "T4"), (TINY, "T4", "T2P2"), (TINY, "P4", "T2P2"),
    (SMOLISH, "P3", "T3"), (SMOLISH, "T3", "P3"), (SMOLISH, "P6", "T6"), (SMOLISH, "T6", "T3P2"),
    (SMOLISH, "T3P2", "P6"),
]


@pytest.mark.parametrize("batched", [False, True], ids=["per-seq", "batched"])
@pytest.mark.parametrize("spec,c_p,c_d", PAIRS, ids=[f"{s.num_key_value_heads}kv-{p}->{d}" for s, p, d in PAIRS])
def test_swap_out_under_prefill_layout_swap_in_under_decode_layout_is_bitwise(spec, c_p, c_d, batched):
    """Each c_p rank holds its (layers, heads) box of the KV in its own cache and writes it to
    the pool (replicated heads: one writer); each c_d rank reads its box into a cache with another
    block size. Host blocks of 3 tokens, device blocks of 4 and 5: tails and padding everywhere.
    ``batched``: every rank copies all the sequences in one ``swap_out_many`` / ``swap_in_many``
    call (a padded tail between sequences), as the engine's Seesaw steps do."""
    lengths = {"a": 11, "b": 1, "c": 7, "d": 3}
    ref = _reference_kv(spec, lengths)
    pool = HostKVPool.for_model(spec, num_blocks=16, block_size=3)
    host = HostBlockAllocator(16, 3)
    tables = {s: host.allocate(s, n) for s, n in lengths.items()}
    cp = parse_parallel(c_p)
    for rank in range(cp.world_size):
        shard = Shard.of(spec, cp, rank)
        layers, heads = kv_box(spec, shard)
        cache, blocks = _device_cache(spec, shard, lengths, block_size=4)
        for s, n in lengths.items():
            slots = blocks.slots(s, 0, n)
            for layer in layers:
                cache.write(layer, slots, ref[s][0][layer, :, heads.start:heads.stop],
                            ref[s][1][layer, :, heads.start:heads.stop])
            if kv_writer(spec, shard) and not batched:
                swap_out(cache, slots, pool, tables[s], layers, heads)
        if kv_writer(spec, shard) and batched:
            seqs = [(blocks.slots(s, 0, n), tables[s]) for s, n in lengths.items()]
            assert swap_out_many(cache, seqs, pool, layers, heads) == 2 * len(layers) * 22 * len(heads) * 16 * 4
    cd = parse_parallel(c_d)
    for rank in range(cd.world_size):
        shard = Shard.of(spec, cd, rank)
        layers, heads = kv_box(spec, shard)
        cache, blocks = _device_cache(spec, shard, lengths, block_size=5)
        if batched:
            seqs = [(tables[s], blocks.slots(s, 0, n)) for s, n in lengths.items()]
            assert swap_in_many(pool, seqs, cache, layers, heads) == 2 * len(layers) * 22 * len(heads) * 16 * 4
        for s, n in lengths.items():
            slots = blocks.slots(s, 0, n)
            if not batched:
                assert swap_in(pool, tables[s], cache, slots, layers, heads) == 2 * len(layers) * n * len(heads) * 16 * 4
            for layer in layers:
                k, v = cache.read(layer, slots)
                assert torch.equal(k, ref[s][0][layer, :, heads.start:heads.stop]), (rank, s, layer)
                assert torch.equal(v, ref[s][1][layer, :, heads.start:heads.stop]), (rank, s, layer)


def test_swap_rejects_mismatched_boxes():
    cache = KVCache(range(0, 2), 4, 4, 1, 16)
    pool = HostKVPool.for_model(TINY, num_blocks=4, block_size=4)
    slots = torch.arange(6)
    with pytest.raises(ValueError, match="do not fit"):
        swap_out(cache, slots, pool, [0], range(0, 2), range(0, 1))
    with pytest.raises(ValueError, match="layers"):
        swap_out(cache, slots, pool, [0, 1], range(0, 3), range(0, 1))
    with pytest.raises(ValueError, match="heads"):
        swap_in(pool, [0, 1], cache, slots, range(0, 2), range(0, 2))
    assert swap_out(cache, slots[:0], pool, [], range(0, 2), range(0, 1)) == 0


# --------------------------------------------------------------------------------------------
# prefetcher


def _filled_pool(spec, num_blocks, block_size, seed=3):
    pool = HostKVPool.for_model(spec, num_blocks, block_size)
    pool.data.copy_(torch.randn(pool.shape, generator=torch.Generator().manual_seed(seed)))
    return pool


def test_prefetcher_overlaps_compute_and_reports_completions():
    """Many swap-ins queued while the main thread computes; each is reported once, in order, with
    the right data; then swap-outs back into fresh host blocks round-trip bitwise."""
    spec = TINY
    shard = Shard.of(spec, parse_parallel("T2"), 1)  # layers 0-3, KV head 1
    layers, heads = kv_box(spec, shard)
    pool = _filled_pool(spec, num_blocks=128, block_size=4)
    n_seqs, n_tok = 40, 10
    cache = KVCache(layers, 128, 4, 1, spec.d_head)
    blocks = BlockManager(128, 4)
    tables = {s: [3 * s, 3 * s + 1, 3 * s + 2] for s in range(n_seqs)}
    slots = {s: blocks.allocate(s, n_tok) for s in range(n_seqs)}
    main_thread_ops = 0
    seen = []
    with Prefetcher(pool, cache, layers, heads) as pf:
        for s in range(n_seqs):
            pf.swap_in(s, tables[s], slots[s])
        a = torch.randn(64, 64)
        deadline = time.monotonic() + 60
        while len(seen) < n_seqs and time.monotonic() < deadline:
            a = torch.tanh(a @ a)  # the "forward pass" the copies overlap with
            main_thread_ops += 1
            seen += pf.poll_completed()
        assert seen == list(range(n_seqs)) and pf.num_pending == 0
        assert pf.poll_completed() == []
        for s in range(n_seqs):
            for layer in layers:
                k, v = cache.read(layer, slots[s])
                ref = pool.data[tables[s], layer, :, heads.start:heads.stop]  # [3, 2, 1, 4, d]
                ref = ref.permute(1, 0, 3, 2, 4).reshape(2, 12, 1, spec.d_head)[:, :n_tok]
                assert torch.equal(k, ref[0]) and torch.equal(v, ref[1])
        assert pf.bytes_in == n_seqs * 2 * len(layers) * n_tok * spec.d_head * 4
        # and back out, into other host blocks
        out_tables = {s: [b + 2, b, b + 1] for s, b in zip(range(4), range(118, 100, -3))}  # any order
        pool.data[:, :, :, heads.start:heads.stop].zero_()
        for s, table in out_tables.items():
            pf.swap_out(s, table, slots[s])
        assert sorted(pf.wait(timeout_s=30)) == list(out_tables)
        for s, table in out_tables.items():
            for layer in layers:
                k, _ = cache.read(layer, slots[s])
                got = pool.data[table, layer, 0, heads.start].reshape(12, spec.d_head)[:n_tok]
                assert torch.equal(got, k[:, 0])
    assert main_thread_ops > 0 and not pf._thread.is_alive()


def test_prefetcher_batches_complete_together_and_match_single_copies():
    """A step's sequences queued as one request (``swap_in_many``) count as pending one by one,
    complete together in submission order, and land exactly where per-sequence copies put them;
    ``swap_out_many`` writes the same host blocks back."""
    spec = TINY
    shard = Shard.of(spec, parse_parallel("P2"), 1)  # layers 2-3, both KV heads
    layers, heads = kv_box(spec, shard)
    pool = _filled_pool(spec, num_blocks=64, block_size=4)
    lengths = {"x": 9, "y": 4, "z": 1}
    tables = {"x": [5, 2, 9], "y": [0], "z": [7]}
    blocks = BlockManager(64, 4)
    slots = {s: blocks.allocate(s, n) for s, n in lengths.items()}
    one, many = (KVCache(layers, 64, 4, 2, spec.d_head) for _ in range(2))
    for s in lengths:
        swap_in(pool, tables[s], one, slots[s], layers, heads)
    with Prefetcher(pool, many, layers, heads) as pf:
        pf.swap_in_many([(s, tables[s], slots[s]) for s in lengths])
        pf.swap_in_many([])  # nothing to do: no request
        assert pf.num_pending == 3
        assert pf.wait(timeout_s=30) == ["x", "y", "z"] and pf.num_pending == 0
        assert all(torch.equal(a, b) for a, b in zip(one.k + one.v, many.k + many.v))
        before = pool.data.clone()
        pool.data[[5, 2, 9, 0, 7]] = 0
        pf.swap_out_many([(s, tables[s], slots[s]) for s in lengths])
        assert pf.wait(timeout_s=30) == ["x", "y", "z"]
    used = [(b, t) for s, n in lengths.items() for b, t in [(tables[s][-1], (n - 1) % 4 + 1)]]
    for b, t in used:  # the last block's tail is padding: compare its real tokens only
        assert torch.equal(pool.data[b, 2:, :, :, :t], before[b, 2:, :, :, :t])
    assert torch.equal(pool.data[[5, 2], 2:], before[[5, 2], 2:])


def test_prefetcher_error_surfaces_on_next_poll_and_does_not_hang():
    pool = _filled_pool(TINY, num_blocks=4, block_size=4)
    cache = KVCache(range(0, 4), 8, 4, 1, 16)
    pf = Prefetcher(pool, cache, range(0, 4), range(0, 1))
    pf.swap_in("ok", [0], torch.arange(4))
    pf.swap_in("bad", [99], torch.arange(4, 8))  # no host block 99: IndexError in the worker
    try:  # the worker may have failed already: then this submit says so, else the wait does
        pf.swap_in("after", [1], torch.arange(8, 12))
    except PrefetchError:
        pass
    with pytest.raises(PrefetchError, match="IndexError|out of bounds") as err:
        pf.wait(timeout_s=30)
    assert isinstance(err.value.__cause__, IndexError)
    with pytest.raises(PrefetchError):
        pf.poll_completed()  # still failed
    with pytest.raises(PrefetchError):
        pf.swap_in("more", [0], torch.arange(4))
    pf.close(timeout_s=5)
    assert not pf._thread.is_alive()


def test_prefetcher_rebind_needs_an_idle_worker_and_close_is_idempotent():
    pool = _filled_pool(TINY, num_blocks=4, block_size=4)
    cache = KVCache(range(0, 4), 8, 4, 2, 16)
    pf = Prefetcher(pool, cache, range(0, 4), range(0, 2))
    gate = threading.Event()
    real = pf._copy_now
    pf._copy_now = lambda req, **kw: (gate.wait(10), real(req, **kw))  # hold the worker
    pf.swap_in(0, [0], torch.arange(4))
    with pytest.raises(RuntimeError, match="pending"):
        pf.rebind(KVCache(range(2, 4), 8, 4, 1, 16), range(2, 4), range(1, 2))
    gate.set()
    assert pf.wait(timeout_s=10) == [0]
    other = KVCache(range(2, 4), 8, 4, 1, 16)
    pf.rebind(other, range(2, 4), range(1, 2))
    pf.swap_in(1, [1], torch.arange(4))
    assert pf.wait(timeout_s=10) == [1]
    assert torch.equal(other.read(3, torch.arange(4))[0][:, 0], pool.data[1, 3, 0, 1])
    pf.close()
    pf.close()
    with pytest.raises(RuntimeError, match="closed"):
        pf.swap_in(2, [0], torch.arange(4))


def test_replica_completions_pass_through_without_a_group():
    rc = ReplicaCompletions()
    assert rc.update(["a", "b"]) == ["a", "b"] and rc.update([]) == []


def rank_agree(rank, world_size, device, lists):
    """Each rank offers ``lists[rank]`` (None: an observer) to an int-id and an object agreement
    over all ranks, twice (the second offers nothing new: what was agreed is gone, the rest stays)."""
    import torch.distributed as dist

    group = dist.new_group(list(range(world_size)), backend="gloo")
    fast, slow = ReplicaCompletions(group, int_ids=True), ReplicaCompletions(group)
    mine = lists[rank]
    out = []
    for rc in (fast, slow):
        first = rc.update(mine or [], observer=mine is None)
        out.append((first, rc.update([], observer=mine is None)))
    return out


def test_replica_completions_int_ids_agree_like_objects_over_several_rounds():
    """600 ids on rank 0 (three rounds of the int64 all-gather), a subset in another order on rank
    1, an observer on rank 2: the int path agrees exactly as the object path does."""
    a = list(range(600))
    b = [i for i in reversed(a) if i % 3]
    out = run_ranks(rank_agree, 3, [a, b, None])
    want = [i for i in a if i % 3]
    for (fast, slow) in out:
        assert fast == slow
        assert fast[0] == want and fast[1] == []


# --------------------------------------------------------------------------------------------
# multi-rank: prefill under c_p, swap out, re-shard, swap in, decode under c_d


def rank_prefill_swap_decode(rank, world_size, device, store, pool, c_p, c_d, prompts, block_size):
    """One rank of the round trip; returns its KV before the swap-out and after the swap-in,
    its boxes, and (TP rank 0 of the last stage) the decode logits under c_d."""
    from seesaw.engine.dist import TorchComm
    from seesaw.engine.reshard import reshard

    spec = store.spec
    comm_p, comm_d = TorchComm(c_p, rank, device), TorchComm(c_d, rank, device)  # every group, once
    model = build_shard(store, c_p, rank, comm_p)
    runner = ModelRunner(model, num_blocks=64, block_size=block_size)
    host = HostBlockAllocator(pool.num_blocks, pool.block_size)
    first = runner.execute(prompts)  # prefill under c_p; every rank learns the next tokens
    box_p = kv_box(spec, model.shard)
    kv_p = {s: {layer: runner.kv.read(layer, runner.blocks.slots(s, 0, len(p))) for layer in box_p[0]}
            for s, p in prompts.items()}
    agree = ReplicaCompletions(comm_p.replica_group)
    pf = Prefetcher(pool, runner.kv, *box_p, write_out=kv_writer(spec, model.shard))
    for s, p in prompts.items():
        pf.swap_out(s, host.allocate(s, len(p)), runner.blocks.slots(s, 0, len(p)))
    done: list = []
    while len(done) < len(prompts):  # the agreed list is identical on every rank: same loop count
        done += agree.update(pf.poll_completed())
    for s in done:
        runner.free(s)  # device blocks go only once every rank has its part on the host
    pf.release()  # the device cache is shaped by the layout: drop every reference before re-sharding
    runner.kv = runner = None
    stats = reshard(model, store, c_p, c_d, rank, comm_d)
    runner = ModelRunner(model, num_blocks=64, block_size=block_size + 1)
    box_d = kv_box(spec, model.shard)
    pf.rebind(runner.kv, *box_d)
    slots = {}
    for s, p in prompts.items():
        slots[s] = runner.blocks.allocate(s, len(p))
        pf.swap_in(s, host.block_tables[s], slots[s])
    done = []
    while len(done) < len(prompts):
        done += agree.update(pf.poll_completed())
    for s in done:
        host.free(s)
    pf.close()
    kv_d = {s: {layer: runner.kv.read(layer, slots[s]) for layer in box_d[0]} for s in prompts}
    logits = runner.step_logits({s: [first[s]] for s in prompts})
    keep = model.shard.is_last and model.shard.tp_rank == 0
    return {"first": first, "box_p": box_p, "kv_p": kv_p, "box_d": box_d, "kv_d": kv_d,
            "logits": logits if keep else None, "host_free": host.num_free_blocks, "reshard": stats}


@pytest.fixture(scope="module")
def tiny_store(tmp_path_factory):
    return load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("tiny")))


def _single_process(store, prompts, block_size):
    runner = ModelRunner(build_shard(store), num_blocks=64, block_size=block_size)
    first = runner.execute(prompts)
    kv = {s: {layer: runner.kv.read(layer, runner.blocks.slots(s, 0, len(p)))
              for layer in range(store.spec.num_hidden_layers)} for s, p in prompts.items()}
    logits = runner.step_logits({s: [first[s]] for s in prompts})
    return first, kv, logits


@pytest.mark.parametrize("c_p,c_d,named", [("P2", "T2", False), ("T4", "T2P2", True)])
def test_prefill_layout_to_decode_layout_round_trip(tiny_store, c_p, c_d, named):
    """KV read under c_d equals, bitwise, the KV the c_p ranks computed (under P2 also the
    single-process KV); decode from the swapped-in KV gives the single-process next-token logits.
    T4 -> T2P2: replicated KV heads written once, read by a mixed TP+PP layout, named pool."""
    store = tiny_store
    prompts = {f"s{i}": p for i, p in enumerate(random_prompts([13, 5, 20, 9], seed=4))}
    block_size = 4
    name = f"seesaw-test-kv-{os.getpid()}-{uuid.uuid4().hex[:8]}" if named else None
    pool = HostKVPool.for_model(store.spec, num_blocks=32, block_size=3, name=name)
    try:
        cp, cd = parse_parallel(c_p), parse_parallel(c_d)
        out = run_ranks(rank_prefill_swap_decode, cp.world_size, store, pool, cp, cd, prompts, block_size)
    finally:
        pool.unlink()
    first, ref_kv, ref_logits = _single_process(store, prompts, block_size)
    computed = {}  # (seq, layer, head) -> (k, v) as the c_p ranks computed them
    for r in out:
        assert r["first"] == first
        layers, heads = r["box_p"]
        for s in prompts:
            for layer in layers:
                k, v = r["kv_p"][s][layer]
                for j, h in enumerate(heads):
                    computed[s, layer, h] = (k[:, j], v[:, j])
                    if cp.tp == 1:  # same ops on the same shapes as one process: bitwise
                        assert torch.equal(k[:, j], ref_kv[s][layer][0][:, h])
                    assert torch.allclose(k[:, j], ref_kv[s][layer][0][:, h], atol=1e-5)
    for r in out:
        layers, heads = r["box_d"]
        assert r["host_free"] == 32
        for s in prompts:
            for layer in layers:
                k, v = r["kv_d"][s][layer]
                for j, h in enumerate(heads):
                    assert torch.equal(k[:, j], computed[s, layer, h][0])
                    assert torch.equal(v[:, j], computed[s, layer, h][1])
    got = [r["logits"] for r in out if r["logits"] is not None]
    assert len(got) == 1
    for s in prompts:
        assert (got[0][s] - ref_logits[s]).abs().max().item() < 1e-4
        assert int(got[0][s].argmax()) == int(ref_logits[s].argmax())
