"""Engine throughput on this CPU: the real executor against ``transformers.generate``, and the
decode and prefill steps against this machine's roofline. One run; every ratio is taken within it.

1. Workload: ``--num-requests`` (64) requests with ShareGPT-like prompt and output lengths drawn
   from the built-in trace (``seesaw.workload.sample_lengths("sharegpt")``, seeded), capped so
   that prompt + output fits the model's context; prompts are seeded random token ids, outputs
   exactly their length (greedy, EOS ignored).
2. The engine: SmolLM2-135M, fp32, T1 (one spawned rank, one torch thread) through
   ``seesaw.engine.launch.run_batch``; its time is the driver's makespan (process start and model
   loading excluded, as ``vllm bench throughput`` does).
3. The yardstick: ``transformers.generate`` run as people run it offline: batches of 16
   left-padded prompts in request order, each batch generating until its longest output
   (``max_new_tokens = min_new_tokens`` = the batch's longest), one torch thread. Both count the
   same useful output tokens (each request's own length), so ``vs_transformers`` is the ratio of
   output tokens/s.
4. This machine, measured right before the two fixed-shape steps they judge (``--no-e2e``: only
   those, without the workload runs), each the best of several tries (one thread):
   - fp32 GEMM FLOP/s of a 2048^3 matmul (``square``), and at the model's own GEMM shapes with
     the weights in cache: the step's QKV, O, gate/up, down and LM-head products at batch 64
     (``decode shapes``) and at the prefill step's token count (``prefill shapes``), their FLOPs
     over their summed time;
   - memory bandwidth of a 256 MB tensor copy (read + write bytes / time) and of a 256 MB read
     (a ``sum``), since a decode step mostly reads; and of a 1 GB read, since the decode step
     streams ~2 GB, more than a large L3 (480 MB on the machine this was written on) can hold
     between repeats of the 256 MB measurements.
   A roofline is judged against the FASTEST of these rates (the strictest yardstick): a GEMM
   rate at the model's shapes that beats the square one would make the square one too lenient,
   one that falls short of it is not what the machine can do at its best. Every alternative
   (square GEMM + copy bandwidth, the definition used before) is printed beside it.
5. A fixed-shape decode step: 64 sequences with ``--decode-context`` tokens of context each (the
   workload's mean context during decode by default), in the engine's ``ModelRunner``, in this
   process with its C heap set up as an engine rank's (``dist.keep_freed_memory``). Its
   roofline: max(FLOPs / GEMM rate, bytes / bandwidth), FLOPs = 2 per weight per token (layers
   and LM head) + attention ``4 ctx d h_q`` per token and layer (PaLM Appendix B), bytes = the
   weights read once + every sequence's K/V context read once (the LM head counted once, as
   computed: logits of the last token of each sequence only). ``decode_roofline_ratio`` =
   measured step time / roofline step time (target <= 1.5); the step time is the median of
   ``--decode-steps`` steps.
6. A fixed-shape prefill step (8 prompts x 512 tokens), in the same runner setup:
   ``prefill_gemm_efficiency`` = its FLOPs (matmuls of every token, LM head of the last ones,
   causal attention ``2 n^2 d h_q`` per layer) / time / the GEMM rate (target >= 0.8; the faster
   of the square and the prefill-shape rate).
7. The decode step's floor on one core, measured in the same run: the step's own GEMMs alone
   (the model's QKV, O, gate/up and down products of every layer and the LM head, on batch-64
   inputs, in the step's order, each layer's K/V cache streamed through the caches first and
   untimed, so that the weights come from where the step finds them: the K/V of the step
   evicts them) plus the step's K/V bytes at the read bandwidth (the fastest measured).
   ``decode_floor_ratio`` = floor / roofline, ``decode_step_over_floor`` = step / floor.
   It proves: what the roofline's max(compute, memory) asks for cannot be had by one thread,
   since the attention of a layer needs that layer's QKV product and the next GEMM needs the
   attention's output, so the GEMMs and the K/V stream run one after the other and their times
   add up (a second thread speeds up both sides alike). It assumes the GEMM library's speed at
   these shapes (no faster BLAS) and that attention cannot read K/V faster than a plain read.
   The step's time above the floor is what the engine adds: attention's arithmetic beyond its
   read, elementwise passes, sampling, Python.

The machine may be shared: the load average (``os.getloadavg``) before and after is printed.
``--clock cpu`` times the machine's rates and the two fixed-shape steps in this thread's CPU time
(``time.thread_time``) instead of wall-clock time: on a loaded machine the best of a few short
rate measurements catches moments of a core alone while a long step is also charged for the time
other processes held the core, so wall-clock ratios overstate the engine's own cost; the CPU
clock charges both sides the same way (cache and memory contention still count). The workload
runs (``vs_transformers``) are timed in wall-clock time either way.
Prints a table, then one JSON object as the last line. ``--quick`` shrinks everything (a smoke
run, not a measurement).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch

HF_BATCH = 16
clock = time.perf_counter  # the fixed-shape measurements' clock (--clock)


def workload(n: int, seed: int, max_len: int, vocab: tuple[int, int], max_output: int | None = None) -> list:
    """``n`` requests with ShareGPT-like lengths (prompt + output <= ``max_len``)."""
    from seesaw.engine.batch_io import BatchItem
    from seesaw.workload import sample_lengths

    rng = np.random.default_rng(seed)
    prompts, outputs = sample_lengths("sharegpt", n, rng)
    items = []
    for i, (p, o) in enumerate(zip(prompts.tolist(), outputs.tolist())):
        p = min(p, max_len - 1)
        o = max(1, min(o, max_len - p, max_output or o))
        items.append(BatchItem(f"r{i}", rng.integers(*vocab, p).tolist(), o, ignore_eos=True))
    return items


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        fn()
        best = min(best, clock() - t0)
    return best


def gemm_flops_per_s(n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / _best(lambda: a @ b, repeats)


def model_gemm_flops_per_s(spec, rows: int, repeats: int = 5, lm_head_rows: int | None = None) -> float:
    """FLOP/s of the model's GEMMs (one layer's QKV, O, gate/up, down, and the LM head) with
    ``rows`` tokens (``lm_head_rows`` for the LM head), weights in cache (each product timed
    on its own, best of ``repeats``): their FLOPs over their summed best times."""
    h, d = spec.hidden_size, spec.d_head
    inter, qkv = spec.intermediate_size, (spec.num_attention_heads + 2 * spec.num_key_value_heads) * d
    shapes = [(rows, h, qkv), (rows, spec.num_attention_heads * d, h), (rows, h, 2 * inter), (rows, inter, h),
              (rows if lm_head_rows is None else lm_head_rows, h, spec.vocab_size)]
    flops = seconds = 0.0
    for m, k, n in shapes:
        x, w = torch.randn(m, k), torch.randn(n, k)
        torch.nn.functional.linear(x, w)  # warm-up
        seconds += _best(lambda: torch.nn.functional.linear(x, w), repeats)
        flops += 2 * m * k * n
    return flops / seconds


def copy_bytes_per_s(nbytes: int = 256 * 2 ** 20, repeats: int = 5) -> float:
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    return 2 * nbytes / _best(lambda: dst.copy_(src), repeats)  # read + write


def read_bytes_per_s(nbytes: int = 256 * 2 ** 20, repeats: int = 5) -> float:
    src = torch.ones(nbytes // 4)
    return nbytes / _best(src.sum, repeats)


def engine_run(model_dir, store, items, kv_bytes: float) -> dict:
    from seesaw.core import VllmPolicy, parse_parallel
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.launch import run_batch

    cfg = EngineConfig(VllmPolicy(layout=parse_parallel("T1")), model_dir=str(model_dir), timeout_s=3600.0,
                       kv_cache_bytes=kv_bytes)
    return run_batch(store, items, cfg)


@torch.inference_mode()
def hf_run(model_dir, items) -> dict:
    import transformers

    model = transformers.LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    elapsed, n_out = 0.0, 0
    for b in range(0, len(items), HF_BATCH):
        batch = items[b:b + HF_BATCH]
        width = max(len(it.prompt_ids) for it in batch)
        ids = torch.zeros(len(batch), width, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, it in enumerate(batch):  # left padding, as for generation
            ids[i, width - len(it.prompt_ids):] = torch.tensor(it.prompt_ids)
            mask[i, width - len(it.prompt_ids):] = 1
        new = max(it.max_tokens for it in batch)
        t0 = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                             pad_token_id=0)
        elapsed += time.perf_counter() - t0
        assert out.shape[1] == width + new
        n_out += sum(it.max_tokens for it in batch)  # the tokens each request asked for
    return {"elapsed_time": elapsed, "output_tokens_per_second": n_out / elapsed, "total_output_tokens": n_out}


def _matmul_weights(spec) -> int:
    """Weights every token multiplies with: the layers' projections and the LM head."""
    return spec.num_hidden_layers * (spec.attn_params_per_layer + spec.mlp_params_per_layer) + \
        spec.vocab_size * spec.hidden_size


@torch.inference_mode()
def step_gemms_s(model, kv, batch: int) -> float:
    """The decode step's GEMMs alone, in the step's order and cache state: per layer, that
    layer's K/V cache is read first (untimed, as the step's attention reads it between the
    layer's GEMMs and the next layer's), then its QKV, O, gate/up and down products of ``batch``
    rows are timed; then the LM head. Returns their summed time."""
    total = 0.0
    xs: dict[int, torch.Tensor] = {}
    for i, layer in model.layers.items():
        for cache in kv.layer(int(i)):
            cache.sum()  # stream the K/V through the caches, as the step does
        mods = (layer.attn.qkv_proj, layer.attn.o_proj, layer.mlp.gate_up_proj, layer.mlp.down_proj)
        ins = [xs.setdefault(m.weight.shape[1], torch.randn(batch, m.weight.shape[1])) for m in mods]
        t0 = clock()
        for m, x in zip(mods, ins):
            m(x)
        total += clock() - t0
    x = xs.setdefault(model.hidden_size, torch.randn(batch, model.hidden_size))
    t0 = clock()
    model.lm_head(x)
    return total + clock() - t0


@torch.inference_mode()
def decode_step(store, batch: int, context: int, steps: int) -> dict:
    """Mean time of a decode step of ``batch`` sequences at ``context`` tokens each (their KV
    slots claimed without running the prompts: a step's time does not depend on KV values)."""
    from seesaw.engine.runner import ModelRunner
    from seesaw.engine.weights import build_shard

    model = build_shard(store)
    spec, bs = store.spec, 16
    runner = ModelRunner(model, batch * -(-(context + steps + 2) // bs), bs)
    for s in range(batch):
        runner.blocks.allocate(s, context)
    tokens = {s: 1 + s for s in range(batch)}
    tokens = runner.execute({s: [t] for s, t in tokens.items()})  # warm-up step
    times = []
    for _ in range(steps):
        t0 = clock()
        tokens = runner.execute({s: [t] for s, t in tokens.items()})
        times.append(clock() - t0)
    step_s = float(np.median(times))
    gemm_s = float(np.median([step_gemms_s(model, runner.kv, batch) for _ in range(max(3, steps // 2))]))
    ctx = context + 1 + steps / 2  # mean context over the timed steps
    L, d, h_q = spec.num_hidden_layers, spec.d_head, spec.num_attention_heads
    flops_gemm = 2 * _matmul_weights(spec) * batch
    flops = flops_gemm + 4 * ctx * d * h_q * L * batch
    weight_bytes = sum(p.numel() * p.element_size() for n, p in model.named_parameters() if "embed" not in n)
    if spec.tie_word_embeddings:  # the LM head reads the tied embedding
        weight_bytes += spec.vocab_size * spec.hidden_size * model.dtype.itemsize
    kv_bytes = batch * ctx * L * 2 * spec.num_key_value_heads * d * model.dtype.itemsize
    return {"batch": batch, "context": context, "step_s": step_s, "flops": flops, "gemm_s": gemm_s, "flops_gemm": flops_gemm,
            "bytes": weight_bytes + kv_bytes, "weight_bytes": weight_bytes, "kv_bytes": kv_bytes}


@torch.inference_mode()
def prefill_step(store, prompts: int, length: int) -> dict:
    from seesaw.engine.runner import ModelRunner
    from seesaw.engine.weights import build_shard

    model = build_shard(store)
    spec, bs = store.spec, 16
    runner = ModelRunner(model, prompts * -(-length // bs), bs)
    rng = np.random.default_rng(0)
    step = {s: rng.integers(100, spec.vocab_size, length).tolist() for s in range(prompts)}
    times = []
    for _ in range(2):  # the first one warms up
        t0 = clock()
        runner.execute(step)
        times.append(clock() - t0)
        for s in step:
            runner.free(s)
    L, d, h_q = spec.num_hidden_layers, spec.d_head, spec.num_attention_heads
    linear = 2 * (_matmul_weights(spec) - spec.vocab_size * spec.hidden_size) * prompts * length
    flops = linear + 2 * spec.vocab_size * spec.hidden_size * prompts + 2 * L * h_q * d * length * (length + 1) * prompts
    return {"prompts": prompts, "length": length, "step_s": times[-1], "flops": flops}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-requests", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--decode-batch", type=int, default=64)
    ap.add_argument("--decode-context", type=int, default=None, help="default: the workload's mean decode context")
    ap.add_argument("--decode-steps", type=int, default=8)
    ap.add_argument("--prefill-prompts", type=int, default=8)
    ap.add_argument("--prefill-len", type=int, default=512)
    ap.add_argument("--max-output", type=int, default=None, help="cap every output length (smoke runs)")
    ap.add_argument("--no-e2e", action="store_true", help="only the machine and the fixed-shape steps (no workload runs)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="time the machine's rates and the fixed-shape steps in wall-clock or this thread's CPU time")
    ap.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of the script, not a measurement")
    args = ap.parse_args()
    global clock
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    if args.quick:
        args.num_requests, args.max_output, args.decode_batch = 4, 8, 4
        args.decode_steps, args.prefill_prompts, args.prefill_len = 2, 2, 64
        args.decode_context = args.decode_context or 64

    from seesaw.engine.checkpoint import resolve_model
    from seesaw.engine.weights import load_checkpoint

    torch.set_num_threads(1)
    load = [os.getloadavg()[0]]
    model_dir = resolve_model(args.model)
    store = load_checkpoint(model_dir)
    spec = store.spec
    items = workload(args.num_requests, args.seed, spec.max_position_embeddings, (100, spec.vocab_size - 100),
                     args.max_output)
    prompt_lens = [len(it.prompt_ids) for it in items]
    out_lens = [it.max_tokens for it in items]
    context = args.decode_context or int(np.mean(prompt_lens) + np.mean(out_lens) / 2)
    print(f"workload: {len(items)} requests, prompt mean {np.mean(prompt_lens):.0f} (max {max(prompt_lens)}), "
          f"output mean {np.mean(out_lens):.0f} (max {max(out_lens)}), {sum(out_lens)} output tokens", flush=True)

    vs, eng, hf = None, None, None
    if not args.no_e2e:
        kv_bytes = 1.2 * sum(p + o for p, o in zip(prompt_lens, out_lens)) * spec.num_hidden_layers * 2 * \
            spec.num_key_value_heads * spec.d_head * 4 + 64 * 2 ** 20
        eng = engine_run(model_dir, store, items, kv_bytes)
        assert eng["total_output_tokens"] == sum(out_lens), eng["total_output_tokens"]
        print(f"engine T1: {eng['output_tokens_per_second']:.1f} output tok/s ({eng['elapsed_time']:.1f} s)",
              flush=True)
        hf = hf_run(model_dir, items)
        vs = eng["output_tokens_per_second"] / hf["output_tokens_per_second"]
        print(f"transformers.generate (batches of {HF_BATCH}): {hf['output_tokens_per_second']:.1f} output tok/s "
              f"({hf['elapsed_time']:.1f} s) -> engine {vs:.2f}x", flush=True)

    from seesaw.engine.dist import keep_freed_memory

    keep_freed_memory()  # the fixed-shape steps' C heap as every engine rank's (init_process)
    # the machine's rates right before the steps they judge (a shared machine's speed drifts)
    gemm = {"square": gemm_flops_per_s(), "decode shapes": model_gemm_flops_per_s(spec, args.decode_batch)}
    bw = {"copy": copy_bytes_per_s(), "read": read_bytes_per_s(), "read 1 GB": read_bytes_per_s(2 ** 30, 3)}
    print("machine (one thread): fp32 GEMM " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in gemm.items()) +
          " GFLOP/s; bandwidth " + ", ".join(f"{k} {v / 1e9:.1f}" for k, v in bw.items()) + " GB/s", flush=True)
    dec = decode_step(store, args.decode_batch, context, args.decode_steps)

    def roofline(g: float, b: float) -> float:
        return max(dec["flops"] / g, dec["bytes"] / b)

    roofs = {f"{g} GEMM, {b} bandwidth": roofline(gemm[g], bw[b]) for g in gemm for b in bw}
    roof = roofline(max(gemm.values()), max(bw.values()))  # the strictest yardstick
    print(f"decode step, batch {dec['batch']} x context {dec['context']}: {1e3 * dec['step_s']:.1f} ms, roofline "
          f"{1e3 * roof:.1f} ms (compute {1e3 * dec['flops'] / max(gemm.values()):.1f}, memory "
          f"{1e3 * dec['bytes'] / max(bw.values()):.1f}) -> {dec['step_s'] / roof:.2f}x; against each yardstick: " +
          ", ".join(f"{k} {dec['step_s'] / r:.2f}x" for k, r in roofs.items()), flush=True)
    kv_s = dec["kv_bytes"] / max(bw.values())
    floor = dec["gemm_s"] + kv_s
    print(f"decode floor on one core: {1e3 * floor:.1f} ms = the step's GEMMs alone {1e3 * dec['gemm_s']:.1f} ms "
          f"({dec['flops_gemm'] / dec['gemm_s'] / 1e9:.1f} GFLOP/s) + K/V {dec['kv_bytes'] / 1e6:.0f} MB at the read "
          f"bandwidth {1e3 * kv_s:.1f} ms -> floor {floor / roof:.2f}x the roofline; step {dec['step_s'] / floor:.2f}x "
          "the floor", flush=True)
    pre_rows = args.prefill_prompts * args.prefill_len
    gemm["prefill shapes"] = model_gemm_flops_per_s(spec, pre_rows, repeats=2, lm_head_rows=args.prefill_prompts)
    pre = prefill_step(store, args.prefill_prompts, args.prefill_len)
    pre_rate = pre["flops"] / pre["step_s"]
    eff = pre_rate / max(gemm["square"], gemm["prefill shapes"])
    print(f"prefill step, {pre['prompts']} x {pre['length']} tokens: {pre['step_s']:.2f} s, "
          f"{pre_rate / 1e9:.1f} GFLOP/s = {eff:.2f} of the GEMM rate (square {pre_rate / gemm['square']:.2f}, "
          f"prefill shapes {gemm['prefill shapes'] / 1e9:.1f} GFLOP/s: {pre_rate / gemm['prefill shapes']:.2f})",
          flush=True)
    load.append(os.getloadavg()[0])
    print(f"load average {load[0]:.2f} before, {load[1]:.2f} after ({os.cpu_count()} cores)")
    print(json.dumps({
        "vs_transformers": None if vs is None else round(vs, 3), "decode_roofline_ratio": round(dec["step_s"] / roof, 3),
        "prefill_gemm_efficiency": round(eff, 3), "decode_floor_ratio": round(floor / roof, 3),
        "decode_step_over_floor": round(dec["step_s"] / floor, 3),
        "engine": eng and {"output_tokens_per_s": round(eng["output_tokens_per_second"], 2),
                           "elapsed_s": round(eng["elapsed_time"], 3), "time_by_phase": eng.get("time_by_phase")},
        "transformers": hf and {"output_tokens_per_s": round(hf["output_tokens_per_second"], 2),
                                "elapsed_s": round(hf["elapsed_time"], 3), "batch": HF_BATCH},
        "decode": {"batch": dec["batch"], "context": dec["context"], "step_ms": round(1e3 * dec["step_s"], 2),
                   "roofline_ms": round(1e3 * roof, 2), "gflop": round(dec["flops"] / 1e9, 2),
                   "mbytes": round(dec["bytes"] / 1e6, 1), "floor_ms": round(1e3 * floor, 2),
                   "gemms_alone_ms": round(1e3 * dec["gemm_s"], 2), "kv_read_ms": round(1e3 * kv_s, 2),
                   "ratio_by_yardstick": {k: round(dec["step_s"] / r, 3) for k, r in roofs.items()}},
        "prefill": {"prompts": pre["prompts"], "length": pre["length"], "step_s": round(pre["step_s"], 3),
                    "gflop_per_s": round(pre_rate / 1e9, 2),
                    "efficiency_by_yardstick": {k: round(pre_rate / gemm[k], 3) for k in ("square", "prefill shapes")}},
        "machine": {"gemm_gflop_per_s": {k: round(v / 1e9, 2) for k, v in gemm.items()},
                    "bandwidth_gb_per_s": {k: round(v / 1e9, 2) for k, v in bw.items()},
                    "cpu_count": os.cpu_count(), "load_average": [round(x, 2) for x in load]},
        "workload": {"requests": len(items), "output_tokens": sum(out_lens), "seed": args.seed,
                     "model": args.model, "dtype": "float32", "layout": "T1", "quick": args.quick, "clock": args.clock},
    }))


if __name__ == "__main__":
    main()
