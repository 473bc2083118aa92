"""Mistral and Qwen2 (issue 22 item 3) in the real engine against HF ``transformers``.

Each tiny checkpoint is written by ``transformers`` itself (``save_pretrained``: its own tensor names
and ``config.json``) from a randomly initialised model whose every parameter, the Qwen2 Q/K/V
biases included, is drawn from a seeded generator (HF initialises biases to zero, which would hide a
bias left out). The engine loads it through its own loader; logits and greedy tokens must match,
and the tensor- and pipeline-parallel layouts must match the single-process model.
"""

import pytest
import torch

from seesaw.core import parse_parallel
from seesaw.engine.dist import run_layout
from seesaw.engine.files import CheckpointError
from seesaw.engine.runner import generate
from seesaw.engine.weights import build_shard, load_checkpoint
from tests.engine_helpers import full_logits, random_prompts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

transformers = pytest.importorskip("transformers")

SHAPE = dict(vocab_size=256, hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6, tie_word_embeddings=False)
ARCHS = {
    "qwen2": lambda: transformers.Qwen2ForCausalLM(transformers.Qwen2Config(
        **SHAPE, rope_theta=1e6, use_sliding_window=False, sliding_window=None)),
    "mistral": lambda: transformers.MistralForCausalLM(transformers.MistralConfig(
        **SHAPE, rope_theta=1e6, sliding_window=None)),
}
TOL = 1e-4


def _write(path, arch: str, seed: int = 0):
    """A tiny random ``arch`` checkpoint saved by transformers; (path, the HF model)."""
    torch.manual_seed(seed)
    model = ARCHS[arch]().eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:  # Q, K, V biases: large enough to move the logits
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * p.shape[-1] ** -0.5)
    model.save_pretrained(path, safe_serialization=True)
    return path, model


@pytest.fixture(scope="module", params=list(ARCHS))
def arch(request, tmp_path_factory):
    path, hf = _write(tmp_path_factory.mktemp(request.param), request.param)
    store = load_checkpoint(path)
    return request.param, store, build_shard(store), hf


def test_spec_reads_the_architecture(arch):
    name, store, _, _ = arch
    assert store.spec.model_type == name
    assert store.spec.qkv_bias == (name == "qwen2")
    assert ("model.layers.0.self_attn.q_proj.bias" in store.tensors) == (name == "qwen2")


def test_matches_transformers(arch):
    _, _, model, hf = arch
    prompts = random_prompts([33, 6, 19])
    for prompt in prompts:
        with torch.no_grad():
            ref = hf(torch.tensor([prompt])).logits[0]
        assert (full_logits(model, prompt) - ref).abs().max().item() < TOL
    ours = generate(model, prompts, max_new_tokens=6)
    for prompt, got in zip(prompts, ours):
        ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert got == ref[0, len(prompt):].tolist()


@pytest.mark.parametrize("layout", ["T2", "P2"])
def test_parallel_layouts_match_single_process(arch, layout):
    """T2 splits the KV heads and so the bias rows; P2 puts layers with biases on both stages."""
    _, store, model, _ = arch
    seqs = {f"s{i}": p for i, p in enumerate(random_prompts([13, 5, 20], seed=4))}
    steps = [{s: t[:8] for s, t in seqs.items()}, {s: t[8:] for s, t in seqs.items() if t[8:]}]
    out = run_layout(store, parse_parallel(layout), steps, block_size=4)
    assert max((out[s] - full_logits(model, t)).abs().max().item() for s, t in seqs.items()) < TOL


def test_qwen2_bias_is_sharded_by_heads(tmp_path):
    from seesaw.engine.weights import materialize

    store = load_checkpoint(_write(tmp_path / "q", "qwen2", seed=3)[0])

    d, t = store.spec.d_head, store.tensors
    b1 = materialize(store, parse_parallel("T2"), rank=1)["layers.0.attn.qkv_proj.bias"]
    q, k, v = (t[f"model.layers.0.self_attn.{x}_proj.bias"] for x in "qkv")
    assert torch.equal(b1, torch.cat([q[2 * d:4 * d], k[d:2 * d], v[d:2 * d]]))  # rank 1: Q heads 2-3, KV head 1


def test_sliding_window_limits_the_context_and_llama_bias_is_refused(tmp_path):
    from seesaw.engine.hf_config import spec_from_config

    config = {**SHAPE, "model_type": "mistral", "sliding_window": 64}
    spec = spec_from_config(config)
    assert spec.sliding_window == 64 and spec.context_len == 64  # the engine refuses longer sequences
    qwen = spec_from_config({**SHAPE, "model_type": "qwen2", "sliding_window": 64, "use_sliding_window": False})
    assert qwen.sliding_window is None and qwen.context_len == 256  # Qwen2.5 lists a window it does not use
    with pytest.raises(CheckpointError, match="attention_bias=true is not supported"):
        spec_from_config({**SHAPE, "model_type": "llama", "attention_bias": True})
    with pytest.raises(CheckpointError, match="model_type 'gemma' is not supported"):
        spec_from_config({**SHAPE, "model_type": "gemma"})
