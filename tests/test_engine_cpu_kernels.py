"""The engine's C kernels (``seesaw.engine.cpu_ops``, ``cpu_kernel``) against their references: the
fused RoPE bit for bit as the model's torch RoPE (so a rank's tokens do not depend on the path it
takes), SwiGLU and RMSNorm within fp32 rounding of float64, the K/V store as index_put, and
paged attention's rows the same bits however a prompt is chunked or batched."""

from __future__ import annotations

import pytest
import torch

from seesaw.engine import cpu_kernel, cpu_ops
from seesaw.engine.model import _apply_rope

pytestmark = [pytest.mark.skipif(not (cpu_kernel.available() and cpu_ops.available()),
                                 reason="no C compiler for the CPU kernels"),
              pytest.mark.usefixtures("one_torch_thread")]


@pytest.mark.parametrize("h_q,h_kv,d,bias_cols", [(9, 3, 64, 0), (4, 4, 32, 0), (8, 2, 16, 16)])
def test_fused_rope_equals_torch_rope_bit_for_bit(h_q, h_kv, d, bias_cols):
    g = torch.Generator().manual_seed(h_q * 100 + d)
    T = 37
    # a wider buffer than Q + K + V (bias_cols extra columns): the kernel must follow the row stride
    wide = torch.randn(T, (h_q + 2 * h_kv) * d + bias_cols, generator=g) * 5
    qkv = wide[:, :(h_q + 2 * h_kv) * d]
    angles = torch.rand(T, 1, d // 2, generator=g) * 4000  # large positions: cos/sin of every sign
    cos, sin = angles.cos(), angles.sin()
    q, k = cpu_ops.rope_qk_cpu(qkv, cos, sin, h_q, h_kv, d)
    q_ref = _apply_rope(qkv[:, :h_q * d].view(T, h_q, d), cos, sin)
    k_ref = _apply_rope(qkv[:, h_q * d:(h_q + h_kv) * d].view(T, h_kv, d), cos, sin)
    assert q.shape == (T, h_q, d) and k.shape == (T, h_kv, d)
    assert torch.equal(q, q_ref) and torch.equal(k, k_ref)


def test_model_logits_are_the_same_with_either_rope(store, monkeypatch):
    """A tiny shard's logits over a prefill and a decode step are the same bits whether its
    attention blocks take the fused RoPE (the default on fp32 CPU) or the torch one."""
    from seesaw.engine.runner import ModelRunner
    from seesaw.engine.weights import build_shard
    from tests.engine_helpers import random_prompts

    prompts = random_prompts([9, 23, 4], vocab_size=store.spec.vocab_size)

    def logits() -> list[torch.Tensor]:
        runner = ModelRunner(build_shard(store), 16, 4)
        first = runner.step_logits(dict(enumerate(prompts)), all_tokens=True)
        second = runner.step_logits({i: [7 + i] for i in range(len(prompts))})
        return [first[i] for i in range(3)] + [second[i] for i in range(3)]

    calls = []
    real = cpu_ops.rope_qk_cpu
    monkeypatch.setattr(cpu_ops, "rope_qk_cpu", lambda *a: calls.append(1) or real(*a))
    fused = logits()
    assert calls, "the fp32 CPU shard did not take the fused RoPE"

    def torch_rope(qkv, cos, sin, h_q, h_kv, d):
        T = qkv.shape[0]
        return (_apply_rope(qkv[:, :h_q * d].reshape(T, h_q, d), cos, sin),
                _apply_rope(qkv[:, h_q * d:(h_q + h_kv) * d].reshape(T, h_kv, d), cos, sin))

    monkeypatch.setattr(cpu_ops, "rope_qk_cpu", torch_rope)
    for a, b in zip(fused, logits()):
        assert torch.equal(a, b)


def test_fused_silu_mul_matches_float64_swiglu():
    """``silu(gate) * up`` in one pass over a fused gate/up output: within fp32 rounding of a
    float64 reference (large |gate| included: no overflow, tiny values where the gate is very
    negative), written over the gate half and nowhere else."""
    g = torch.Generator().manual_seed(5)
    T, inter = 29, 80  # not a multiple of the vector width
    x = torch.randn(T, 2 * inter + 8, generator=g) * 6  # 8 more columns: follows the row stride
    x[0, :8] = torch.tensor([-100.0, -88.0, -20.0, -1e-30, 0.0, 1e-30, 20.0, 100.0])
    before = x.clone()
    out = cpu_ops.silu_mul_cpu(x[:, :2 * inter], inter)
    gate, up = before[:, :inter].double(), before[:, inter:2 * inter].double()
    ref = gate * torch.sigmoid(gate) * up
    assert out.data_ptr() == x.data_ptr() and out.shape == (T, inter)
    torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-30)
    assert torch.equal(x[:, inter:], before[:, inter:])  # up half and the extra columns untouched


def test_store_kv_writes_what_index_put_writes():
    """The step's K/V rows land in exactly the slots index_put would write, K contiguous and V a
    strided view of a fused QKV output (as the model hands them over); other slots untouched."""
    g = torch.Generator().manual_seed(9)
    blocks, bs, h_kv, d, T = 7, 4, 2, 16, 11
    qkv = torch.randn(T, (3 + 2 * h_kv) * d, generator=g)
    k = torch.randn(T, h_kv, d, generator=g)
    v = qkv[:, (3 + h_kv) * d:].view(T, h_kv, d)
    slots = torch.randperm(blocks * bs, generator=g)[:T]
    caches = [torch.randn(blocks, bs, h_kv, d, generator=g) for _ in range(2)]
    ref = [c.clone() for c in caches]
    ref[0].view(-1, h_kv, d)[slots] = k
    ref[1].view(-1, h_kv, d)[slots] = v
    cpu_kernel.store_kv_cpu(k, v, slots, *caches)
    assert torch.equal(caches[0], ref[0]) and torch.equal(caches[1], ref[1])


def test_fused_rms_norm_matches_float64_and_the_model_uses_it(monkeypatch):
    """RMSNorm in one pass: within fp32 rounding of a float64 reference, rows of any stride; the
    model's RMSNorm takes it for fp32 CPU rows."""
    from seesaw.engine.model import RMSNorm

    g = torch.Generator().manual_seed(3)
    wide = torch.randn(13, 100, generator=g) * 3
    x = wide[:, :90]  # rows 100 floats apart; 90 = not a multiple of the vector width
    w = torch.randn(90, generator=g)
    got = cpu_ops.rms_norm_cpu(x, w, 1e-5)
    xd = x.double()
    ref = w.double() * (xd * torch.rsqrt(xd.pow(2).mean(-1, keepdim=True) + 1e-5))
    torch.testing.assert_close(got.double(), ref, rtol=2e-6, atol=1e-7)

    norm = RMSNorm(90, 1e-5)
    norm.weight.data = w
    calls = []
    monkeypatch.setattr(cpu_ops, "rms_norm_cpu", lambda *a: calls.append(1) or got)
    assert norm(x) is got and calls


@pytest.mark.parametrize("h_q,h_kv,d,bs", [(9, 3, 64, 16), (8, 2, 16, 5), (4, 4, 32, 1)])
def test_paged_attention_rows_do_not_depend_on_chunking_or_batch(h_q, h_kv, d, bs):
    """A 300-token prompt attended as one chunk, and as chunks of many sizes (single tokens,
    chunks across the kernel's spans of blocks, alongside another sequence), gives every query
    bit for bit the same output: what makes chunked prefill under DP/PP equal the single process."""
    from seesaw.engine import attention
    from seesaw.engine.step_inputs import StepInputs

    g = torch.Generator().manual_seed(h_q + bs)
    n, other = 300, 37
    need = -(-n // bs) + -(-other // bs)
    blocks = torch.randperm(need + 2, generator=g).tolist()
    table, table_o = blocks[:-(-n // bs)], blocks[-(-n // bs):]
    q, k, v = (torch.randn(n, h, d, generator=g) for h in (h_q, h_kv, h_kv))
    qo, ko, vo = (torch.randn(other, h, d, generator=g) for h in (h_q, h_kv, h_kv))
    caches = [torch.zeros(need + 2, bs, h_kv, d) for _ in range(2)]
    inputs = StepInputs(torch.device("cpu"), bs)

    def run(start, stop, with_other=False):
        if not with_other:
            meta = inputs.build(None, [start], [stop - start], [table], None).meta
            return attention.paged_attention(q[start:stop], k[start:stop], v[start:stop], meta, *caches)
        meta = inputs.build(None, [0, start], [other, stop - start], [table_o, table], None).meta
        out = attention.paged_attention(torch.cat([qo, q[start:stop]]), torch.cat([ko, k[start:stop]]),
                                         torch.cat([vo, v[start:stop]]), meta, *caches)
        return out[other:]

    whole = run(0, n)
    for chunks in ([1, 1, 62, 1, 65, 64, 100, 6], [17, 111, 64, 64, 44], [299, 1]):
        bounds = [0]
        for c in chunks:
            bounds.append(bounds[-1] + c)
        assert bounds[-1] == n
        pieces = [run(a, b, with_other=i % 2 == 1) for i, (a, b) in enumerate(zip(bounds, bounds[1:]))]
        assert torch.equal(torch.cat(pieces), whole), chunks
