"""Discrete-event simulation of one GPU node serving an offline batch under a policy.

simpy only advances time; the pure policy from ``seesaw.scheduling`` decides what runs. Each DP
replica is a driver process that keeps up to ``pp`` micro-batches in flight; a micro-batch is a
process that walks the pipeline stages, each stage serving micro-batches in order (its free-at time
plays the role of a capacity-one resource), so pipeline bubbles and stage imbalance emerge from the
schedule instead of being assumed. Per-stage times come
from ``simulator.cost.CostModel``. Host<->device copies (Seesaw) use one host-link resource per
replica (the replica's GPUs copy in parallel, each over its own link).

Assumptions: offline batch (every request arrives at t=0 unless it carries an arrival time), no
speculative decoding, prefix caching off, sampling cost inside the per-step overhead.

Metrics follow ``vllm bench throughput``: requests/s = N / makespan; total tokens/s counts prompt
plus output tokens; output tokens/s counts generated tokens only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import attrgetter
from typing import Callable

import pandas as pd
import simpy

from seesaw.scheduling import (
    Decode, Forward, Mixed, PhaseClock, Prefill, Reshard, SchedulerError, SeesawScheduler, SeqStatus, Sequence, SwapIn, SwapOut,
    VllmScheduler, split_across_replicas,
)
from seesaw.core import PHASES, ModelSpec, NodeSpec, ParallelConfig, RunResult, SpecError, VllmPolicy
from simulator.cost import BatchShape, CostModel

__all__ = ["SimResult", "simulate", "batch_shape", "default_host_kv_bytes", "host_blocks_per_replica",
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


_COMPUTED = attrgetter("num_computed_tokens")


def batch_shape(step: Forward) -> BatchShape:
    """Aggregate what the cost model needs from a forward step (before it is accounted)."""
    shape = BatchShape()
    if isinstance(step, Decode):
        n = len(step.seqs)
        shape.decode_seqs = shape.sampled_seqs = n
        shape.decode_context_tokens = sum(map(_COMPUTED, step.seqs)) + n
        return shape
    for seq, n in zip(step.seqs, step.num_new_tokens):
        past = seq.num_computed_tokens
        if n == 1 and seq.num_output_tokens > 0 and past == seq.num_tokens - 1:
            shape.decode_seqs += 1
            shape.decode_context_tokens += past + 1
            shape.sampled_seqs += 1
        else:
            shape.prefill_tokens += n
            shape.prefill_seqs += 1
            shape.prefill_attn_pairs += n * (past + (n + 1) / 2)
            if past + n == seq.num_tokens:
                shape.sampled_seqs += 1
    return shape


class _Mailbox:
    """A replica's completed steps, in order: ``simpy.Store``'s event order with plain events.

    A put appends at once and schedules one event that hands the oldest item to a waiting getter
    when processed; a get takes an item at once when there is one, else waits for that hand-off
    (the same events at the same places in simpy's queue as ``Store``, so the same outcomes,
    without its request bookkeeping on every micro-batch).
    """

    __slots__ = ("env", "items", "getter")

    def __init__(self, env: simpy.Environment):
        self.env = env
        self.items: list = []
        self.getter: simpy.Event | None = None

    def put(self, item) -> simpy.Event:
        self.items.append(item)
        event = simpy.Event(self.env)
        event.callbacks.append(self._hand_over)
        event.succeed()
        return event

    def _hand_over(self, _event) -> None:
        getter = self.getter
        if getter is not None and self.items:
            self.getter = None
            getter.succeed(self.items.pop(0))

    def get(self) -> simpy.Event:
        event = simpy.Event(self.env)
        if self.items:
            event.succeed(self.items.pop(0))
        else:
            self.getter = event
        return event


class _Replica:
    """One DP replica: its scheduler, pipeline stages and bookkeeping."""

    def __init__(self, sim: "_Simulation", index: int, scheduler, layout: ParallelConfig, max_pp: int):
        self.sim = sim
        self.index = index
        self.sched = scheduler
        self.layout = layout
        env = sim.env
        self.stage_free_s = [0.0] * max_pp
        self.host_link = simpy.Resource(env, capacity=1)
        self.done = _Mailbox(env)
        # time by phase (``seesaw.scheduling.phase_of``): between events, the phase of what is in flight
        self.clock = PhaseClock(0.0)

    def run(self):
        env = self.sim.env
        pending = 0
        # forwards launched in this round; their stage recurrence runs once the round is over (as
        # a process's first step would, after the driver yields), with one timeout and no process
        launched: list = []
        direct = not self.sim.cost.handoffs_rendezvous
        while self.sched.has_unfinished() or pending:
            while True:
                step = self.sched.schedule()
                if step is None:
                    break
                self.clock.start(self._kind(step), env.now)
                pending += 1
                if direct and isinstance(step, Forward):
                    launched.append(step)
                else:
                    env.process(self._execute(step))
            if not pending:
                raise SchedulerError(
                    f"replica {self.index}: scheduler stalled with {self.sched.num_unfinished} "
                    "unfinished requests"
                )
            if launched:
                for step in launched:
                    self._launch(step)
                launched.clear()
            step = yield self.done.get()
            pending -= 1
            self.clock.end(self._kind(step), env.now)
            self._complete(step)
        self.clock.advance(env.now)

    def _launch(self, step: Forward) -> None:
        """Start a forward without a process: its end time is known at launch (no rendezvous)."""
        env = self.sim.env
        end = self._stage_walk(step)
        timeout = env.timeout(end - env.now, (step, env.now))
        timeout.callbacks.append(self._forward_done)

    def _forward_done(self, event) -> None:
        step, start = event.value
        self.sim.record_step(self, step, start, self.sim.env.now)
        self.done.put(step)

    @staticmethod
    def _kind(step) -> str:
        return _PHASE_KIND[type(step)]

    def _execute(self, step):
        env = self.sim.env
        start = env.now
        if isinstance(step, Forward):
            yield from self._forward(step)
        elif isinstance(step, Reshard):
            yield env.timeout(self.sim.cost.reshard_s(step.src, step.dst))
            self.layout = step.dst
        elif isinstance(step, (SwapIn, SwapOut)):
            # every GPU of the replica copies its own shard over its own host link, in parallel
            tokens = sum(s.num_computed_tokens for s in step.seqs)
            kind = "in" if isinstance(step, SwapIn) else "out"
            with self.host_link.request() as req:
                yield req
                yield env.timeout(self.sim.cost.swap_s(self.layout, kind, tokens))
            self.sim.swap_bytes[id(step)] = tokens * self.sim.model.kv_bytes_per_token
        self.sim.record_step(self, step, start, env.now)
        yield self.done.put(step)

    def _stage_walk(self, step: Forward) -> float:
        """When ``step`` leaves the last stage, launched now (see ``_forward``); books the stages."""
        env = self.sim.env
        cost = self.sim.cost
        layout = self.layout
        shape = batch_shape(step)
        self.sim.shapes[id(step)] = shape
        free = self.stage_free_s
        last = layout.pp - 1
        send = cost.pp_send_s(layout, shape.prefill_tokens + shape.decode_seqs) if last else 0.0
        rendezvous = last and cost.handoffs_rendezvous
        # the only step in flight: no other micro-batch can start before it completes (steps
        # are issued at completions; a swap completing meanwhile could free blocks or bring
        # sequences in, so none may be in flight either), so each stage has the machine to
        # itself while it computes (measured profiles time stages both alone and all ranks busy)
        k = self.clock.live
        alone = last > 0 and k["prefill"] + k["decode"] + k["mixed"] == 1 and not k["swap_stall"] and not k["reshard"]
        t = env.now
        for stage in range(layout.pp):
            start = t if t > free[stage] else free[stage]
            if stage and rendezvous:
                start += send  # the receiving stage waits through the hand-off
            t = free[stage] = start + cost.stage_time_s(layout, stage, shape, alone)
            if stage < last and not rendezvous:
                t += send
        return t

    def _forward(self, step: Forward):
        """Walk the micro-batch through the stages; each stage serves micro-batches in order.

        ``stage_free_s[k]`` is when stage k finishes its previous micro-batch, so a micro-batch
        starts on a stage at max(its arrival, the stage's free time): the FIFO queue a simpy
        resource per stage would give, computed at launch with one timeout instead of three
        events per stage. Bubbles and stage imbalance emerge from this recurrence. With
        rendezvous hand-offs (``CostModel.handoffs_rendezvous``: measured profiles) a stage starts
        at max(its input sent, the stage free) plus the hand-off, and the sampled ids reach the
        driver after it finishes its own queued work (``pp_reply_s``).
        """
        env = self.sim.env
        yield env.timeout(self._stage_walk(step) - env.now)
        if self.sim.cost.handoffs_rendezvous and self.layout.pp > 1:
            layout, cost, free = self.layout, self.sim.cost, self.stage_free_s
            shape = self.sim.shapes[id(step)]
            # the sampled ids reach the driver (stage 0's rank) once it is done with the
            # micro-batches it is computing; it waits through the hand-off
            reply = cost.pp_reply_s(layout, shape.sampled_seqs)
            if reply:
                done = (env.now if env.now > free[0] else free[0]) + reply
                free[0] = done
                yield env.timeout(done - env.now)

    def _complete(self, step) -> None:
        if isinstance(step, Forward):
            now = self.sim.env.now
            finished = self.sched.on_step_done(step)
            for seq in [s for s in step.seqs if s.first_token_time_s is None]:
                if seq.num_output_tokens > 0:
                    seq.first_token_time_s = now
            for seq in finished:
                seq.finish_time_s = now
        else:
            self.sched.on_step_done(step)


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
        self.replicas: list[_Replica] = []

    def record_step(self, rep: _Replica, step, start: float, end: float) -> None:
        shape = self.shapes.pop(id(step), None) or _EMPTY
        host = getattr(rep.sched, "host", None)
        self.rows.append((
            rep.index, step.kind, start, end, len(getattr(step, "seqs", ())),
            shape.prefill_tokens, shape.decode_seqs, shape.decode_context_tokens,
            self.swap_bytes.pop(id(step), 0), rep.sched.blocks.usage, host.usage if host else 0.0,
        ))
        if self.progress is not None and len(self.rows) % 256 == 0:
            done = sum(r.sched.num_finished for r in self.replicas)
            self.progress(done, self.total_requests)


_EMPTY = BatchShape()
# the phase each kind of step books while in flight (``seesaw.scheduling.phase_of``)
_PHASE_KIND = {Prefill: "prefill", Decode: "decode", Mixed: "mixed", Reshard: "reshard",
               SwapIn: "swap_stall", SwapOut: "swap_stall"}


def _check_layout(model: ModelSpec, node: NodeSpec, layout: ParallelConfig) -> None:
    if layout.world_size != node.num_gpus:
        raise SpecError(
            f"layout {layout} uses {layout.world_size} GPUs but the node {node.name} has {node.num_gpus}"
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
) -> SimResult:
    """Simulate ``requests`` (objects with ``id``, ``prompt_len``, ``output_len``) under ``policy``.

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
        rep = _Replica(sim, index, sched, layouts[0], max(c.pp for c in layouts))
        sim.replicas.append(rep)
        sim.env.process(rep.run())
    sim.env.run()
    return _collect(sim, policy, requests)


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
    """Host KV pool for the whole node: a fraction of host memory minus the host weight store."""
    return max(0.0, fraction * node.host_memory_bytes - model.weight_bytes)


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
    available = node.host_memory_bytes - model.weight_bytes
    host_bytes = policy.host_kv_bytes if policy.host_kv_bytes is not None else default_host_kv_bytes(model, node)
    if host_bytes > available:
        raise SpecError(
            f"host KV pool {host_bytes / 2**30:.1f} GiB exceeds the host memory left after weights "
            f"({node.host_memory_bytes / 2**30:.0f} GiB - {model.weight_bytes / 2**30:.1f} GiB)"
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
