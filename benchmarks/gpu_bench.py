"""The engine on one GPU at T1: a LLaMA-3-8B-shaped bf16 model with random weights made on the
device, against the device's own measured limits; the measurements ``gpu_check.sh`` runs.

- the device: bf16 GEMM FLOP/s (an 8192^3 matmul, mean of 10 after 3 warm-ups) and copy
  bandwidth (a 2 GiB device-to-device copy, bytes read + written / time);
- prefill MFU: one prefill step of ``--prefill-prompts`` x ``--prefill-len`` tokens in the
  engine's ``ModelRunner``; FLOPs = 2 per weight per token (layers; LM head for the last tokens)
  + causal attention ``2 n (n + 1) d h_q`` per layer and prompt (PaLM Appendix B), over the
  measured GEMM rate (target >= 0.5);
- decode MBU: decode steps of ``--decode-batch`` sequences at ``--decode-context`` tokens (their KV
  slots claimed, not computed: a step's time does not depend on KV values; CUDA graphs as the
  engine uses them); bytes per step = the weights every token multiplies with + every sequence's
  K/V read once; MBU = bytes / step time / measured copy bandwidth (target >= 0.7);
- the engine end to end: ``--requests`` ShareGPT-like requests through the real driver and
  step worker (``seesaw.engine.launch.rank_main`` on a one-rank NCCL group in this process, the
  weights on the device), its throughput and time by phase, and the simulator's prediction for the
  same requests (as the engine ran them) from ``--profile`` (a measured profile of this device),
  when given (target: within 10%).

``--device cpu --tiny`` runs the same code on the CPU with the catalog's tiny model and small
sizes (a dry run of the script, not a measurement). Writes ``gpu_bench.json`` into ``--out`` and
prints it as the last line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

BLOCK = 256  # FlashAttention's paged KV cache needs pages of 256 tokens


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(fn, dev: torch.device, warmup: int = 3, repeats: int = 10) -> float:
    for _ in range(warmup):
        fn()
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    sync(dev)
    return (time.perf_counter() - t0) / repeats


def device_limits(dev: torch.device, dtype: torch.dtype, tiny: bool) -> dict:
    n = 512 if tiny else 8192
    a = torch.randn(n, n, device=dev, dtype=dtype)
    b = torch.randn(n, n, device=dev, dtype=dtype)
    gemm_s = timed(lambda: a @ b, dev)
    nbytes = (64 if tiny else 2048) * 2 ** 20
    src = torch.empty(nbytes, dtype=torch.uint8, device=dev)
    dst = torch.empty_like(src)
    copy_s = timed(lambda: dst.copy_(src), dev)
    return {"gemm_flops_per_s": 2 * n ** 3 / gemm_s, "copy_bytes_per_s": 2 * nbytes / copy_s}


def random_store(spec, dev: torch.device, dtype: torch.dtype, seed: int = 0):
    """A ``WeightStore`` of random weights (HF names) made on ``dev``: no checkpoint on disk."""
    from seesaw.engine.hf_config import expected_shapes
    from seesaw.engine.weights import WeightStore

    g = torch.Generator(device=dev).manual_seed(seed)
    tensors = {}
    for name, shape in expected_shapes(spec).items():
        t = torch.empty(shape, dtype=dtype, device=dev)
        if name.endswith("norm.weight"):
            t.fill_(1.0)
        else:
            t.normal_(0.0, 0.02, generator=g)
        tensors[name] = t
    return WeightStore(spec=spec, config={}, tensors=tensors)


def _matmul_weights(spec) -> int:
    return spec.num_hidden_layers * (spec.attn_params_per_layer + spec.mlp_params_per_layer) + \
        spec.vocab_size * spec.hidden_size


@torch.inference_mode()
def prefill_mfu(store, dev, dtype, prompts: int, length: int, gemm: float) -> dict:
    from seesaw.engine.runner import ModelRunner
    from seesaw.engine.weights import build_shard

    spec = store.spec
    runner = ModelRunner(build_shard(store, dtype=dtype, device=dev), prompts * -(-length // BLOCK), BLOCK)
    rng = np.random.default_rng(0)
    step = {s: rng.integers(0, spec.vocab_size, length).tolist() for s in range(prompts)}
    times = []
    for _ in range(3):  # the first warms up
        sync(dev)
        t0 = time.perf_counter()
        runner.execute(step)
        sync(dev)
        times.append(time.perf_counter() - t0)
        for s in step:
            runner.free(s)
    L, d, h_q = spec.num_hidden_layers, spec.d_head, spec.num_attention_heads
    flops = (2 * (_matmul_weights(spec) - spec.vocab_size * spec.hidden_size) * prompts * length
             + 2 * spec.vocab_size * spec.hidden_size * prompts + 2 * L * h_q * d * length * (length + 1) * prompts)
    step_s = min(times[1:])
    return {"prompts": prompts, "length": length, "step_s": step_s, "flops": flops,
            "flops_per_s": flops / step_s, "mfu": flops / step_s / gemm}


@torch.inference_mode()
def decode_mbu(store, dev, dtype, batch: int, context: int, steps: int, bw: float) -> dict:
    from seesaw.engine.runner import ModelRunner
    from seesaw.engine.weights import build_shard

    spec = store.spec
    runner = ModelRunner(build_shard(store, dtype=dtype, device=dev), batch * -(-(context + steps + 8) // BLOCK),
                         BLOCK, max_graph_batch=max(batch, 1))
    for s in range(batch):
        runner.blocks.allocate(s, context)
    tokens = {s: 1 + s for s in range(batch)}
    for _ in range(3):  # warm-up (and the CUDA graph capture of this batch's bucket)
        tokens = runner.execute({s: [t] for s, t in tokens.items()})
    sync(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        tokens = runner.execute({s: [t] for s, t in tokens.items()})
    sync(dev)
    step_s = (time.perf_counter() - t0) / steps
    ctx = context + 3 + steps / 2
    itemsize = torch.tensor([], dtype=dtype).element_size()
    weight_bytes = _matmul_weights(spec) * itemsize
    kv_bytes = batch * ctx * spec.num_hidden_layers * 2 * spec.num_key_value_heads * spec.d_head * itemsize
    graphs = runner.graphs is not None and bool(runner.graphs.graphs)
    return {"batch": batch, "context": context, "step_s": step_s, "bytes": weight_bytes + kv_bytes,
            "weight_bytes": weight_bytes, "kv_bytes": kv_bytes, "bytes_per_s": (weight_bytes + kv_bytes) / step_s,
            "mbu": (weight_bytes + kv_bytes) / step_s / bw, "cuda_graphs": graphs}


def requests(n: int, seed: int, vocab: int, max_prompt: int, max_output: int) -> list:
    from seesaw.engine.batch_io import BatchItem
    from seesaw.workload import sample_lengths

    rng = np.random.default_rng(seed)
    prompts, outputs = sample_lengths("sharegpt", n, rng)
    return [BatchItem(f"r{i}", rng.integers(0, vocab, min(p, max_prompt)).tolist(), int(min(o, max_output)),
                      ignore_eos=True) for i, (p, o) in enumerate(zip(prompts.tolist(), outputs.tolist()))]


def engine_run(store, dev, dtype_name: str, items: list) -> dict:
    """The real driver and worker on a one-rank group in this process (weights already on ``dev``)."""
    import torch.distributed as dist

    from seesaw.core import VllmPolicy, parse_parallel
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.dist import init_process
    from seesaw.engine.launch import rank_main

    cfg = EngineConfig(VllmPolicy(layout=parse_parallel("T1"), block_size=BLOCK), device=dev.type,
                       dtype=dtype_name, timeout_s=600.0, return_token_ids=True)
    with tempfile.TemporaryDirectory() as tmp:
        init_process(0, 1, f"file://{tmp}/rendezvous", backend="nccl" if dev.type == "cuda" else "gloo")
        try:
            return rank_main(0, 1, dev, store, cfg, items)
        finally:
            dist.destroy_process_group()


def simulate(profile: str, items: list, res: dict, spec) -> dict:
    """The simulator's prediction for the requests as the engine ran them, from ``profile``."""
    from dataclasses import replace

    from seesaw import catalog
    from seesaw.core import VllmPolicy, parse_parallel
    from simulator.cost import CostModel
    from simulator.sim import simulate as run

    prof = catalog.load_measured(profile)
    ids = res.get("output_token_ids") or {}
    reqs = [replace(it, max_tokens=max(1, len(ids.get(it.custom_id, ())) or it.max_tokens)) for it in items]
    node = catalog.measured_node(prof, 1)
    sim = run(spec, node, VllmPolicy(layout=parse_parallel("T1"), block_size=BLOCK), reqs,
              cost=CostModel(spec, node, measured=prof))
    return {"profile": str(profile), "predicted_elapsed_s": sim.elapsed_time,
            "predicted_tokens_per_s": sim.tokens_per_second,
            "error": sim.tokens_per_second / res["tokens_per_second"] - 1,
            "predicted_time_by_phase": {k: round(v, 4) for k, v in sim.time_by_phase.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="the catalog's tiny model and small sizes (a dry run)")
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--profile", default=None, help="measured profile for the simulator's prediction")
    ap.add_argument("--prefill-prompts", type=int, default=8)
    ap.add_argument("--prefill-len", type=int, default=2048)
    ap.add_argument("--decode-batch", type=int, default=128)
    ap.add_argument("--decode-context", type=int, default=1024)
    ap.add_argument("--decode-steps", type=int, default=32)
    ap.add_argument("--requests", type=int, default=512)
    ap.add_argument("--max-prompt", type=int, default=2048)
    ap.add_argument("--max-output", type=int, default=512)
    args = ap.parse_args()
    from seesaw import catalog

    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_bench: no CUDA device (torch.cuda.is_available() is False); use --device cpu --tiny")
    if args.tiny:
        args.prefill_prompts, args.prefill_len, args.decode_batch = 2, 300, 4
        args.decode_context, args.decode_steps, args.requests = 300, 4, 6
        args.max_prompt, args.max_output = 300, 8
    if dev.type == "cpu":
        torch.set_num_threads(1)  # as the engine's CPU ranks run
    dtype_name = "float32" if dev.type == "cpu" else "bfloat16"
    dtype = getattr(torch, dtype_name)
    spec = catalog.load_model("tiny" if args.tiny else "llama3-8b")
    out = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu", "torch": torch.__version__,
           "model": f"{spec.name}-shaped random {dtype_name}", "layout": "T1", "block_size": BLOCK}
    lim = device_limits(dev, dtype, args.tiny)
    out["gemm_tflops"] = round(lim["gemm_flops_per_s"] / 1e12, 3)
    out["copy_tb_per_s"] = round(lim["copy_bytes_per_s"] / 1e12, 4)
    print(f"device: {out['device']}, {dtype_name} GEMM {out['gemm_tflops']} TFLOP/s, copy {out['copy_tb_per_s']} TB/s",
          flush=True)
    store = random_store(spec, dev, dtype)
    pre = prefill_mfu(store, dev, dtype, args.prefill_prompts, args.prefill_len, lim["gemm_flops_per_s"])
    out["prefill"] = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in pre.items()}
    print(f"prefill {pre['prompts']} x {pre['length']}: {pre['step_s']:.4f} s, MFU {pre['mfu']:.3f}", flush=True)
    dec = decode_mbu(store, dev, dtype, args.decode_batch, args.decode_context, args.decode_steps,
                     lim["copy_bytes_per_s"])
    out["decode"] = {k: (round(v, 5) if isinstance(v, float) else v) for k, v in dec.items()}
    print(f"decode {dec['batch']} x {dec['context']}: {1e3 * dec['step_s']:.2f} ms/step, MBU {dec['mbu']:.3f} "
          f"(CUDA graphs: {dec['cuda_graphs']})", flush=True)
    items = requests(args.requests, 0, spec.vocab_size, args.max_prompt, args.max_output)
    if dev.type == "cuda":
        torch.cuda.empty_cache()  # the runners above are gone: their memory is the engine's KV budget
    res = engine_run(store, dev, dtype_name, items)
    out["engine"] = {"requests": len(items), "elapsed_s": res["elapsed_time"],
                     "tokens_per_s": res["tokens_per_second"], "output_tokens_per_s": res["output_tokens_per_second"],
                     "time_by_phase": res["time_by_phase"]}
    print(f"engine T1, {len(items)} requests: {res['output_tokens_per_second']:.1f} output tok/s, "
          f"{res['tokens_per_second']:.1f} tok/s in {res['elapsed_time']:.2f} s", flush=True)
    if args.profile:
        out["simulator"] = simulate(args.profile, items, res, spec)
        print(f"simulator ({args.profile}): {out['simulator']['predicted_tokens_per_s']:.1f} tok/s predicted, "
              f"error {100 * out['simulator']['error']:+.1f}%", flush=True)
    out["targets"] = {"decode_mbu>=0.7": dec["mbu"] >= 0.7, "prefill_mfu>=0.5": pre["mfu"] >= 0.5,
                      "simulator_within_10%": abs(out["simulator"]["error"]) <= 0.1 if args.profile else None}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_bench.json").write_text(json.dumps(out, indent=1, default=str))
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
