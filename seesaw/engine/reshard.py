"""Re-sharding a rank's model in place between two layouts (the paper's dynamic re-sharding).

``reshard(model, store, src, dst, rank, comm)`` turns the ``LlamaShard`` that global ``rank`` holds
under layout ``src`` (say ``P2``) into the one it holds under ``dst`` (say ``T2``): it drops every
tensor of the old shard first, then fills the new shard from the host ``WeightStore`` one tensor at
a time straight into its final buffer (no staging copy of a layer, no whole-shard state dict),
rebuilds the module tree (layer range, TP slices, embedding / final norm / LM head presence, the
``Comm`` of ``dst``) and waits on a barrier over the rank's replica. Peak memory is therefore
``max(old shard, new shard)``: the two shards are never held together, and the only extra bytes
are those an individual copy needs (none on CPU; on CUDA a pageable strided source goes through a
host-side temporary).

Assumptions:
- ``src`` and ``dst`` have the same DP degree and world size, so a rank stays in its replica and
  the replica's ranks are the same under both layouts.
- Nothing outside ``model`` holds its parameter tensors (the ``ModelRunner`` holds the model, not
  its tensors), so dropping the module references frees them.
- The device KV cache is not touched: it is shaped by the layout too, so the caller rebuilds it
  (``KVCache.for_model`` / a new ``ModelRunner``) after re-sharding, once its contents have been
  swapped out to the host pool (the Seesaw policy only re-shards with an empty device cache).
- ``comm`` is the ``Comm`` of ``dst`` for this rank (a ``TorchComm(dst, rank)`` built once at
  start-up together with the one for ``src``: building groups is collective, so do not build them
  per re-shard). A ``Comm`` without ``replica_group`` (e.g. ``LocalComm``) skips the barrier.

Tensors are bitwise equal to ``weights.materialize(store, dst, rank)`` (tested). Bytes and times
are per rank; on CPU "device" memory is host memory, and the peak is accounted tensor by tensor
(a profiler test checks it against the allocator); on CUDA the allocator's own peak is reported too.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

from seesaw.engine.model import Comm, DecoderLayer, Embedding, LlamaShard, Linear, RMSNorm, Shard
from seesaw.engine.weights import WeightStore
from seesaw.core import ParallelConfig, SpecError

__all__ = ["ReshardStats", "reshard", "layer_tensors", "shard_bytes", "layer_bytes"]


@dataclass(slots=True)
class ReshardStats:
    """What one rank did in one re-shard. Bytes are tensor bytes on the model's device."""

    rank: int
    src: str
    dst: str
    reshard_s: float               # wall time, free + load + barrier
    free_s: float
    load_s: float
    barrier_s: float
    old_shard_bytes: int
    new_shard_bytes: int
    bytes_freed: int
    bytes_loaded: int              # host store -> device: the bytes moved by this rank
    peak_bytes: int                # accounted peak of the shard's tensors during the re-shard
    peak_extra_bytes: int          # peak_bytes - max(old, new); 0 when nothing is staged
    device_peak_extra_bytes: int | None = None  # CUDA allocator peak above max(start, end)

    @property
    def load_bytes_per_s(self) -> float:
        return self.bytes_loaded / self.load_s if self.load_s > 0 else math.inf

    def as_dict(self) -> dict:
        return {**asdict(self), "load_bytes_per_s": self.load_bytes_per_s}


# --------------------------------------------------------------------------------------------
# One layer (or the edge tensors) of a shard, copied straight from the store


def _empty(shape, dtype, device) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype, device=device)


def _copy(x: torch.Tensor, dtype, device) -> torch.Tensor:
    """A new contiguous copy of ``x`` (possibly a strided column slice) on ``device``."""
    return _empty(x.shape, dtype, device).copy_(x)


def _stack_rows(parts: list[torch.Tensor], dtype, device) -> torch.Tensor:
    """Row blocks [r_i, C] copied into one new [sum r_i, C] tensor (no concatenated temporary)."""
    out = _empty((sum(p.shape[0] for p in parts), parts[0].shape[1]), dtype, device)
    row = 0
    for p in parts:
        out[row:row + p.shape[0]].copy_(p)
        row += p.shape[0]
    return out


def _vocab_rows(w: torch.Tensor, rows: range, dtype, device) -> torch.Tensor:
    """Rows ``rows`` of a [V, H] matrix, zero past V (the vocab padded to a multiple of tp)."""
    out = _empty((len(rows), w.shape[1]), dtype, device)
    n = max(0, min(rows.stop, w.shape[0]) - rows.start)
    out[:n].copy_(w[rows.start:rows.start + n])
    out[n:].zero_()
    return out


def layer_tensors(store: WeightStore, shard: Shard, layer: int, dtype: torch.dtype,
                  device: str | torch.device) -> dict[str, torch.Tensor]:
    """Decoder layer ``layer`` of ``shard``: ``DecoderLayer`` parameter names -> new tensors,
    sliced as ``weights.materialize`` slices them (Q heads, then KV heads, stacked by rows)."""
    spec, t = store.spec, store.tensors
    d = spec.d_head
    q, kv, cols = shard.q_heads(spec), shard.kv_heads(spec), shard.mlp_cols(spec)
    p = f"model.layers.{layer}."
    return {
        "input_layernorm.weight": _copy(t[p + "input_layernorm.weight"], dtype, device),
        "attn.qkv_proj.weight": _stack_rows([
            t[p + "self_attn.q_proj.weight"][q.start * d:q.stop * d],
            t[p + "self_attn.k_proj.weight"][kv.start * d:kv.stop * d],
            t[p + "self_attn.v_proj.weight"][kv.start * d:kv.stop * d],
        ], dtype, device),
        "attn.o_proj.weight": _copy(t[p + "self_attn.o_proj.weight"][:, q.start * d:q.stop * d], dtype, device),
        "post_attention_layernorm.weight": _copy(t[p + "post_attention_layernorm.weight"], dtype, device),
        "mlp.gate_up_proj.weight": _stack_rows([
            t[p + "mlp.gate_proj.weight"][cols.start:cols.stop],
            t[p + "mlp.up_proj.weight"][cols.start:cols.stop],
        ], dtype, device),
        "mlp.down_proj.weight": _copy(t[p + "mlp.down_proj.weight"][:, cols.start:cols.stop], dtype, device),
    }


def layer_bytes(store: WeightStore, shard: Shard, elem_bytes: int) -> int:
    """Bytes of one decoder layer of ``shard`` (every layer of a shard has the same size)."""
    spec = store.spec
    h, d = spec.hidden_size, spec.d_head
    q, kv, cols = len(shard.q_heads(spec)), len(shard.kv_heads(spec)), len(shard.mlp_cols(spec))
    numel = 2 * h + (q + 2 * kv) * d * h + h * q * d + 3 * cols * h
    return numel * elem_bytes


def shard_bytes(model: nn.Module) -> int:
    """Bytes of a module's tensors, each storage counted once (a tied LM head is not double)."""
    seen, total = set(), 0
    for _, p in model.named_parameters(remove_duplicate=False):
        key = p.untyped_storage().data_ptr()
        if key not in seen:
            seen.add(key)
            total += p.untyped_storage().nbytes()
    return total


def _adopt(module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    module.load_state_dict(tensors, strict=True, assign=True)
    for p in module.parameters():
        p.requires_grad_(False)


# --------------------------------------------------------------------------------------------
# Re-shard


def _check_layouts(store: WeightStore, model: LlamaShard, src: ParallelConfig, dst: ParallelConfig,
                   rank: int) -> Shard:
    if src.dp != dst.dp or src.world_size != dst.world_size:
        raise SpecError(f"cannot re-shard {src} -> {dst}: DP degree and world size must be equal")
    if model.spec != store.spec:
        raise SpecError(f"model {model.spec.name} and weight store {store.spec.name} differ")
    expected = Shard.of(store.spec, src, rank)
    if model.shard != expected:
        raise SpecError(f"rank {rank} holds {model.shard}, not its shard of {src} ({expected})")
    return Shard.of(store.spec, dst, rank)  # SpecError if dst cannot shard the model


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _barrier(comm: Comm) -> None:
    group = getattr(comm, "replica_group", None)
    if group is None:
        return
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier(group=group)


@torch.inference_mode()
def reshard(model: LlamaShard, store: WeightStore, src: ParallelConfig, dst: ParallelConfig,
            rank: int, comm: Comm | None = None, barrier: bool = True) -> ReshardStats:
    """Turn ``model`` (global ``rank``'s shard under ``src``) into its shard under ``dst``, in
    place: free the old tensors, copy the new ones from ``store`` layer by layer, rebuild the
    modules with ``comm`` (the ``dst`` comm; default: keep the model's), then barrier over the
    replica. Every rank of the replica calls it with the same layouts. SpecError for layouts that
    differ in DP or world size, or a model that is not ``rank``'s shard of ``src``."""
    new_shard = _check_layouts(store, model, src, dst, rank)
    comm = comm or model.comm
    if new_shard == model.shard:  # same layout: nothing moves (every rank of the replica agrees)
        model.comm = comm
        size = shard_bytes(model)
        return ReshardStats(rank, str(src), str(dst), 0.0, 0.0, 0.0, 0.0, size, size, 0, 0, size, 0)
    device, dtype, spec = model.device, model.dtype, store.spec
    cuda = device.type == "cuda"
    _sync(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
        cuda_start = torch.cuda.memory_allocated(device)
    t0 = time.perf_counter()

    # 1. free: drop every reference the model holds to its tensors (embedding, layers, head)
    old_bytes = shard_bytes(model)
    for name in ("embed_tokens", "layers", "norm", "lm_head"):
        if name in model._modules:
            delattr(model, name)
    _sync(device)
    t1 = time.perf_counter()

    # 2. load: new modules (meta skeletons) adopt tensors copied from the store, one layer at a
    # time, in canonical module order (embedding, layers, norm, head)
    model.shard, model.comm, model.vocab_rows = new_shard, comm, new_shard.vocab_rows(spec)
    t = store.tensors
    live = loaded = 0
    kw = dict(dtype=dtype, device="meta")
    embed_w = None
    if new_shard.is_first:
        model.embed_tokens = Embedding(len(model.vocab_rows), spec.hidden_size, **kw)
        embed_w = _vocab_rows(t["model.embed_tokens.weight"], model.vocab_rows, dtype, device)
        _adopt(model.embed_tokens, {"weight": embed_w})
        live += embed_w.nbytes
    model.layers = nn.ModuleDict()
    for i in new_shard.layers:
        layer = DecoderLayer(spec, new_shard, comm, **kw)
        tensors = layer_tensors(store, new_shard, i, dtype, device)
        _adopt(layer, tensors)
        model.layers[str(i)] = layer
        live += sum(x.nbytes for x in tensors.values())
    if new_shard.is_last:
        model.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, **kw)
        norm_w = _copy(t["model.norm.weight"], dtype, device)
        _adopt(model.norm, {"weight": norm_w})
        live += norm_w.nbytes
        model.lm_head = Linear(spec.hidden_size, len(model.vocab_rows), **kw)
        if spec.tie_word_embeddings and embed_w is not None:
            head_w = embed_w  # one tensor, as materialize does for a tied single-stage shard
        else:
            name = "model.embed_tokens.weight" if spec.tie_word_embeddings else "lm_head.weight"
            head_w = _vocab_rows(t[name], model.vocab_rows, dtype, device)
            live += head_w.nbytes
        _adopt(model.lm_head, {"weight": head_w})
    loaded = live
    _sync(device)
    t2 = time.perf_counter()

    # 3. barrier: no rank of the replica runs the new layout before all of them hold it
    if barrier:
        _barrier(comm)
    t3 = time.perf_counter()

    new_bytes = shard_bytes(model)
    assert new_bytes == loaded, (new_bytes, loaded)
    # free-then-load: the live bytes go old -> 0 -> new, so the accounted peak is the larger end
    peak = max(old_bytes, new_bytes)
    device_extra = None
    if cuda:
        device_extra = torch.cuda.max_memory_allocated(device) - max(
            cuda_start, torch.cuda.memory_allocated(device))
    return ReshardStats(
        rank=rank, src=str(src), dst=str(dst), reshard_s=t3 - t0, free_s=t1 - t0, load_s=t2 - t1,
        barrier_s=t3 - t2, old_shard_bytes=old_bytes, new_shard_bytes=new_bytes,
        bytes_freed=old_bytes, bytes_loaded=loaded, peak_bytes=peak,
        peak_extra_bytes=peak - max(old_bytes, new_bytes), device_peak_extra_bytes=device_extra,
    )
