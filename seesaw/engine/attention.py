"""Causal attention over a paged KV cache for a flat, varlen batch of several sequences.

A step's tokens come back to back; ``AttnMetadata`` says how many belong to each sequence
(``cu_query``), how long each sequence's context is after the step (``seq_lens``) and which
cache blocks hold it (``block_table``). ``paged_attention`` writes the step's K/V into the cache,
then attends every query token of the step -- prefill chunks (a later chunk attends to the
earlier context in the cache) and single-token decodes alike -- in ONE call that reads the
context where it lives, following the block table:

- CPU, fp32: a small compiled C kernel (``seesaw.engine.cpu_kernel``), one call per layer.
- CUDA with a block size that is a multiple of 256: PyTorch's FlashAttention varlen kernel with
  a paged KV cache (``torch.nn.attention.varlen.varlen_attn(..., block_table=, seqused_k=)``,
  PyTorch >= 2.9); FlashAttention-2's paged path requires pages of 256 tokens.
- Otherwise (no compiler, another dtype on CPU, CUDA with small blocks or an older PyTorch): the
  portable torch path, which gathers each context into a padded tensor and calls
  ``scaled_dot_product_attention`` (decodes as one padded batch, prefill chunks one at a time).
  It is also what the kernels are tested against, besides a dense float64 reference.

Why these (measured on this 2-core shared Xeon, load average ~8, one torch thread, SmolLM2-135M
heads: 9 query heads, 3 KV heads, head_dim 64, block size 16; best of 5 interleaved runs,
``/tmp``-script in the commit message): one layer's decode attention of 64 sequences with
contexts of 200-1000 tokens (58 MB of K/V) took 305 ms as gather + padded SDPA (the gather alone
~90 ms), 247 ms as a ``torch.compile``d gather-free reduction (after a 115 s compile), and 44 ms
in the C kernel (7x less; 8.1 ms, 7.1 GB/s of K/V, on the quiet machine later). FlexAttention on CPU needs the same compile per shape, and its
query blocks would make a decode batch attend the union of its sequences' blocks. A 1024-token
causal prefill of one sequence took 115 ms in the C kernel against 62 ms in SDPA's flash kernel
(the kernel's tiles are simple FMA loops, not a GEMM), which the engine accepts for one call per
step instead of one per sequence; prefill attention is a small part of a step's FLOPs below a
few thousand tokens. Since then the kernel reads each block once for all heads, transposes K
in registers, walks spans of 4 blocks and works in 8-row x 32-column register tiles
(``cpu_kernel``): one layer of 8 x 512-token prompts (2.4 GFLOP of causal attention) took
27.3/27.9 ms of thread CPU time (87-89 GFLOP/s) against 39.6/39.9 ms for SDPA called per
sequence and 56.4/59.0 ms for a GEMM-shaped version (per sequence, Q K^T and P V as batched
matmuls over the KV heads, a masked softmax between), in the same run (the comparison that
``benchmarks/cpu_attention.py`` makes); the decode batch above ~3.5 ms (12.5 GB/s of K/V). A GEMM-shaped path would also
make a row's result depend on its chunk: BLAS picks its kernels by the matrix shapes (a 1-token
chunk is a matrix-vector product), so chunked prefill under DP/PP would round differently from
the single process, which the kernel's fixed per-row arithmetic rules out.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from seesaw.engine import cpu_kernel

__all__ = ["AttnMetadata", "paged_attention", "attention_backend"]

_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)
_FLASH_PAGE = 256  # FlashAttention-2's paged KV needs pages of a multiple of 256 tokens

try:  # PyTorch >= 2.9; a paged cache (block_table, seqused_k) in later versions only
    from torch.nn.attention.varlen import varlen_attn as _varlen_attn

    if not {"block_table", "seqused_k"} <= set(inspect.signature(_varlen_attn).parameters):
        _varlen_attn = None
except ImportError:  # pragma: no cover - older torch
    _varlen_attn = None


@dataclass
class AttnMetadata:
    """Where the tokens of one step come from and where their KV goes; shared by all layers.

    The batch holds ``len(query_lens)`` sequences back to back; sequence ``s`` contributes
    ``query_lens[s]`` new tokens whose KV, with everything before it, spans ``context_lens[s]``
    positions. With a paged cache, ``slot_mapping[T]`` says where each new token's K/V is written
    (``block * block_size + offset``) and ``block_table[s]`` which blocks hold sequence ``s``'s
    context (padded with 0 past it); ``cu_query`` [S+1] and ``seq_lens`` [S] are the query
    offsets and context lengths as int32 tensors on the device. Without a cache
    (``slot_mapping is None``) every sequence attends only to its tokens in this batch, which
    must then start at position 0.
    """

    query_lens: list[int]
    context_lens: list[int]
    slot_mapping: torch.Tensor | None = None  # [T] long
    block_table: torch.Tensor | None = None  # [S, max_blocks] int32
    cu_query: torch.Tensor | None = None  # [S+1] int32
    seq_lens: torch.Tensor | None = None  # [S] int32
    cu_keys: torch.Tensor | None = None  # [S+1] int32, offsets of the contexts (varlen kernels' cu_seqlens_k)

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)

    @property
    def max_query_len(self) -> int:
        return max(self.query_lens)

    @classmethod
    def no_cache(cls, query_lens: list[int]) -> "AttnMetadata":
        return cls(list(query_lens), list(query_lens))


def attention_backend(q_dtype: torch.dtype, device: torch.device, block_size: int) -> str:
    """Which path ``paged_attention`` takes: ``"cpu-kernel"``, ``"flash-paged"`` or ``"torch"``."""
    if cpu_kernel.applies(q_dtype, device):
        return "cpu-kernel"
    if device.type == "cuda" and _varlen_attn is not None and block_size % _FLASH_PAGE == 0 and q_dtype in (
            torch.float16, torch.bfloat16):
        return "flash-paged"
    return "torch"


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMetadata,
    k_cache: torch.Tensor | None, v_cache: torch.Tensor | None,
) -> torch.Tensor:
    """Causal attention of a varlen batch over each sequence's context; writes the new K/V into
    the cache first. q [T, Hq, d], k/v [T, Hkv, d], caches [blocks, block_size, Hkv, d]."""
    if k_cache is None:
        return _no_cache(q, k, v, meta)
    _, bs, h_kv, d = k_cache.shape
    backend = attention_backend(q.dtype, q.device, bs)
    if backend == "cpu-kernel":
        cpu_kernel.store_kv_cpu(k, v, meta.slot_mapping, k_cache, v_cache)
        return cpu_kernel.paged_attention_cpu(q, k_cache, v_cache, meta.cu_query, meta.seq_lens, meta.block_table,
                                              d ** -0.5)
    k_cache.view(-1, h_kv, d)[meta.slot_mapping] = k
    v_cache.view(-1, h_kv, d)[meta.slot_mapping] = v
    if backend == "flash-paged":
        return _varlen_attn(q, k_cache, v_cache, meta.cu_query, meta.cu_keys, meta.max_query_len,
                            meta.block_table.shape[1] * bs, window_size=(-1, 0), enable_gqa=h_kv != q.shape[1],
                            seqused_k=meta.seq_lens, block_table=meta.block_table)
    return gathered_attention(q, k_cache, v_cache, meta)


def _sdpa(q, k, v, mask=None, causal=False):
    # q [B, Hq, Tq, d], k/v [B, Hkv, Tk, d]
    if k.shape[1] != q.shape[1]:
        if _SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def _no_cache(q, k, v, meta: AttnMetadata) -> torch.Tensor:
    out = torch.empty_like(q)  # [T, Hq, d]
    start = 0
    for n in meta.query_lens:
        qs, ks, vs = (x[start:start + n].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        out[start:start + n] = _sdpa(qs, ks, vs, causal=True)[0].transpose(0, 1)
        start += n
    return out


def gathered_attention(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                       meta: AttnMetadata) -> torch.Tensor:
    """The portable path (and the kernels' reference): each context gathered out of the cache
    through the block table, decodes attended as one padded SDPA batch, prefill chunks one SDPA
    call each (a later chunk with its causal mask offset)."""
    _, bs, h_kv, d = k_cache.shape
    k_flat, v_flat = k_cache.view(-1, h_kv, d), v_cache.view(-1, h_kv, d)
    table = meta.block_table.long()
    slots = (table[:, :, None] * bs + torch.arange(bs, device=q.device)).flatten(1)  # [S, W*bs]
    out = torch.empty_like(q)
    starts = [0]
    for n in meta.query_lens:
        starts.append(starts[-1] + n)
    decode = [s for s, n in enumerate(meta.query_lens) if n == 1]
    if decode:
        lens = torch.tensor([meta.context_lens[s] for s in decode], device=q.device)
        l_max = int(max(meta.context_lens[s] for s in decode))
        valid = torch.arange(l_max, device=q.device)[None, :] < lens[:, None]  # [S_d, L]
        sl = slots[decode, :l_max] * valid
        rows = torch.tensor([starts[s] for s in decode], device=q.device)
        kd = k_flat[sl].transpose(1, 2)  # [S_d, Hkv, L, d]
        vd = v_flat[sl].transpose(1, 2)
        out[rows] = _sdpa(q[rows].unsqueeze(2), kd, vd, mask=valid[:, None, None, :])[:, :, 0]
    for s, n in enumerate(meta.query_lens):
        if n == 1:
            continue
        ctx = meta.context_lens[s]
        qs = q[starts[s]:starts[s + 1]].transpose(0, 1).unsqueeze(0)  # [1, Hq, n, d]
        ks = k_flat[slots[s, :ctx]].transpose(0, 1).unsqueeze(0)  # [1, Hkv, ctx, d]
        vs = v_flat[slots[s, :ctx]].transpose(0, 1).unsqueeze(0)
        if ctx == n:
            o = _sdpa(qs, ks, vs, causal=True)
        else:  # a later chunk: query i sits at position ctx - n + i and sees keys 0..that
            qpos = torch.arange(ctx - n, ctx, device=q.device)[:, None]
            mask = torch.arange(ctx, device=q.device)[None, :] <= qpos  # [n, ctx]
            o = _sdpa(qs, ks, vs, mask=mask)
        out[starts[s]:starts[s + 1]] = o[0].transpose(0, 1)
    return out
