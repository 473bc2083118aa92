"""Discrete-event simulation of one GPU node serving an offline batch under a policy.

simpy only advances time; the pure policy from ``seesaw.scheduling`` decides what runs. Each DP
replica (``simulator.replica``) has a driver that keeps up to ``pp`` micro-batches in flight; a
micro-batch walks the pipeline stages, each stage serving micro-batches in order, so pipeline
bubbles and stage imbalance emerge from the schedule instead of being assumed. Per-stage times come
from ``simulator.cost.CostModel``. Host<->device copies (Seesaw) use one host-link resource per
replica (the replica's GPUs copy in parallel, each over its own link). Rows of the step table are
appended as tuples and become a DataFrame at the end.

Assumptions: offline batch (every request arrives at t=0 unless it carries an arrival time), no
speculative decoding, prefix caching off, sampling cost inside the per-step overhead.

Metrics follow ``vllm bench throughput``: requests/s = N / makespan; total tokens/s counts prompt
plus output tokens; output tokens/s counts generated tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import pandas as pd
import simpy

from seesaw.scheduling import SeesawScheduler, SeqStatus, Sequence, VllmScheduler, split_across_replicas
from seesaw.core import PHASES, ModelSpec, NodeSpec, ParallelConfig, RunResult, SpecError, VllmPolicy
from simulator.cost import BatchShape, CostModel
from simulator.replica import STEP_KIND, Replica, batch_shape

__all__ = ["SimResult", "SimulationStopped", "simulate", "batch_shape", "default_host_kv_bytes", "host_blocks_per_replica",
           "over_context_note"]


@dataclass
class SimResult:
    """Outcome of one simulated run. ``steps`` and ``requests`` are per-row DataFrames."""

    elapsed_time: float
    num_requests: int
    total_prompt_tokens: int
    total_output_tokens: int
    layout: str
    policy: str
    time_by_phase: dict[str, float]
    peak_kv_usage: float
    num_preemptions: int
    num_steps: int
    steps: pd.DataFrame
    requests: pd.DataFrame
    extra: dict = field(default_factory=dict)

    @property
    def total_num_tokens(self) -> int:
        return self.total_prompt_tokens + self.total_output_tokens

    @property
    def requests_per_second(self) -> float:
        return self.num_requests / self.elapsed_time if self.elapsed_time else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.total_num_tokens / self.elapsed_time if self.elapsed_time else 0.0

    @property
    def output_tokens_per_second(self) -> float:
        return self.total_output_tokens / self.elapsed_time if self.elapsed_time else 0.0

    def to_run_result(self) -> RunResult:
        return RunResult(
            elapsed_time=self.elapsed_time,
            num_requests=self.num_requests,
            total_num_tokens=self.total_num_tokens,
            total_output_tokens=self.total_output_tokens,
            requests_per_second=self.requests_per_second,
            tokens_per_second=self.tokens_per_second,
            output_tokens_per_second=self.output_tokens_per_second,
            layout=self.layout,
            policy=self.policy,
            time_by_phase=self.time_by_phase,
            peak_kv_usage=self.peak_kv_usage,
            num_preemptions=self.num_preemptions,
            num_steps=self.num_steps,
            **self.extra,
        )

    def summary(self) -> dict:
        return self.to_run_result().model_dump()


class _Simulation:
    def __init__(self, model: ModelSpec, node: NodeSpec, cost: CostModel, progress: Callable | None):
        self.model = model
        self.node = node
        self.cost = cost
        self.env = simpy.Environment()
        self.progress = progress
        self.rows: list[tuple] = []
        self.shapes: dict[int, BatchShape] = {}
        self.swap_bytes: dict[int, float] = {}
        self.total_requests = 0
        self.replicas: list[Replica] = []

    def record_step(self, rep: Replica, step, start: float, end: float) -> None:
        self.record_forward(rep, step, start, end, self.shapes.pop(id(step), None) or _EMPTY,
                            self.swap_bytes.pop(id(step), 0))

    def record_forward(self, rep: Replica, step, start: float, end: float, shape: BatchShape,
                       swap_bytes: float = 0) -> None:
        """One row of the step table (``shape``: a forward's, empty for other steps)."""
        dev = rep.sched.blocks
        host = rep.host_pool
        # ``BlockPool.usage`` inline (a row per step)
        self.rows.append((
            rep.index, STEP_KIND[type(step)], start, end, len(getattr(step, "seqs", ())),
            shape.prefill_tokens, shape.decode_seqs, shape.decode_context_tokens, swap_bytes,
            (dev.num_blocks - dev.num_free) / dev.num_blocks if dev.num_blocks else 0.0,
            ((host.num_blocks - host.num_free) / host.num_blocks if host.num_blocks else 0.0) if host else 0.0,
        ))
        if self.progress is not None and len(self.rows) % 256 == 0:
            done = sum(r.sched.num_finished for r in self.replicas)
            self.progress(done, self.total_requests)


_EMPTY = BatchShape()


def _check_layout(model: ModelSpec, node: NodeSpec, layout: ParallelConfig) -> None:
    if layout.world_size != node.total_gpus:
        raise SpecError(
            f"layout {layout} uses {layout.world_size} GPUs but the node {node.name} has {node.total_gpus}"
        )
    layout.check_model(model)


def simulate(
    model: ModelSpec,
    node: NodeSpec,
    policy,
    requests: list,
    *,
    cost: CostModel | None = None,
    progress: Callable[[int, int], None] | None = None,
    stop_after_s: Callable[[], float] | None = None,
) -> SimResult:
    """Simulate ``requests`` (objects with ``id``, ``prompt_len``, ``output_len``) under ``policy``.

    stop_after_s: a bound on the makespan worth finishing (the planner's best so far), read before
    the first event, again whenever the next event lies past it, and every ``BOUND_CHECK_EVENTS``
    events (it may fall while this runs): once the next event lies past it, raises
    ``SimulationStopped`` (the makespan exceeds that event's time). The events run are the same.

    Raises ``SpecError`` for a layout that does not fit the node or the model, and
    ``SchedulerError`` for a request that cannot be served.
    """
    if not requests:
        raise SpecError("the workload has no requests")
    cost = cost or CostModel(model, node)
    util = policy.gpu_memory_utilization
    if isinstance(policy, VllmPolicy):
        layouts = [policy.layout]
    else:
        layouts = [policy.prefill_layout, policy.decode_layout]
    for layout in layouts:
        _check_layout(model, node, layout)
        cost.check_fits(layout, util)
    sim = _Simulation(model, node, cost, progress)
    sim.total_requests = len(requests)
    parts = split_across_replicas(list(requests), layouts[0].dp)
    for index, part in enumerate(parts):
        sched = _make_scheduler(policy, cost, index)
        for req in part:
            sched.add_request(req)
        rep = Replica(sim, index, sched, layouts[0], max(c.pp for c in layouts))
        sim.replicas.append(rep)
        rep.start()
    if stop_after_s is None:
        sim.env.run()
    else:
        _run_bounded(sim.env, stop_after_s)
    return _collect(sim, policy, requests)


class SimulationStopped(Exception):
    """A bounded simulation (``simulate(stop_after_s=...)``) stopped: its makespan exceeds ``clock_s``."""

    def __init__(self, clock_s: float):
        super().__init__(f"stopped at {clock_s:.1f} s")
        self.clock_s = clock_s


BOUND_CHECK_EVENTS = 2048


def _run_bounded(env: simpy.Environment, stop_after_s: Callable[[], float]) -> None:
    """``env.run()`` one event at a time, stopping once the next event lies past the bound."""
    bound, peek, step, n = stop_after_s(), env.peek, env.step, 0
    while (t := peek()) != float("inf"):
        n += 1
        if t > bound or n % BOUND_CHECK_EVENTS == 0:
            bound = stop_after_s()
            if t > bound:
                raise SimulationStopped(t)
        step()


def over_context_note(model: ModelSpec, requests: list) -> str | None:
    """A warning when some requests (prompt + output) exceed the model's context
    (``max_position_embeddings``): a real server rejects them, the simulation serves them."""
    ctx = model.max_position_embeddings
    over = sum(1 for r in requests if r.prompt_len + r.output_len > ctx)
    if not over:
        return None
    return (f"{over:,} of {len(requests):,} simulated requests are longer (prompt + output) than {model.name}'s "
            f"context of {ctx:,} tokens: a real server would reject them; the simulation serves them anyway")


def default_host_kv_bytes(model: ModelSpec, node: NodeSpec, fraction: float = 0.8) -> float:
    """Host KV pool for the whole node (all nodes of a cluster): a fraction of host memory minus the
    host weight store (one full copy per node)."""
    return max(0.0, fraction * node.host_memory_bytes - model.weight_bytes * node.num_nodes)


def host_blocks_per_replica(model: ModelSpec, policy, host_bytes: float) -> int:
    """KV blocks of one DP replica's share of a host pool of ``host_bytes``."""
    return int(host_bytes / policy.prefill_layout.dp // (model.kv_bytes_per_token * policy.block_size))


def _make_scheduler(policy, cost: CostModel, replica: int):
    util = policy.gpu_memory_utilization
    if isinstance(policy, VllmPolicy):
        tokens = cost.kv_capacity_tokens(policy.layout, util)
        return VllmScheduler.from_policy(policy, tokens // policy.block_size, replica=replica)
    model, node = cost.model, cost.node
    prefill_tokens = cost.kv_capacity_tokens(policy.prefill_layout, util)
    decode_tokens = cost.kv_capacity_tokens(policy.decode_layout, util)
    available = node.host_memory_bytes - model.weight_bytes * node.num_nodes
    host_bytes = policy.host_kv_bytes if policy.host_kv_bytes is not None else default_host_kv_bytes(model, node)
    if host_bytes > available:
        raise SpecError(
            f"host KV pool {host_bytes / 2**30:.1f} GiB exceeds the host memory left after weights "
            f"({node.host_memory_bytes / 2**30:.0f} GiB - {model.weight_bytes * node.num_nodes / 2**30:.1f} GiB)"
        )
    host_blocks = host_blocks_per_replica(model, policy, host_bytes)
    if host_blocks < 1:
        block_bytes = model.kv_bytes_per_token * policy.block_size * policy.prefill_layout.dp
        raise SpecError(f"host KV pool of {host_bytes / 2**30:.6g} GiB holds no KV block of {policy.block_size} "
                        f"tokens per replica; give at least {block_bytes / 2**30:.6g} GiB (--host-kv-gib)")
    return SeesawScheduler.from_policy(policy, prefill_tokens // policy.block_size, replica,
                                       num_host_blocks=host_blocks, num_decode_blocks=decode_tokens // policy.block_size)


def _collect(sim: _Simulation, policy, requests) -> SimResult:
    makespan = sim.env.now
    steps = pd.DataFrame(sim.rows, columns=[
        "replica", "kind", "start_s", "end_s", "num_seqs", "prefill_tokens", "decode_seqs",
        "decode_context_tokens", "swap_bytes", "kv_usage", "host_kv_usage",
    ])
    seqs: list[Sequence] = []
    phase = dict.fromkeys(PHASES, 0.0)
    for rep in sim.replicas:
        rep.clock.advance(makespan)  # replicas that finished early wait (idle: nothing in flight)
        for k, v in rep.clock.seconds.items():
            phase[k] += v / len(sim.replicas)
        seqs.extend(_sequences(rep.sched))
    for s in seqs:
        assert s.status is SeqStatus.FINISHED, s.req_id
    req_df = pd.DataFrame({
        "id": [s.req_id for s in seqs],
        "replica": [s.replica for s in seqs],
        "prompt_len": [s.prompt_len for s in seqs],
        "output_len": [s.num_output_tokens for s in seqs],
        "first_token_time_s": [s.first_token_time_s for s in seqs],
        "finish_time_s": [s.finish_time_s for s in seqs],
        "num_preemptions": [s.num_preemptions for s in seqs],
    })
    layout = str(policy.layout) if isinstance(policy, VllmPolicy) else (
        f"{policy.prefill_layout}->{policy.decode_layout}")
    extra = {}
    if isinstance(sim.replicas[0].sched, SeesawScheduler):
        stats = [r.sched.stats() for r in sim.replicas]
        extra = {
            "num_transitions": max(st["num_transitions"] for st in stats),
            "reshard_time": phase["reshard"],
            "swap_stall_time": phase["swap_stall"],
            "swapped_bytes": float(steps["swap_bytes"].sum()),
            "host_kv_peak_usage": max(st["host_kv_peak_usage"] for st in stats),
        }
    return SimResult(
        elapsed_time=makespan,
        num_requests=len(seqs),
        total_prompt_tokens=int(req_df["prompt_len"].sum()),
        total_output_tokens=int(req_df["output_len"].sum()),
        layout=layout,
        policy=policy.kind,
        time_by_phase={k: round(v, 9) for k, v in phase.items()},
        peak_kv_usage=max(r.sched.peak_kv_usage() for r in sim.replicas),
        num_preemptions=sum(r.sched.num_preemptions for r in sim.replicas),
        num_steps=len(steps),
        steps=steps,
        requests=req_df,
        extra=extra,
    )


def _sequences(sched) -> list[Sequence]:
    return list(sched.seqs)
