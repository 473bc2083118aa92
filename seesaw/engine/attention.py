"""Causal attention over a paged KV cache for a flat, varlen batch of several sequences.

A step's tokens come back to back; ``AttnMetadata`` says how many belong to each sequence, how
long each sequence's context is after the step, and which cache slots hold it. Prefill chunks are
attended one sequence at a time (``scaled_dot_product_attention`` over the gathered context, with
a causal mask offset for later chunks); single-token decodes are gathered into one padded batch
and attended in a single call. Correctness first: no custom kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

__all__ = ["AttnMetadata", "paged_attention"]

_SDPA_HAS_GQA = tuple(int(x) for x in torch.__version__.split("+")[0].split(".")[:2]) >= (2, 5)


@dataclass
class AttnMetadata:
    """Where the tokens of one step come from and where their KV goes; shared by all layers.

    The batch holds ``len(query_lens)`` sequences back to back; sequence ``s`` contributes
    ``query_lens[s]`` new tokens whose KV, with everything before it, spans ``context_lens[s]``
    positions. With a paged cache, ``slot_mapping[T]`` says where each new token's K/V is written
    (``block * block_size + offset``) and ``context_slots[s]`` where sequence ``s`` reads its whole
    context from. Without a cache (``slot_mapping is None``) every sequence attends only to its
    tokens in this batch, which must then start at position 0.
    """

    query_lens: list[int]
    context_lens: list[int]
    slot_mapping: torch.Tensor | None = None  # [T] long
    context_slots: list[torch.Tensor] | None = None  # per sequence [context_len] long
    # decode fast path: sequences with one new token, attended as one padded batch
    decode_seqs: list[int] | None = None
    decode_rows: torch.Tensor | None = None  # [S_d] long, their tokens' rows in the batch
    decode_slots: torch.Tensor | None = None  # [S_d, L_max] long, padded with 0
    decode_mask: torch.Tensor | None = None  # [S_d, 1, 1, L_max] bool

    @property
    def num_tokens(self) -> int:
        return sum(self.query_lens)

    @classmethod
    def no_cache(cls, query_lens: list[int]) -> "AttnMetadata":
        return cls(list(query_lens), list(query_lens))


def _sdpa(q, k, v, mask=None, causal=False):
    # q [B, Hq, Tq, d], k/v [B, Hkv, Tk, d]
    if k.shape[1] != q.shape[1]:
        if _SDPA_HAS_GQA:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, enable_gqa=True)
        rep = q.shape[1] // k.shape[1]
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)


def paged_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttnMetadata,
    k_cache: torch.Tensor | None, v_cache: torch.Tensor | None,
) -> torch.Tensor:
    """Causal attention of a varlen batch over each sequence's context; writes the new K/V into
    the cache first. q [T, Hq, d], k/v [T, Hkv, d], caches [blocks, block_size, Hkv, d]."""
    T, h_q, d = q.shape
    out = torch.empty_like(q)  # [T, Hq, d]
    if k_cache is None:
        start = 0
        for n in meta.query_lens:
            qs, ks, vs = (x[start:start + n].transpose(0, 1).unsqueeze(0) for x in (q, k, v))
            out[start:start + n] = _sdpa(qs, ks, vs, causal=True)[0].transpose(0, 1)
            start += n
        return out

    h_kv = k.shape[1]
    k_flat = k_cache.view(-1, h_kv, d)  # [slots, Hkv, d]
    v_flat = v_cache.view(-1, h_kv, d)
    k_flat[meta.slot_mapping] = k
    v_flat[meta.slot_mapping] = v

    starts = [0]
    for n in meta.query_lens:
        starts.append(starts[-1] + n)
    decode = set(meta.decode_seqs or ())
    if decode:
        rows = meta.decode_rows  # [S_d] token index of each decoding sequence
        qd = q[rows].unsqueeze(2)  # [S_d, Hq, 1, d]
        kd = k_flat[meta.decode_slots].transpose(1, 2)  # [S_d, Hkv, L_max, d]
        vd = v_flat[meta.decode_slots].transpose(1, 2)
        out[rows] = _sdpa(qd, kd, vd, mask=meta.decode_mask)[:, :, 0]
    for s, n in enumerate(meta.query_lens):
        if s in decode:
            continue
        ctx = meta.context_lens[s]
        slots = meta.context_slots[s]
        qs = q[starts[s]:starts[s + 1]].transpose(0, 1).unsqueeze(0)  # [1, Hq, n, d]
        ks = k_flat[slots].transpose(0, 1).unsqueeze(0)  # [1, Hkv, ctx, d]
        vs = v_flat[slots].transpose(0, 1).unsqueeze(0)
        if ctx == n:
            o = _sdpa(qs, ks, vs, causal=True)
        else:  # a later chunk: query i sits at position ctx - n + i and sees keys 0..that
            qpos = torch.arange(ctx - n, ctx, device=q.device)[:, None]
            mask = torch.arange(ctx, device=q.device)[None, :] <= qpos  # [n, ctx]
            o = _sdpa(qs, ks, vs, mask=mask)
        out[starts[s]:starts[s + 1]] = o[0].transpose(0, 1)
    return out
