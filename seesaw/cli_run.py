"""``seesaw run``: an offline batch through the real executor under one static layout.

``register(app)`` adds the command to the Typer app of ``seesaw.cli``. Everything that can be
checked before ranks start is checked here and reported as one line with exit code 2 (unknown
model, a checkpoint with missing tensors or wrong shapes, a layout that does not divide the
model, more ranks than devices, an unreadable input); malformed input lines go to
``OUT.errors.jsonl`` and the rest run. A run that fails once started (a rank died or timed out)
prints one line and exits with 1; what finished is already in the output file, and ``--resume``
runs only the rest.

Launch: without ``torchrun`` the command spawns the ``layout.world_size`` ranks itself
(``seesaw.engine.driver.run_batch``); under ``torchrun`` (``RANK`` and ``WORLD_SIZE`` set) each
process is one rank, joins through ``env://``, loads the checkpoint itself, and rank 0 prints.

Test hook: ``SEESAW_FAULT="rank=1,after=3,action=exit|hang"`` makes that rank exit (or hang)
after that many steps, to check that a dead rank ends the run with a clear message.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from seesaw.specs import SpecError

__all__ = ["register", "run"]


class RunInputError(SpecError):
    """Bad ``seesaw run`` input (one line, exit 2)."""


def register(app: typer.Typer) -> None:
    app.command("run")(run)


def run(
    model: str = typer.Option("tiny", "--model", "-m", help="tiny | smollm2-135m | a .gguf file | a HF safetensors dir"),
    input: str = typer.Option(..., "--input", "-i",
                              help="batch JSONL (OpenAI Batch API or {id, prompt}), ShareGPT .json, length .csv, "
                                   "or sharegpt|arxiv|constant|uniform"),
    output: Path = typer.Option(..., "--output", "-o", help="batch-output JSONL, one line per finished request"),
    layout: str = typer.Option("T1", "--layout", "-l", help="static layout, e.g. T1, T2, P2, D2, T2P2"),
    num_ranks: Optional[int] = typer.Option(None, "--num-ranks", min=1, help="must equal the layout's world size"),
    device: str = typer.Option("cpu", "--device", help="cpu | cuda"),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on CUDA)"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, help="cap every request's max_tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0.0, help="override every request's"),
    seed: int = typer.Option(0, "--seed", help="sampling and synthetic-prompt seed"),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", min=1),
    max_num_batched_tokens: int = typer.Option(8192, "--max-num-batched-tokens", min=1),
    chunked_prefill: bool = typer.Option(False, "--chunked-prefill", help="vLLM chunked prefill"),
    block_size: int = typer.Option(16, "--block-size", min=1, help="tokens per KV block"),
    kv_blocks: Optional[int] = typer.Option(None, "--kv-blocks", min=1, help="KV blocks per replica (default: from memory)"),
    kv_cache_gib: Optional[float] = typer.Option(None, "--kv-cache-gib", min=0.0, help="per-rank KV budget on CPU (default 1)"),
    num_requests: Optional[int] = typer.Option(None, "--num-requests", "-n", min=1),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, help="for constant/uniform"),
    output_len: Optional[int] = typer.Option(None, "--output-len", min=1, help="replace every request's output length"),
    prompt_format: str = typer.Option("auto", "--prompt-format", help="plain prompt lines: auto | chat | raw"),
    resume: bool = typer.Option(False, "--resume", help="skip requests already in the output file"),
    timeout_s: float = typer.Option(120.0, "--timeout", min=1.0, help="collective/step timeout in seconds"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object last"),
) -> None:
    """Run a batch of requests through the engine; print vLLM-style throughput."""
    from seesaw.engine.batch_io import done_ids, errors_path, prepare_requests, write_errors
    from seesaw.engine.dist import RankError
    from seesaw.engine.driver import EngineConfig, EngineError, run_batch
    from seesaw.engine.model import check_shardable
    from seesaw.engine.tokenizer import load_tokenizer
    from seesaw.engine.weights import load_checkpoint, resolve_model
    from seesaw.specs import parse_layout

    configs = parse_layout(layout)
    if len(configs) != 1:
        raise RunInputError(f"layout {layout!r}: seesaw run takes one static layout (re-sharding comes later)")
    par = configs[0]
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    world = int(os.environ["WORLD_SIZE"]) if torchrun else par.world_size
    if num_ranks is not None and num_ranks != par.world_size:
        raise RunInputError(f"--num-ranks {num_ranks} does not match layout {par} ({par.world_size} ranks)")
    if world != par.world_size:
        raise RunInputError(f"torchrun started {world} processes; layout {par} needs {par.world_size}")
    dtype = dtype or ("bfloat16" if device == "cuda" else "float32")
    if dtype not in ("float32", "bfloat16", "float16"):
        raise RunInputError(f"--dtype {dtype!r}: expected float32, bfloat16 or float16")
    _check_device(device, par.world_size, torchrun)
    if kv_cache_gib is not None and kv_cache_gib <= 0:
        raise RunInputError("--kv-cache-gib must be positive")

    model_dir = resolve_model(model)
    store = load_checkpoint(model_dir, share_memory=not torchrun, name=_model_name(model, model_dir))
    check_shardable(store.spec, par)
    tokenizer = load_tokenizer(model_dir)
    items, errors = prepare_requests(
        input, tokenizer, max_position=store.spec.max_position_embeddings, seed=seed,
        num_requests=num_requests, input_len=input_len, output_len=output_len, max_tokens=max_tokens,
        temperature=temperature, prompt_format=prompt_format)
    rank = int(os.environ.get("RANK", 0))
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
        raise RunInputError(f"{input}: no valid requests to run")
    if not items:
        _print_result(_empty_result(par), output, as_json)
        return

    config = EngineConfig(
        layout=par, model_dir=str(model_dir), model_name=_model_name(model, model_dir), block_size=block_size,
        num_blocks=kv_blocks, kv_cache_bytes=None if kv_cache_gib is None else kv_cache_gib * 1024**3,
        max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
        enable_chunked_prefill=chunked_prefill, dtype=dtype, device=device, seed=seed, timeout_s=timeout_s,
        eos_token_ids=tuple(sorted(tokenizer.eos_token_ids)), output=str(output), errors_output=str(err_file),
        append=resume, progress=sys.stderr.isatty(), fault=_fault_from_env(),
    )
    try:
        if torchrun:
            result = _run_torchrun(store, items, config)
            if result is None:
                return  # not rank 0
        else:
            result = run_batch(store, items, config)
    except RankError as e:
        print(f"error: {_failure_line(e)}", file=sys.stderr)
        raise typer.Exit(1)
    except EngineError as e:  # torchrun: this process's own driver or worker failed
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    except TimeoutError as e:
        print(f"error: {e}", file=sys.stderr)
        raise typer.Exit(1)
    if result.get("num_rejected"):
        print(f"warning: {result['num_rejected']} request(s) can never fit the KV cache or the token budget; "
              f"listed in {err_file}", file=sys.stderr)
    _print_result(result, output, as_json)


def _print_result(result: dict, output: Path, as_json: bool) -> None:
    from seesaw.specs import RunResult

    res = RunResult(**result)
    print(res.throughput_line())
    total = res.elapsed_time or 1.0
    parts = [f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in res.time_by_phase.items() if v > 0]
    print(f"Elapsed: {res.elapsed_time:.2f}s measured" + ("; " + ", ".join(parts) if parts else ""))
    print(f"wrote {res.num_requests} line(s) to {output}", file=sys.stderr)
    if as_json:
        print(json.dumps(res.model_dump()))


def _empty_result(par) -> dict:
    from seesaw.engine.driver import PHASES

    return dict(elapsed_time=0.0, num_requests=0, total_num_tokens=0, total_output_tokens=0,
                requests_per_second=0.0, tokens_per_second=0.0, output_tokens_per_second=0.0,
                layout=str(par), policy="vllm", time_by_phase=dict.fromkeys(PHASES, 0.0))


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
    line = e.last_line
    for prefix in ("seesaw.engine.driver.EngineError: ", "EngineError: "):
        if line.startswith(prefix):
            line = line[len(prefix):]
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
