"""``seesaw run``: an offline batch through the real executor, under a static layout, a Seesaw
layout pair, a plan from ``seesaw plan``, or a plan made on the spot for this machine.

``register(app)`` adds the command to the Typer app of ``seesaw.cli``. What runs:

- ``--layout T2`` (default ``T1``): the vllm policy under one static layout.
- ``--layout P2->T2``: Seesaw. The shared ``SeesawScheduler`` (the simulator's policy object)
  prefills under ``P2`` into a host KV pool in shared memory (``--host-kv-gib``, default 1 GiB
  capped at what the workload fills), re-shards every rank to ``T2``, decodes, and switches back
  while requests wait (``seesaw.engine.seesaw_driver``).
- ``--plan plan.json``: the plan's policy, layouts and thresholds; the checkpoint is ``--model``
  or the plan's model name (``tiny``, ``smollm2-135m``).
- ``--auto``: plan first for this machine (CPU: the measured profile ``cpu-2core``; CUDA: the
  catalog GPU of the device), run, then print predicted versus measured throughput. With no other
  argument it runs SmolLM2-135M on the shipped ``examples/prompts.jsonl`` on 2 ranks.

Outputs go to ``--output`` (default ``OUTPUT_DIR/outputs.jsonl``, ``OUTPUT_DIR`` = ``--output-dir``,
default ``./seesaw-run``); ``summary.json`` (the run's figures) goes beside a default output file,
and with a plan ``plan.json`` and ``comparison.json`` (predicted vs measured) go to ``OUTPUT_DIR``.

Everything that can be checked before ranks start is checked here and reported as one line with
exit code 2 (unknown model, a checkpoint with missing tensors or wrong shapes, a layout that does
not divide the model, more ranks than devices, an unreadable input or plan, a host KV pool that
cannot hold a request); malformed input lines go to ``OUT.errors.jsonl`` and the rest run. A run
that fails once started (a rank died or timed out) prints one line and exits with 1; what
finished is already in the output file, and ``--resume`` runs only the rest.

Launch: without ``torchrun`` the command spawns the ranks itself
(``seesaw.engine.driver.run_batch``); under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) each
process is one rank, joins through ``env://``, loads the checkpoint itself, and rank 0 prints.

Test hook: ``SEESAW_FAULT="rank=1,after=3,action=exit|hang"`` makes that rank exit (or hang)
after that many forward steps, to check that a dead rank ends the run with a clear message.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from seesaw.core import SpecError

__all__ = ["register", "run", "DEFAULT_OUTPUT_DIR", "default_input"]

DEFAULT_OUTPUT_DIR = Path("seesaw-run")


class RunInputError(SpecError):
    """Bad ``seesaw run`` input (one line, exit 2)."""


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def default_input() -> str:
    """The sample prompts shipped with the repository (``examples/prompts.jsonl``)."""
    path = Path(__file__).resolve().parent.parent / "examples" / "prompts.jsonl"
    if not path.is_file():
        raise RunInputError("no --input given and the sample examples/prompts.jsonl is not installed")
    return str(path)


def run(
    model: Optional[str] = typer.Option(None, "--model", "-m", help="tiny | smollm2-135m | a .gguf file | a HF "
                                        "safetensors dir (default: tiny; smollm2-135m with --auto; the plan's model)"),
    input: Optional[str] = typer.Option(None, "--input", "-i",
                                        help="batch JSONL (OpenAI Batch API or {id, prompt}), ShareGPT .json, length "
                                             ".csv, or sharegpt|arxiv|constant|uniform (default: examples/prompts.jsonl)"),
    output: Optional[Path] = typer.Option(None, "--output", "-o",
                                          help="batch-output JSONL, one line per finished request "
                                               "(default: OUTPUT_DIR/outputs.jsonl)"),
    output_dir: Path = typer.Option(DEFAULT_OUTPUT_DIR, "--output-dir", "-d",
                                    help="folder for the default output file, plan.json, comparison.json, summary.json"),
    layout: Optional[str] = typer.Option(None, "--layout", "-l",
                                         help="static layout (T1, T2, P2, D2, T2P2) or a Seesaw pair (P2->T2); default T1"),
    plan_file: Optional[Path] = typer.Option(None, "--plan", help="run the Plan in this plan.json (from seesaw plan)"),
    auto: bool = typer.Option(False, "--auto", help="plan for this machine first (simulator with the measured CPU "
                              "profile, or the GPU's datasheet profile), run, compare measured with predicted"),
    num_ranks: Optional[int] = typer.Option(None, "--num-ranks", min=1,
                                            help="must equal the layout's world size; with --auto the ranks to plan for "
                                                 "(default 2)"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on CUDA)"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="cap every request's max_tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="override every request's"),
    seed: int = typer.Option(0, "--seed", help="sampling and synthetic-prompt seed"),
    max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", min=1, help="default 256 (or the plan's)"),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens", min=1,
                                                         help="default 8192 (or the plan's)"),
    chunked_prefill: Optional[bool] = typer.Option(None, "--chunked-prefill/--no-chunked-prefill",
                                                   help="vLLM chunked prefill (static layouts; default off or the plan's)"),
    block_size: Optional[int] = typer.Option(None, "--block-size", min=1, help="tokens per KV block (default 16)"),
    kv_blocks: Optional[int] = typer.Option(None, "--kv-blocks", min=1, help="KV blocks per replica (default: from memory)"),
    kv_cache_gib: Optional[float] = typer.Option(None, "--kv-cache-gib", min=0.0, help="per-rank KV budget on CPU (default 1)"),
    host_kv_gib: Optional[float] = typer.Option(None, "--host-kv-gib", min=0.0,
                                                help="Seesaw: host KV pool of the run in GiB (default 1, or the plan's; "
                                                     "capped at what the workload fills)"),
    host_kv_blocks: Optional[int] = typer.Option(None, "--host-kv-blocks", min=1,
                                                 help="Seesaw: host KV blocks per replica (instead of --host-kv-gib)"),
    host_full_watermark: Optional[float] = typer.Option(None, "--host-full-watermark", min=0.0, max=1.0,
                                                        help="Seesaw: switch to decode when the host pool is this full"),
    decode_low_watermark: Optional[float] = typer.Option(None, "--decode-low-watermark", min=0.0, max=1.0,
                                                         help="Seesaw: switch back once device KV use is below this"),
    num_requests: Optional[int] = typer.Option(None, "--num-requests", "-n", min=1),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, help="for constant/uniform"),
    output_len: Optional[int] = typer.Option(None, "--output-len", min=1, help="replace every request's output length"),
    prompt_format: str = typer.Option("auto", "--prompt-format", help="plain prompt lines: auto | chat | raw"),
    resume: bool = typer.Option(False, "--resume", help="skip requests already in the output file"),
    timeout_s: float = typer.Option(120.0, "--timeout", min=1.0, help="collective/step timeout in seconds"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object last"),
    step_trace: Optional[Path] = typer.Option(None, "--step-trace",
                                              help="write one JSON line per engine step here (launch and "
                                                   "completion times, sequences and their new tokens)"),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup",
                                help="run one dummy prefill step of the workload's largest size on every rank "
                                     "before the clock starts (as vLLM does; not counted in the throughput)"),
) -> None:
    """Run a batch of requests through the engine; print vLLM-style throughput."""
    from seesaw.autotune import load_plan
    from seesaw.engine.batch_io import done_ids, errors_path, prepare_requests, write_errors
    from seesaw.engine.model import check_shardable
    from seesaw.engine.tokenizer import load_tokenizer
    from seesaw.engine.weights import load_checkpoint

    if plan_file is not None and auto:
        raise RunInputError("--plan and --auto exclude each other: --auto makes the plan")
    if (plan_file is not None or auto) and layout is not None:
        raise RunInputError(f"--layout {layout} conflicts with {'--auto' if auto else '--plan'}: the plan picks the layout")
    if host_kv_gib is not None and host_kv_gib <= 0:
        raise RunInputError("--host-kv-gib must be positive")
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise RunInputError("--kv-cache-gib must be positive")
    plan = load_plan(plan_file) if plan_file is not None else None
    model = model or (plan.model.name if plan is not None else "smollm2-135m" if auto else "tiny")
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise RunInputError(f"--dtype {dtype!r}: expected float32, bfloat16 or float16")
    c_p, c_d = (None, None) if plan is not None or auto else _parse_layout(layout or "T1")
    if plan is not None:
        c_p, c_d = _plan_layouts(plan)
    if c_p is not None:
        _check_ranks(c_p, num_ranks, torchrun)
    rank = int(os.environ.get("RANK", 0))

    model_dir = _resolve(model, plan)
    name = _model_name(model, model_dir)
    store = load_checkpoint(model_dir, share_memory=not torchrun, name=name)
    tokenizer = load_tokenizer(model_dir)
    output = output or Path(output_dir) / "outputs.jsonl"
    if output.parent == Path(output_dir) and rank == 0:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    source = input or default_input()
    items, errors = prepare_requests(
        source, tokenizer, max_position=store.spec.max_position_embeddings, seed=seed,
        num_requests=num_requests, input_len=input_len, output_len=output_len, max_tokens=max_tokens,
        temperature=temperature, prompt_format=prompt_format)
    err_file = errors_path(output)
    if rank == 0:
        write_errors(err_file, errors)
        if errors:
            print(f"warning: {len(errors)} bad input line(s) skipped, listed in {err_file}", file=sys.stderr)
    if resume:
        done = done_ids(output)
        skipped = sum(it.custom_id in done for it in items)
        items = [it for it in items if it.custom_id not in done]
        if rank == 0 and skipped:
            print(f"resume: {skipped} request(s) already in {output}, {len(items)} to run", file=sys.stderr)
    if not items and not resume:
        raise RunInputError(f"{source}: no valid requests to run")

    if auto:
        plan = _auto_plan(store.spec, name, dtype, device, num_ranks or 2, items, source, output_dir,
                          max_num_seqs, max_num_batched_tokens, block_size, quiet=rank != 0)
        c_p, c_d = _plan_layouts(plan)
        _check_ranks(c_p, None, torchrun)
    for c in (c_p, c_d):
        if c is not None:
            check_shardable(store.spec, c)
    _check_device(device, c_p.world_size, torchrun)
    if not items:
        _print_result(_empty_result(c_p, c_d), output, as_json)
        return

    knobs = _knobs(plan, max_num_seqs, max_num_batched_tokens, chunked_prefill, block_size, host_kv_gib,
                   host_full_watermark, decode_low_watermark)
    config = _engine_config(
        c_p, c_d, knobs, model_dir=str(model_dir), model_name=name, num_blocks=kv_blocks,
        kv_cache_bytes=None if kv_cache_gib is None else kv_cache_gib * 1024**3, host_kv_blocks=host_kv_blocks,
        dtype=dtype, device=device, seed=seed, timeout_s=timeout_s,
        eos_token_ids=tuple(sorted(tokenizer.eos_token_ids)), output=str(output), errors_output=str(err_file),
        append=resume, progress=sys.stderr.isatty(), fault=_fault_from_env(),
        step_trace=str(step_trace) if step_trace else "", warmup=warmup)
    if config.seesaw:
        from seesaw.engine.seesaw_driver import host_blocks_for

        host_blocks_for(config, store.spec, items)  # a pool that cannot hold a request: exit 2 now
    if rank == 0 and (plan is not None):
        print(f"Running {config.layout_name} ({'seesaw' if config.seesaw else 'vllm'}) on {c_p.world_size} "
              f"rank(s): {len(items)} request(s) -> {output}", file=sys.stderr)
    result = _launch(store, items, config, torchrun)
    if result is None:
        return  # a torchrun rank other than 0
    if result.get("num_rejected"):
        print(f"warning: {result['num_rejected']} request(s) can never fit the KV cache or the token budget; "
              f"listed in {err_file}", file=sys.stderr)
    comp = _compare(plan, result, output_dir, plan_written=auto) if plan is not None else None
    if comp is None and output.parent == Path(output_dir):  # the run's folder: its figures beside the outputs
        from seesaw.autotune import write_json

        write_json(Path(output_dir) / "summary.json", {k: v for k, v in result.items() if k != "output_token_ids"})
    _print_result(result, output, as_json, comp)


def _parse_layout(text: str):
    from seesaw.core import parse_layout

    configs = parse_layout(text)
    if len(configs) > 2:
        raise RunInputError(f"layout {text!r}: give one static layout or one prefill->decode pair")
    c_p, c_d = configs[0], configs[1] if len(configs) == 2 else None
    if c_d is not None and (c_p.dp != c_d.dp or c_p.world_size != c_d.world_size):
        raise RunInputError(f"layout {text!r}: prefill and decode layouts need the same DP degree and number of ranks")
    return c_p, c_d


def _plan_layouts(plan):
    from seesaw.autotune import policy_layouts

    return policy_layouts(plan.policy)


def _check_ranks(par, num_ranks: int | None, torchrun: bool) -> None:
    world = int(os.environ["WORLD_SIZE"]) if torchrun else par.world_size
    if num_ranks is not None and num_ranks != par.world_size:
        raise RunInputError(f"--num-ranks {num_ranks} does not match layout {par} ({par.world_size} ranks)")
    if world != par.world_size:
        raise RunInputError(f"torchrun started {world} processes; layout {par} needs {par.world_size}")


def _resolve(model: str, plan):
    from seesaw.engine.weights import resolve_model

    try:
        return resolve_model(model)
    except SpecError as e:
        if plan is not None and model == plan.model.name:
            raise RunInputError(f"the plan is for model {model!r}, which has no local checkpoint; give it with --model") from None
        raise e


def _knobs(plan, max_num_seqs, max_num_batched_tokens, chunked, block_size, host_kv_gib, host_full, decode_low) -> dict:
    """Policy knobs: the command line's, else the plan's, else the engine's defaults."""
    from seesaw.core import SeesawPolicy

    pol = plan.policy if plan is not None else None
    def pick(cli, attr, default):
        if cli is not None:
            return cli
        return getattr(pol, attr, default) if pol is not None else default

    out = dict(max_num_seqs=pick(max_num_seqs, "max_num_seqs", 256),
               max_num_batched_tokens=pick(max_num_batched_tokens, "max_num_batched_tokens", 8192),
               enable_chunked_prefill=pick(chunked, "enable_chunked_prefill", False),
               block_size=pick(block_size, "block_size", 16),
               host_full_watermark=pick(host_full, "host_full_watermark", 1.0),
               decode_low_watermark=pick(decode_low, "decode_low_watermark", 0.5))
    host = None if host_kv_gib is None else host_kv_gib * 1024**3
    if host is None and isinstance(pol, SeesawPolicy):
        from seesaw.autotune import plan_host_kv_bytes

        host = plan_host_kv_bytes(plan)
    out["host_kv_bytes"] = host
    return out


def _engine_config(c_p, c_d, knobs: dict, **kw):
    from seesaw.engine.driver import EngineConfig

    return EngineConfig(layout=c_p, decode_layout=c_d, **knobs, **kw)


def _launch(store, items, config, torchrun: bool):
    from seesaw.engine.dist import RankError
    from seesaw.engine.driver import EngineError, run_batch

    try:
        if torchrun:
            return _run_torchrun(store, items, config)
        return run_batch(store, items, config)
    except RankError as e:
        print(f"error: {_failure_line(e)}", file=sys.stderr)
        raise typer.Exit(1)
    except EngineError as e:  # torchrun: this process's own driver or worker failed
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)


def _auto_plan(spec, name, dtype, device, num_ranks, items, source, output_dir, max_num_seqs,
               max_num_batched_tokens, block_size, quiet: bool):
    """Plan for this machine (``seesaw.autotune``), print it, write ``OUTPUT_DIR/plan.json``."""
    from seesaw.autotune import machine, plan_for_machine, write_json
    from seesaw.workload import Request

    elem = {"float32": 4, "bfloat16": 2, "float16": 2}[dtype]
    model_spec = spec.model_copy(update={"name": name, "dtype_bytes": elem})
    mach = machine(num_ranks, device)
    reqs = [Request(id=it.custom_id, prompt_len=it.prompt_len, output_len=it.max_tokens) for it in items]
    plan, table, rejected = plan_for_machine(
        model_spec, mach, reqs, workload=f"{len(items)} requests from {source}",
        max_num_seqs=max_num_seqs or 256, max_num_batched_tokens=max_num_batched_tokens or 8192,
        block_size=block_size or 16)
    if quiet:
        return plan
    print(f"Plan for {name} on {mach.description}:")
    for row in table:
        print(f"  {row['candidate']:<22} predicted {row['throughput_tok_s']:10.1f} tokens/s, "
              f"{row['makespan_s']:8.2f} s")
    for what, why in rejected:
        print(f"  {what:<22} rejected: {why}")
    print(f"Chosen: {plan.explanation}")
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    write_json(Path(output_dir) / "plan.json", json.loads(plan.model_dump_json()))
    return plan


def _compare(plan, result: dict, output_dir, plan_written: bool) -> dict:
    from seesaw.autotune import comparison, write_json

    comp = comparison(plan, result)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not plan_written:
        write_json(out / "plan.json", json.loads(plan.model_dump_json()))
    write_json(out / "comparison.json", comp)
    write_json(out / "summary.json", {k: v for k, v in result.items() if k != "output_token_ids"})
    return comp


def _print_result(result: dict, output: Path, as_json: bool, comp: dict | None = None) -> None:
    from seesaw.core import RunResult

    res = RunResult(**result)
    print(res.throughput_line())
    total = res.elapsed_time or 1.0
    parts = [f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in res.time_by_phase.items() if v > 0]
    extra = res.model_extra or {}
    warm = f" (after a {extra['warmup_s']:.2f}s warm-up)" if extra.get("warmup_s") else ""
    print(f"Elapsed: {res.elapsed_time:.2f}s measured{warm}" + ("; " + ", ".join(parts) if parts else ""))
    if res.policy == "seesaw" and res.num_requests:
        per_rank = extra.get("swap_bytes_per_rank", {})
        moved = max((v["in"] + v["out"] for v in per_rank.values()), default=0)
        print(f"Seesaw {res.layout}: {extra.get('num_transitions', 0)} transition(s), re-shard "
              f"{extra.get('reshard_time', 0.0):.3f}s, KV swapped {extra.get('swapped_bytes', 0) / 1e6:.2f} MB "
              f"({moved / 1e6:.2f} MB on the busiest rank), swap stall {extra.get('swap_stall_time', 0.0):.3f}s")
    if comp is not None:
        from seesaw.autotune import comparison_lines

        print(f"Predicted vs measured ({comp['policy']}):")
        for line in comparison_lines(comp):
            print("  " + line)
    print(f"wrote {res.num_requests} line(s) to {output}", file=sys.stderr)
    if as_json:
        out = res.model_dump()
        if comp is not None:
            out["comparison"] = comp
        print(json.dumps(out))


def _empty_result(c_p, c_d=None) -> dict:
    from seesaw.engine.driver import PHASES

    return dict(elapsed_time=0.0, num_requests=0, total_num_tokens=0, total_output_tokens=0,
                requests_per_second=0.0, tokens_per_second=0.0, output_tokens_per_second=0.0,
                layout=f"{c_p}->{c_d}" if c_d is not None else str(c_p), policy="seesaw" if c_d is not None else "vllm",
                time_by_phase=dict.fromkeys(PHASES, 0.0))


def _model_name(model: str, model_dir: Path) -> str:
    return model if model.lower() in ("tiny", "smollm2-135m", "smollm2-135m-instruct") else Path(model_dir).name


def _check_device(device: str, world: int, torchrun: bool) -> None:
    if device not in ("cpu", "cuda"):
        raise RunInputError(f"--device {device!r}: expected cpu or cuda")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise RunInputError("--device cuda: no CUDA device is available")
    n = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if torchrun else world
    if local > n:
        raise RunInputError(f"--device cuda: {local} ranks on this node but only {n} CUDA device(s)")


def _fault_from_env() -> dict | None:
    text = os.environ.get("SEESAW_FAULT", "").strip()
    if not text:
        return None
    try:
        kv = dict(part.split("=", 1) for part in text.split(","))
        return {"rank": int(kv["rank"]), "after_steps": int(kv.get("after", 0)),
                "action": kv.get("action", "exit")}
    except (ValueError, KeyError):
        raise RunInputError(f"SEESAW_FAULT={text!r}: expected rank=R,after=N[,action=exit|hang]") from None


def _failure_line(e) -> str:
    """One line from a failed rank: its own error message, plus ranks that died silently."""
    line = re.sub(r"^(?:[\w.]+\.)?EngineError: ", "", e.last_line)
    if not e.detail:
        line = str(e)
    notes = [f"rank {r} exited with code {c}" for r, c in sorted(e.exited.items()) if r != e.rank]
    notes += [f"rank {r}: {msg}" for r, msg in sorted(e.others.items())
              if "Connection closed by peer" not in msg]  # a peer's own error is the root cause
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _run_torchrun(store, items, config):
    """This process is one rank of a torchrun job."""
    import torch.distributed as dist

    from seesaw.engine.dist import init_process
    from seesaw.engine.driver import rank_main

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "nccl" if config.device == "cuda" else "gloo"
    device = init_process(rank, world, "env://", backend, config.timeout_s)
    try:
        return rank_main(rank, world, device, store, config, items)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
