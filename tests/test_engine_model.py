"""The single-process model against HF ``transformers`` on the same safetensors checkpoint."""

import pytest
import torch

from tests.engine_helpers import full_logits, make_checkpoint, random_prompts
from seesaw.engine.model import rope_inv_freq
from seesaw.engine.runner import generate
from seesaw.engine.hf_config import spec_from_config
from seesaw.engine.weights import build_shard, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

transformers = pytest.importorskip("transformers")

LLAMA3_ROPE = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}

CONFIGS = {
    "untied-gqa": {},
    "tied": {"tie_word_embeddings": True},
    "mha": {"num_key_value_heads": 4},
    "mqa-llama3-rope": {"num_key_value_heads": 1, "rope_scaling": LLAMA3_ROPE, "rope_theta": 500000.0},
    "head-dim-32": {"head_dim": 32, "num_attention_heads": 2, "num_key_value_heads": 1},
}


def _hf(path, dtype=torch.float32):
    return transformers.LlamaForCausalLM.from_pretrained(path, dtype=dtype).eval()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_matches_transformers(tmp_path, name):
    path = make_checkpoint(tmp_path / name, **CONFIGS[name])
    model = build_shard(load_checkpoint(path))
    hf = _hf(path)
    prompts = random_prompts([40, 7, 23])
    for prompt in prompts:  # teacher-forced logits; positions past 16 exercise llama3 scaling
        with torch.no_grad():
            ref = hf(torch.tensor([prompt])).logits[0]
        assert (full_logits(model, prompt) - ref).abs().max().item() < 1e-4
    ours = generate(model, prompts, max_new_tokens=8)
    for prompt, got in zip(prompts, ours):
        ref = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                          max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
        assert got == ref[0, len(prompt):].tolist()


def test_bf16_close_to_transformers(tmp_path):
    path = make_checkpoint(tmp_path / "m")
    store = load_checkpoint(path)
    model = build_shard(store, dtype=torch.bfloat16)
    hf = _hf(path, torch.bfloat16)
    prompt = random_prompts([30])[0]
    with torch.no_grad():
        ref = hf(torch.tensor([prompt])).logits[0].float()
    ours = full_logits(model, prompt)
    fp32 = full_logits(build_shard(store), prompt)
    assert ours.dtype == torch.float32
    # same bf16 rounding points as HF: far closer to HF bf16 than bf16 is to fp32
    assert (ours - ref).abs().max().item() < 0.05
    assert (ours - fp32).abs().max().item() < 0.5


def test_llama3_rope_scaling_changes_long_frequencies():
    rope = {**LLAMA3_ROPE, "original_max_position_embeddings": 8192}
    base = spec_from_config({"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4,
                             "num_key_value_heads": 4, "intermediate_size": 8, "vocab_size": 8})
    scaled = base.model_copy(update={"rope_scaling": rope})
    f0, f1 = rope_inv_freq(base), rope_inv_freq(scaled)
    wavelen = 2 * torch.pi / f0
    short, long = wavelen < 8192 / 4, wavelen > 8192 / 1
    assert short.any() and long.any()
    assert torch.equal(f1[short], f0[short])  # short wavelengths kept
    assert torch.allclose(f1[long], f0[long] / 8)  # long ones slowed by `factor`
    assert (f1 <= f0).all()


def test_rope_parameters_style_config():
    """transformers v5 writes rope settings under ``rope_parameters``."""
    cfg = {"num_hidden_layers": 1, "hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 4,
           "intermediate_size": 8, "vocab_size": 8,
           "rope_parameters": {"rope_theta": 500000.0, **LLAMA3_ROPE}}
    spec = spec_from_config(cfg)
    assert spec.rope_theta == 500000.0
    assert spec.rope_scaling["rope_type"] == "llama3"
