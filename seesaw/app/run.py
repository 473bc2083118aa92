"""The batch-run use case: an offline batch through the real engine, as ``seesaw run`` does it.

``run(RunOptions(...))`` checks everything that can be checked before ranks start (model,
checkpoint, layout against the model, ranks against devices and CPU cores, input, the plan's
hardware against this machine, host KV pool, a folder holding an earlier run), times this machine
against its measured profile (``seesaw.app.machine_check``), plans for it with ``auto``, launches
the ranks (spawned here, or this process as one rank of a ``torchrun`` job: there rank 0 does all
of the above, on its node, and the other ranks only check their node and take the run from rank 0,
``_follow``), writes the run's
folder (``run_paths``; ``config.yaml``, ``summary.json`` and with a plan ``plan.json`` and
``comparison.json``; ``seesaw.report.claim``: one run, one folder) and returns a ``BatchRun``. It prints nothing: progress notes go to the
``RunEvents`` it is given. Bad input raises a ``SpecError`` (one line); a run that fails once
started raises ``RunFailed`` (one line); what finished is already in the output file either way.

What runs: a static layout (``T2``, default ``T1``) under the vllm policy; a Seesaw pair
(``P2->T2``) under the shared ``SeesawScheduler``; a plan's policy (``plan_file``); or a plan made
on the spot for this machine (``auto``: CPU ranks use the measured profile ``cpu-2core``).
Test hook: ``SEESAW_FAULT="rank=1,after=3,action=exit|hang"`` makes that rank exit (or hang)
after that many forward steps.
"""

from __future__ import annotations

import json
import os
import re
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from pydantic import ValidationError

from seesaw.report import json_text, write_run_folder
from seesaw.report.claim import check_folder, record_files, start_folder

from seesaw.core import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_MAX_NUM_BATCHED_TOKENS,
    DEFAULT_MAX_NUM_SEQS,
    DTYPE_BYTES,
    DTYPE_SHORT_NAMES,
    GiB,
    PHASES,
    ParallelConfig,
    Plan,
    RunFailed,
    RunResult,
    SeesawPolicy,
    SpecError,
    VllmPolicy,
    parse_layout,
)

__all__ = ["RunOptions", "RunEvents", "BatchRun", "RunInputError", "RunFailed", "run", "DEFAULT_OUTPUT_DIR",
           "default_input", "parse_run_layout", "run_policy", "empty_result"]

DEFAULT_OUTPUT_DIR = Path("seesaw-run")
SAMPLE_INPUT = Path(__file__).resolve().parent.parent / "data" / "prompts.jsonl"  # package data (any install)


class RunInputError(SpecError):
    """Bad batch-run input (one line, exit 2)."""


@dataclass(frozen=True)
class RunOptions:
    """Everything a batch run takes; the names are ``seesaw run``'s options."""

    model: str | None = None  # tiny | smollm2-135m | a .gguf file | a HF dir (default: tiny; smollm2 with auto)
    input: str | None = None  # batch JSONL, ShareGPT .json, length .csv, or a generator name
    output: Path | None = None  # default OUTPUT_DIR/outputs.jsonl
    output_dir: Path | None = None  # the run's folder: see run_paths
    layout: str | None = None  # static (T2) or a Seesaw pair (P2->T2); default T1
    plan_file: Path | None = None
    auto: bool = False
    num_ranks: int | None = None
    device: str = "cpu"
    dtype: str | None = None  # default float32 on CPU, bfloat16 on CUDA
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int = 0
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    chunked_prefill: bool | None = None
    block_size: int | None = None
    kv_blocks: int | None = None
    kv_cache_gib: float | None = None
    host_kv_gib: float | None = None
    host_kv_blocks: int | None = None
    host_full_watermark: float | None = None
    decode_low_watermark: float | None = None
    num_requests: int | None = None
    input_len: int | None = None
    output_len: int | None = None
    prompt_format: str = "auto"
    resume: bool = False
    timeout_s: float = 120.0
    step_trace: Path | None = None
    warmup: bool = True
    progress: bool = False  # the engine's own progress bar on stderr
    overwrite: bool = False  # replace the earlier run in the run's folder (seesaw.report.claim)
    oversubscribe: bool = False  # allow more CPU ranks than cores
    force: bool = False  # run a plan made for other hardware, re-predicted for this machine
    speed_check: bool = True  # auto / plan on a measured CPU profile: time the machine against it first
    include_timing: bool = False  # output lines carry a "timing" object (an extra outside OpenAI's format)


class RunEvents:
    """What a run reports while it goes; the default ignores everything (the CLI prints)."""

    def warn(self, message: str) -> None:
        """Something the user should know that does not stop the run."""

    def note(self, message: str) -> None:
        """Progress (resume counts, what is about to run)."""

    def planning(self, done: int, total: int, what: str) -> None:
        """``auto``: the planner simulated ``done`` of ``total`` candidates so far (``what``: the latest)."""

    def planned(self, plan: Plan, table: list[dict], rejected: list[tuple[str, str]], machine: str) -> None:
        """``auto``: the plan made for this machine, before the run starts."""


@dataclass
class BatchRun:
    """A finished batch run: the engine's figures, where the outputs went, the plan and comparison."""

    result: dict  # RunResult fields plus the engine's extras
    output: Path
    errors_file: Path
    plan: Plan | None = None
    comparison: dict | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def run_result(self) -> RunResult:
        """``result`` typed: the vLLM-style figures, with ``engine`` and ``seesaw`` sections."""
        return RunResult(**{k: v for k, v in self.result.items() if k != "output_token_ids"})


def run_paths(output: Path | None, output_dir: Path | None) -> tuple[Path, Path]:
    """(the run's folder, its output file). The folder is ``output_dir``; without it, one named
    after an explicit ``output`` beside it (``out.jsonl`` -> ``out-run/``), else ``seesaw-run/``.
    The output defaults to ``FOLDER/outputs.jsonl``; an explicit one is written where it is named."""
    if output_dir is None:
        output_dir = DEFAULT_OUTPUT_DIR if output is None else Path(output).with_name(Path(output).stem + "-run")
    output_dir = Path(output_dir)
    return output_dir, Path(output) if output is not None else output_dir / "outputs.jsonl"


def default_input() -> str:
    """The sample prompts shipped as package data (``seesaw/data/prompts.jsonl``; ``examples/prompts.jsonl``
    in a clone links to it), so ``seesaw run`` without ``--input`` works however Seesaw is installed."""
    if not SAMPLE_INPUT.is_file():
        raise RunInputError(f"no --input given and the sample prompts {SAMPLE_INPUT} are missing from this install")
    return str(SAMPLE_INPUT)


def parse_run_layout(text: str) -> tuple[ParallelConfig, ParallelConfig | None]:
    """(prefill or static layout, decode layout or None) from ``T2`` or ``P2->T2``."""
    configs = parse_layout(text)
    c_p, c_d = configs[0], configs[1] if len(configs) == 2 else None
    return c_p, c_d


def run_policy(c_p: ParallelConfig, c_d: ParallelConfig | None, plan: Plan | None = None, *,
               max_num_seqs=None, max_num_batched_tokens=None, chunked=None, block_size=None,
               host_kv_gib=None, host_full=None, decode_low=None) -> VllmPolicy | SeesawPolicy:
    """The run's scheduling policy: the plan's (a Seesaw plan's host pool as the plan assumed it,
    ``autotune.plan_host_kv_bytes``), else one for ``c_p`` (-> ``c_d``) with the policy defaults;
    every knob the caller gives (not None) overrides it. Knobs of the other policy are ignored."""
    seesaw = c_d is not None if plan is None else isinstance(plan.policy, SeesawPolicy)
    given = dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, block_size=block_size)
    if seesaw:
        given.update(host_kv_bytes=None if host_kv_gib is None else host_kv_gib * GiB,
                     host_full_watermark=host_full, decode_low_watermark=decode_low)
    else:
        given.update(enable_chunked_prefill=chunked)
    given = {k: v for k, v in given.items() if v is not None}
    if plan is not None:
        if seesaw and "host_kv_bytes" not in given:
            from seesaw.app.autotune import plan_host_kv_bytes

            given["host_kv_bytes"] = plan_host_kv_bytes(plan)
        return plan.policy.model_copy(update=given)
    try:
        if seesaw:
            return SeesawPolicy(prefill_layout=c_p, decode_layout=c_d, **given)
        return VllmPolicy(layout=c_p, **given)
    except ValidationError as e:
        err = e.errors()[0]
        raise RunInputError(f"{'.'.join(str(x) for x in err['loc'])}: {err['msg']}") from None


def empty_result(c_p: ParallelConfig, c_d: ParallelConfig | None = None) -> dict:
    """The result of a run with nothing left to do (``resume`` after everything finished)."""
    return dict(elapsed_time=0.0, num_requests=0, total_num_tokens=0, total_output_tokens=0,
                requests_per_second=0.0, tokens_per_second=0.0, output_tokens_per_second=0.0,
                layout=f"{c_p}->{c_d}" if c_d is not None else str(c_p), policy="seesaw" if c_d is not None else "vllm",
                time_by_phase=dict.fromkeys(PHASES, 0.0))


def _check_options(o: RunOptions) -> None:
    if o.plan_file is not None and o.auto:
        raise RunInputError("--plan and --auto exclude each other: --auto makes the plan")
    if (o.plan_file is not None or o.auto) and o.layout is not None:
        raise RunInputError(f"--layout {o.layout} conflicts with {'--auto' if o.auto else '--plan'}: "
                            "the plan picks the layout")
    if o.host_kv_gib is not None and o.host_kv_gib <= 0:
        raise RunInputError("--host-kv-gib must be positive")
    if o.kv_cache_gib is not None and o.kv_cache_gib <= 0:
        raise RunInputError("--kv-cache-gib must be positive")
    if o.overwrite and o.resume:
        raise RunInputError("--overwrite and --resume exclude each other: --resume continues the folder's run")
    if o.force and o.plan_file is None:
        raise RunInputError("--force goes with --plan: it runs a plan made for other hardware")


def _check_ranks(par: ParallelConfig, num_ranks: int | None, torchrun: bool) -> None:
    world = int(os.environ["WORLD_SIZE"]) if torchrun else par.world_size
    if num_ranks is not None and num_ranks != par.world_size:
        raise RunInputError(f"--num-ranks {num_ranks} does not match layout {par} ({par.world_size} ranks)")
    if world != par.world_size:
        raise RunInputError(f"torchrun started {world} processes; layout {par} needs {par.world_size}")


def _check_layout(spec, c_p: ParallelConfig, c_d: ParallelConfig | None, device: str, torchrun: bool) -> None:
    """The layouts shard the model, and the device has their ranks."""
    from seesaw.engine.devices import check_device
    from seesaw.engine.model import check_shardable

    for c in (c_p, c_d):
        if c is not None:
            check_shardable(spec, c)
    check_device(device, c_p.world_size, torchrun)
    if torchrun and c_d is not None:  # each node has its own host KV pool
        from seesaw.engine.host_pools import check_node_pools

        check_node_pools(spec, c_p, c_d, int(os.environ.get("LOCAL_WORLD_SIZE", c_p.world_size)))


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


def failure_line(e) -> str:
    """One line from a failed rank: its own error message, plus ranks that died silently."""
    line = re.sub(r"^(?:[\w.]+\.)?EngineError: ", "", e.last_line)
    if not e.detail:
        line = str(e)
    notes = [f"rank {r} exited with code {c}" for r, c in sorted(e.exited.items()) if r != e.rank]
    notes += [f"rank {r}: {msg}" for r, msg in sorted(e.others.items())
              if "Connection closed by peer" not in msg]  # a peer's own error is the root cause
    return line + (f" ({'; '.join(notes)})" if notes else "")


def _launch(store, items, config, torchrun: bool, timeout_s: float = 120.0):
    from seesaw.engine.dist import RankError
    from seesaw.engine.config import EngineError
    from seesaw.engine.launch import run_batch
    from seesaw.engine.torchrun_job import run_torchrun_rank

    try:
        if torchrun:
            return run_torchrun_rank(store, items, config, timeout_s)
        return run_batch(store, items, config)
    except RankError as e:
        raise RunFailed(failure_line(e)) from None
    except (EngineError, TimeoutError) as e:  # torchrun: this process's own driver or worker failed
        raise RunFailed(str(e)) from None


def _follow(o: RunOptions) -> None:
    """A torchrun rank other than 0: check this node (its devices and cores for its ranks) and run
    what rank 0 sends (``torchrun_job.run_torchrun_rank``). It reads no input, plan or output and writes
    nothing: those are rank 0's, on its node."""
    from seesaw.app.machine_check import check_cores
    from seesaw.engine.devices import check_device

    check_device(o.device, 1, torchrun=True)
    check_cores(1, o.device, o.oversubscribe, torchrun=True)
    _launch(None, None, None, True, o.timeout_s)


def _plan_text(plan: Plan) -> str:
    """``plan.json`` of a run's folder (``load_plan`` reads it back)."""
    return json_text(json.loads(plan.model_dump_json()))


def _auto_plan(o: RunOptions, model_spec, mach, items, source: str, events: RunEvents):
    """Plan for this machine (``seesaw.app.autotune``); write ``OUTPUT_DIR/plan.json``."""
    from seesaw.app.autotune import plan_for_machine

    plan, table, rejected = plan_for_machine(
        model_spec, mach, items, workload=f"{len(items)} requests from {source}",
        max_num_seqs=o.max_num_seqs or DEFAULT_MAX_NUM_SEQS,
        max_num_batched_tokens=o.max_num_batched_tokens or DEFAULT_MAX_NUM_BATCHED_TOKENS,
        block_size=o.block_size or DEFAULT_BLOCK_SIZE, progress=events.planning)
    events.planned(plan, table, rejected, mach.description)
    (Path(o.output_dir) / "plan.json").write_text(_plan_text(plan))
    record_files(o.output_dir, [Path(o.output_dir) / "plan.json"])
    return plan


def run(options: RunOptions, events: RunEvents | None = None) -> BatchRun | None:
    """Run one batch; None on a torchrun rank other than 0 (rank 0 returns the run).

    The output file is locked (``seesaw.app.outputs.OutputLock``) by rank 0's launcher from the
    moment it exists (at once for an existing file, which ``resume`` reads and rewrites clean;
    else just before the ranks start) until the run ends. SIGINT / SIGTERM stop the ranks and
    raise ``RunInterrupted`` (what is saved, where); a full disk raises ``RunFailed``
    (``outputs.RunWatch``)."""
    from seesaw.app.outputs import RunWatch

    with ExitStack() as held, RunWatch() as watch:
        return _run(options, events or RunEvents(), held, watch)


# the simulator's short precision names, accepted by the engine too
_ENGINE_DTYPES = {short: name for name, short in DTYPE_SHORT_NAMES.items()}


def _run(o: RunOptions, events: RunEvents, held: ExitStack, watch) -> BatchRun | None:
    from seesaw.app.autotune import comparison, load_plan, machine, plan_machine, policy_layouts
    from seesaw.app.machine_check import check_cores, check_speed, plan_mismatch, repredict, scale_prediction
    from seesaw.report.calibration import speed_phrase
    from seesaw.app.outputs import OutputLock, check_output, resume_output
    from seesaw.engine.batch_io import errors_path, prepare_requests, write_errors
    from seesaw.engine.checkpoint import checkpoint_name, resolve_checkpoint
    from seesaw.engine.tokenizer import load_tokenizer
    from seesaw.engine.weights import load_checkpoint

    _check_options(o)
    torchrun = "RANK" in os.environ and "WORLD_SIZE" in os.environ
    rank = int(os.environ.get("RANK", 0))
    if torchrun and rank != 0:
        return _follow(o)
    plan = load_plan(o.plan_file) if o.plan_file is not None else None
    model = o.model or (plan.model.name if plan is not None else "smollm2-135m" if o.auto else "tiny")
    dtype = (_ENGINE_DTYPES.get(o.dtype.lower(), o.dtype) if o.dtype else None) or (
        "bfloat16" if o.device == "cuda" else "float32")
    if dtype not in DTYPE_BYTES:
        simulated = " (FP8 is simulated and planned only: seesaw simulate/plan --dtype fp8)" if "8" in str(dtype) else ""
        raise RunInputError(f"--dtype {o.dtype!r}: the engine runs float32, bfloat16 or float16{simulated}")
    if plan is not None and (plan.model.weight_dtype_bytes or plan.model.kv_dtype_bytes):
        raise RunInputError(f"{o.plan_file}: the plan was made for {plan.model.dtype_label}, which the engine does "
                            "not run (float32, bfloat16, float16): plan again without --dtype fp8/--kv-cache-dtype")
    c_p, c_d = (None, None) if plan is not None or o.auto else parse_run_layout(o.layout or "T1")
    if plan is not None:
        c_p, c_d = policy_layouts(plan.policy)
    if c_p is not None:
        _check_ranks(c_p, o.num_ranks, torchrun)
    ranks = c_p.world_size if c_p is not None else o.num_ranks or 2
    what = f"--auto --num-ranks {ranks}" if o.auto else f"{'the plan' if plan else 'layout'} {o.layout or c_p}"
    if o.auto:  # before planning; a layout's ranks after its own checks, below
        check_cores(ranks, o.device, o.oversubscribe, torchrun, what=what)
    mach, forced = (None, False)
    if plan is not None:
        mach, forced = plan_machine(plan, ranks, o.device, o.force, o.plan_file, events.warn)
        if forced:
            events.warn(f"--force: {plan_mismatch(plan, mach)}; its layout is re-predicted for this machine")
    output_dir, output = run_paths(o.output, o.output_dir)
    o = replace(o, output_dir=output_dir)

    model_dir = resolve_checkpoint(model, plan.model.name if plan is not None else None)
    name = checkpoint_name(model, model_dir)
    store = load_checkpoint(model_dir, share_memory=not torchrun, name=name)
    tokenizer = load_tokenizer(model_dir)
    if output.parent == output_dir:
        output_dir.mkdir(parents=True, exist_ok=True)
    source = o.input or default_input()
    items, errors = prepare_requests(
        source, tokenizer, max_position=store.spec.context_len, seed=o.seed,
        num_requests=o.num_requests, input_len=o.input_len, output_len=o.output_len, max_tokens=o.max_tokens,
        temperature=o.temperature, prompt_format=o.prompt_format)
    err_file = errors_path(output)
    lock = None
    check_output(output, err_file, source)  # before anything is written or any rank starts
    # one run, one folder: never into an earlier run's folder (or over its outputs) unless asked
    check_folder(output_dir, overwrite=o.overwrite, resume=o.resume, also=(output,), resumable=True)
    watch.output, watch.ids = output, {it.custom_id for it in items}
    if output.exists():
        lock = held.enter_context(OutputLock(output))
        watch.locked = True
    write_errors(err_file, errors)
    if errors:
        events.warn(f"{len(errors)} bad input line(s) skipped, listed in {err_file}")
    if o.resume:
        done, dropped = resume_output(output, lock)
        if lock is not None and dropped:
            events.note(f"resume: dropped {dropped} torn, invalid or repeated line(s) from {output}")
        skipped = sum(it.custom_id in done for it in items)
        items = [it for it in items if it.custom_id not in done]
        if skipped:
            events.note(f"resume: {skipped} request(s) already in {output}, {len(items)} to run")
    if not items and not o.resume:
        raise RunInputError(f"{source}: no valid requests to run")

    if c_p is not None:  # a layout or a plan: checked before the run's folder is touched
        _check_layout(store.spec, c_p, c_d, o.device, torchrun)
        check_cores(ranks, o.device, o.oversubscribe, torchrun, what=what)
    if name.lower() == "tiny":
        events.note("model tiny: seeded random weights (for plumbing and tests), so its output text is noise; "
                    "--model smollm2-135m answers in words")
    start_folder(output_dir, "run", overwrite=o.overwrite, keep=(output, err_file))
    record_files(output_dir, [output, err_file])
    model_spec = store.spec.model_copy(update={"name": name, "dtype_bytes": DTYPE_BYTES[dtype]})
    if o.auto:
        mach = machine(o.num_ranks or 2, o.device)
    speed = None
    if mach is not None and o.speed_check and items:  # before planning, as calibrate does
        speed = check_speed(mach, ranks, events.warn)
        if speed is not None:
            events.note(f"machine speed: {speed_phrase(speed.speed_ratio)} than measured profile "
                        f"{speed.profile!r} (its GEMM and layer tables timed again)")
            if speed.stale:
                events.warn(f"this machine runs {speed_phrase(speed.speed_ratio)} than when {speed.profile!r} was "
                            "measured: predictions are off by that much; `seesaw profile` measures it again")
    if o.auto:
        plan = _auto_plan(o, model_spec, mach, items, source, events)
        c_p, c_d = policy_layouts(plan.policy)
        _check_ranks(c_p, None, torchrun)
        _check_layout(store.spec, c_p, c_d, o.device, torchrun)
    if not items:
        if torchrun:  # the other ranks wait for the run: there is none
            _launch(None, None, None, True, o.timeout_s)
        return BatchRun(result=empty_result(c_p, c_d), output=output, errors_file=err_file, plan=plan)

    from seesaw.engine.config import EngineConfig

    policy = run_policy(c_p, c_d, plan, max_num_seqs=o.max_num_seqs, max_num_batched_tokens=o.max_num_batched_tokens,
                        chunked=o.chunked_prefill, block_size=o.block_size, host_kv_gib=o.host_kv_gib,
                        host_full=o.host_full_watermark, decode_low=o.decode_low_watermark)
    config = EngineConfig(
        policy, model_dir=str(model_dir), model_name=name, num_blocks=o.kv_blocks,
        kv_cache_bytes=None if o.kv_cache_gib is None else o.kv_cache_gib * GiB, host_kv_blocks=o.host_kv_blocks,
        dtype=dtype, device=o.device, seed=o.seed, timeout_s=o.timeout_s,
        eos_token_ids=tuple(sorted(tokenizer.eos_token_ids)), output=str(output), errors_output=str(err_file),
        append=o.resume, progress=o.progress, fault=_fault_from_env(),
        step_trace=str(o.step_trace) if o.step_trace else "", warmup=o.warmup, include_timing=o.include_timing)
    if config.seesaw:
        from seesaw.engine.host_pools import host_blocks_for

        host_blocks_for(config, store.spec, items)  # a pool that cannot hold a request: fail now
    if forced:
        plan = repredict(plan, model_spec, mach, policy, items, f"{len(items)} requests from {source}")
    if speed is not None:
        scale_prediction(speed, plan, model_spec, mach, policy, items,  # --force has just simulated it as measured
                         base_tok_s=plan.predicted.throughput_tok_s if forced else None)
    if plan is not None:
        events.note(f"Running {config.layout_name} ({'seesaw' if config.seesaw else 'vllm'}) on {c_p.world_size} "
                    f"rank(s): {len(items)} request(s) -> {output}")
    if not output.exists():
        held.enter_context(OutputLock(output))
        watch.locked = True
    result = _launch(store, items, config, torchrun)
    if result.get("num_rejected"):
        events.warn(f"{result['num_rejected']} request(s) can never fit the KV cache or the token budget; "
                    f"listed in {err_file}")
    run_ = BatchRun(result=result, output=output, errors_file=err_file, plan=plan)
    files = {}
    if plan is not None:
        run_.comparison = comparison(plan, result, speed)
        if not o.auto:  # auto wrote its plan.json before the run
            files["plan.json"] = _plan_text(plan)
        files["comparison.json"] = json_text(run_.comparison)
    # the run's folder: its config, figures, plan and comparison
    resolved = {"command": "run", "model": name, "model_dir": str(model_dir), "output": str(output),
                "device": o.device, "dtype": dtype, "policy": policy.model_dump(mode="json"),
                "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(o).items()}}
    summary = {k: v for k, v in result.items() if k != "output_token_ids"}
    run_.files = write_run_folder(output_dir, summary, config=resolved, files=files)
    return run_
