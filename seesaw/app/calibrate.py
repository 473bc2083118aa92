"""``seesaw calibrate``: the simulator's prediction versus the real engine, layout by layout.

For every (layout, workload) pair the workload runs through the real engine (the same code path
as ``seesaw run``: ``seesaw.engine.launch.run_batch`` on CPU ranks, one per rank of the layout)
and through ``simulator.sim.simulate`` with the measured profile's cost model and node
(``catalog.measured_node``) -- or, given ``hardware`` (``--gpu``/``--node``: a GPU or node name or
YAML), that hardware's datasheet roofline on a node of the layout's ranks, to check a hand-written
profile of this machine against it -- with the same policy (the engine config's; a Seesaw pool sized as
the engine sized it) and the same requests (the engine's ``BatchItem``s, each with the output
length the engine actually produced; length workloads such as ``constant`` ignore EOS, so these
equal ``max_tokens``).

Errors are relative: ``(predicted - measured) / measured``. Planner regret for a workload, among
the layouts measured for it: ``measured(truly fastest) / measured(predicted fastest) - 1`` (0: the
simulator would have picked the truly fastest layout).

Workloads: any ``seesaw run --input`` source (``constant``, ``uniform``, ``sharegpt``, ``arxiv``,
a JSONL/CSV file), optionally with lengths ``NAME:IN/OUT`` (``constant:256/8``: 256-token prompts,
8 output tokens), which override ``--input-len``/``--output-len``.

The use case returns typed ``Row`` objects and the ``summary`` of them; the folder, the terminal
table and the text lines are ``seesaw.report.calibration``'s. Progress messages go to the
``progress`` callback (nothing when none is given; ``seesaw calibrate`` prints them on stderr) and
a failed speed check warns through it.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from seesaw.report.calibration import speed_phrase, write_calibration_folder
from seesaw.report.claim import check_folder, record_files, start_folder
from seesaw.app.machine_check import speed_check
from seesaw.core import GiB, SpecError

__all__ = ["CalibrationError", "WorkloadArg", "Row", "parse_workloads", "calibrate", "regret", "summary",
           "write_outputs", "speed_check", "DEFAULT_LAYOUTS"]

DEFAULT_LAYOUTS = "T2,P2,P2->T2"


class CalibrationError(SpecError):
    """Bad ``seesaw calibrate`` input (one line, exit 2)."""


@dataclass(frozen=True)
class WorkloadArg:
    source: str
    input_len: int | None = None
    output_len: int | None = None

    @property
    def label(self) -> str:
        if self.input_len is None and self.output_len is None:
            return self.source
        return f"{self.source}:{self.input_len or ''}/{self.output_len or ''}"


def parse_workloads(text: str, input_len: int | None = None, output_len: int | None = None) -> list[WorkloadArg]:
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        src, il, ol = part, input_len, output_len
        if ":" in part and "/" in part.rsplit(":", 1)[1]:
            src, lens = part.rsplit(":", 1)
            a, b = lens.split("/", 1)
            try:
                il = int(a) if a else il
                ol = int(b) if b else ol
            except ValueError:
                raise CalibrationError(f"workload {part!r}: expected NAME:IN/OUT with integer lengths") from None
            if (il is not None and il < 1) or (ol is not None and ol < 1):
                raise CalibrationError(f"workload {part!r}: lengths must be positive")
        out.append(WorkloadArg(src, il, ol))
    if not out:
        raise CalibrationError("--workload: give at least one workload")
    return out


@dataclass
class Row:
    layout: str
    workload: str
    num_requests: int
    measured_tok_s: float
    predicted_tok_s: float
    measured_elapsed_s: float
    predicted_elapsed_s: float
    measured_phases: dict = field(default_factory=dict)
    predicted_phases: dict = field(default_factory=dict)
    measured_runs: list = field(default_factory=list)  # tokens/s of every engine run of the pair
    # with speed checks: the machine's speed against the profile's during each run (1.2: 20%
    # slower), and the prediction with the profile's compute tables at the kept run's speed
    run_speeds: list = field(default_factory=list)
    speed_ratio: float | None = None
    predicted_at_speed_tok_s: float | None = None

    @property
    def rel_error(self) -> float:
        return _rel(self.predicted_tok_s, self.measured_tok_s)

    @property
    def rel_error_at_speed(self) -> float | None:
        if self.predicted_at_speed_tok_s is None:
            return None
        return _rel(self.predicted_at_speed_tok_s, self.measured_tok_s)

    @property
    def measured_min_tok_s(self) -> float:
        return min(self.measured_runs, default=self.measured_tok_s)

    @property
    def measured_max_tok_s(self) -> float:
        return max(self.measured_runs, default=self.measured_tok_s)

    @property
    def error_beyond_range(self) -> float:
        """How far the prediction lies outside the measured runs' range, relative to the nearer
        end (0 inside it): the part of the error that run-to-run noise does not cover."""
        lo, hi, p = self.measured_min_tok_s, self.measured_max_tok_s, self.predicted_tok_s
        return _rel(p, hi) if p > hi else _rel(p, lo) if p < lo else 0.0

    def phase_error(self, phase: str) -> float | None:
        m, p = self.measured_phases.get(phase, 0.0), self.predicted_phases.get(phase, 0.0)
        return _rel(p, m) if m > 0 else None

    def record(self, runs: bool = False) -> dict:
        """The row's figures; ``runs``: also every run's throughput and speed (lists, for JSON)."""
        d = {"layout": self.layout, "workload": self.workload, "num_requests": self.num_requests,
             "measured_tok_s": self.measured_tok_s, "predicted_tok_s": self.predicted_tok_s,
             "rel_error": self.rel_error, "measured_elapsed_s": self.measured_elapsed_s,
             "predicted_elapsed_s": self.predicted_elapsed_s, "num_runs": max(1, len(self.measured_runs)),
             "measured_min_tok_s": self.measured_min_tok_s, "measured_max_tok_s": self.measured_max_tok_s,
             "error_beyond_range": self.error_beyond_range}
        if self.predicted_at_speed_tok_s is not None:
            d.update(speed_ratio=self.speed_ratio, predicted_at_speed_tok_s=self.predicted_at_speed_tok_s,
                     rel_error_at_speed=self.rel_error_at_speed)
        if runs:
            d.update(measured_runs=list(self.measured_runs), run_speeds=list(self.run_speeds))
        for ph in sorted(set(self.measured_phases) | set(self.predicted_phases)):
            m, p = self.measured_phases.get(ph, 0.0), self.predicted_phases.get(ph, 0.0)
            if m or p:
                d[f"measured_{ph}_s"] = m
                d[f"predicted_{ph}_s"] = p
        return d


def _rel(pred: float, meas: float) -> float:
    return (pred - meas) / meas if meas > 0 else math.inf


def calibrate(model: str, layouts: list[str], workloads: list[WorkloadArg], *, profile: str = "cpu-2core",
              num_requests: int | None = None, max_tokens: int | None = None, seed: int = 0,
              output_dir: Path | None = None, max_num_seqs: int = 256, max_num_batched_tokens: int = 8192,
              block_size: int = 16, timeout_s: float = 120.0, repeat: int = 1, check_speed: bool = False,
               progress: Callable[[str], None] | None = None,
               tick: Callable[[int, int, str], None] | None = None, overwrite: bool = False,
               hardware: str | None = None) -> list[Row]:
    """Run every (layout, workload) pair through the engine and the simulator; rows in that order.

    ``repeat`` > 1 runs the engine that many times per pair and keeps the median run by throughput:
    the profile's tables are means that include the machine's slow calls (long-tailed wake-ups),
    so the fastest run would be biased against them. The runs go in rounds, every pair once per
    round, so that a slow spell of a shared machine falls on all pairs alike; each row keeps every
    run's throughput (``measured_runs``: the range, and how far the prediction lies beyond it).
    With an output folder, each pair's engine steps go to ``steps-<layout>_<workload>.jsonl``
    (``--step-trace``; the kept run's).

    ``check_speed`` (a CPU profile): ``speed_check`` before every round and after the last, so
    each run has the machine's speed against the profile's (the geometric mean of the checks
    around its round, or the one that worked: ``run_speeds``), and each row a second prediction
    with the profile's compute tables scaled to the kept run's speed (``MeasuredProfile.scaled``;
    ``predicted_at_speed_tok_s``). The plain prediction stays the one the errors are about; the
    second says how much of an error the machine's drift since the profile explains.

    ``hardware``: predict with this GPU or node (name or YAML, ``seesaw.app.simulate.resolve_node``,
    scaled to each layout's ranks; a measured profile's name works as ``profile``) instead of the
    measured ``profile``; the model is costed in the engine's fp32, and no speed check applies.

    ``progress(message)`` gets a line per engine run and per finished pair; ``tick(done, total,
    what)`` counts the engine runs (for a progress bar)."""
    from seesaw import catalog
    from seesaw.app.run import parse_run_layout, run_policy
    from seesaw.engine.checkpoint import checkpoint_name, resolve_checkpoint
    from seesaw.engine.batch_io import prepare_requests
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.model import check_shardable
    from seesaw.engine.tokenizer import load_tokenizer
    from seesaw.engine.weights import load_checkpoint
    from simulator.cost import CostModel
    from simulator.sim import simulate

    progress = progress or (lambda _m: None)
    if output_dir is not None:  # one run, one folder (seesaw.report.claim): refused before any work
        check_folder(output_dir, overwrite=overwrite)
    tick = tick or (lambda _d, _t, _w: None)
    parsed = [(text.strip(), *parse_run_layout(text.strip())) for text in layouts if text.strip()]
    if not parsed:
        raise CalibrationError("--layouts: give at least one layout")
    prof, node_of = _prediction_hardware(profile, hardware)
    model_dir = resolve_checkpoint(model, None)
    name = checkpoint_name(model, model_dir)
    store = load_checkpoint(model_dir, share_memory=True, name=name)
    for _, c_p, c_d in parsed:
        for c in (c_p, c_d):
            if c is not None:
                check_shardable(store.spec, c)
    tok = load_tokenizer(model_dir)
    model_spec = store.spec.model_copy(update={"name": name, "dtype_bytes": 4})  # fp32 on CPU
    out_dir = Path(output_dir) if output_dir is not None else None
    scratch = Path(tempfile.mkdtemp(prefix="seesaw-calibrate-")) if out_dir is None else None
    pairs = []  # (layout text, c_p, c_d, workload, items, tag, engine config)
    for wl in workloads:
        items, errors = prepare_requests(wl.source, tok, max_position=store.spec.context_len,
                                         seed=seed, num_requests=num_requests, input_len=wl.input_len,
                                         output_len=wl.output_len, max_tokens=max_tokens)
        if not items:
            raise CalibrationError(f"workload {wl.label}: no valid requests"
                                   + (f" ({errors[0][1]})" if errors else ""))
        for text, c_p, c_d in parsed:
            tag = f"{text.replace('->', '-to-')}_{wl.label.replace('/', '-').replace(':', '_')}"
            tag = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in tag)
            # engine outputs go to the run folder, or a scratch folder when none was given
            # (the engine fsyncs its output file, which /dev/null does not support)
            out_file = (out_dir or scratch) / f"outputs-{tag}.jsonl"
            # the policy defaults but for the three knobs; the simulation below runs the same policy
            policy = run_policy(c_p, c_d, max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                block_size=block_size)
            config = EngineConfig(
                policy, model_dir=str(model_dir), model_name=name, num_blocks=None, kv_cache_bytes=None,
                host_kv_blocks=None, dtype="float32", device="cpu", seed=seed, timeout_s=timeout_s,
                eos_token_ids=tuple(sorted(tok.eos_token_ids)), output=str(out_file),
                errors_output=str(out_file) + ".errors",
                append=False, progress=False, fault=None, return_token_ids=True, step_trace="")
            pairs.append((text, c_p, c_d, wl, items, tag, config))

    # Rounds: every pair runs once per round, so a slow spell of a shared machine (its speed
    # drifts over seconds to minutes) falls on all pairs alike instead of on one pair's repeats.
    if out_dir is not None:
        start_folder(out_dir, "calibrate", overwrite=overwrite)
        record_files(out_dir, [p for *_, tag, config in pairs
                               for p in (Path(config.output), Path(config.errors_output), out_dir / f"steps-{tag}.jsonl")])
    runs: list[list[tuple[dict, Path | None]]] = [[] for _ in pairs]
    walls = [0.0] * len(pairs)
    rounds = max(1, repeat)
    checks: list[float | None] = []  # speed ratios: before each round, then after the last
    rnd_done = [0]  # engine runs finished

    def check(when: str) -> None:
        if check_speed and prof is not None and prof.device == "cpu":
            tick(rnd_done[0], rounds * len(pairs), f"speed check {when}")
            checks.append(speed_check(profile, warn=progress).get("speed_ratio"))
            if checks[-1]:
                progress(f"machine speed against the profile's {when}: {speed_phrase(checks[-1])}")

    for rnd in range(rounds):
        check(f"before round {rnd + 1}" if rounds > 1 else "before the engine runs")
        for i, (text, c_p, _, wl, items, tag, config) in enumerate(pairs):
            trace = out_dir / f"steps-{tag}.run{rnd + 1}.jsonl" if out_dir is not None else None
            if trace is not None:
                config = replace(config, step_trace=str(trace))
            progress(f"[{i + 1}/{len(pairs)}] engine {text} on {wl.label} ({len(items)} requests, "
                     f"{c_p.world_size} rank(s)){f', run {rnd + 1} of {rounds}' if rounds > 1 else ''}...")
            tick(rnd_done[0], rounds * len(pairs), f"engine {text} on {wl.label}")
            t0 = time.perf_counter()
            runs[i].append((_engine_run(store, items, config), trace))
            walls[i] += time.perf_counter() - t0
            rnd_done[0] += 1
    check("after the engine runs")
    # a run's speed: the geometric mean of the checks before and after its round (the one that
    # worked, when the other failed)
    speeds = [math.sqrt(a * b) if a and b else (a or b) for a, b in zip(checks, checks[1:])]

    rows: list[Row] = []
    for i, (text, c_p, _, wl, items, tag, config) in enumerate(pairs):
        order = sorted(range(len(runs[i])), key=lambda k: runs[i][k][0]["tokens_per_second"])
        kept = order[(len(order) - 1) // 2]  # the median run (the lower middle one of an even count)
        res, trace = runs[i][kept]
        for _, other in runs[i]:
            if other is not None and other != trace:
                other.unlink(missing_ok=True)
        if trace is not None:
            trace.replace(out_dir / f"steps-{tag}.jsonl")
        ids = res.get("output_token_ids") or {}
        # the requests as the engine ran them: each one's output length is what it produced
        reqs = [replace(it, max_tokens=max(1, len(ids.get(it.id, ())) or it.max_tokens))
                for it in items if it.id in ids or not ids]
        pol = config.policy
        if config.seesaw:  # the host pool the engine made (its 1 GiB default, capped by the workload)
            pol = pol.model_copy(update={"host_kv_bytes": float(res.get("host_kv_bytes") or GiB)})

        def predict(p):
            if p is None:  # a datasheet GPU or node: its roofline
                return simulate(model_spec, node_of(c_p.world_size), pol, reqs)
            node = catalog.measured_node(p, c_p.world_size)
            return simulate(model_spec, node, pol, reqs, cost=CostModel(model_spec, node, measured=p))

        sim = predict(prof)
        row = Row(layout=text, workload=wl.label, num_requests=len(reqs),
                  measured_tok_s=float(res["tokens_per_second"]), predicted_tok_s=float(sim.tokens_per_second),
                  measured_elapsed_s=float(res["elapsed_time"]), predicted_elapsed_s=float(sim.elapsed_time),
                  measured_phases={k: float(v) for k, v in res["time_by_phase"].items()},
                  predicted_phases={k: float(v) for k, v in sim.time_by_phase.items()},
                  measured_runs=[float(run["tokens_per_second"]) for run, _ in runs[i]])
        if speeds:
            row.run_speeds = list(speeds)
            row.speed_ratio = speeds[kept]
            if row.speed_ratio:
                row.predicted_at_speed_tok_s = float(predict(prof.scaled(row.speed_ratio)).tokens_per_second)
        rows.append(row)
        spread = (f" (median of {rounds}, range {row.measured_min_tok_s:,.1f}-{row.measured_max_tok_s:,.1f})"
                  if rounds > 1 else "")
        at_speed = (f"; at the run's speed ({speed_phrase(row.speed_ratio)}) {row.predicted_at_speed_tok_s:,.1f} tok/s "
                    f"({100 * row.rel_error_at_speed:+.1f}%)" if row.predicted_at_speed_tok_s is not None else "")
        progress(f"[{i + 1}/{len(pairs)}] {text} on {wl.label}: measured {row.measured_tok_s:,.1f} tok/s{spread}, "
                 f"predicted {row.predicted_tok_s:,.1f} tok/s ({100 * row.rel_error:+.1f}%){at_speed}, "
                 f"engine wall {walls[i]:.1f}s")
    return rows


def _prediction_hardware(profile: str, hardware: str | None):
    """(measured profile or None, node of n ranks or None): what the engine runs are predicted on:
    the measured ``profile``, or ``hardware`` (a measured profile, GPU or node; name or YAML)."""
    from seesaw import catalog
    from seesaw.app.simulate import measured_profile, resolve_node

    if hardware is None:
        return catalog.load_measured(profile), None
    prof = measured_profile(hardware)
    if prof is not None:
        return prof, None
    resolve_node(hardware, 1)  # an unknown GPU or node, or a bad file: one line, before any engine run
    return None, lambda ranks: resolve_node(hardware, ranks)


def _engine_run(store, items, config) -> dict:
    """One engine run; a run that fails once started is ``RunFailed`` (one line, exit 1)."""
    from seesaw.core import RunFailed
    from seesaw.engine.dist import RankError
    from seesaw.engine.config import EngineError
    from seesaw.engine.launch import run_batch

    try:
        return run_batch(store, items, config)
    except (RankError, EngineError, TimeoutError) as e:
        raise RunFailed(f"engine run failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def regret(rows: list[Row]) -> dict:
    """Planner regret per workload and overall (see the module docstring)."""
    per = {}
    for wl in dict.fromkeys(r.workload for r in rows):
        rs = [r for r in rows if r.workload == wl]
        pick = max(rs, key=lambda r: r.predicted_tok_s)
        best = max(rs, key=lambda r: r.measured_tok_s)
        per[wl] = {"predicted_best": pick.layout, "measured_best": best.layout,
                   "regret": best.measured_tok_s / pick.measured_tok_s - 1 if pick.measured_tok_s > 0 else math.inf,
                   "num_layouts": len(rs)}
    vals = [v["regret"] for v in per.values()]
    return {"per_workload": per, "mean": statistics.fmean(vals) if vals else 0.0, "max": max(vals, default=0.0)}


def summary(rows: list[Row]) -> dict:
    errs = [abs(r.rel_error) for r in rows]
    worst = max(rows, key=lambda r: abs(r.rel_error)) if rows else None
    beyond = [abs(r.error_beyond_range) for r in rows]
    return {"num_pairs": len(rows),
            "median_abs_rel_error": statistics.median(errs) if errs else None,
            "worst_abs_rel_error": max(errs) if errs else None,
            "worst_pair": f"{worst.layout} / {worst.workload}" if worst else None,
            "num_within_range": sum(1 for b in beyond if b == 0.0),
            "worst_abs_error_beyond_range": max(beyond) if beyond else None,
            **_at_speed(rows), "regret": regret(rows), "rows": [r.record(runs=True) for r in rows]}


def _at_speed(rows: list[Row]) -> dict:
    """The speed checks' range over the runs and the errors of the predictions at speed."""
    at = [r for r in rows if r.rel_error_at_speed is not None]
    if not at:
        return {}
    speeds = [v for r in rows for v in r.run_speeds if v]
    worst = max(at, key=lambda r: abs(r.rel_error_at_speed))
    return {"speed_ratio_min": min(speeds), "speed_ratio_max": max(speeds),
            "median_abs_rel_error_at_speed": statistics.median(abs(r.rel_error_at_speed) for r in at),
            "worst_abs_rel_error_at_speed": abs(worst.rel_error_at_speed),
            "worst_pair_at_speed": f"{worst.layout} / {worst.workload}"}


def write_outputs(rows: list[Row], out_dir: Path, meta: dict | None = None) -> dict:
    """``config.yaml`` (``meta``), ``calibration.csv``, ``calibration.png``, ``summary.json`` (``meta``
    and ``summary(rows)``) in ``out_dir`` (``seesaw.report.calibration``); returns the summary."""
    return write_calibration_folder(rows, out_dir, {**(meta or {}), **summary(rows)}, config=meta or {})
