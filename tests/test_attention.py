"""Paged attention kernels against a dense float64 reference: ragged batches of decodes, whole
prompts and later prefill chunks (which attend to the context already in the cache), GQA and
MHA, blocks scattered over the cache; on every backend this machine has."""

from __future__ import annotations

import random

import pytest
import torch

from seesaw.engine import attention, cpu_kernel
from seesaw.engine.step_inputs import StepInputs


def _case(rng: random.Random, h_q: int, h_kv: int, d: int, bs: int, dtype, device):
    """A step of ragged sequences over a cache whose blocks are handed out in random order.
    Returns (q, k_new, v_new, caches, meta, full K/V per sequence, starts)."""
    kinds = [rng.choice(["decode", "prompt", "chunk"]) for _ in range(rng.randint(1, 7))]
    starts, lens = [], []
    for kind in kinds:
        n = 1 if kind == "decode" else rng.randint(2, 70)
        start = 0 if kind == "prompt" else rng.randint(1, 150)
        starts.append(start)
        lens.append(n)
    need = [-(-(s + n) // bs) for s, n in zip(starts, lens)]
    order = list(range(sum(need) + 3))
    rng.shuffle(order)
    tables, o = [], 0
    for nb in need:
        tables.append(order[o:o + nb])
        o += nb
    g = torch.Generator().manual_seed(rng.randint(0, 1 << 30))
    caches = [torch.randn(len(order), bs, h_kv, d, generator=g).to(dtype) for _ in range(2)]
    full = []  # per sequence: K, V [ctx, Hkv, d] (cached part from the cache, new part drawn here)
    for t, s, n in zip(tables, starts, lens):
        slots = [t[p // bs] * bs + p % bs for p in range(s)]
        kv = [c.view(-1, h_kv, d)[slots] for c in caches]
        new = [torch.randn(n, h_kv, d, generator=g).to(dtype) for _ in range(2)]
        full.append([torch.cat([a, b]) for a, b in zip(kv, new)])
    q = torch.randn(sum(lens), h_q, d, generator=g).to(dtype)
    k_new = torch.cat([f[0][s:] for f, s in zip(full, starts)])
    v_new = torch.cat([f[1][s:] for f, s in zip(full, starts)])
    batch = StepInputs(torch.device(device), bs).build(None, starts, lens, tables, None)
    to = dict(device=device)
    return (q.to(**to), k_new.to(**to), v_new.to(**to), [c.to(**to) for c in caches], batch.meta, full, starts)


def _dense(q, full, starts, lens, h_q, h_kv):
    """softmax(q K^T / sqrt(d)) V per sequence in float64, query i at position start + i."""
    out, o = [], 0
    for (k, v), s, n in zip(full, starts, lens):
        qs = q[o:o + n].double()  # [n, Hq, d]
        rep = h_q // h_kv
        kk, vv = k.double().repeat_interleave(rep, 1), v.double().repeat_interleave(rep, 1)  # [ctx, Hq, d]
        scores = torch.einsum("qhd,khd->hqk", qs, kk) / qs.shape[-1] ** 0.5
        pos = torch.arange(s, s + n)[:, None]
        scores = scores.masked_fill(torch.arange(s + n)[None, :] > pos, float("-inf"))
        out.append(torch.einsum("hqk,khd->qhd", scores.softmax(-1), vv))
        o += n
    return torch.cat(out)


def _check(backend: str, device: str, dtype, bs: int, heads, tol: float, monkeypatch, seeds=range(12)):
    h_q, h_kv, d = heads
    if backend == "torch":
        monkeypatch.setattr(attention, "attention_backend", lambda *a: "torch")
    for seed in seeds:
        rng = random.Random(seed)
        q, k, v, (kc, vc), meta, full, starts = _case(rng, h_q, h_kv, d, bs, dtype, device)
        assert attention.attention_backend(q.dtype, q.device, bs) == backend
        got = attention.paged_attention(q, k, v, meta, kc, vc)
        want = _dense(q.cpu(), full, starts, meta.query_lens, h_q, h_kv)
        assert got.shape == q.shape
        err = (got.double().cpu() - want).abs().max().item()
        assert err < tol, (seed, meta.query_lens, starts, err)
        # the step's K/V are in the cache where the slot mapping says
        assert torch.equal(kc.view(-1, h_kv, d)[meta.slot_mapping], k)


HEADS = [(9, 3, 64), (4, 4, 32), (8, 2, 16)]  # SmolLM2-like GQA, MHA, wider groups


@pytest.mark.parametrize("heads", HEADS)
@pytest.mark.parametrize("bs", [1, 16, 5])
def test_cpu_kernel_matches_dense_reference(heads, bs, monkeypatch):
    if not cpu_kernel.available():
        pytest.skip("no C compiler: the CPU kernel is not built here")
    _check("cpu-kernel", "cpu", torch.float32, bs, heads, 2e-5, monkeypatch)


@pytest.mark.parametrize("heads", HEADS[:2])
def test_portable_path_matches_dense_reference(heads, monkeypatch):
    _check("torch", "cpu", torch.float32, 16, heads, 2e-5, monkeypatch, seeds=range(6))


def test_cpu_kernel_is_invariant_to_the_rest_of_the_batch():
    """A sequence's output is bit-identical alone and in a batch, and whether its new tokens come
    as one prompt or as chunk + decode: what makes every layout equal the single process."""
    if not cpu_kernel.available():
        pytest.skip("no C compiler")
    rng = random.Random(3)
    q, k, v, (kc, vc), meta, full, starts = _case(rng, 9, 3, 64, 16, torch.float32, "cpu")
    whole = attention.paged_attention(q, k, v, meta, kc, vc)
    o = 0
    for s, (n, start) in enumerate(zip(meta.query_lens, starts)):
        table = meta.block_table[s:s + 1]
        alone = StepInputs(torch.device("cpu"), 16).build(None, [start], [n], [table[0].tolist()], None).meta
        got = attention.paged_attention(q[o:o + n], k[o:o + n], v[o:o + n], alone, kc, vc)
        assert torch.equal(got, whole[o:o + n])
        if n > 1:  # the same queries as a chunk of n - 1 tokens, then one decode
            a = StepInputs(torch.device("cpu"), 16).build(None, [start], [n - 1], [table[0].tolist()], None).meta
            b = StepInputs(torch.device("cpu"), 16).build(None, [start + n - 1], [1], [table[0].tolist()], None).meta
            first = attention.paged_attention(q[o:o + n - 1], k[o:o + n - 1], v[o:o + n - 1], a, kc, vc)
            last = attention.paged_attention(q[o + n - 1:o + n], k[o + n - 1:o + n], v[o + n - 1:o + n], b, kc, vc)
            assert torch.equal(torch.cat([first, last]), whole[o:o + n])
        o += n


@pytest.mark.gpu
@pytest.mark.parametrize("heads", [(32, 8, 128), (9, 3, 64)])
def test_cuda_paged_flash_matches_dense_reference(heads, monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    if attention.attention_backend(torch.bfloat16, torch.device("cuda"), 256) != "flash-paged":
        pytest.skip("this PyTorch has no paged varlen_attn")
    _check("flash-paged", "cuda", torch.bfloat16, 256, heads, 3e-2, monkeypatch, seeds=range(6))


@pytest.mark.gpu
def test_cuda_portable_path_matches_dense_reference(monkeypatch):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    _check("torch", "cuda", torch.bfloat16, 16, (32, 8, 128), 3e-2, monkeypatch, seeds=range(4))
