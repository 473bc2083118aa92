"""Tiny random LLaMA checkpoints: real safetensors directories for tests and CPU runs.

``write_random_checkpoint(dir, config)`` writes ``config.json`` + ``model.safetensors`` (or a
sharded set with ``model.safetensors.index.json``) with seeded random weights in HF names, so the
real loader reads them. ``ensure_tiny(dir)`` writes the catalog's ``tiny`` model once: its shape
comes from ``profiles/models/tiny.yaml`` when that file exists, else ``TINY_DEFAULT`` (4 layers,
hidden 64, 4 heads, 2 KV heads, vocab 260: divides for TP 2/4 and PP 2/4). Its vocabulary is the
byte tokenizer's: bytes 0..255, then BOS=256, EOS=257, PAD=258 (259 spare).

Weights are drawn with fan-in scaling (std 1/sqrt(fan_in), embedding std 1, norm weights near 1)
so that logits are spread out and greedy decoding has no near-ties to flip between implementations.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from seesaw.engine.dtypes import TORCH_DTYPES
from seesaw.engine.files import publish_dir

__all__ = ["TINY_DEFAULT", "BOS_ID", "EOS_ID", "PAD_ID", "tiny_config", "write_random_checkpoint", "ensure_tiny"]

BOS_ID, EOS_ID, PAD_ID = 256, 257, 258

TINY_DEFAULT = dict(
    num_hidden_layers=4,
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=128,
    vocab_size=260,
    tie_word_embeddings=False,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=2048,
)

# ModelSpec fields that are not HF config keys
_NOT_HF = {"name", "dtype_bytes", "source"}


def _catalog_shape() -> dict:
    """The ``tiny`` entry of the model catalog, if it exists yet."""
    try:
        import importlib.resources as resources

        import yaml

        text = (resources.files("seesaw.profiles") / "models" / "tiny.yaml").read_text()
    except (FileNotFoundError, ModuleNotFoundError, OSError):
        return {}
    data = yaml.safe_load(text) or {}
    return {k: v for k, v in data.items() if k not in _NOT_HF and v is not None}


def tiny_config(**overrides) -> dict:
    """A HF ``config.json`` dict for a small LLaMA (the catalog's tiny shape, then overrides)."""
    shape = {**TINY_DEFAULT, **_catalog_shape(), **overrides}
    shape = {k: v for k, v in shape.items() if k not in _NOT_HF}
    dtype = shape.pop("torch_dtype", "float32")
    return {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "bos_token_id": BOS_ID,
        "eos_token_id": EOS_ID,
        "pad_token_id": PAD_ID,
        "torch_dtype": dtype,
        **shape,
    }


def _random_state(config: dict, seed: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    h, i, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    n_q, n_kv = config["num_attention_heads"], config["num_key_value_heads"]
    d = config.get("head_dim") or h // n_q

    def w(rows: int, cols: int, std: float | None = None) -> torch.Tensor:
        return (torch.randn(rows, cols, generator=g) * (std or cols**-0.5)).to(dtype)

    def norm() -> torch.Tensor:
        return (1.0 + 0.1 * torch.randn(h, generator=g)).to(dtype)

    state = {"model.embed_tokens.weight": w(v, h, std=1.0)}
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        state[p + "input_layernorm.weight"] = norm()
        state[p + "self_attn.q_proj.weight"] = w(n_q * d, h)
        state[p + "self_attn.k_proj.weight"] = w(n_kv * d, h)
        state[p + "self_attn.v_proj.weight"] = w(n_kv * d, h)
        state[p + "self_attn.o_proj.weight"] = w(h, n_q * d)
        state[p + "post_attention_layernorm.weight"] = norm()
        state[p + "mlp.gate_proj.weight"] = w(i, h)
        state[p + "mlp.up_proj.weight"] = w(i, h)
        state[p + "mlp.down_proj.weight"] = w(h, i)
    state["model.norm.weight"] = norm()
    if not config.get("tie_word_embeddings", False):
        state["lm_head.weight"] = w(v, h)
    return state


def write_random_checkpoint(
    out_dir: str | Path, config: dict | None = None, seed: int = 0, num_shards: int = 1,
    drop: tuple[str, ...] = (), reshape: dict[str, tuple[int, ...]] | None = None,
) -> Path:
    """Write a random LLaMA checkpoint for HF ``config`` (default: ``tiny_config()``).

    num_shards > 1 writes ``model-0000k-of-0000n.safetensors`` + an index. ``drop`` and ``reshape``
    corrupt the checkpoint on purpose (for error tests).
    """
    from safetensors.torch import save_file

    config = dict(config or tiny_config())
    dtype = TORCH_DTYPES[config.get("torch_dtype", "float32")]
    state = _random_state(config, seed, dtype)
    for name in drop:
        state.pop(name)
    for name, shape in (reshape or {}).items():
        state[name] = torch.zeros(shape, dtype=dtype)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if config["vocab_size"] > PAD_ID:
        from seesaw.engine.tokenizer import write_byte_tokenizer

        write_byte_tokenizer(out, BOS_ID, EOS_ID, PAD_ID)
    names = list(state)
    if num_shards <= 1:
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return out
    weight_map = {}
    for k in range(num_shards):
        part = names[k::num_shards]
        fname = f"model-{k + 1:05d}-of-{num_shards:05d}.safetensors"
        save_file({n: state[n] for n in part}, str(out / fname), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, fname))
    index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
             "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def ensure_tiny(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the catalog's tiny model into ``out_dir`` unless an identical one is there."""
    out = Path(out_dir)
    config = tiny_config()
    if (out / ".complete").is_file():
        try:
            if json.loads((out / "config.json").read_text()) == config:
                return out
        except (OSError, json.JSONDecodeError):
            pass
        shutil.rmtree(out, ignore_errors=True)
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    write_random_checkpoint(tmp, config, seed=seed)
    (tmp / ".complete").write_text("tiny\n")
    publish_dir(tmp, out)
    return out
