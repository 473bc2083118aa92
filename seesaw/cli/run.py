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

from seesaw.cli import options as opt
from seesaw.core import SpecError
from seesaw.app.run import DEFAULT_OUTPUT_DIR, RunEvents, RunOptions
from seesaw.app.run import run as run_batch
from seesaw.progress import Progress

__all__ = ["register", "run"]


def register(app: typer.Typer) -> None:
    app.command("run")(run)


class _Printer(RunEvents):
    """A run's notes and warnings on stderr, the plan of ``--auto`` on stdout, the planner's
    progress on stderr (the engine's own progress comes from rank 0)."""

    bar: Progress | None = None

    def warn(self, message: str) -> None:
        print(f"warning: {message}", file=sys.stderr)

    def note(self, message: str) -> None:
        print(message, file=sys.stderr)

    def planning(self, done: int, total: int, what: str) -> None:
        if self.bar is None:
            self.bar = Progress("plan", unit="simulations").__enter__()
        self.bar(done, total, what)

    def planned_or_failed(self) -> None:
        """Close the planner's display (the terminal's cursor comes back)."""
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None

    def planned(self, plan, table, rejected, machine: str) -> None:
        self.planned_or_failed()
        print(f"Plan for {plan.model.name} on {machine}:")
        for row in table:
            print(f"  {row['candidate']:<22} predicted {row['throughput_tok_s']:10.1f} tokens/s, "
                  f"{row['makespan_s']:8.2f} s")
        for what, why in rejected:
            print(f"  {what:<22} rejected: {why}")
        print(f"Chosen: {plan.explanation}")


def run(
    model: Optional[str] = typer.Option(None, "--model", "-m", metavar="NAME", rich_help_panel=opt.MODEL_PANEL,
                                        help="tiny | smollm2-135m | .gguf | HF dir "
                                             "(default tiny; --auto: smollm2-135m)"),
    dtype: Optional[str] = typer.Option(None, "--dtype", metavar="TYPE", rich_help_panel=opt.MODEL_PANEL,
                                        help="float32 | bfloat16 | float16 (default: fp32 on CPU, bf16 on CUDA)"),
    input: Optional[str] = typer.Option(None, "--input", "-i", metavar="SRC", rich_help_panel=opt.WORKLOAD_PANEL,
                                        help="batch JSONL, ShareGPT .json, .csv or a generator "
                                             "(default: the sample prompts)"),
    num_requests: Optional[int] = typer.Option(None, "--num-requests", "-n", min=1, metavar="N",
                                               rich_help_panel=opt.WORKLOAD_PANEL,
                                               help="requests (default: the whole file, or 1000)"),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, metavar="TOK",
                                            rich_help_panel=opt.WORKLOAD_PANEL, help="prompt tokens (constant, uniform)"),
    output_len: Optional[int] = typer.Option(None, "--output-len", min=1, metavar="TOK",
                                             rich_help_panel=opt.WORKLOAD_PANEL, help="output tokens of every request"),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1, metavar="TOK",
                                             rich_help_panel=opt.WORKLOAD_PANEL, help="cap every request's max_tokens"),
    temperature: Optional[float] = typer.Option(None, "--temperature", min=0, max=2, metavar="T",
                                                rich_help_panel=opt.WORKLOAD_PANEL,
                                                help="override every request's temperature"),
    seed: int = typer.Option(0, "--seed", min=0, metavar="N", rich_help_panel=opt.WORKLOAD_PANEL,
                             help="sampling and synthetic-prompt seed"),
    prompt_format: str = typer.Option("auto", "--prompt-format", metavar="FMT", rich_help_panel=opt.WORKLOAD_PANEL,
                                      help="plain prompt lines: auto | chat | raw"),
    layout: Optional[str] = typer.Option(None, "--layout", "-l", metavar="LAYOUT", rich_help_panel=opt.LAYOUT_PANEL,
                                         help="T1, T2, P2, D2, T2P2 or a pair P2->T2 (default: T1)"),
    plan_file: Optional[Path] = typer.Option(None, "--plan", metavar="FILE", rich_help_panel=opt.LAYOUT_PANEL,
                                             help="run this plan.json (from seesaw plan)"),
    force: bool = typer.Option(False, "--force", rich_help_panel=opt.LAYOUT_PANEL,
                               help="run a plan made for other hardware"),
    auto: bool = typer.Option(False, "--auto", rich_help_panel=opt.LAYOUT_PANEL,
                              help="plan for this machine, run, compare with the plan"),
    num_ranks: Optional[int] = typer.Option(None, "--num-ranks", min=1, metavar="N",
                                            rich_help_panel=opt.LAYOUT_PANEL,
                                            help="the layout's world size; --auto plans for it (default: 2)"),
    max_num_seqs: Optional[int] = typer.Option(None, "--max-num-seqs", min=1, metavar="N",
                                               rich_help_panel=opt.POLICY_PANEL,
                                               help="sequences per step (default: 256 or the plan's)"),
    max_num_batched_tokens: Optional[int] = typer.Option(None, "--max-num-batched-tokens", min=1, metavar="TOK",
                                                         rich_help_panel=opt.POLICY_PANEL,
                                                         help="tokens per step (default: 8192 or the plan's)"),
    chunked_prefill_on: bool = typer.Option(False, "--chunked-prefill", rich_help_panel=opt.POLICY_PANEL,
                                            help="vLLM chunked prefill on (static layouts)"),
    chunked_prefill_off: bool = typer.Option(False, "--no-chunked-prefill", rich_help_panel=opt.POLICY_PANEL,
                                             help="chunked prefill off (even if the plan has it)"),
    block_size: Optional[int] = typer.Option(None, "--block-size", min=1, metavar="TOK",
                                             rich_help_panel=opt.POLICY_PANEL, help="tokens per KV block (default: 16)"),
    kv_blocks: Optional[int] = typer.Option(None, "--kv-blocks", min=1, metavar="N", rich_help_panel=opt.POLICY_PANEL,
                                            help="KV blocks per replica (default: from memory)"),
    kv_cache_gib: Optional[float] = typer.Option(None, "--kv-cache-gib", min=0, metavar="GIB",
                                                 rich_help_panel=opt.POLICY_PANEL,
                                                 help="KV budget per rank on CPU (default: 1)"),
    host_kv_gib: Optional[float] = typer.Option(None, "--host-kv-gib", min=0, metavar="GIB",
                                                rich_help_panel=opt.SEESAW_PANEL,
                                                help="host KV pool (default: 1 or the plan's)"),
    host_kv_blocks: Optional[int] = typer.Option(None, "--host-kv-blocks", min=1, metavar="N",
                                                 rich_help_panel=opt.SEESAW_PANEL,
                                                 help="host KV blocks per replica (not GiB)"),
    host_full_watermark: Optional[float] = typer.Option(None, "--host-full-watermark", min=0, max=1, metavar="FRAC",
                                                        rich_help_panel=opt.SEESAW_PANEL,
                                                        help="decode once the host pool is this full"),
    decode_low_watermark: Optional[float] = typer.Option(None, "--decode-low-watermark", min=0, max=1,
                                                         metavar="FRAC", rich_help_panel=opt.SEESAW_PANEL,
                                                         help="prefill again below this device KV use"),
    device: str = typer.Option("cpu", "--device", metavar="DEV", rich_help_panel=opt.ENGINE_PANEL,
                               help="cpu | cuda"),
    timeout_s: float = typer.Option(120.0, "--timeout", min=1, metavar="S", rich_help_panel=opt.ENGINE_PANEL,
                                    help="collective and step timeout, seconds"),
    no_warmup: bool = typer.Option(False, "--no-warmup", rich_help_panel=opt.ENGINE_PANEL,
                                   help="skip the untimed warm-up step"),
    oversubscribe: bool = typer.Option(False, "--oversubscribe", rich_help_panel=opt.ENGINE_PANEL,
                                       help="allow more CPU ranks than cores"),
    no_speed_check: bool = typer.Option(False, "--no-speed-check", rich_help_panel=opt.ENGINE_PANEL,
                                        help="--auto/--plan: skip timing this CPU"),
    output: Optional[Path] = typer.Option(None, "--output", "-o", metavar="FILE", rich_help_panel=opt.OUTPUT_PANEL,
                                          help="batch-output JSONL (default: DIR/outputs.jsonl)"),
    output_dir: Optional[Path] = typer.Option(None, "--output-dir", "-d", metavar="DIR",
                                              rich_help_panel=opt.OUTPUT_PANEL,
                                              help=f"the run's folder (default {DEFAULT_OUTPUT_DIR}/, or OUT-run/)"),
    overwrite: bool = typer.Option(False, "--overwrite", rich_help_panel=opt.OUTPUT_PANEL,
                                   help="replace the earlier run in the run's folder"),
    resume: bool = typer.Option(False, "--resume", rich_help_panel=opt.OUTPUT_PANEL,
                                help="skip requests already in the output"),
    step_trace: Optional[Path] = typer.Option(None, "--step-trace", metavar="FILE", rich_help_panel=opt.OUTPUT_PANEL,
                                              help="one JSON line per engine step"),
    include_timing: bool = typer.Option(False, "--include-timing", rich_help_panel=opt.OUTPUT_PANEL,
                                        help="add a timing object to each line (not OpenAI)"),
    as_json: bool = opt.JSON,
) -> None:
    """Run a batch of requests through the engine; print vLLM-style throughput.

    Input lines: OpenAI Batch API ({custom_id, body}) or {id, prompt}.
    The warm-up (one dummy prefill per rank) is not timed, as in vLLM.
    """
    if chunked_prefill_on and chunked_prefill_off:
        raise SpecError("--chunked-prefill and --no-chunked-prefill: give one of them")
    chunked_prefill = True if chunked_prefill_on else (False if chunked_prefill_off else None)
    warmup = not no_warmup
    options = RunOptions(
        model=model, input=input, output=output, output_dir=output_dir, layout=layout, plan_file=plan_file,
        auto=auto, num_ranks=num_ranks, device=device, dtype=dtype, max_tokens=max_tokens,
        temperature=temperature, seed=seed, max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max_num_batched_tokens, chunked_prefill=chunked_prefill, block_size=block_size,
        kv_blocks=kv_blocks, kv_cache_gib=kv_cache_gib, host_kv_gib=host_kv_gib, host_kv_blocks=host_kv_blocks,
        host_full_watermark=host_full_watermark, decode_low_watermark=decode_low_watermark,
        num_requests=num_requests, input_len=input_len, output_len=output_len, prompt_format=prompt_format,
        resume=resume, timeout_s=timeout_s, step_trace=step_trace, warmup=warmup, progress=True,
        overwrite=overwrite, oversubscribe=oversubscribe, force=force, speed_check=not no_speed_check,
        include_timing=include_timing)
    printer = _Printer()
    try:
        done = run_batch(options, printer)
    finally:
        printer.planned_or_failed()
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
