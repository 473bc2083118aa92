"""A HF LLaMA-family ``config.json``: reading it, its ``ModelSpec``, the tensors a checkpoint must hold.

``read_config(dir)`` reads and parses the file, ``spec_from_config`` turns the dict into a
``ModelSpec`` (old ``rope_scaling`` and new ``rope_parameters`` styles; ``model_type`` llama,
mistral or qwen2, whose Q, K, V projections carry biases; LLaMA's ``attention_bias`` is refused),
``expected_shapes`` lists the HF tensor names and shapes of a full checkpoint of a spec. Bad input
gives a one-line ``CheckpointError``.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from seesaw.engine.files import CheckpointError
from seesaw.core import DTYPE_BYTES, ModelSpec

__all__ = ["SUPPORTED", "read_config", "spec_from_config", "expected_shapes"]

SUPPORTED = ("llama", "mistral", "qwen2")  # HF model_type values with the LLaMA layer structure


def read_config(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist")
    path = model_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None
    except UnicodeDecodeError as e:
        raise CheckpointError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(config).__name__}")
    return config


def spec_from_config(config: dict, name: str = "model", source: str | Path | None = None) -> ModelSpec:
    """ModelSpec of a HF LLaMA ``config.json`` dict (old ``rope_scaling`` or new
    ``rope_parameters`` style); CheckpointError for other architectures or unsupported options.
    ``source``: the file the errors name (default ``NAME: config.json``)."""
    where_from = str(source) if source is not None else f"{name}: config.json"
    model_type = config.get("model_type", "llama")
    if model_type not in SUPPORTED:
        raise CheckpointError(f"{where_from}: model_type {model_type!r} is not supported "
                              f"({', '.join(SUPPORTED)})")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise CheckpointError(f"{where_from}: {key}=true is not supported")
    cfg = dict(config)
    rope = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    if cfg.get("rope_scaling") is None and rope.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    dtype_bytes = DTYPE_BYTES.get(dtype, DTYPE_BYTES["bfloat16"])
    try:
        return ModelSpec.from_hf_config(cfg, name=name, dtype_bytes=dtype_bytes)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise CheckpointError(f"{where_from}: {where}: {err['msg']}") from None


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes of a full checkpoint for ``spec`` (Qwen2: with Q, K, V biases)."""
    h, i, d = spec.hidden_size, spec.intermediate_size, spec.d_head
    shapes = {"model.embed_tokens.weight": (spec.vocab_size, h), "model.norm.weight": (h,)}
    for layer in range(spec.num_hidden_layers):
        p = f"model.layers.{layer}."
        shapes.update({
            p + "input_layernorm.weight": (h,),
            p + "post_attention_layernorm.weight": (h,),
            p + "self_attn.q_proj.weight": (spec.num_attention_heads * d, h),
            p + "self_attn.k_proj.weight": (spec.num_key_value_heads * d, h),
            p + "self_attn.v_proj.weight": (spec.num_key_value_heads * d, h),
            p + "self_attn.o_proj.weight": (h, spec.num_attention_heads * d),
            **({p + "self_attn.q_proj.bias": (spec.num_attention_heads * d,),
                p + "self_attn.k_proj.bias": (spec.num_key_value_heads * d,),
                p + "self_attn.v_proj.bias": (spec.num_key_value_heads * d,)} if spec.qkv_bias else {}),
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, h)
    return shapes
