"""A LLaMA-family decoder (LLaMA 2/3, CodeLLaMA, SmolLM2, Mistral, Qwen2) in plain PyTorch, one shard per rank.

One ``LlamaShard`` holds whatever part of the model a rank owns under a ``ParallelConfig``:
- a contiguous range of decoder layers (a pipeline stage); the token embedding lives only on the
  first stage, the final norm and the LM head only on the last;
- a tensor-parallel slice (Megatron style): QKV and gate/up are column-parallel, O and down are
  row-parallel with one all-reduce after each; the embedding and the LM head are vocab-parallel
  (embedding: masked lookup + all-reduce; LM head: local logits + all-gather). When ``tp`` exceeds
  the number of KV heads, each rank holds one (replicated) KV head.
The collectives go through a ``Comm``; ``LocalComm`` is the single-process no-op, so the same
module runs alone and under torch.distributed (``seesaw.engine.dist``).

Parameter names are HF-like but fused per rank (``layers.{i}.attn.qkv_proj.weight`` holds the rank's
Q, K and V rows, ``qkv_proj.bias`` the same rows of Qwen2's biases; ``layers.{i}.mlp.gate_up_proj.weight`` its gate and up rows), with ``i`` the
global layer index. ``seesaw.engine.weights.materialize`` produces exactly these names.

Forward takes a flat, varlen batch: the new tokens of several sequences back to back (a prefill
chunk or a single decode token each), their absolute positions, and an ``AttnMetadata`` saying
where each sequence's KV lives in the paged cache (``seesaw.engine.kv``, ``seesaw.engine.attention``). RoPE uses the HF
"rotate_half" layout (the layout of HF checkpoints; GGUF files are un-permuted by the converter).
Numerics follow HF: RMSNorm in fp32, cos/sin computed in fp32 and cast to the model dtype. On the
CPU in fp32, RoPE (the same bits), RMSNorm and SwiGLU's product run as one-pass C kernels
(``seesaw.engine.cpu_ops``; RMSNorm and SiLU round otherwise than torch, within 3.1e-7 and 3e-6
relative of float64, the same on every rank), the torch code otherwise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from seesaw.engine import cpu_ops
from seesaw.engine.attention import AttnMetadata, paged_attention
from seesaw.core import ModelSpec, ParallelConfig, SpecError

__all__ = [
    "Comm",
    "LocalComm",
    "Shard",
    "stage_layers",
    "AttnMetadata",
    "LlamaShard",
    "rope_inv_freq",
]


# --------------------------------------------------------------------------------------------
# Communication


class Comm:
    """Tensor- and pipeline-parallel collectives of one rank. This base class is the
    single-process case: one TP rank, one stage, every collective a no-op."""

    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over the TP group (in place where possible); returns the result."""
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate the TP group's tensors along the last dim, in TP-rank order."""
        return x

    def send_next(self, x: torch.Tensor) -> object | None:
        """Send activations to the next pipeline stage; returns a handle to ``wait()`` on."""
        raise RuntimeError("send_next on a single-stage model")

    def recv_prev(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """Receive activations of ``shape`` from the previous pipeline stage."""
        raise RuntimeError("recv_prev on a single-stage model")

    def broadcast_from_last_stage(self, x: torch.Tensor) -> torch.Tensor:
        """Give every rank of this replica the last stage's ``x`` (same shape/dtype everywhere)."""
        return x


LocalComm = Comm


# --------------------------------------------------------------------------------------------
# Which part of the model a rank holds


def stage_layers(num_layers: int, pp: int) -> list[tuple[int, int]]:
    """Contiguous ``[start, end)`` layer ranges of the ``pp`` stages, as even as possible; when
    ``pp`` does not divide ``num_layers`` the first stages get one layer more."""
    if pp > num_layers:
        raise SpecError(f"pp={pp} exceeds the {num_layers} layers of the model")
    base, extra = divmod(num_layers, pp)
    bounds, start = [], 0
    for p in range(pp):
        end = start + base + (1 if p < extra else 0)
        bounds.append((start, end))
        start = end
    return bounds


@dataclass(frozen=True)
class Shard:
    """The slice of a model that one rank holds."""

    num_layers: int
    layer_start: int
    layer_end: int
    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1

    @classmethod
    def full(cls, spec: ModelSpec) -> "Shard":
        return cls(spec.num_hidden_layers, 0, spec.num_hidden_layers)

    @classmethod
    def of(cls, spec: ModelSpec, layout: ParallelConfig, rank: int) -> "Shard":
        """The shard of global ``rank`` under ``layout``; SpecError if the layout cannot shard it."""
        check_shardable(spec, layout)
        _, t, p = layout.coords(rank)
        start, end = stage_layers(spec.num_hidden_layers, layout.pp)[p]
        return cls(spec.num_hidden_layers, start, end, t, layout.tp, p, layout.pp)

    @property
    def is_first(self) -> bool:
        return self.pp_rank == 0

    @property
    def is_last(self) -> bool:
        return self.pp_rank == self.pp_size - 1

    @property
    def layers(self) -> range:
        return range(self.layer_start, self.layer_end)

    # -- head and column ranges of this TP rank -------------------------------------------
    def q_heads(self, spec: ModelSpec) -> range:
        n = spec.num_attention_heads // self.tp_size
        return range(self.tp_rank * n, (self.tp_rank + 1) * n)

    def kv_heads(self, spec: ModelSpec) -> range:
        """KV heads of this rank; a single replicated head when tp > num_key_value_heads."""
        h_kv = spec.num_key_value_heads
        if self.tp_size <= h_kv:
            n = h_kv // self.tp_size
            return range(self.tp_rank * n, (self.tp_rank + 1) * n)
        head = self.tp_rank // (self.tp_size // h_kv)
        return range(head, head + 1)

    def mlp_cols(self, spec: ModelSpec) -> range:
        n = spec.intermediate_size // self.tp_size
        return range(self.tp_rank * n, (self.tp_rank + 1) * n)

    def vocab_rows(self, spec: ModelSpec) -> range:
        """Vocab rows of this rank; the vocab is padded up to a multiple of tp, so the last
        rank's range may run past ``vocab_size`` (those rows are zero)."""
        n = math.ceil(spec.vocab_size / self.tp_size)
        return range(self.tp_rank * n, (self.tp_rank + 1) * n)


def check_shardable(spec: ModelSpec, layout: ParallelConfig) -> None:
    """SpecError (one line) if ``layout`` cannot shard ``spec`` evenly."""
    layout.check_model(spec)
    if spec.intermediate_size % layout.tp:
        raise SpecError(
            f"layout {layout}: tp={layout.tp} does not divide intermediate_size="
            f"{spec.intermediate_size} of {spec.name}"
        )


# --------------------------------------------------------------------------------------------
# RoPE


def rope_inv_freq(spec: ModelSpec, device=None) -> torch.Tensor:
    """Inverse frequencies [d/2] in fp32, with ``rope_scaling`` of type linear or llama3 applied."""
    d = spec.d_head
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, d, 2, dtype=torch.float32, device=device) / d))
    scaling = spec.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind == "default":
        return inv_freq
    if kind == "linear":
        return inv_freq / float(scaling["factor"])
    if kind == "llama3":
        # Llama 3.1 frequency-dependent scaling: long wavelengths are slowed by `factor`, short
        # ones kept, and the band in between interpolated (Meta's Llama 3.1 reference code).
        factor = float(scaling["factor"])
        low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old_ctx = float(scaling["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > old_ctx / low, inv_freq / factor, inv_freq)
        smooth = (old_ctx / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = (wavelen >= old_ctx / high) & (wavelen <= old_ctx / low)
        return torch.where(medium, smoothed, scaled)
    raise SpecError(f"rope_scaling type {kind!r} is not supported (default, linear, llama3)")


def _apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """HF's ``x * cos + rotate_half(x) * sin`` with ``rotate_half(x) = cat(-x2, x1)``, written
    half by half into one new tensor (the same products and sums, so the same bits, with one
    full-size allocation instead of five). x [T, heads, d], cos/sin [T, 1, d/2] (the two halves
    of HF's cos/sin are equal)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    out = torch.empty_like(x)
    o1, o2 = out[..., :half], out[..., half:]
    tmp = torch.mul(x2, sin)
    torch.mul(x1, cos, out=o1).sub_(tmp)  # x1 cos + (-x2) sin
    torch.mul(x1, sin, out=tmp)
    torch.mul(x2, cos, out=o2).add_(tmp)  # x2 cos + x1 sin
    return out


# --------------------------------------------------------------------------------------------
# Modules


def _weight(*shape: int, **kw) -> nn.Parameter:
    # uninitialized: weights always come from a checkpoint (nn.Linear's init would cost time)
    return nn.Parameter(torch.empty(*shape, **kw), requires_grad=False)


class Linear(nn.Module):
    """``x @ W.T`` (``+ b`` with ``bias``: Qwen2's Q, K, V projections)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = False, **kw):
        super().__init__()
        self.weight = _weight(out_features, in_features, **kw)
        self.bias = _weight(out_features, **kw) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class Embedding(nn.Module):
    def __init__(self, num: int, dim: int, **kw):
        super().__init__()
        self.weight = _weight(num, dim, **kw)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.weight)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float, **kw):
        super().__init__()
        self.eps = eps
        self.weight = _weight(dim, **kw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        if x.dim() == 2 and x.stride(-1) == 1 and cpu_ops.applies(dtype, x.device) and \
                self.weight.dtype == dtype:  # one pass
            return cpu_ops.rms_norm_cpu(x, self.weight, self.eps)
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True).add_(self.eps))
        if dtype == torch.float32 and self.weight.dtype == dtype:  # in place: the same products, one pass fewer
            return x.mul_(self.weight)
        return self.weight * x.to(dtype)


class Attention(nn.Module):
    def __init__(self, spec: ModelSpec, shard: Shard, comm: Comm, attend: Callable = paged_attention, **kw):
        super().__init__()
        self.comm = comm
        self.attend = attend  # the paged attention call (the profiler passes a timed one)
        self.d = spec.d_head
        self.h_q = len(shard.q_heads(spec))
        self.h_kv = len(shard.kv_heads(spec))
        self.qkv_proj = Linear(spec.hidden_size, (self.h_q + 2 * self.h_kv) * self.d, bias=spec.qkv_bias, **kw)
        self.o_proj = Linear(self.h_q * self.d, spec.hidden_size, **kw)

    def forward(self, x, cos, sin, meta, k_cache, v_cache):
        T = x.shape[0]
        qkv = self.qkv_proj(x)  # [T, (Hq + 2 Hkv) d]
        q, k, v = qkv.split([self.h_q * self.d, self.h_kv * self.d, self.h_kv * self.d], dim=-1)
        v = v.view(T, self.h_kv, self.d)
        if cpu_ops.applies(qkv.dtype, qkv.device):  # one pass over Q and K, the same bits
            q, k = cpu_ops.rope_qk_cpu(qkv, cos, sin, self.h_q, self.h_kv, self.d)
        else:
            q = _apply_rope(q.view(T, self.h_q, self.d), cos, sin)  # [T, Hq, d]
            k = _apply_rope(k.view(T, self.h_kv, self.d), cos, sin)  # [T, Hkv, d]
        o = self.attend(q, k, v, meta, k_cache, v_cache)  # [T, Hq, d]
        return self.comm.all_reduce(self.o_proj(o.reshape(T, self.h_q * self.d)))  # [T, H]


class MLP(nn.Module):
    """SwiGLU MLP; SiLU and the product run in place on the gate/up output (no [T, I] copies)."""

    def __init__(self, spec: ModelSpec, shard: Shard, comm: Comm, **kw):
        super().__init__()
        self.comm = comm
        self.inter = len(shard.mlp_cols(spec))
        self.gate_up_proj = Linear(spec.hidden_size, 2 * self.inter, **kw)
        self.down_proj = Linear(self.inter, spec.hidden_size, **kw)

    def forward(self, x):
        gate_up = self.gate_up_proj(x)  # [T, 2 I/tp]
        if cpu_ops.applies(gate_up.dtype, gate_up.device):  # one pass instead of two
            act = cpu_ops.silu_mul_cpu(gate_up, self.inter)
        else:
            gate, up = gate_up.split(self.inter, dim=-1)  # [T, I/tp] each
            act = F.silu(gate, inplace=True).mul_(up)
        return self.comm.all_reduce(self.down_proj(act))  # [T, H]


class DecoderLayer(nn.Module):
    def __init__(self, spec: ModelSpec, shard: Shard, comm: Comm, attend: Callable = paged_attention, **kw):
        super().__init__()
        self.input_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, **kw)
        self.attn = Attention(spec, shard, comm, attend, **kw)
        self.post_attention_layernorm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, **kw)
        self.mlp = MLP(spec, shard, comm, **kw)

    def forward(self, x, cos, sin, meta, k_cache, v_cache):
        # the attention's output is a new tensor: the residual sum goes into it (a + b == b + a)
        x = self.attn(self.input_layernorm(x), cos, sin, meta, k_cache, v_cache).add_(x)
        return x.add_(self.mlp(self.post_attention_layernorm(x)))  # x is this layer's own tensor


class LlamaShard(nn.Module):
    """The part of a LLaMA model held by one rank; see the module docstring.

    Build it empty (``device="meta"`` is cheapest) and fill it with ``load(state_dict)`` from
    ``weights.materialize``; or pass ``state_dict`` directly. ``attend`` is every layer's paged
    attention call (default ``attention.paged_attention``; the profiler passes a timed wrapper).
    """

    def __init__(
        self, spec: ModelSpec, shard: Shard | None = None, comm: Comm | None = None,
        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
        state_dict: dict[str, torch.Tensor] | None = None, attend: Callable = paged_attention,
    ):
        super().__init__()
        self.spec = spec
        self.shard = shard or Shard.full(spec)
        self.comm = comm or LocalComm()
        self.dtype = dtype
        build = "meta" if state_dict is not None else device
        kw = dict(dtype=dtype, device=build)
        sh = self.shard
        self.vocab_rows = sh.vocab_rows(spec)
        if sh.is_first:
            self.embed_tokens = Embedding(len(self.vocab_rows), spec.hidden_size, **kw)
        self.layers = nn.ModuleDict({str(i): DecoderLayer(spec, sh, self.comm, attend, **kw) for i in sh.layers})
        if sh.is_last:
            self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps, **kw)
            self.lm_head = Linear(spec.hidden_size, len(self.vocab_rows), **kw)
        self.inv_freq = rope_inv_freq(spec, device=device)  # [d/2] fp32, not a parameter
        if state_dict is not None:
            self.load(state_dict)

    def load(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Adopt ``state_dict`` tensors as parameters (no copy when dtype and device match)."""
        memo: dict[int, torch.Tensor] = {}  # tied embedding + LM head: cast once, share
        cast = {k: memo.setdefault(id(v), v.to(self.dtype)) for k, v in state_dict.items()}
        self.load_state_dict(cast, strict=True, assign=True)
        self.inv_freq = self.inv_freq.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def hidden_size(self) -> int:
        return self.spec.hidden_size

    # -- pieces ---------------------------------------------------------------------------
    def embed(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Token ids [T] -> hidden [T, H] (vocab-parallel: masked local lookup + all-reduce)."""
        if self.shard.tp_size == 1:
            return self.embed_tokens(token_ids)
        lo, hi = self.vocab_rows.start, self.vocab_rows.stop
        local = token_ids - lo
        outside = (token_ids < lo) | (token_ids >= hi)
        x = self.embed_tokens(local.masked_fill(outside, 0))  # [T, H]
        x = x.masked_fill(outside[:, None], 0)
        return self.comm.all_reduce(x)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Final norm + LM head: hidden [N, H] -> fp32 logits [N, V] (all-gathered over TP)."""
        local = self.lm_head(self.norm(hidden))  # [N, V_pad / tp]
        full = self.comm.all_gather(local.contiguous())  # [N, V_pad]
        return full[:, : self.spec.vocab_size].float()

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = (positions.float()[:, None] * self.inv_freq[None, :])[:, None, :]  # [T, 1, d/2]
        return freqs.cos().to(self.dtype), freqs.sin().to(self.dtype)

    def forward(
        self, x: torch.Tensor, positions: torch.Tensor, meta: AttnMetadata,
        kv_cache=None, logits_indices: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Run this rank's layers on one step.

        x: token ids [T] on the first stage, hidden states [T, H] otherwise. positions [T].
        kv_cache: a ``seesaw.engine.kv.KVCache`` for this rank's layers, or None (no cache).
        Returns hidden [T, H] on a non-last stage; on the last stage fp32 logits [N, V] of the
        rows ``logits_indices`` (all T rows when None).
        """
        if self.shard.is_first:
            x = self.embed(x)  # [T, H]
        cos, sin = self.rope(positions)
        for i, layer in self.layers.items():
            kc = vc = None
            if kv_cache is not None:
                kc, vc = kv_cache.layer(int(i))
            x = layer(x, cos, sin, meta, kc, vc)
        if not self.shard.is_last:
            return x
        if logits_indices is not None:
            x = x[logits_indices]  # [N, H]
        return self.logits(x)
