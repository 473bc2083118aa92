"""The engine's warm-up before a run's clock (``ModelRunner.warmup``, ``worker.warm_up``): the
dummy step has the workload's largest prefill shape, fits the KV cache, changes no output, and
takes the first step's fresh pages off the clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from seesaw.engine.batch_io import BatchItem
from seesaw.engine.config import EngineConfig
from seesaw.engine.kv_sizing import replica_buckets
from seesaw.engine.runner import ModelRunner, generate, run_generation
from seesaw.engine.weights import build_shard, load_checkpoint
from seesaw.engine.worker import warmup_shape
from seesaw.core import VllmPolicy, parse_parallel
from tests.engine_helpers import glibc, in_new_process, make_checkpoint, random_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return build_shard(load_checkpoint(make_checkpoint(tmp_path_factory.mktemp("tiny"))))


def test_warmup_leaves_generation_unchanged(model):
    """The dummy K/V sits in blocks that the next sequences take; they overwrite it before reading."""
    prompts = random_prompts([13, 5, 20, 9], seed=3)
    ref = generate(model, prompts, 6)
    runner = ModelRunner(model, num_blocks=64, block_size=4)
    assert runner.warmup(100, max_seq_len=30) == 100  # prompts of 30, 30, 30, 10
    assert runner.blocks.num_free_blocks == 64  # the dummy holds no blocks
    out = run_generation(runner, dict(enumerate(prompts)), 6)
    assert [out[i] for i in range(len(prompts))] == ref


def test_warmup_fits_the_kv_cache_and_the_sequence_cap(model):
    # 5 blocks of 4 tokens: prompts of 6, 6 (two blocks each), then 4 tokens in the last block
    assert ModelRunner(model, num_blocks=5, block_size=4).warmup(100, max_seq_len=6) == 16
    assert ModelRunner(model, num_blocks=64, block_size=4).warmup(100, max_seq_len=6, max_seqs=2) == 12
    assert ModelRunner(model, num_blocks=64, block_size=4).warmup(0) == 0


def test_warmup_shape_is_the_workloads_largest_prefill_step():
    items = [BatchItem(f"r{i}", [1] * n, 4) for i, n in enumerate([300, 20, 700, 5])]
    cfg = EngineConfig(VllmPolicy(layout=parse_parallel("T1")))
    assert warmup_shape(items, cfg) == (1025, 512)  # every prompt, in prompts of at most 512
    def knob(**kw):
        return replace(cfg, policy=cfg.policy.model_copy(update=kw))

    assert warmup_shape(items, knob(max_num_seqs=2)) == (1000, 512)  # the two longest
    assert warmup_shape(items, knob(max_num_batched_tokens=256)) == (256, 512)
    assert warmup_shape(items[1:2], cfg) == (20, 20)
    # D2: each replica prefills its own half of the requests
    d2 = replace(cfg, policy=VllmPolicy(layout=parse_parallel("D2")))
    assert warmup_shape(items, d2)[0] == max(sum(r.prompt_len for r in b) for b in replica_buckets(items, 2)) < 1025
    assert warmup_shape([], cfg) == (0, 0)


def _first_step_faults(ckpt: Path, warm: bool) -> int:
    code = ("import json, sys; from tests.engine_helpers import first_step_faults; "
            "print(json.dumps(first_step_faults(sys.argv[1], sys.argv[2] == '1')))")
    return in_new_process(code, ckpt, int(warm), env={"SEESAW_KEEP_FREED_MEMORY": "1"})


@glibc
def test_warmup_takes_the_first_steps_fresh_pages(tmp_path):
    """In a new process (a heap as a rank starts with), the first 4096-token prefill faults in
    thousands of fresh pages for its activations; after a warm-up of that shape it faults few."""
    ckpt = make_checkpoint(tmp_path / "tiny")
    cold, warm = _first_step_faults(ckpt, False), _first_step_faults(ckpt, True)
    assert cold > 1000, cold
    assert warm < cold // 4, (cold, warm)
