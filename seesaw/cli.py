"""The ``seesaw`` command: catalog, workloads, simulation (and later planning and execution).

Conventions: progress and tables go to stderr/stdout through Rich; results go to stdout; with
``--json`` the last stdout line is one JSON object. Any bad input (missing file, malformed data,
unknown GPU or model, invalid layout, a model that does not fit) is one line on stderr naming the
problem, exit code 2, never a traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from seesaw import cli_options as opt
from seesaw.app.run import RunFailed
from seesaw.core import SpecError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Seesaw: plan, simulate and run throughput-oriented offline LLM inference with dynamic re-sharding.",
)
workload_app = typer.Typer(no_args_is_help=True, help="Inspect workloads (files or built-in generators).")
app.add_typer(workload_app, name="workload")

out = Console(soft_wrap=True)
err = Console(stderr=True)


class UserError(SpecError):
    """Bad command-line input."""


def _fmt_validation(e: ValidationError) -> str:
    first = e.errors()[0]
    loc = ".".join(str(x) for x in first.get("loc", ())) or "value"
    return f"{e.title}: {loc}: {first.get('msg')}"


def main() -> None:
    """Console-script entry point: the one place where user errors become one-line messages."""
    try:
        app()
    except (SpecError, FileNotFoundError, IsADirectoryError, PermissionError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(2)
    except ValidationError as e:
        print(f"error: {_fmt_validation(e)}", file=sys.stderr)
        sys.exit(2)
    except RunFailed as e:  # a batch run that failed once its ranks had started
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def _print_json(obj: dict) -> None:
    # the last stdout line is one JSON object, as nanoGPT-style scripts do
    print(json.dumps(obj, default=_json_default))


def _json_default(o):
    if hasattr(o, "model_dump"):
        return o.model_dump()
    if hasattr(o, "item"):
        return o.item()
    return str(o)


# --------------------------------------------------------------------------------------------
# catalog


@app.command()
def catalog(as_json: bool = typer.Option(False, "--json", help="print one JSON object")) -> None:
    """List the built-in GPUs, nodes and models with their key figures."""
    from seesaw import catalog as cat

    rows = cat.catalog_table()
    if as_json:
        _print_json({"profiles": rows})
        return
    for kind in dict.fromkeys(r["kind"] for r in rows):
        table = Table(title=kind, title_justify="left")
        for col in ("name", "figures", "source"):
            table.add_column(col, overflow="fold")
        for r in rows:
            if r["kind"] == kind:
                table.add_row(r["name"], r["figures"], r["source"])
        out.print(table)


# --------------------------------------------------------------------------------------------
# workload


@workload_app.command("describe")
def workload_describe(
    source: str = typer.Argument(..., help="file (.json ShareGPT, .csv lengths, .jsonl batch) or sharegpt|arxiv|constant|uniform"),
    num_requests: Optional[int] = typer.Option(None, "--num-requests", "-n", min=1, help="sample this many"),
    input_len: Optional[int] = typer.Option(None, "--input-len", min=1, help="for constant/uniform"),
    output_len: Optional[int] = typer.Option(None, "--output-len", min=1, help="for constant/uniform"),
    seed: int = opt.SEED,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Count, length percentiles and prefill:decode ratio of a workload."""
    from seesaw.workload import describe, load_workload

    reqs = load_workload(source, num_requests=num_requests, seed=seed, input_len=input_len, output_len=output_len)
    stats = describe(reqs)
    if as_json:
        _print_json(stats)
        return
    table = Table(title=f"workload {source}", title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k, v in stats.items():
        table.add_row(k, f"{v:,.2f}" if isinstance(v, float) else str(v))
    out.print(table)


# --------------------------------------------------------------------------------------------
# simulate


def resolve_node(gpu: str, num_gpus: Optional[int], interconnect: Optional[str]):
    """A catalog node name (``8xl4``) or a GPU name plus a count."""
    from seesaw import catalog as cat

    if num_gpus is None and "x" in gpu.lower() and gpu.lower().split("x", 1)[0].isdigit():
        return cat.load_node(gpu)
    return cat.make_node(gpu, num_gpus or 8, interconnect)


def build_policy(layout: str, *, chunked_prefill: bool, chunk_size: Optional[int],
                 max_num_seqs: int, host_kv_gib: Optional[float], watermark: float = 1.0,
                 max_num_batched_tokens: Optional[int] = None):
    from seesaw.core import SeesawPolicy, VllmPolicy, parse_layout

    configs = parse_layout(layout)
    budget = chunk_size or max_num_batched_tokens
    common = {"max_num_seqs": max_num_seqs}
    if budget:
        common["max_num_batched_tokens"] = budget
    if len(configs) == 1:
        if host_kv_gib is not None:
            raise UserError("--host-kv-gib applies only to a Seesaw layout such as P8->T4P2")
        return VllmPolicy(layout=configs[0], enable_chunked_prefill=chunked_prefill, **common)
    if chunked_prefill:
        raise UserError("--chunked-prefill applies only to a static layout")
    host = None if host_kv_gib is None else host_kv_gib * 1024**3
    return SeesawPolicy(prefill_layout=configs[0], decode_layout=configs[1], host_kv_bytes=host,
                        host_full_watermark=watermark, **common)


@app.command()
def simulate(
    model: str = opt.MODEL,
    gpu: str = opt.GPU,
    num_gpus: Optional[int] = opt.NUM_GPUS,
    interconnect: Optional[str] = opt.INTERCONNECT,
    workload: str = opt.WORKLOAD,
    num_requests: Optional[int] = opt.NUM_REQUESTS,
    input_len: Optional[int] = opt.INPUT_LEN,
    output_len: Optional[int] = opt.OUTPUT_LEN,
    seed: int = opt.SEED,
    layout: str = typer.Option("T4P2", "--layout", "-l", help="static (T4P2, D2T4) or Seesaw (P8->T4P2)"),
    chunked_prefill: bool = typer.Option(False, "--chunked-prefill", help="vLLM chunked prefill"),
    chunk_size: Optional[int] = typer.Option(None, "--chunk-size", min=16, help="token budget per step"),
    max_num_seqs: int = typer.Option(256, "--max-num-seqs", min=1),
    host_kv_gib: Optional[float] = typer.Option(None, "--host-kv-gib", min=0.0, help="Seesaw host KV pool"),
    as_json: bool = opt.JSON,
    out_dir: Optional[Path] = typer.Option(None, "--output-dir", "-o", help="write config, summary, CSVs"),
) -> None:
    """Simulate a workload on a node under one layout and policy; print vLLM-style throughput."""
    from seesaw import catalog as cat
    from seesaw.report import write_sim_folder
    from seesaw.workload import load_workload
    from simulator.sim import simulate as run_sim

    model_spec = cat.load_model(model)
    node = resolve_node(gpu, num_gpus, interconnect)
    policy = build_policy(layout, chunked_prefill=chunked_prefill, chunk_size=chunk_size,
                          max_num_seqs=max_num_seqs, host_kv_gib=host_kv_gib)
    reqs = load_workload(workload, num_requests=num_requests, seed=seed, input_len=input_len,
                         output_len=output_len)
    with _progress(len(reqs), f"simulating {policy.describe()}") as tick:
        result = run_sim(model_spec, node, policy, reqs, progress=tick)
    print(result.to_run_result().throughput_line())
    _print_phases(result)
    config = {
        "command": "simulate", "model": model_spec.model_dump(), "node": node.model_dump(),
        "policy": policy.model_dump(), "workload": workload, "num_requests": len(reqs), "seed": seed,
        "input_len": input_len, "output_len": output_len,
    }
    if out_dir is not None:
        write_sim_folder(out_dir, config, result)
        err.print(f"wrote {out_dir}/")
    if as_json:
        _print_json(result.summary())


def _print_phases(result) -> None:
    total = result.elapsed_time or 1.0
    parts = [f"{k} {v:.2f}s ({100 * v / total:.0f}%)" for k, v in result.time_by_phase.items() if v > 0]
    print(f"Elapsed: {result.elapsed_time:.2f}s simulated; " + ", ".join(parts))


class _progress:
    """A Rich progress bar on stderr, silent when stderr is not a terminal."""

    def __init__(self, total: int, what: str):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.total = total
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                            TimeElapsedColumn(), console=err, transient=True, disable=not err.is_terminal)
        self.task = self.bar.add_task(what, total=total)

    def __enter__(self):
        self.bar.start()
        return lambda done, total=None: self.bar.update(self.task, completed=done)

    def __exit__(self, *exc):
        self.bar.update(self.task, completed=self.total)
        self.bar.stop()
        return False


from seesaw import cli_plan; cli_plan.register(app)  # noqa: E402,E702  compare, plan, whatif
from seesaw import cli_profile; cli_profile.register(app)  # noqa: E402,E702  profile
from seesaw import cli_run; cli_run.register(app)  # noqa: E402,E702  run
from seesaw import cli_calibrate; cli_calibrate.register(app)  # noqa: E402,E702  calibrate


if __name__ == "__main__":
    main()
