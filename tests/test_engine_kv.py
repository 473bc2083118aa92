"""Paged KV cache: block bookkeeping, and chunked prefill + decode equal to one full forward."""

import pytest
import torch

from seesaw.engine.kv import BlockManager, KVCache, KVCacheFull
from seesaw.engine.runner import ModelRunner, generate, split_micro_batches
from seesaw.engine.weights import build_shard, load_checkpoint
from tests.engine_helpers import full_logits, make_checkpoint, random_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_shard(load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("tiny"))))


def test_block_manager_allocates_and_frees():
    bm = BlockManager(num_blocks=4, block_size=4)
    slots = bm.allocate("a", 6)  # two blocks
    assert slots.tolist() == [0, 1, 2, 3, 4, 5]
    assert bm.block_tables["a"] == [0, 1] and bm.num_free_blocks == 2
    assert bm.allocate("b", 1).tolist() == [8]
    assert bm.allocate("a", 2).tolist() == [6, 7]  # fills block 1, no new block
    assert bm.blocks_needed("a", 1) == 1
    with pytest.raises(KVCacheFull):
        bm.allocate("b", 9)
    assert bm.block_tables["b"] == [2]  # a failed allocation changes nothing
    bm.free("a")
    assert bm.num_free_blocks == 3 and "a" not in bm.block_tables
    assert bm.allocate("c", 5).tolist() == [0, 1, 2, 3, 4]  # freed blocks are reused
    bm.free("unknown")


def test_kv_read_write_by_layer_heads_tokens():
    cache = KVCache(range(2, 4), num_blocks=3, block_size=4, num_kv_heads=2, head_dim=3)
    slots = torch.tensor([5, 6, 9])
    k = torch.arange(18.0).view(3, 2, 3)
    cache.write(3, slots, k, -k)
    k_out, v_out = cache.read(3, slots)
    assert torch.equal(k_out, k) and torch.equal(v_out, -k)
    k1, _ = cache.read(3, slots, heads=slice(1, 2))  # one head: what a TP rank would take
    assert torch.equal(k1, k[:, 1:2])
    assert cache.read(2, slots)[0].abs().sum() == 0  # other layer untouched
    assert cache.layer(3)[0][1, 1, 0].tolist() == k[0, 0].tolist()  # slot 5 = block 1, offset 1


def test_chunked_prefill_then_decode_matches_full_forward(model):
    prompts = random_prompts([37, 5, 20])
    generated = generate(model, prompts, max_new_tokens=6)
    runner = ModelRunner(model, num_blocks=32, block_size=4)
    seqs = [p + g for p, g in zip(prompts, generated)]
    got = {i: [] for i in range(3)}
    done = dict.fromkeys(range(3), 0)
    # steps mix prefill chunks of different sizes with decodes, like a chunked-prefill scheduler
    plans = [{0: 16, 1: 3, 2: 7}, {0: 16, 1: 1, 2: 13}, {0: 5, 1: 1}, {0: 1, 1: 1, 2: 1}]
    plans += [{0: 1, 1: 1, 2: 1}] * 5  # decode to the end
    for plan in plans:
        step = {i: seqs[i][done[i]:done[i] + n] for i, n in plan.items() if done[i] < len(seqs[i])}
        for i, logits in runner.step_logits(step, all_tokens=True).items():
            got[i].append(logits)
            done[i] += len(step[i])
    for i, seq in enumerate(seqs):
        assert done[i] == len(seq)
        ref = full_logits(model, seq)
        diff = (torch.cat(got[i]) - ref).abs().max().item()
        assert diff < 1e-4, (i, diff)


def test_generate_is_independent_of_chunking_and_batching(model):
    prompts = random_prompts([30, 3, 17], seed=2)
    alone = [generate(model, [p], 5)[0] for p in prompts]
    assert generate(model, prompts, 5) == alone
    assert generate(model, prompts, 5, prefill_chunk=4, block_size=8) == alone


def test_execute_returns_next_tokens_and_stops_at_eos(model):
    prompt = random_prompts([12], seed=3)[0]
    first = generate(model, [prompt], 4)[0]
    runner = ModelRunner(model, num_blocks=8, block_size=16)
    assert runner.execute({"r": prompt}) == {"r": first[0]}
    assert runner.num_cached_tokens("r") == 12
    assert generate(model, [prompt], 4, eos_token_id=first[1])[0] == first[:2]
    with pytest.raises(KVCacheFull):
        runner.execute({"big": [1] * 200})
    runner.free("r")
    assert runner.blocks.num_free_blocks == 8


def test_split_micro_batches():
    assert split_micro_batches([5, 5, 5, 5], 2) == [[0, 1], [2, 3]]
    assert split_micro_batches([10, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert split_micro_batches([1, 1], 4) == [[0], [1]]
    assert split_micro_batches([3, 1, 1, 1, 1], 4) == [[0], [1], [2, 3], [4]]
    groups = split_micro_batches([1] * 10, 3)
    assert sum(groups, []) == list(range(10)) and len(groups) == 3


@pytest.mark.parametrize("block_size", [1, 4, 16])
def test_step_inputs_hold_every_sequence_in_order(block_size):
    """The step's inputs equal each sequence's one by one: positions continue its cache, each new
    token's slot is the block manager's, the block table row lists its blocks (zero past its
    context, also for tables that own more blocks than the context needs), query offsets and
    context lengths add up; for ragged contexts and mixed steps, with the buffers reused."""
    import random

    from seesaw.engine.step_inputs import StepInputs

    rng = random.Random(block_size)
    inputs = StepInputs(torch.device("cpu"), block_size)
    for _ in range(50):
        blocks = BlockManager(4096, block_size)
        ids = list(range(rng.randint(1, 10)))
        for s in ids:
            blocks.allocate(s, rng.randint(1, 90))
        query = [rng.choice([1, 1, 1, 3]) for _ in ids]
        slots = [blocks.allocate(s, q) for s, q in zip(ids, query)]
        starts = [blocks.num_tokens[s] - q for s, q in zip(ids, query)]
        ctx = [st + q for st, q in zip(starts, query)]
        if rng.random() < 0.3:
            blocks.allocate(ids[0], 2 * block_size)  # the table owns blocks past this step's context
        toks = [[rng.randint(0, 99) for _ in range(q)] for q in query]
        batch = inputs.build(toks, starts, query, [blocks.block_tables[s] for s in ids], [0, len(ids) - 1])
        meta = batch.meta
        assert batch.token_ids.tolist() == sum(toks, [])
        assert batch.positions.tolist() == sum((list(range(st, c)) for st, c in zip(starts, ctx)), [])
        assert torch.equal(meta.slot_mapping, torch.cat(slots))
        assert meta.cu_query.tolist() == [0, *torch.tensor(query).cumsum(0).tolist()]
        assert meta.seq_lens.tolist() == ctx == meta.context_lens
        assert meta.cu_keys.tolist() == [0, *torch.tensor(ctx).cumsum(0).tolist()]
        width = -(-max(ctx) // block_size)
        assert meta.block_table.shape == (len(ids), width) and meta.block_table.dtype == torch.int32
        for i, s in enumerate(ids):
            nb = -(-ctx[i] // block_size)
            assert meta.block_table[i, :nb].tolist() == blocks.block_tables[s][:nb]
            assert (meta.block_table[i, nb:] == 0).all()
        assert batch.logits_rows.tolist() == [query[0] - 1, sum(query) - 1]


def test_cpu_runners_never_take_the_cuda_graph_path(model):
    from seesaw.engine.cuda_graphs import graphs_enabled
    from seesaw.engine.runner import ModelRunner

    for bs in (16, 256):
        assert not graphs_enabled(model, bs)
        runner = ModelRunner(model, 8, bs)
        assert runner.graphs is None and runner.kv.k[0].shape[0] == 8  # no scratch block either
