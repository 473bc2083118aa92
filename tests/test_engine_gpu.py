"""The engine on a CUDA device (``gpu`` marker; skipped without one; run by
``benchmarks/gpu_check.sh``): decode steps replayed from CUDA graphs give exactly the eager
tokens, the graphs are really used, and a T1 batch run through the spawned rank, its worker's
on-device sampling included, gives the single-process reference tokens."""

from __future__ import annotations

import pytest
import torch

pytestmark = pytest.mark.gpu

if not torch.cuda.is_available():
    pytest.skip("no CUDA device", allow_module_level=True)

from seesaw.engine.runner import generate  # noqa: E402
from seesaw.engine.weights import build_shard, load_checkpoint  # noqa: E402
from tests.engine_helpers import make_checkpoint, random_prompts  # noqa: E402

BLOCK = 256  # FlashAttention's paged KV needs pages of 256 tokens


@pytest.fixture(scope="module")
def gpu_store(tmp_path_factory):
    ckpt = make_checkpoint(tmp_path_factory.mktemp("gpu"), hidden_size=256, num_attention_heads=4,
                           num_key_value_heads=2, intermediate_size=512)
    return ckpt, load_checkpoint(ckpt)


def _generate(store, prompts, graphs: bool, monkeypatch):
    monkeypatch.setenv("SEESAW_CUDA_GRAPHS", "1" if graphs else "0")
    model = build_shard(store, dtype=torch.bfloat16, device="cuda")
    return generate(model, prompts, 24, block_size=BLOCK)


def test_cuda_graph_decode_equals_eager(gpu_store, monkeypatch):
    from seesaw.engine import cuda_graphs
    from seesaw.engine.runner import ModelRunner

    _, store = gpu_store
    prompts = random_prompts([5, 40, 300, 17, 1, 90, 260])
    eager = _generate(store, prompts, False, monkeypatch)
    replays = []
    real = cuda_graphs.DecodeGraphs.run
    monkeypatch.setattr(cuda_graphs.DecodeGraphs, "run", lambda self, *a: replays.append(1) or real(self, *a))
    graphed = _generate(store, prompts, True, monkeypatch)
    assert graphed == eager
    assert len(replays) >= 20  # every decode step of the 7 sequences, as they finish and the batch shrinks
    runner = ModelRunner(build_shard(store, dtype=torch.bfloat16, device="cuda"), 64, BLOCK)
    assert runner.graphs is not None and runner.graphs.capture_all(8) == 4  # buckets 1, 2, 4, 8


def test_t1_batch_on_cuda_equals_the_reference(gpu_store):
    from seesaw.core import VllmPolicy, parse_parallel
    from seesaw.engine.batch_io import BatchItem
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.launch import run_batch

    ckpt, store = gpu_store
    prompts = random_prompts([12, 70, 3, 280])
    items = [BatchItem(f"r{i}", p, 16, ignore_eos=True) for i, p in enumerate(prompts)]
    cfg = EngineConfig(VllmPolicy(layout=parse_parallel("T1"), block_size=BLOCK), model_dir=str(ckpt),
                       device="cuda", dtype="bfloat16", timeout_s=300.0, return_token_ids=True)
    res = run_batch(store, items, cfg)
    assert res["total_output_tokens"] == 16 * len(items)
    model = build_shard(store, dtype=torch.bfloat16, device="cuda")
    want = generate(model, prompts, 16, block_size=BLOCK)
    assert [res["output_token_ids"][f"r{i}"] for i in range(len(items))] == want
