"""Host weight store and per-rank shards of a HF safetensors LLaMA checkpoint.

``load_checkpoint(dir)`` reads ``config.json`` and ``model.safetensors`` (or the sharded
``model.safetensors.index.json`` + shards) into one flat shared-memory buffer per dtype on the host:
every tensor of the state dict is a view into it, so ranks spawned later map the same pages
(torch's multiprocessing reductions pass the buffer, not copies). ``materialize(store, layout,
rank)`` slices the shard one rank holds, under the parameter names of ``model.LlamaShard``:

- ``layers.{i}.attn.qkv_proj.weight``: the rank's Q heads, then its KV heads (GQA: a contiguous
  range of KV heads, or one replicated head when tp > num_key_value_heads), stacked by rows;
  ``qkv_proj.bias`` (Qwen2) the same rows of the Q, K and V biases;
- ``layers.{i}.attn.o_proj.weight``: the columns of its Q heads (row-parallel);
- ``layers.{i}.mlp.gate_up_proj.weight``: its intermediate rows of gate then up; ``down_proj``
  the same columns; norms replicated;
- ``embed_tokens.weight`` (first stage) and ``lm_head.weight`` (last stage; the embedding when
  tied): its vocab rows, the vocab padded with zero rows up to a multiple of tp.

Bad input gives a one-line ``CheckpointError``. Reading ``config.json`` is ``hf_config``; mapping a
model name ("tiny", "smollm2-135m", a ``.gguf`` file, a directory) to a checkpoint directory is
``checkpoint``.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from seesaw.engine.files import CheckpointError
from seesaw.engine.hf_config import expected_shapes, read_config, spec_from_config
from seesaw.engine.model import Comm, LlamaShard, Shard
from seesaw.core import ModelSpec, ParallelConfig, RunFailed

__all__ = [
    "WeightStore",
    "load_checkpoint",
    "materialize",
    "build_shard",
]


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


@contextmanager
def _open_safetensors(path: Path):
    """``safe_open(path)``; a truncated or garbage file is a one-line ``CheckpointError`` naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        f = safe_open(path, framework="pt")
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {e}") from None
    with f:
        yield f


def _safetensors_files(model_dir: Path) -> dict[str, Path]:
    """Tensor name -> file holding it."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        except (ValueError, AttributeError) as e:  # bad JSON or UTF-8, or not an object
            raise CheckpointError(f"{index}: not a safetensors index ({str(e) or type(e).__name__})") from None
        if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
            raise CheckpointError(f"{index}: weight_map must map tensor names to file names")
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
        with _open_safetensors(path) as f:
            files.update({name: path for name in f.keys()})
    return files


def _share(buf: torch.Tensor) -> None:
    """``buf.share_memory_()``, or one line (``RunFailed``, exit 1) when shared memory has no room:
    a full ``/dev/shm`` or a file-size limit (torch leaves its half-made file there; it goes)."""
    try:
        buf.share_memory_()
    except RuntimeError as e:
        made = re.search(r"<(/torch_[\w]+)>", str(e))
        if made and Path("/dev/shm").is_dir():
            Path("/dev/shm" + made.group(1)).unlink(missing_ok=True)
        why = str(e).splitlines()[0]
        raise RunFailed(f"cannot place the weights ({buf.numel() * buf.element_size() / 1e6:.1f} MB) in shared "
                        f"memory: {why} (is /dev/shm full, or a file-size limit set?)") from None


def load_checkpoint(
    model_dir: str | Path, dtype: torch.dtype | None = None, share_memory: bool = True,
    name: str | None = None,
) -> WeightStore:
    """Load a HF safetensors LLaMA directory into a host ``WeightStore``.

    dtype: convert every tensor to it (default: keep the checkpoint's). share_memory: place the
    buffers in shared memory so spawned ranks map rather than copy them.
    """
    model_dir = Path(model_dir)
    config = read_config(model_dir)
    spec = spec_from_config(config, name=name or model_dir.name, source=model_dir / "config.json")
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
        raise CheckpointError(f"{model_dir}: unexpected tensor(s) for a {spec.model_type} model: {shown}")

    # pass 1: shapes and dtypes from the headers
    meta: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    by_file: dict[Path, list[str]] = {}
    for n in expected:
        by_file.setdefault(files[n], []).append(n)
    for path, names in by_file.items():
        with _open_safetensors(path) as f:
            for n in names:
                sl = f.get_slice(n)
                shape = tuple(sl.get_shape())
                if shape != expected[n]:
                    raise CheckpointError(
                        f"{path}: tensor {n} has shape {list(shape)}, expected {list(expected[n])} for its config.json"
                    )
                stored = _safetensors_dtype(sl.get_dtype(), path, n)
                meta[n] = (shape, dtype or stored)

    # one flat buffer per dtype; every tensor is a view into it
    sizes: dict[torch.dtype, int] = {}
    for shape, dt in meta.values():
        sizes[dt] = sizes.get(dt, 0) + _numel(shape)
    buffers = {dt: torch.empty(n, dtype=dt) for dt, n in sizes.items()}
    if share_memory:
        for b in buffers.values():
            _share(b)
    offsets = dict.fromkeys(sizes, 0)
    tensors: dict[str, torch.Tensor] = {}
    for n in expected:  # canonical order
        shape, dt = meta[n]
        k = _numel(shape)
        tensors[n] = buffers[dt][offsets[dt]:offsets[dt] + k].view(shape)
        offsets[dt] += k
    for path, names in by_file.items():
        with _open_safetensors(path) as f:
            for n in names:
                tensors[n].copy_(f.get_tensor(n))
    return WeightStore(spec, config, tensors, model_dir, list(buffers.values()))


def _safetensors_dtype(name: str, path: Path, tensor: str) -> torch.dtype:
    table = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "F64": torch.float64}
    if name not in table:
        raise CheckpointError(f"{path}: tensor {tensor} has dtype {name}; a weight must be one of {', '.join(table)}")
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
        if spec.qkv_bias:  # Qwen2: the bias rows of the same heads, column-parallel like the weight
            put(o + "attn.qkv_proj.bias", torch.cat([
                _rows(t[p + "self_attn.q_proj.bias"], q_heads, d),
                _rows(t[p + "self_attn.k_proj.bias"], kv_heads, d),
                _rows(t[p + "self_attn.v_proj.bias"], kv_heads, d),
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
