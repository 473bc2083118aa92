"""Honest planned runs: the checks ``seesaw run --auto`` and ``seesaw run --plan`` make against the
machine they run on, before the ranks start.

- Cores (``check_cores``): a CPU run with more ranks than the CPU cores this process may use
  (``os.sched_getaffinity``) is refused unless ``oversubscribe``: ranks sharing a core measure far
  below any prediction (3 ranks on 2 cores measured 0.27x their plan).
- Hardware (``plan_mismatch``): a plan made for other hardware (a plan for 2xl4 run on CPU ranks)
  is refused, naming both; with ``force`` its policy is simulated for this machine instead
  (``repredict``: the measured profile's cost model, the run's requests), and the run is compared
  with that prediction.
- Speed (``check_speed``): ``speed_check`` (the one speed check; ``seesaw calibrate`` runs it
  too) times a few of the measured profile's tables again; the plan's policy is
  simulated on the run's requests with the profile as measured and with its compute tables
  scaled to the machine's speed now (``MeasuredProfile.scaled``), and their ratio scales the
  plan's prediction (``SpeedCheck.predicted_at_speed``). The comparison then says how much of the
  measured/predicted gap the machine's speed explains.
"""

from __future__ import annotations

import math
import os
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable

from seesaw.core import Plan, Predicted, SpecError

__all__ = ["usable_cores", "check_cores", "plan_hardware", "plan_mismatch", "predicted_of", "simulate_policy",
           "repredict", "SpeedCheck", "speed_check", "check_speed", "scale_prediction", "speed_section"]


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask; the CPU count where there is none)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_cores(ranks: int, device: str, oversubscribe: bool, torchrun: bool = False, what: str = "") -> None:
    """``SpecError`` for a CPU run of more ranks on this machine than it has cores."""
    if device != "cpu" or oversubscribe:
        return
    here = int(os.environ.get("LOCAL_WORLD_SIZE", ranks)) if torchrun else ranks
    cores = usable_cores()
    if here > cores:
        raise SpecError(f"{what or f'{here} ranks'} would run {here} CPU ranks on {cores} core(s): ranks sharing "
                        f"cores measure far below the plan; use --num-ranks {cores} or add --oversubscribe")


def plan_hardware(node) -> str:
    """A node in words: ``2xl4 (2 x l4)``; a cluster ``2x8xl4 (2 nodes x 8 x l4)``."""
    nodes = f"{node.num_nodes} nodes x " if node.num_nodes > 1 else ""
    return f"{node.name} ({nodes}{node.num_gpus} x {node.gpu.name})"


def plan_mismatch(plan: Plan, mach) -> str | None:
    """Why ``plan`` was made for other hardware than ``mach`` (``autotune.Machine``); None if not."""
    if plan.node.gpu.name == mach.node.gpu.name and plan.node.total_gpus == mach.node.total_gpus:
        return None
    return f"the plan is for {plan_hardware(plan.node)} but this run is on {plan_hardware(mach.node)}"


def predicted_of(sim) -> Predicted:
    """A plan's ``Predicted`` from a ``simulator.sim.SimResult``."""
    return Predicted(throughput_tok_s=float(sim.tokens_per_second),
                     output_throughput_tok_s=float(sim.output_tokens_per_second),
                     requests_per_s=float(sim.requests_per_second), makespan_s=float(sim.elapsed_time),
                     **{f"{k}_s": float(v) for k, v in sim.time_by_phase.items() if v})


def simulate_policy(model, mach, policy, requests, measured=None):
    """``simulator.sim.simulate`` of ``policy`` on ``mach``'s node with ``measured`` (default: the
    machine's own profile; None on a datasheet GPU: the roofline)."""
    from simulator.cost import CostModel
    from simulator.sim import simulate

    prof = mach.measured if measured is None else measured
    return simulate(model, mach.node, policy, requests, cost=CostModel(model, mach.node, measured=prof))


def repredict(plan: Plan, model, mach, policy, requests, workload: str) -> Plan:
    """``plan``'s policy as it will run (``policy``) predicted for ``mach`` on the run's requests:
    the plan the run is compared with under ``--force``."""
    sim = simulate_policy(model, mach, policy, requests)
    return plan.model_copy(update={
        "node": mach.node, "policy": policy, "predicted": predicted_of(sim), "workload": workload,
        "explanation": f"{policy.describe()} from the plan for {plan_hardware(plan.node)}, re-predicted for "
                       f"{mach.description} (--force)",
        "provenance": {**plan.provenance, "planned_for": plan_hardware(plan.node),
                       "re_predicted_for": mach.description}})


def speed_check(profile: str, ranks: int = 2, warn: Callable[[str], None] | None = None) -> dict:
    """How fast this machine runs now against when ``profile`` was measured: the tiny model's
    GEMM and layer tables (``seesaw profile``'s own code, a quick grid, one rank and ``ranks``
    busy at once) timed again and divided by the profile's tables at the same rows. On a shared
    VM whose speed drifts, a ``speed_ratio`` of 1.3 says every step now takes ~30% longer than
    the predictions assume (``calibrate(check_speed=True)`` and ``check_speed`` predict also at
    that speed). ``{}`` for a CUDA profile, one without these tables, or a check that failed (a
    one-line warning to ``warn``)."""
    from seesaw import catalog, profiling as profiler
    from simulator.cost import Curve

    prof = catalog.load_measured(profile)
    if prof.device != "cpu":
        return {}
    spec = catalog.load_model("tiny")
    ranks = max(1, min(ranks, prof.num_ranks))
    grid = profiler.Grid.quick(models=("tiny",), tp=(1,), tokens=(16, 256, 2048, 8192),
                               busy=(ranks,) if ranks > 1 else (), repeats=6)
    t0 = time.perf_counter()
    try:
        now = profiler.profile(grid, ranks=ranks, models=[spec], dtype=prof.dtype, kinds=("forward",),
                               threads=prof.threads_per_rank)
    except Exception as e:  # noqa: BLE001 - an optional check: say why and go on
        if warn is not None:
            warn(f"warning: speed check skipped: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        return {}
    ref = {(t.op, tuple(t.dims), t.ranks): t for t in prof.ops}
    ratios = []
    for t in now.ops:
        old = ref.get((t.op, tuple(t.dims), t.ranks))
        if t.op in ("linear", "layer_misc") and old is not None:
            curve = Curve(old.tokens, old.time_s)
            ratios += [sec / curve(n) for n, sec in zip(t.tokens, t.time_s)]
    if not ratios:
        return {}
    return {"speed_ratio": math.exp(statistics.fmean(math.log(r) for r in ratios)), "speed_points": len(ratios),
            "speed_check_s": time.perf_counter() - t0}


@dataclass
class SpeedCheck:
    """The machine's speed against its measured profile, and what it does to the plan's prediction."""

    profile: str
    speed_ratio: float        # 1.3: every compute step takes ~30% longer than the profile says
    effect: float = 1.0       # predicted tokens/s at this speed over predicted tokens/s as profiled
    stale: bool = False       # at least STALE_SPEED away: only a new profile fixes it
    predicted_at_speed: dict = field(default_factory=dict)  # comparison metric -> scaled prediction


def check_speed(mach, ranks: int, warn) -> SpeedCheck | None:
    """Time the machine against its measured profile (``speed_check``); None on a
    datasheet GPU or when the check fails (it warns through ``warn``)."""
    from seesaw.report.calibration import STALE_SPEED

    if mach.measured is None or mach.measured.device != "cpu":
        return None
    got = speed_check(mach.measured.name, ranks=ranks, warn=warn)
    ratio = got.get("speed_ratio")
    if not ratio:
        return None
    return SpeedCheck(mach.measured.name, ratio, stale=ratio >= STALE_SPEED or ratio <= 1 / STALE_SPEED)


def scale_prediction(check: SpeedCheck, plan: Plan, model, mach, policy, requests,
                     base_tok_s: float | None = None) -> None:
    """Fill ``check.effect`` and ``check.predicted_at_speed``: the policy simulated on the run's
    requests with the profile as measured and scaled to the machine's speed; their ratio applied to
    the plan's prediction (so a plan made for another workload scales the same way). ``base_tok_s``:
    the first of the two, when the caller has just simulated it (``repredict``)."""
    base = base_tok_s if base_tok_s is not None else simulate_policy(model, mach, policy, requests).tokens_per_second
    now = simulate_policy(model, mach, policy, requests, measured=mach.measured.scaled(check.speed_ratio))
    check.effect = float(now.tokens_per_second / base) if base > 0 else 1.0
    pred = plan.predicted
    check.predicted_at_speed = {"tokens_per_second": pred.throughput_tok_s * check.effect,
                                "elapsed_time": pred.makespan_s / check.effect}
    if pred.output_throughput_tok_s is not None:
        check.predicted_at_speed["output_tokens_per_second"] = pred.output_throughput_tok_s * check.effect


def speed_section(check: SpeedCheck, predicted_tok_s: float, measured_tok_s: float) -> dict:
    """The comparison's ``speed_check``: the speed, the prediction at it, and the share of the
    measured/predicted gap the speed explains, on a log scale (``ln(predicted / at speed) /
    ln(predicted / measured)``: 1 = all of it, 0 = none, over 1 = more than all of it)."""
    at = check.predicted_at_speed.get("tokens_per_second")
    gap = measured_tok_s / predicted_tok_s if predicted_tok_s > 0 else None
    explained = None
    if at and gap and measured_tok_s > 0 and abs(math.log(gap)) > 1e-9:
        explained = math.log(predicted_tok_s / at) / math.log(predicted_tok_s / measured_tok_s)
    return {"profile": check.profile, "speed_ratio": check.speed_ratio, "stale": check.stale,
            "predicted_at_speed_tok_s": at, "gap": gap,
            "gap_at_speed": measured_tok_s / at if at else None, "explained_by_speed": explained}

