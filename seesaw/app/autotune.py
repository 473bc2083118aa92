"""Auto-tuned batch runs: plan for the machine the engine runs on, then compare the plan's
prediction with what the engine measured.

``machine(num_ranks, device)`` is the node the planner should assume: on CPU the node of the
measured profile ``profiles/measured/cpu-2core.yaml`` (``catalog.measured_node``, one "GPU" per
rank) with that profile's tables; on CUDA a datasheet node of the catalog GPU matching the device
name (no measured tables: the roofline cost model). ``plan_for_machine`` picks a ``Plan`` for the
engine's requests on it with ``simulator.planner.plan`` (the one planner, given the measured
profile), exhaustive and on every request, over the engine's own knobs (``engine_space``: every
layout of ``num_ranks`` that shards the model and fits, every Seesaw pair with equal DP, chunked
prefill off, the default host pool, which the engine caps at what the workload fills).
``comparison`` puts the prediction and the measurement side by side.

The planner and the engine must mean the same thing, so the plan is made for the model as the
engine runs it: the checkpoint's shape with the engine's dtype (fp32 on CPU), the engine's
requests (prompt length and ``max_tokens``), and the engine's defaults for the policy knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seesaw.core import (
    ModelSpec, NodeSpec, ParallelConfig, Plan, SeesawPolicy, SpecError,
)

__all__ = ["Machine", "machine", "engine_space", "plan_for_machine", "load_plan", "comparison",
           "policy_layouts", "plan_host_kv_bytes", "plan_machine", "MEASURED_CPU_PROFILE"]

MEASURED_CPU_PROFILE = "cpu-2core"
# catalog GPU profiles by a distinctive part of ``torch.cuda.get_device_name()``, most specific first
_GPU_NAMES = (("h100", "h100"), ("a100-sxm4-80gb", "a100-80g"), ("a100 80gb", "a100-80g"), ("a100-pcie-80gb", "a100-80g"),
              ("a100", "a100-40g"), ("a10g", "a10g"), ("a10", "a10"), ("l4", "l4"))


@dataclass
class Machine:
    node: NodeSpec
    measured: object | None       # MeasuredProfile on CPU
    description: str


def machine(num_ranks: int, device: str = "cpu", gpu_name: str | None = None) -> Machine:
    """The node ``seesaw run --auto`` plans for (see the module docstring)."""
    from seesaw import catalog

    if device == "cpu":
        profile = catalog.load_measured(MEASURED_CPU_PROFILE)
        node = catalog.measured_node(profile, num_ranks)
        return Machine(node, profile, f"{num_ranks} CPU ranks, measured profile {profile.name!r} "
                                      f"(load average {profile.load_average:.1f} when measured)")
    if gpu_name is None:
        from seesaw.engine.devices import cuda_device_name

        gpu_name = cuda_device_name(0)
    low = gpu_name.lower()
    for key, name in _GPU_NAMES:
        if key in low:
            node = catalog.make_node(name, num_ranks)
            return Machine(node, None, f"{num_ranks} x {gpu_name}: datasheet profile {name!r} ({node.name})")
    raise SpecError(f"no GPU profile matches {gpu_name!r} (known: a10, a10g, l4, a100-40g, a100-80g, h100); "
                    "plan with `seesaw plan --gpu ...` and pass --plan plan.json")


def plan_machine(plan: Plan, ranks: int, device: str, force: bool, plan_file, warn):
    """(the machine a ``--plan`` run runs on, whether the plan was made for other hardware).
    ``SpecError`` naming both when it was and ``force`` is not given; (None, False) where this
    machine has no profile to check against (a GPU the catalog does not know: a warning)."""
    from seesaw.app.machine_check import plan_mismatch

    try:
        mach = machine(ranks, device)
    except SpecError as e:
        warn(f"the plan's hardware is not checked: {e}")
        return None, False
    why = plan_mismatch(plan, mach)
    if why and not force:
        raise SpecError(f"{plan_file}: {why}; plan for this machine (seesaw run --auto) or add --force to "
                        "re-predict the plan's layout here")
    return mach, why is not None


def engine_space(max_num_seqs: int = 256, max_num_batched_tokens: int = 8192, block_size: int = 16):
    """The planner's search space as the engine will run it: its knobs fixed, no chunk or pool sweep
    (chunked prefill off, the whole default host pool, the paper's watermarks)."""
    from simulator.planner import SearchSpace

    return SearchSpace(chunk_sizes=(), max_num_seqs=(max_num_seqs,), seesaw_max_num_seqs=(max_num_seqs,),
                       host_pool_fractions=(1.0,), host_full_watermarks=(1.0,), decode_low_watermarks=(0.5,),
                       max_num_batched_tokens=max_num_batched_tokens, block_size=block_size)


def plan_for_machine(model: ModelSpec, mach: Machine, requests: list, *, workload: str,
                     max_num_seqs: int = 256, max_num_batched_tokens: int = 8192, block_size: int = 16,
                     progress=None) -> tuple[Plan, list[dict], list[tuple[str, str]]]:
    """A ``Plan`` for ``requests`` (objects with ``id``, ``prompt_len``, ``output_len``) on
    ``mach``: ``simulator.planner.plan`` with the machine's measured profile, exhaustive over the
    engine's search space (``engine_space``) on every request. Also the simulated candidates (best
    first) and the rejected layouts and candidates with their reasons."""
    from simulator.planner import plan

    if not requests:
        raise SpecError("the workload has no requests")
    res = plan(model, mach.node, requests, space=engine_space(max_num_seqs, max_num_batched_tokens, block_size),
               exhaustive=True, sample_size=None, workers=1, measured=mach.measured, workload_name=workload,
               progress=progress)
    if res.plan is None:
        raise SpecError(f"no feasible layout for {model.name} on {mach.node.num_gpus} ranks: "
                        + "; ".join(f"{w}: {r}" for w, r in res.rejected[:3]))
    sim = res.table[res.table["source"] == "simulated"]
    table = [{"candidate": r["candidate"], "kind": r["kind"], "throughput_tok_s": r["throughput_tok_s"],
              "makespan_s": r["makespan_s"], "num_transitions": r["num_transitions"]}
             for r in sim.to_dict("records")]
    chosen = res.plan.model_copy(update={"provenance": {
        **res.plan.provenance, "planned_by": "seesaw run --auto", "machine": mach.description}})
    return chosen, table, list(res.rejected)


def load_plan(path: Path) -> Plan:
    """A ``Plan`` from ``plan.json``; one-line errors for a missing or malformed file."""
    from pydantic import ValidationError

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"plan file not found: {path}")
    try:
        return Plan.model_validate_json(path.read_text())
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(x) for x in first.get("loc", ())) or "value"
        raise SpecError(f"{path}: not a plan ({loc}: {first.get('msg')})") from None


def plan_host_kv_bytes(plan: Plan) -> float:
    """The host KV pool the plan assumed (the simulator's default when the policy leaves it open)."""
    from simulator.sim import default_host_kv_bytes

    pol = plan.policy
    if pol.host_kv_bytes is not None:
        return float(pol.host_kv_bytes)
    return default_host_kv_bytes(plan.model, plan.node)


def policy_layouts(policy) -> tuple[ParallelConfig, ParallelConfig | None]:
    if isinstance(policy, SeesawPolicy):
        return policy.prefill_layout, policy.decode_layout
    return policy.layout, None


def comparison(plan: Plan, result: dict, speed=None) -> dict:
    """Predicted (the plan) and measured (the engine run) side by side; ratio = measured/predicted.
    ``speed`` (a ``machine_check.SpeedCheck``): also each main metric predicted at the machine's
    speed now, and a ``speed_check`` section saying how much of the gap that speed explains."""
    from seesaw.app.machine_check import speed_section

    pred = plan.predicted
    rows = {
        "tokens_per_second": (pred.throughput_tok_s, result["tokens_per_second"]),
        "output_tokens_per_second": (pred.output_throughput_tok_s, result["output_tokens_per_second"]),
        "elapsed_time": (pred.makespan_s, result["elapsed_time"]),
    }
    for k, v in result["time_by_phase"].items():
        p = pred.phase_s(k)
        if p or v:
            rows[f"{k}_s"] = (p, v)
    out = {k: {"predicted": p, "measured": m, "ratio": (m / p if p else None)} for k, (p, m) in rows.items()}
    comp = {"policy": plan.policy.describe(), "layout": result["layout"], "machine": plan.provenance.get("machine", ""),
            "metrics": out}
    if "re_predicted_for" in plan.provenance:
        comp.update(machine=plan.provenance["re_predicted_for"], planned_for=plan.provenance["planned_for"])
    if speed is not None and speed.predicted_at_speed:
        for k, at in speed.predicted_at_speed.items():
            out[k].update(predicted_at_speed=at, ratio_at_speed=out[k]["measured"] / at if at else None)
        comp["speed_check"] = speed_section(speed, pred.throughput_tok_s, result["tokens_per_second"])
    return comp
