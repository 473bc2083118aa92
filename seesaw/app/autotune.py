"""Auto-tuned batch runs: plan for the machine the engine runs on, then compare the plan's
prediction with what the engine measured.

``machine(num_ranks, device)`` is the node the planner should assume: on CPU the node of the
measured profile ``profiles/measured/cpu-2core.yaml`` (``catalog.measured_node``, one "GPU" per
rank) with that profile's tables; on CUDA a datasheet node of the catalog GPU matching the device
name (no measured tables: the roofline cost model). ``plan_for_machine`` picks a ``Plan`` for the
engine's requests on it by simulating every static layout of ``num_ranks`` that shards the model
(the planner's enumeration, ``simulator.planner.shardable_layouts``) and every Seesaw pair with
equal DP in full (``simulator.sim.simulate``) with the engine's own knobs, and taking the highest
total tokens/s: on the few ranks of one machine that is the exhaustive search which
``simulator.planner.plan`` (also given ``measured=``) approximates with estimates and a knob
sweep. It is not ``plan(..., exhaustive=True)`` because the plan must carry the engine's knobs as
the engine runs them: Seesaw policies leave the host pool open (``host_kv_bytes=None``, sized by
the engine and the simulator alike) and keep the engine's ``block_size``, the prediction carries
output tokens/s and requests/s, and a layout whose memory does not fit is rejected per candidate
by the simulation. ``comparison`` puts the prediction and the measurement side by side.

The planner and the engine must mean the same thing, so the plan is made for the model as the
engine runs it: the checkpoint's shape with the engine's dtype (fp32 on CPU), the engine's
requests (prompt length and ``max_tokens``), and the engine's defaults for the policy knobs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seesaw.scheduling import SchedulerError
from seesaw.core import (
    ModelSpec, NodeSpec, ParallelConfig, Plan, Predicted, SeesawPolicy, SpecError, VllmPolicy,
)

__all__ = ["Machine", "machine", "plan_for_machine", "load_plan", "comparison",
           "policy_layouts", "plan_host_kv_bytes", "MEASURED_CPU_PROFILE"]

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


def _knobs(max_num_seqs: int, max_num_batched_tokens: int, block_size: int) -> dict:
    return dict(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens, block_size=block_size)


def _search(model: ModelSpec, mach: Machine, requests: list, knobs: dict, progress=None) -> tuple[list, list]:
    """Simulate every feasible layout (vllm) and every Seesaw pair; rows sorted best first."""
    from simulator.cost import CostModel
    from simulator.planner import shardable_layouts
    from simulator.sim import simulate

    layouts, unshardable = shardable_layouts(model, mach.node.num_gpus)
    rejected = [(str(c), str(e)) for c, e in unshardable]
    cands = [VllmPolicy(layout=c, **knobs) for c in layouts]
    cands += [SeesawPolicy(prefill_layout=p, decode_layout=d, **knobs)
              for p in layouts for d in layouts if p != d and p.dp == d.dp]
    cost = CostModel(model, mach.node, measured=mach.measured)
    rows = []
    for i, pol in enumerate(cands):
        if progress:
            progress(i, len(cands), pol.describe())
        try:
            res = simulate(model, mach.node, pol, requests, cost=cost)
        except (SpecError, SchedulerError) as e:  # a layout that does not fit, a request it cannot serve
            rejected.append((pol.describe(), str(e)))
            continue
        rows.append((pol, res))
    rows.sort(key=lambda r: -r[1].tokens_per_second)
    return rows, rejected


def plan_for_machine(model: ModelSpec, mach: Machine, requests: list, *, workload: str,
                     max_num_seqs: int = 256, max_num_batched_tokens: int = 8192, block_size: int = 16,
                     progress=None) -> tuple[Plan, list[dict], list[tuple[str, str]]]:
    """A ``Plan`` for ``requests`` (objects with ``id``, ``prompt_len``, ``output_len``) on
    ``mach``; also the simulated candidates (best first) and the rejected ones with reasons."""
    from seesaw.core import VERSION as __version__

    if not requests:
        raise SpecError("the workload has no requests")
    knobs = _knobs(max_num_seqs, max_num_batched_tokens, block_size)
    rows, rejected = _search(model, mach, requests, knobs, progress)
    if not rows:
        raise SpecError(f"no feasible layout for {model.name} on {mach.node.num_gpus} ranks: "
                        + "; ".join(f"{w}: {r}" for w, r in rejected[:3]))
    best_pol, best = rows[0]
    vllm = [r for r in rows if r[0].kind == "vllm"]
    table = [{"candidate": p.describe(), "kind": p.kind, "throughput_tok_s": r.tokens_per_second,
              "makespan_s": r.elapsed_time, "num_transitions": r.extra.get("num_transitions", 0),
              "time_by_phase_s": {k: round(v, 4) for k, v in r.time_by_phase.items() if v}} for p, r in rows]
    why = (f"{best_pol.describe()} predicts {best.tokens_per_second:,.1f} tokens/s "
           f"({best.elapsed_time:.2f} s for {best.num_requests} requests)")
    if vllm and best_pol.kind != "vllm":
        why += f", {best.tokens_per_second / vllm[0][1].tokens_per_second:.2f}x the best static layout " \
               f"({vllm[0][0].describe()})"
    elif len(rows) > 1:
        why += f"; runner-up {rows[1][0].describe()} {rows[1][1].tokens_per_second:,.1f} tokens/s"
    predicted = Predicted(
        throughput_tok_s=best.tokens_per_second, makespan_s=best.elapsed_time,
        output_throughput_tok_s=best.output_tokens_per_second, requests_per_s=best.requests_per_second,
        speedup_vs_best_vllm=best.tokens_per_second / vllm[0][1].tokens_per_second if vllm else None,
        **{f"{k}_s": v for k, v in best.time_by_phase.items() if v})
    plan = Plan(
        model=model, node=mach.node, policy=best_pol, workload=workload, predicted=predicted,
        runner_up=table[1] if len(table) > 1 else None, search_space_size=len(rows) + len(rejected),
        explanation=why + ".",
        provenance={"planned_by": "seesaw run --auto", "machine": mach.description,
                    "search": f"every feasible {mach.node.num_gpus}-rank layout (vllm) and Seesaw pair simulated in "
                              "full with simulator.sim, the engine's knobs",
                    "seesaw_version": __version__, "simulated_requests": str(len(requests))},
    )
    return plan, table, rejected


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


def comparison(plan: Plan, result: dict) -> dict:
    """Predicted (the plan) and measured (the engine run) side by side; ratio = measured/predicted."""
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
    return {"policy": plan.policy.describe(), "layout": result["layout"], "machine": plan.provenance.get("machine", ""),
            "metrics": out}
