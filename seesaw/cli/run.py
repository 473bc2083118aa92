"""``seesaw run``: the command line of the batch-run use case (``seesaw.app.run``).

Options become a ``RunOptions``; the run's notes and warnings go to stderr, the plan table of
``--auto``, the throughput lines and ``--json`` to stdout. Bad input exits 2 and a run that fails
once started exits 1, each with one line (``seesaw.cli``'s error map); what finished is already in
the output file, and ``--resume`` runs only the rest. See ``seesaw.app.run`` for what runs.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer

from seesaw.app.run import DEFAULT_OUTPUT_DIR, RunEvents, RunOptions
from seesaw.app.run import run as run_batch

__all__ = ["register", "run"]


def register(app: typer.Typer) -> None:
    app.command("run")(run)


class _Printer(RunEvents):
    """A run's notes and warnings on stderr, the plan of ``--auto`` on stdout."""

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)

    def planned(self, plan, table, rejected, machine: str) -> None:
        print(f"Plan for {plan.model.name} on {machine}:")
        for row in table:
            print(f"  {row['candidate']:<22} predicted {row['throughput_tok_s']:10.1f} tokens/s, "
                  f"{row['makespan_s']:8.2f} s")
        for what, why in rejected:
            print(f"  {what:<22} rejected: {why}")
        print(f"Chosen: {plan.explanation}")


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
    seed: int = typer.Option(0, "--seed", min=0, help="sampling and synthetic-prompt seed"),
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
    include_timing: bool = typer.Option(False, "--include-timing",
                                        help="add a 'timing' object to each output line (first_token_s, "
                                             "finished_s: seconds since the run started; not OpenAI's format)"),
    warmup: bool = typer.Option(True, "--warmup/--no-warmup",
                                help="run one dummy prefill step of the workload's largest size on every rank "
                                     "before the clock starts (as vLLM does; not counted in the throughput)"),
) -> None:
    """Run a batch of requests through the engine; print vLLM-style throughput."""
    options = RunOptions(
        model=model, input=input, output=output, output_dir=output_dir, layout=layout, plan_file=plan_file,
        auto=auto, num_ranks=num_ranks, device=device, dtype=dtype, max_tokens=max_tokens,
        temperature=temperature, seed=seed, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, chunked_prefill=chunked_prefill, block_size=block_size,
        kv_blocks=kv_blocks, kv_cache_gib=kv_cache_gib, host_kv_gib=host_kv_gib, host_kv_blocks=host_kv_blocks,
        host_full_watermark=host_full_watermark, decode_low_watermark=decode_low_watermark,
        num_requests=num_requests, input_len=input_len, output_len=output_len, prompt_format=prompt_format,
        resume=resume, timeout_s=timeout_s, step_trace=step_trace, warmup=warmup, progress=sys.stderr.isatty(),
        include_timing=include_timing)
    done = run_batch(options, _Printer())
    if done is not None:
        _print_result(done.run_result, done.output, as_json, done.comparison)


def _print_result(res, output: Path, as_json: bool, comp: dict | None = None) -> None:
    """The throughput line, time by phase, the Seesaw line, predicted vs measured, ``--json``."""
    print(res.throughput_line())
    total = res.elapsed_time or 1.0
    parts = [f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in res.time_by_phase.items() if v > 0]
    eng, see = res.engine, res.seesaw
    warm = f" (after a {eng.warmup_s:.2f}s warm-up)" if eng is not None and eng.warmup_s else ""
    print(f"Elapsed: {res.elapsed_time:.2f}s measured{warm}" + ("; " + ", ".join(parts) if parts else ""))
    if see is not None and res.num_requests:
        moved = max((v["in"] + v["out"] for v in see.swap_bytes_per_rank.values()), default=0)
        print(f"Seesaw {res.layout}: {see.num_transitions} transition(s), re-shard "
              f"{see.reshard_time:.3f}s, KV swapped {see.swapped_bytes / 1e6:.2f} MB "
              f"({moved / 1e6:.2f} MB on the busiest rank), swap stall {see.swap_stall_time:.3f}s")
    if comp is not None:
        from seesaw.report.comparison import comparison_lines

        print(f"Predicted vs measured ({comp['policy']}):")
        for line in comparison_lines(comp):
            print("  " + line)
    print(f"wrote {res.num_requests} line(s) to {output}", file=sys.stderr)
    if as_json:
        out = res.model_dump()
        if comp is not None:
            out["comparison"] = comp
        print(json.dumps(out))
