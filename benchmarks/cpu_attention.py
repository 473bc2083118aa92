"""CPU attention paths on one layer of SmolLM2-135M heads (9 query heads, 3 KV heads, d 64, blocks
of 16 tokens), fp32, one thread, thread CPU time, best of ``--repeats``:

- prefill: 8 prompts x 512 tokens, causal, through the engine's C kernel
  (``cpu_kernel.paged_attention_cpu``, every prompt in one call) against ``scaled_dot_product_attention``
  called per prompt and a GEMM-shaped version (per prompt, Q K^T and P V as batched matmuls over
  the KV heads with a masked softmax between); GFLOP/s of the causal FLOPs (2 n^2 d h_q per prompt);
- decode: 64 sequences x 438 tokens of context, one query each, through the C kernel, over one
  layer's K/V (43 MB, cache-resident between repeats) and over 30 layers' (1.3 GB, from memory):
  GB/s of K/V read.

Why the engine keeps the kernel for prefill rows rather than a GEMM-shaped path: see
``seesaw/engine/attention.py``. Last line: one JSON object.

    .venv/bin/python benchmarks/cpu_attention.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch
import torch.nn.functional as F

H_Q, H_KV, D, BS = 9, 3, 64, 16


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.thread_time()
        fn()
        best = min(best, time.thread_time() - t0)
    return best


def prefill(repeats: int, prompts: int = 8, n: int = 512) -> dict:
    from seesaw.engine import cpu_kernel

    blocks = prompts * n // BS
    kc, vc = torch.randn(blocks, BS, H_KV, D), torch.randn(blocks, BS, H_KV, D)
    table = torch.arange(blocks, dtype=torch.int32).view(prompts, -1).contiguous()
    q = torch.randn(prompts * n, H_Q, D)
    cu = torch.arange(0, prompts * n + 1, n, dtype=torch.int32)
    lens = torch.full((prompts,), n, dtype=torch.int32)
    kf, vf = kc.view(prompts, n, H_KV, D), vc.view(prompts, n, H_KV, D)
    g = H_Q // H_KV
    mask = torch.ones(n, n, dtype=torch.bool).triu(1)

    def kernel():
        cpu_kernel.paged_attention_cpu(q, kc, vc, cu, lens, table, D ** -0.5)

    def sdpa():
        for s in range(prompts):
            F.scaled_dot_product_attention(q[s * n:(s + 1) * n].transpose(0, 1)[None], kf[s].transpose(0, 1)[None],
                                           vf[s].transpose(0, 1)[None], is_causal=True, enable_gqa=True)

    def gemm():
        for s in range(prompts):
            qs = q[s * n:(s + 1) * n].view(n, H_KV, g, D).permute(1, 0, 2, 3).reshape(H_KV, n * g, D)
            scores = torch.bmm(qs, kf[s].permute(1, 2, 0)).mul_(D ** -0.5).view(H_KV, n, g, n)
            scores.masked_fill_(mask[None, :, None, :], float("-inf"))
            torch.bmm(scores.softmax(-1).view(H_KV, n * g, n), vf[s].transpose(0, 1))

    flops = 2 * H_Q * D * n * (n + 1) * prompts
    return {name: {"ms": round(1e3 * (t := _best(fn, repeats)), 2), "gflop_per_s": round(flops / t / 1e9, 1)}
            for name, fn in (("c_kernel", kernel), ("sdpa_per_prompt", sdpa), ("gemm_shaped", gemm))}


def decode(repeats: int, batch: int = 64, context: int = 438, layers: int = 30) -> dict:
    from seesaw.engine import cpu_kernel

    width = -(-context // BS)
    caches = [(torch.randn(batch * width, BS, H_KV, D), torch.randn(batch * width, BS, H_KV, D))
              for _ in range(layers)]
    table = torch.arange(batch * width, dtype=torch.int32).view(batch, width).contiguous()
    q = torch.randn(batch, H_Q, D)
    cu = torch.arange(batch + 1, dtype=torch.int32)
    lens = torch.full((batch,), context, dtype=torch.int32)

    def run(n_layers: int):
        for kc, vc in caches[:n_layers]:
            cpu_kernel.paged_attention_cpu(q, kc, vc, cu, lens, table, D ** -0.5)

    layer_bytes = batch * context * 2 * H_KV * D * 4
    out = {}
    for name, n_layers in (("one_layer_in_cache", 1), ("all_layers_from_memory", layers)):
        t = _best(lambda: run(n_layers), repeats)
        out[name] = {"ms": round(1e3 * t, 2), "gb_per_s": round(n_layers * layer_bytes / t / 1e9, 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    from seesaw.engine import cpu_kernel

    if not cpu_kernel.available():
        raise SystemExit("the CPU attention kernel is not built here (no C compiler, or SEESAW_CPU_KERNEL=0)")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    load = os.getloadavg()[0]
    pre, dec = prefill(args.repeats), decode(args.repeats)
    for name, r in pre.items():
        print(f"prefill 8 x 512, {name}: {r['ms']} ms, {r['gflop_per_s']} GFLOP/s")
    for name, r in dec.items():
        print(f"decode 64 x 438, {name}: {r['ms']} ms, {r['gb_per_s']} GB/s of K/V")
    print(json.dumps({"prefill": pre, "decode": dec, "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}))


if __name__ == "__main__":
    main()
