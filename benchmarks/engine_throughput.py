"""Engine throughput: the real executor against ``transformers.generate`` on the same workload.

CPU part: the tiny random model and SmolLM2-135M under T1, T2 and P2 (SmolLM2's 9 heads do not
split in two, so it runs T3 instead of T2) through ``seesaw.engine.launch.run_batch`` (spawned
gloo ranks, one torch thread each), on a fixed workload: ``--num-prompts`` prompts of
``--prompt-len`` seeded random tokens, exactly ``--new-tokens`` greedy new tokens each (EOS
ignored). The yardstick is ``transformers`` ``generate`` on the same prompts (one batch, greedy,
one torch thread, same dtype). Engine time is the driver's measured makespan (model loading and
process start excluded); the transformers time is the ``generate`` call.

CUDA part (skipped without a CUDA device): T1 with a LLaMA-3-8B-shaped random bf16 model built
on the device: prefill FLOP/s against the GPU's peak (dense matmul FLOPs ``2 N`` per token per
parameter plus causal attention ``2 n^2 d h_q`` per layer and sequence, see PaLM Appendix B), and
decode tokens/s with the achieved memory bandwidth (weights + KV read per step / step time)
as a fraction of the HBM roofline from the catalog's GPU profile.

Prints a table, then one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def _items(n: int, prompt_len: int, new_tokens: int, vocab: tuple[int, int], seed: int):
    from seesaw.engine.batch_io import BatchItem

    rng = np.random.default_rng(seed)
    return [BatchItem(f"b{i}", rng.integers(*vocab, prompt_len).tolist(), new_tokens, ignore_eos=True)
            for i in range(n)]


def engine_run(model_dir, store, items, layout: str, timeout_s: float = 600.0) -> dict:
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.launch import run_batch
    from seesaw.core import VllmPolicy, parse_parallel

    cfg = EngineConfig(VllmPolicy(layout=parse_parallel(layout)), model_dir=str(model_dir), timeout_s=timeout_s)
    return run_batch(store, items, cfg)


def hf_run(model_dir, items, new_tokens: int) -> dict:
    import transformers

    torch.set_num_threads(1)
    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    ids = torch.tensor([it.prompt_ids for it in items])  # [B, S], equal lengths: no padding
    with torch.inference_mode():
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        elapsed = time.perf_counter() - t0
    n_out = int((out.shape[1] - ids.shape[1]) * out.shape[0])
    total = n_out + ids.numel()
    return {"elapsed_time": elapsed, "tokens_per_second": total / elapsed, "output_tokens_per_second": n_out / elapsed}


def cpu_table(args) -> list[dict]:
    from seesaw.engine.checkpoint import resolve_model
    from seesaw.engine.weights import load_checkpoint

    rows = []
    plans = [("tiny", ("T1", "T2", "P2"), (0, 256)), ("smollm2-135m", ("T1", "P2", "T3"), (100, 49000))]
    for name, layouts, vocab in plans:
        if args.models and name not in args.models:
            continue
        model_dir = resolve_model(name)
        store = load_checkpoint(model_dir)
        items = _items(args.num_prompts, args.prompt_len, args.new_tokens, vocab, args.seed)
        hf = hf_run(model_dir, items, args.new_tokens)
        rows.append({"model": name, "runner": "transformers", "layout": "-", "ranks": 1, **_rates(hf), "vs_hf": 1.0})
        print(f"{name} transformers: {hf['output_tokens_per_second']:.1f} output tok/s", flush=True)
        if name == "smollm2-135m":
            rows.append({"model": name, "runner": "seesaw", "layout": "T2", "ranks": 2, "elapsed_s": None,
                         "tokens_per_s": None, "output_tokens_per_s": None, "vs_hf": None,
                         "note": "n/a: 9 attention heads do not split over 2 ranks"})
        for layout in layouts:
            res = engine_run(model_dir, store, items, layout)
            assert res["total_output_tokens"] == args.num_prompts * args.new_tokens
            ratio = res["output_tokens_per_second"] / hf["output_tokens_per_second"]
            from seesaw.core import parse_parallel

            rows.append({"model": name, "runner": "seesaw", "layout": layout,
                         "ranks": parse_parallel(layout).world_size, **_rates(res), "vs_hf": round(ratio, 3),
                         "time_by_phase": res["time_by_phase"]})
            print(f"{name} {layout}: {res['output_tokens_per_second']:.1f} output tok/s ({ratio:.2f}x transformers)",
                  flush=True)
    return rows


def _rates(r: dict) -> dict:
    return {"elapsed_s": round(r["elapsed_time"], 4), "tokens_per_s": round(r["tokens_per_second"], 1),
            "output_tokens_per_s": round(r["output_tokens_per_second"], 1)}


# --------------------------------------------------------------------------------------------
# CUDA


def _gpu_profile():
    from seesaw import catalog

    name = torch.cuda.get_device_name().lower()
    for key, prof in (("h100", "h100"), ("a100", "a100-80g" if "80" in name else "a100-40g"), ("l4", "l4"),
                      ("a10g", "a10g"), ("a10", "a10")):
        if key in name:
            return catalog.load_gpu(prof)
    return None


@torch.inference_mode()
def cuda_report(args) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device"}
    from seesaw import catalog
    from seesaw.engine.model import LlamaShard
    from seesaw.engine.runner import ModelRunner

    spec = catalog.load_model("llama3-8b")
    dev = torch.device("cuda")
    model = LlamaShard(spec, dtype=torch.bfloat16, device=dev)
    for p in model.parameters():
        p.normal_(0.0, 0.02)
    weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    B, S, steps, bs = args.cuda_batch, args.cuda_prompt_len, args.cuda_decode_steps, 16
    num_blocks = B * -(-(S + steps + 1) // bs)
    runner = ModelRunner(model, num_blocks, bs)
    g = torch.Generator().manual_seed(0)
    prompts = {i: torch.randint(0, spec.vocab_size, (S,), generator=g).tolist() for i in range(B)}

    torch.cuda.synchronize()
    t0 = time.perf_counter()
    nxt = runner.execute(prompts)  # one prefill step of B * S tokens
    torch.cuda.synchronize()
    prefill_s = time.perf_counter() - t0
    L, h_q, d = spec.num_hidden_layers, spec.num_attention_heads, spec.d_head
    # matmuls: 2 FLOPs per parameter per token (LM head only for the B sampled rows) + causal attention
    flops = (2 * L * (spec.attn_params_per_layer + spec.mlp_params_per_layer) * B * S
             + 2 * spec.vocab_size * spec.hidden_size * B + 2 * L * h_q * d * B * S * S)
    gpu = _gpu_profile()
    out = {"device": torch.cuda.get_device_name(), "model": "llama3-8b-shaped random bf16", "batch": B,
           "prompt_len": S, "prefill_s": round(prefill_s, 4), "prefill_tflops": round(flops / prefill_s / 1e12, 1)}
    if gpu is not None:
        out["prefill_fraction_of_peak"] = round(flops / prefill_s / gpu.peak_flops, 3)

    runner.execute({s: [t] for s, t in nxt.items()})  # warm-up decode
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    kv_read = 0
    cur = runner.execute({s: [t] for s, t in nxt.items()})
    for _ in range(steps - 1):
        cur = runner.execute({s: [t] for s, t in cur.items()})
    torch.cuda.synchronize()
    decode_s = time.perf_counter() - t0
    for k in range(steps):
        kv_read += B * (S + 2 + k) * spec.kv_bytes_per_token  # every decode reads each context once
    step_s = decode_s / steps
    bytes_per_s = (weight_bytes * steps + kv_read) / decode_s
    out.update({"decode_tokens_per_s": round(B * steps / decode_s, 1), "decode_step_ms": round(1e3 * step_s, 2),
                "decode_bandwidth_gb_per_s": round(bytes_per_s / 1e9, 1)})
    if gpu is not None:
        out["decode_fraction_of_hbm_roofline"] = round(bytes_per_s / gpu.hbm_bandwidth_bytes_per_s, 3)
    return out


# --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-prompts", type=int, default=16)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--models", nargs="*", default=None, help="tiny smollm2-135m (default: both)")
    ap.add_argument("--no-cpu", action="store_true", help="skip the CPU table")
    ap.add_argument("--cuda-batch", type=int, default=64)
    ap.add_argument("--cuda-prompt-len", type=int, default=512)
    ap.add_argument("--cuda-decode-steps", type=int, default=32)
    args = ap.parse_args()

    import os

    load_before = os.getloadavg()[0]
    rows = [] if args.no_cpu else cpu_table(args)
    load = round((load_before + os.getloadavg()[0]) / 2, 2)  # a shared machine: say how busy it was
    if rows:
        print(f"\nworkload: {args.num_prompts} prompts x {args.prompt_len} tokens, {args.new_tokens} new tokens "
              f"each (greedy, EOS ignored); CPU ({os.cpu_count()} cores, load average ~{load}), fp32, "
              f"1 torch thread per rank")
        print(f"{'model':<14}{'runner':<14}{'layout':<8}{'ranks':>6}{'elapsed s':>11}{'tok/s':>10}{'out tok/s':>11}"
              f"{'vs HF':>8}")
        for r in rows:
            if r.get("note"):
                print(f"{r['model']:<14}{r['runner']:<14}{r['layout']:<8}{r['ranks']:>6}  {r['note']}")
                continue
            print(f"{r['model']:<14}{r['runner']:<14}{r['layout']:<8}{r['ranks']:>6}{r['elapsed_s']:>11.3f}"
                  f"{r['tokens_per_s']:>10.1f}{r['output_tokens_per_s']:>11.1f}{r['vs_hf']:>7.2f}x")
    cuda = cuda_report(args)
    print("\ncuda:", ", ".join(f"{k}={v}" for k, v in cuda.items()))
    print(json.dumps({"cpu": rows, "cuda": cuda, "load_average": load, "cpu_count": os.cpu_count(),
                      "workload": {"num_prompts": args.num_prompts, "prompt_len": args.prompt_len,
                                   "new_tokens": args.new_tokens}}))


if __name__ == "__main__":
    main()
