"""Planner: search layouts, policies and thresholds for one model, node and workload -> ``Plan``.

Search space (``SearchSpace``):
- every static ``DdTtPp`` with ``d*t*p`` = the node's GPUs whose tensor degree shards the model and
  whose weights plus one full-length sequence of KV fit (``CostModel.check_fits``); each rejected
  layout is kept with its one-line reason;
- vLLM variants per feasible layout: chunked prefill off, or on with each chunk size, times each
  ``max_num_seqs``;
- every Seesaw pair ``c_p -> c_d`` (``c_p != c_d``, equal DP) times host-pool sizes (fractions of
  ``simulator.sim.default_host_kv_bytes``) times ``host_full_watermark``.

Search: every candidate gets a closed-form estimate (``estimate_makespan_s``: the paper's App. A
stage times through ``CostModel``, prefill at the micro-batch each policy forms, decode at the batch
KV allows with a greedy slot model for the tail, plus swap and re-shard bounds). The estimate ranks
layouts well and knobs poorly, so the search (``_search``) simulates the best-estimated layouts of
each policy kind, then tunes the knobs of the best simulated ones by coordinate descent, every step
a full ``simulate`` in 2 worker processes; the rest keep their estimate. Seesaw variants that
provably behave alike (the host pool never fills) share one simulation. ``exhaustive=True``
simulates everything (``seesaw compare``, and the regret check in ``benchmarks/planner_speed.py``).

Large workloads are planned on a seeded sample of at most ``sample_size`` requests; makespans are
scaled by the full/sample token ratio (``extrapolated_from`` says so). Throughput is total (prompt +
output) tokens per second, as ``vllm bench throughput`` counts it; cost is per million total tokens.
"""

from __future__ import annotations

import heapq
import math
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence as Seq

import numpy as np
import pandas as pd

from seesaw.scheduling import SchedulerError, split_across_replicas
from seesaw.core import (
    GiB, MeasuredProfile, ModelSpec, NodeSpec, ParallelConfig, Plan, SeesawPolicy, SpecError, VllmPolicy,
)
from simulator.cost import BatchShape, CostModel
from simulator.sim import PHASES, default_host_kv_bytes, simulate

__all__ = ["SearchSpace", "Candidate", "PlanResult", "enumerate_layouts", "enumerate_candidates",
           "estimate_makespan_s", "plan", "sample_requests", "COMPARE_SPACE"]

Objective = Literal["throughput", "cost"]


@dataclass(frozen=True)
class SearchSpace:
    """Knobs the planner tries. Defaults: a few chunk sizes, batch caps and host-pool settings."""

    chunk_sizes: tuple[int, ...] = (512, 2048, 8192)
    max_num_seqs: tuple[int, ...] = (256, 512)
    seesaw_max_num_seqs: tuple[int, ...] = (256, 512)
    host_pool_fractions: tuple[float, ...] = (1.0, 0.5, 0.25)   # of default_host_kv_bytes
    host_full_watermarks: tuple[float, ...] = (1.0, 0.5)
    decode_low_watermarks: tuple[float, ...] = (0.5, 1.0)        # 1.0 = the paper's switch-back rule
    max_num_batched_tokens: int = 8192                           # prefill budget without chunking
    gpu_memory_utilization: float = 0.9


# ``seesaw compare``: every layout and pair, defaults elsewhere (no batch-cap or pool sweep).
COMPARE_SPACE = SearchSpace(max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                            host_pool_fractions=(1.0,), host_full_watermarks=(1.0,),
                            decode_low_watermarks=(0.5,))


@dataclass(frozen=True)
class Candidate:
    policy: VllmPolicy | SeesawPolicy
    host_fraction: float | None = None

    @property
    def kind(self) -> str:
        return self.policy.kind

    @property
    def name(self) -> str:
        p = self.policy
        if isinstance(p, VllmPolicy):
            s = f"vllm {p.layout}" + (f" chunk={p.max_num_batched_tokens}" if p.enable_chunked_prefill else "")
        else:
            s = f"seesaw {p.prefill_layout}->{p.decode_layout}"
            s += f" pool={self.host_fraction:g}x" if self.host_fraction != 1.0 else ""
            s += f" wm={p.host_full_watermark:g}" if p.host_full_watermark != 1.0 else ""
            s += f" dl={p.decode_low_watermark:g}" if p.decode_low_watermark != 0.5 else ""
        return s + (f" seqs={p.max_num_seqs}" if p.max_num_seqs != 256 else "")


@dataclass
class PlanResult:
    """Ranked candidates, the winning ``Plan`` and the rejected layouts."""

    plan: Plan | None
    table: pd.DataFrame
    rejected: list[tuple[str, str]]            # (layout or candidate, one-line reason)
    num_requests: int
    extrapolated_from: int | None              # sample size when the workload was sampled
    num_simulated: int                         # simulations run
    num_estimated: int                         # candidates left with their estimate (pruned)
    num_shared: int = 0                        # candidates that share an equivalent one's simulation
    wall_s: float = 0.0
    best_vllm: dict | None = None
    winner: dict | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "plan": self.plan.model_dump(mode="json") if self.plan else None,
            "winner": self.winner, "best_vllm": self.best_vllm,
            "num_requests": self.num_requests, "extrapolated_from": self.extrapolated_from,
            "num_candidates": len(self.table), "num_simulated": self.num_simulated,
            "num_estimated": self.num_estimated, "num_shared": self.num_shared, "wall_s": round(self.wall_s, 3),
            "rejected": [{"what": w, "reason": r} for w, r in self.rejected], "notes": self.notes,
        }


# --------------------------------------------------------------------------------------------
# Enumeration


def _divisor_triples(n: int):
    for d in range(1, n + 1):
        if n % d:
            continue
        for t in range(1, n // d + 1):
            if (n // d) % t == 0:
                yield ParallelConfig(dp=d, tp=t, pp=n // d // t)


def enumerate_layouts(model: ModelSpec, node: NodeSpec, cost: CostModel | None = None,
                      space: SearchSpace = SearchSpace()) -> tuple[list[ParallelConfig], list[tuple[str, str]]]:
    """Every ``DdTtPp`` using all GPUs of ``node``: (feasible, [(layout, reason), ...])."""
    cost = cost or CostModel(model, node)
    feasible, rejected = [], []
    for c in _divisor_triples(node.num_gpus):
        try:
            cost.check_fits(c, space.gpu_memory_utilization,
                            max_num_batched_tokens=space.max_num_batched_tokens)
        except SpecError as e:
            rejected.append((c.full_name(), str(e).removeprefix(f"layout {c}: ")))
        else:
            feasible.append(c)
    return feasible, rejected


def enumerate_candidates(model: ModelSpec, node: NodeSpec, layouts: Seq[ParallelConfig],
                         space: SearchSpace = SearchSpace()) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """vLLM variants per layout and Seesaw variants per equal-DP pair; (candidates, rejected)."""
    util, budget = space.gpu_memory_utilization, space.max_num_batched_tokens
    out: list[Candidate] = []
    for c in layouts:
        for seqs in space.max_num_seqs:
            common = dict(layout=c, max_num_seqs=seqs, gpu_memory_utilization=util)
            out.append(Candidate(VllmPolicy(max_num_batched_tokens=budget, **common)))
            out.extend(Candidate(VllmPolicy(enable_chunked_prefill=True, max_num_batched_tokens=k, **common))
                       for k in space.chunk_sizes)
    pool = default_host_kv_bytes(model, node)
    rejected = []
    pairs = [(a, b) for a in layouts for b in layouts if a != b and a.dp == b.dp]
    if pairs and pool <= 0:
        rejected.append(("seesaw (all pairs)", f"no host memory left for a KV pool "
                         f"({node.host_memory_bytes / GiB:.0f} GiB host, weights {model.weight_bytes / GiB:.0f} GiB)"))
        pairs = []
    for a, b in pairs:
        for seqs in space.seesaw_max_num_seqs:
            for frac in space.host_pool_fractions:
                for wm in space.host_full_watermarks:
                    for dl in space.decode_low_watermarks:
                        out.append(Candidate(SeesawPolicy(
                            prefill_layout=a, decode_layout=b, host_kv_bytes=frac * pool,
                            host_full_watermark=wm, decode_low_watermark=dl, max_num_seqs=seqs,
                            max_num_batched_tokens=budget, gpu_memory_utilization=util),
                            host_fraction=frac))
    return out, rejected


def sample_requests(requests: list, sample_size: int | None, seed: int = 0) -> list:
    """At most ``sample_size`` requests drawn without replacement (seeded), in source order."""
    if not sample_size or len(requests) <= sample_size:
        return list(requests)
    idx = np.sort(np.random.default_rng(seed).choice(len(requests), sample_size, replace=False))
    return [requests[i] for i in idx]


# --------------------------------------------------------------------------------------------
# Closed-form estimate


@dataclass
class _Work:
    """One replica's share of the workload, as the estimate needs it."""

    prompts: np.ndarray
    outputs: np.ndarray

    def __post_init__(self):
        p, o = self.prompts.astype(float), self.outputs.astype(float)
        self.P, self.O, self.n = p.sum(), o.sum(), len(p)
        self.mean_p, self.mean_o = p.mean(), o.mean()
        self.pairs_per_token = float((p * (p + 1) / 2).sum() / self.P)
        # token-weighted KV per running sequence: a sequence decodes o steps at p + o/2 on average
        self.ctx = float((o * (p + o / 2)).sum() / self.O)
        self.size_biased_p = float((p * p).sum() / self.P)
        self._slots: dict[int, tuple] = {}

    def slots(self, r: int):
        """Greedy list schedule of the outputs on ``r`` decode slots (one token per slot and round).

        Returns (segment lengths, active slots per segment, round of the last admission,
        prompt tokens admitted at round 0)."""
        if r not in self._slots:
            free = [0] * min(r, self.n)
            heapq.heapify(free)
            starts = np.empty(self.n)
            for i, o in enumerate(self.outputs.tolist()):
                starts[i] = t = heapq.heappop(free)
                heapq.heappush(free, t + o)
            ends = starts + self.outputs
            times = np.concatenate([starts, ends])
            delta = np.concatenate([np.ones(self.n), -np.ones(self.n)])
            order = np.argsort(times, kind="stable")
            t_sorted, active = times[order], np.cumsum(delta[order])
            lengths = np.diff(t_sorted)
            self._slots[r] = (lengths, active[:-1], float(starts.max()), float(self.prompts[starts == 0].sum()))
        return self._slots[r]


def _pipeline_period_s(cost: CostModel, c: ParallelConfig, shape: BatchShape, m: float) -> float:
    """Time per round of ``m`` micro-batches of ``shape`` cycling through the pipeline: the chain
    latency or ``m`` times the slowest stage, whichever is larger (each micro-batch's next step
    waits for its previous one)."""
    times = [cost.stage_time_s(c, s, shape) for s in range(c.pp)]
    chain = sum(times) + (c.pp - 1) * (cost.pp_send_s(c, shape.num_tokens) if c.pp > 1 else 0.0)
    return max(chain, m * max(times))


def _decode_shape(b: float, ctx: float, k_prefill: float = 0.0, pairs_per_token: float = 0.0) -> BatchShape:
    return BatchShape(prefill_tokens=k_prefill, prefill_attn_pairs=k_prefill * pairs_per_token,
                      decode_seqs=b, decode_context_tokens=b * ctx, sampled_seqs=b)


def _prefill_shape(k: float, w: _Work) -> BatchShape:
    return BatchShape(prefill_tokens=k, prefill_attn_pairs=k * w.pairs_per_token, sampled_seqs=k / w.mean_p)


def _decode_time_s(cost: CostModel, c: ParallelConfig, w: _Work, r: int) -> float:
    """Decode rounds of the slot schedule, each at the time of its active batch."""
    lengths, active, _, _ = w.slots(r)
    grid = np.unique(np.geomspace(1, max(1, r), 24).round())
    t_grid = np.array([_pipeline_period_s(cost, c, _decode_shape(a / min(c.pp, a), w.ctx), min(c.pp, a))
                       for a in grid])
    t = np.interp(np.maximum(active, 1), grid, t_grid) * (active > 0)
    return float((lengths * t).sum())


def _chain_s(cost: CostModel, c: ParallelConfig, shape: BatchShape) -> tuple[float, float]:
    """(all stages plus sends, slowest stage) for one micro-batch."""
    times = [cost.stage_time_s(c, s, shape) for s in range(c.pp)]
    send = (c.pp - 1) * cost.pp_send_s(c, shape.num_tokens) if c.pp > 1 else 0.0
    return sum(times) + send, max(times)


def _kv_slots(cost: CostModel, c: ParallelConfig, w: _Work, util: float, budget: int, seq_cap: int,
              cap_tokens: int | None = None) -> int:
    cap = cost.kv_capacity_tokens(c, util, budget) if cap_tokens is None else cap_tokens
    return max(1, min(seq_cap, int(cap / w.ctx)))


def _estimate_vllm(cost: CostModel, policy: VllmPolicy, w: _Work) -> dict[str, float]:
    """Static layout: the initial fill as full prefill micro-batches, then decode rounds at the KV
    bound with admissions in bursts. When KV is full a prompt waits at the queue head until enough
    blocks are free, so a burst is about one size-biased prompt (E[p^2]/E[p] tokens: measured in
    the simulator within a few % on ShareGPT). In a pipeline a burst stalls the decode micro-batches
    queued behind it: it costs its chain time less the (pp-1) decode stages that still overlap."""
    c, budget = policy.layout, policy.max_num_batched_tokens
    r = _kv_slots(cost, c, w, policy.gpu_memory_utilization, budget, policy.max_num_seqs * c.pp)
    _, _, _, p_init = w.slots(r)
    p_rest = w.P - p_init
    init_mb = min(budget, policy.max_num_seqs * w.mean_p)
    _, init_stage = _chain_s(cost, c, _prefill_shape(init_mb, w))
    t_init = math.ceil(p_init / init_mb) * init_stage
    t_dec = _decode_time_s(cost, c, w, r)
    if p_rest <= 0:
        return {"prefill": t_init, "decode": t_dec}
    b = r / c.pp
    dec_chain, dec_stage = _chain_s(cost, c, _decode_shape(b, w.ctx))
    burst = min(budget, max(w.mean_p, w.size_biased_p))
    if not policy.enable_chunked_prefill:
        n = p_rest / burst
        pf_chain, _ = _chain_s(cost, c, _prefill_shape(burst, w))
        return {"prefill": t_init + n * max(0.0, pf_chain - (c.pp - 1) * dec_stage), "decode": t_dec}
    room = max(1.0, budget - b)                  # prefill tokens a mixed step can carry
    steps = max(p_rest / burst, p_rest / room)
    k = p_rest / steps
    mixed_chain, _ = _chain_s(cost, c, _decode_shape(b, w.ctx, k, w.pairs_per_token))
    return {"prefill": t_init, "decode": t_dec, "mixed": steps * max(0.0, mixed_chain - dec_chain)}


def _estimate_seesaw(cost: CostModel, policy: SeesawPolicy, w: _Work) -> dict[str, float]:
    """Prefill every prompt under c_p in full micro-batches (bounded by the swap-out steps), decode
    under c_d at the KV bound (bounded by the swap-in steps), one re-shard each way per host-pool fill."""
    util, budget = policy.gpu_memory_utilization, policy.max_num_batched_tokens
    cp, cd = policy.prefill_layout, policy.decode_layout
    # the device is empty at each switch, so each layout has its own device KV pool
    cap_p, cap_d = cost.kv_capacity_tokens(cp, util, budget), cost.kv_capacity_tokens(cd, util, budget)
    k = min(budget, policy.max_num_seqs * w.mean_p)
    m = max(1, min(cp.pp, int(cap_p // k)))      # prefills in flight need transient device KV
    chain, stage = _chain_s(cost, cp, _prefill_shape(k, w))
    t_pf = chain + (math.ceil(w.P / k) - 1) * stage * cp.pp / m
    # swap steps: one swap-out per prefill micro-batch; swap-ins refill c_d's KV slots, at most a
    # micro-batch of sequences a step (the scheduler's cap) -- a lower bound, since sequences
    # finish at staggered times (a measured step has a fixed part: their number counts)
    n_out = max(1, math.ceil(w.P / k))
    t_pf = max(t_pf, n_out * cost.swap_s(cp, "out", math.ceil(w.P / n_out)))
    r = _kv_slots(cost, cd, w, util, budget, policy.max_num_seqs * cd.pp, cap_d)
    per_step = min(r, math.ceil(policy.max_num_seqs / cd.pp))
    n_in = max(1, math.ceil(w.n / max(1, per_step)))
    t_dec = max(_decode_time_s(cost, cd, w, r), n_in * cost.swap_s(cd, "in", math.ceil(w.P / n_in)))
    host_tokens = policy.host_full_watermark * policy.host_kv_bytes / cp.dp / cost.model.kv_bytes_per_token
    cycles = max(1, math.ceil(w.P / max(1.0, host_tokens)))
    reshard = cycles * cost.reshard_s(cp, cd) + (cycles - 1) * cost.reshard_s(cd, cp)
    return {"prefill": t_pf, "decode": t_dec, "reshard": reshard}


def _estimate_replica(cost: CostModel, policy, w: _Work) -> dict[str, float]:
    if isinstance(policy, VllmPolicy):
        return _estimate_vllm(cost, policy, w)
    return _estimate_seesaw(cost, policy, w)


def estimate_makespan_s(cost: CostModel, policy, works: list[_Work]) -> tuple[float, dict[str, float]]:
    """Closed-form makespan (the slowest DP replica) and its time by phase."""
    best = None
    for w in works:
        phases = _estimate_replica(cost, policy, w)
        total = sum(phases.values())
        if best is None or total > best[0]:
            best = (total, phases)
    return best


def _works(requests: list, dp: int) -> list[_Work]:
    parts = split_across_replicas(list(requests), dp)
    return [_Work(np.array([r.prompt_len for r in part]), np.array([r.output_len for r in part]))
            for part in parts if part]


# --------------------------------------------------------------------------------------------
# Simulation (in worker processes)


def _simulate_one(model: ModelSpec, node: NodeSpec, policy, requests: list, measured=None) -> dict:
    try:
        r = simulate(model, node, policy, requests,
                     cost=CostModel(model, node, measured=measured) if measured is not None else None)
    except (SpecError, SchedulerError) as e:
        return {"error": str(e).splitlines()[0]}
    return {"makespan_s": r.elapsed_time, "time_by_phase": dict(r.time_by_phase),
            "num_preemptions": r.num_preemptions, "num_transitions": int(r.extra.get("num_transitions", 0))}


class _Runner:
    """Runs simulations in a process pool (started on the first batch of two or more) or in-process,
    and remembers every result. Candidates with the same ``equiv`` key run once."""

    def __init__(self, model, node, requests, workers: int, progress: Callable | None, equiv: dict[int, tuple],
                 measured=None):
        self.model, self.node, self.requests, self.measured = model, node, requests, measured
        self.workers, self.progress, self.equiv = workers, progress, equiv
        self.results: dict[int, dict] = {}
        self.same_as: dict[int, int] = {}
        self._by_key: dict[tuple, int] = {}
        self.pool: ProcessPoolExecutor | None = None
        self.done = 0
        self.planned = 0

    def run(self, jobs: list[tuple[int, object]]) -> None:
        todo = []
        for i, pol in jobs:
            if i in self.results or any(i == j for j, _ in todo):
                continue
            key = self.equiv.get(i)
            if key is not None and key in self._by_key:
                self.same_as[i] = self._by_key[key]
                continue
            if key is not None:
                self._by_key[key] = i
            todo.append((i, pol))
        self.planned += len(todo)
        if len(todo) > 1 and self.workers > 1 and self.pool is None:
            self.pool = ProcessPoolExecutor(max_workers=self.workers)
        if self.pool is None:
            for i, pol in todo:
                self._done(i, pol, _simulate_one(self.model, self.node, pol, self.requests, self.measured))
        else:
            futures = {self.pool.submit(_simulate_one, self.model, self.node, pol, self.requests, self.measured):
                       (i, pol) for i, pol in todo}
            for fut in as_completed(futures):
                self._done(*futures[fut], fut.result())
        for i, j in self.same_as.items():
            if j in self.results:
                self.results[i] = self.results[j]

    def _done(self, i: int, pol, res: dict) -> None:
        self.results[i] = res
        self.done += 1
        if self.progress:
            self.progress(self.done, self.planned, pol.describe())

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown()


# --------------------------------------------------------------------------------------------
# The search

DEFAULT_SCREEN = {"vllm": 3, "seesaw": 4}
DEFAULT_REFINE = {"vllm": 2, "seesaw": 2}
KNOBS = {"vllm": ("chunk", "max_num_seqs"),
         "seesaw": ("host_fraction", "host_full_watermark", "decode_low_watermark", "max_num_seqs")}


def _unservable(policy, works: list[_Work], cost: CostModel) -> str | None:
    """A reason the policy cannot serve some request of the sample, before simulating it."""
    longest = max(int((w.prompts + w.outputs).max()) for w in works)
    if isinstance(policy, VllmPolicy) and not policy.enable_chunked_prefill \
            and longest > policy.max_num_batched_tokens:
        return (f"a request of {longest} tokens exceeds max_num_batched_tokens="
                f"{policy.max_num_batched_tokens} without chunked prefill")
    if isinstance(policy, SeesawPolicy):
        limit = _host_limit_tokens(policy, cost)
        if longest > limit:
            return f"a request of {longest} tokens does not fit the host KV pool ({limit} tokens per replica)"
    return None


def _host_limit_tokens(policy: SeesawPolicy, cost: CostModel) -> int:
    """Tokens one replica may park in the host pool before it counts as full (as ``sim`` sizes it)."""
    bs = policy.block_size
    blocks = int(policy.host_kv_bytes / policy.prefill_layout.dp // (cost.model.kv_bytes_per_token * bs))
    return int(policy.host_full_watermark * blocks) * bs


def _equiv_key(cand: Candidate, works: list[_Work], cost: CostModel) -> tuple | None:
    """Seesaw variants that prefill every prompt of the sample in one go (all prompts fit under the
    watermark) and whose whole pool could hold every request at full length (so a decode-time
    eviction always finds room and nothing returns to the waiting queue) never switch back to
    prefill: pool size and watermark cannot matter, and they share one simulation."""
    p = cand.policy
    if not isinstance(p, SeesawPolicy):
        return None
    bs = p.block_size

    def tokens(lengths) -> int:
        return int((-(-lengths // bs) * bs).sum())

    prompts = max(tokens(w.prompts) for w in works)
    full = max(tokens(w.prompts + w.outputs) for w in works)
    pool = int(p.host_kv_bytes / p.prefill_layout.dp // (cost.model.kv_bytes_per_token * bs)) * bs
    if _host_limit_tokens(p, cost) < prompts or pool < full:
        return None
    return (p.prefill_layout, p.decode_layout, p.max_num_seqs, p.max_num_batched_tokens, "pool holds all")


def _search(rows: list[dict], candidates: list[Candidate], runner: _Runner, screen: dict[str, int],
            refine: dict[str, int], keep_within: float) -> None:
    """Screen layouts by estimate, then tune the knobs of the best simulated layouts.

    1. Per kind, the ``screen[kind]`` layouts (or Seesaw pairs) with the best estimates, plus any
       within ``keep_within`` of the kind's best estimate (at most twice as many), are simulated
       with their best-estimated knobs: the estimate ranks layouts well, knobs poorly.
    2. The ``refine[kind]`` best simulated layouts then get coordinate descent over their knobs
       (``KNOBS``: chunked prefill and chunk size, batch cap; host pool, watermark, batch cap): one
       knob at a time, every value, keep the best simulated, next knob.
    """
    ok = [r for r in rows if r["error"] is None]
    groups: dict[tuple, list[dict]] = {}
    for r in sorted(ok, key=lambda r: (r["est_makespan_s"], r["index"])):
        groups.setdefault((r["kind"], r["layout"]), []).append(r)
    jobs = []
    for kind, k in screen.items():
        ranked = [g for g in groups if g[0] == kind]        # by best estimate (dict keeps order)
        if not ranked:
            continue
        best = groups[ranked[0]][0]["est_makespan_s"]
        for n, g in enumerate(ranked):
            if n < k or (n < 2 * k and groups[g][0]["est_makespan_s"] <= best * (1 + keep_within)):
                jobs.append(groups[g][0]["index"])
    _run(runner, candidates, jobs)

    def sim_best(g):
        done = [r for r in groups[g] if _ok(runner, r["index"])]
        return min(done, key=lambda r: (runner.results[r["index"]]["makespan_s"], r["index"])) if done else None

    current = {}
    for kind, k in refine.items():
        ranked = sorted((g for g in groups if g[0] == kind and sim_best(g) is not None),
                        key=lambda g: runner.results[sim_best(g)["index"]]["makespan_s"])
        current.update({g: sim_best(g) for g in ranked[:k]})
    for step in range(max(len(v) for v in KNOBS.values())):
        jobs = []
        for g, base in current.items():
            dims = KNOBS[g[0]]
            if step < len(dims):
                others = [d for d in dims if d != dims[step]]
                jobs += [r["index"] for r in groups[g] if all(r[d] == base[d] for d in others)]
        _run(runner, candidates, jobs)
        current = {g: sim_best(g) for g in current}


def _ok(runner: _Runner, i: int) -> bool:
    return i in runner.results and "error" not in runner.results[i]


def _run(runner: _Runner, candidates: list[Candidate], indices: list[int]) -> None:
    runner.run([(i, candidates[i].policy) for i in indices])


def _price(node: NodeSpec, price_per_gpu_hour: float | None) -> float | None:
    if price_per_gpu_hour is not None:
        if not price_per_gpu_hour > 0:
            raise SpecError(f"price per GPU-hour must be > 0, got {price_per_gpu_hour}")
        return float(price_per_gpu_hour)
    return node.gpu.price_per_hour_usd


def plan(
    model: ModelSpec,
    node: NodeSpec,
    requests: list,
    *,
    objective: Objective = "throughput",
    price_per_gpu_hour: float | None = None,
    space: SearchSpace = SearchSpace(),
    exhaustive: bool = False,
    screen: dict[str, int] | None = None,
    refine: dict[str, int] | None = None,
    keep_within: float = 0.03,
    sample_size: int | None = 2000,
    seed: int = 0,
    workers: int = 2,
    workload_name: str = "",
    progress: Callable[[int, int, str], None] | None = None,
    measured: MeasuredProfile | None = None,
) -> PlanResult:
    """Search ``space`` for ``model`` on ``node`` serving ``requests``; see the module docstring.

    measured: a profile of the machine (``seesaw profile``; ``node`` then from
    ``catalog.measured_node``): estimates and simulations use its tables instead of the roofline.

    screen / refine: per policy kind, how many layouts to simulate after the estimate and how many
    of those to tune knob by knob (defaults in ``DEFAULT_SCREEN``/``DEFAULT_REFINE``; see
    ``_search``); ignored when ``exhaustive``. keep_within: also screen layouts whose estimate is
    within this fraction of the kind's best. progress(done, total_so_far, what) is called after
    each simulation. workers: simulation processes (1 = in this process).
    """
    import time

    from seesaw.core import VERSION as __version__

    if objective not in ("throughput", "cost"):
        raise SpecError(f"unknown objective {objective!r}; known: throughput, cost")
    if not requests:
        raise SpecError("the workload has no requests")
    t0 = time.perf_counter()
    price = _price(node, price_per_gpu_hour)
    if objective == "cost" and price is None:
        raise SpecError(f"no price for GPU '{node.gpu.name}': give a price per GPU-hour for the cost objective")
    sample = sample_requests(requests, sample_size, seed)
    full_tokens = sum(r.prompt_len + r.output_len for r in requests)
    scale = full_tokens / sum(r.prompt_len + r.output_len for r in sample)
    cost = CostModel(model, node, measured=measured)
    layouts, rejected = enumerate_layouts(model, node, cost, space)
    candidates, more = enumerate_candidates(model, node, layouts, space)
    rejected += more
    works: dict[int, list[_Work]] = {}
    rows: list[dict] = []
    equiv: dict[int, tuple] = {}
    for i, cand in enumerate(candidates):
        pol = cand.policy
        if pol.layout.dp not in works:
            works[pol.layout.dp] = _works(sample, pol.layout.dp)
        w = works[pol.layout.dp]
        est, phases = estimate_makespan_s(cost, pol, w)
        rows.append(_row(i, cand, est * scale, {k: v * scale for k, v in phases.items()},
                         _unservable(pol, w, cost)))
        equiv[i] = _equiv_key(cand, w, cost)
    screen = dict(DEFAULT_SCREEN if screen is None else screen)
    refine = dict(DEFAULT_REFINE if refine is None else refine)
    runner = _Runner(model, node, sample, workers, progress, {i: k for i, k in equiv.items() if k}, measured)
    try:
        if exhaustive:
            _run(runner, candidates, [r["index"] for r in rows if r["error"] is None])
        else:
            _search(rows, candidates, runner, screen, refine, keep_within)
    finally:
        runner.close()
    for i, res in runner.results.items():
        row = rows[i]
        if "error" in res:
            row["error"] = res["error"]
            continue
        if i in runner.same_as:
            row["note"] = f"same as {candidates[runner.same_as[i]].name} (host pool holds the whole sample)"
        row.update(source="simulated", makespan_s=res["makespan_s"] * scale,
                   num_transitions=res["num_transitions"], num_preemptions=res["num_preemptions"],
                   **{f"{k}_s": v * scale for k, v in res["time_by_phase"].items()})
    for r in rows:
        if r["error"]:
            rejected.append((r["candidate"], r["error"]))
    table = _table(rows, full_tokens, node.num_gpus, price, objective)
    result = PlanResult(plan=None, table=table, rejected=rejected, num_requests=len(requests),
                        extrapolated_from=len(sample) if len(sample) < len(requests) else None,
                        num_simulated=runner.done, num_shared=len(runner.same_as),
                        num_estimated=int((table["source"] == "estimated").sum()) if len(table) else 0)
    same = len(runner.same_as)
    if same:
        result.notes.append(f"{same} Seesaw variants share a simulation with an equivalent one: their host "
                            "pool holds the whole sample, so pool size and watermark cannot matter")
    if result.extrapolated_from:
        result.notes.append(
            f"simulated a seeded sample of {len(sample)} of {len(requests)} requests; makespans scaled "
            f"by the token ratio {scale:.1f}x (one sample's prefill/decode cycles stand for the whole run)")
    sim = table[table["source"] == "simulated"] if len(table) else table
    if len(sim):
        result.winner = _brief(sim.iloc[0])
        vllm = sim[sim["kind"] == "vllm"]
        result.best_vllm = _brief(vllm.iloc[0]) if len(vllm) else None
        # the runner-up is the best other layout: knob variants of the winner are often identical
        others = sim[sim["layout"] != sim.iloc[0]["layout"]]
        runner_up = _brief(others.iloc[0]) if len(others) else None
        if runner_up:
            runner_up["worse_by_pct"] = round(
                100 * (1 - runner_up["throughput_tok_s"] / result.winner["throughput_tok_s"]), 2)
        result.plan = Plan(
            model=model, node=node, policy=candidates[int(sim.iloc[0]["index"])].policy,
            workload=workload_name or f"{len(requests)} requests", objective=objective,
            predicted=_predicted(sim.iloc[0], result.best_vllm),
            runner_up=runner_up, search_space_size=len(candidates),
            explanation=_explain(sim.iloc[0], vllm.iloc[0] if len(vllm) else None, sim),
            provenance={
                "model_profile": model.name, "node_profile": node.name, "gpu_profile": node.gpu.name,
                "seesaw_version": __version__, "simulated_requests": str(len(sample)),
                "workload_requests": str(len(requests)), "sample_seed": str(seed),
                "price_per_gpu_hour_usd": "" if price is None else f"{price:g}",
                "cost_model": f"measured profile {measured.name or measured.device_name!r}" if measured is not None
                else "roofline",
                "search": f"exhaustive: {runner.done} simulations" if exhaustive else
                f"estimate all {len(candidates)}; simulate the best-estimated layouts {screen}, tune the "
                f"knobs of the best simulated {refine}: {runner.done} simulations",
            })
    result.wall_s = time.perf_counter() - t0
    return result


def _row(i: int, cand: Candidate, est: float, phases: dict, error: str | None) -> dict:
    p = cand.policy
    vllm = isinstance(p, VllmPolicy)
    row = {
        "index": i, "candidate": cand.name, "kind": p.kind,
        "layout": str(p.layout) if vllm else f"{p.prefill_layout}->{p.decode_layout}",
        "prefill_layout": str(p.layout if vllm else p.prefill_layout),
        "decode_layout": str(p.layout if vllm else p.decode_layout),
        "chunk": (p.max_num_batched_tokens if p.enable_chunked_prefill else 0) if vllm else None,
        "max_num_seqs": p.max_num_seqs,
        "host_pool_gib": None if vllm else p.host_kv_bytes / GiB,
        "host_full_watermark": None if vllm else p.host_full_watermark,
        "decode_low_watermark": None if vllm else p.decode_low_watermark,
        "source": "estimated", "est_makespan_s": est, "makespan_s": est,
        "host_fraction": None if vllm else cand.host_fraction,
        "num_transitions": None, "num_preemptions": None, "error": error, "note": "",
    }
    row.update({f"{k}_s": phases.get(k, 0.0) for k in PHASES})
    return row


def _table(rows: list[dict], full_tokens: int, num_gpus: int, price: float | None, objective: str) -> pd.DataFrame:
    df = pd.DataFrame([r for r in rows if r["error"] is None])
    if df.empty:
        return df
    df["throughput_tok_s"] = full_tokens / df["makespan_s"]
    df["est_throughput_tok_s"] = full_tokens / df["est_makespan_s"]
    df["gpu_hours"] = num_gpus * df["makespan_s"] / 3600
    df["cost_per_mtok_usd"] = df["gpu_hours"] * price / (full_tokens / 1e6) if price else float("nan")
    df["simulated"] = df["source"] == "simulated"
    # objective first; cost ties go to throughput and vice versa; then enumeration order
    keys = ["makespan_s", "index"] if objective == "throughput" or not price else ["cost_per_mtok_usd", "makespan_s", "index"]
    df = df.sort_values(["simulated"] + keys, ascending=[False] + [True] * len(keys), kind="stable")
    vllm = df[(df["kind"] == "vllm") & df["simulated"]]
    best_vllm = vllm["throughput_tok_s"].max() if len(vllm) else float("nan")
    df["speedup_vs_best_vllm"] = df["throughput_tok_s"] / best_vllm
    df.insert(0, "rank", range(1, len(df) + 1))
    return df.drop(columns=["simulated", "error"]).reset_index(drop=True)


def _brief(row) -> dict:
    out = {k: row[k] for k in ("candidate", "kind", "layout", "source")}
    for k in ("throughput_tok_s", "makespan_s", "cost_per_mtok_usd", "speedup_vs_best_vllm", "gpu_hours"):
        v = float(row[k])
        out[k] = None if math.isnan(v) else v
    out["time_by_phase_s"] = {k: round(float(row[f"{k}_s"]), 3) for k in PHASES if row[f"{k}_s"]}
    return out


def _predicted(row, best_vllm: dict | None) -> dict[str, float]:
    out = {"throughput_tok_s": float(row["throughput_tok_s"]), "makespan_s": float(row["makespan_s"]),
           "gpu_hours": float(row["gpu_hours"])}
    if not math.isnan(row["cost_per_mtok_usd"]):
        out["cost_per_mtok_usd"] = float(row["cost_per_mtok_usd"])
    if best_vllm:
        out["speedup_vs_best_vllm"] = float(row["speedup_vs_best_vllm"])
    out.update({f"{k}_s": float(row[f"{k}_s"]) for k in PHASES if row[f"{k}_s"]})
    return out


def _dur(seconds: float) -> str:
    """A duration in the unit a reader wants: seconds, minutes or hours."""
    if seconds < 600:
        return f"{seconds:,.0f} s"
    return f"{seconds / 60:,.0f} min" if seconds < 7200 else f"{seconds / 3600:,.1f} h"


def _vllm_text(r) -> str:
    pf = r["prefill_s"] + r["mixed_s"]
    return f"{r['candidate']}: prefill in flight {_dur(pf)}, decode only {_dur(r['decode_s'])}"


def _seesaw_text(r) -> str:
    n = int(r["num_transitions"] or 0)
    extra = r["reshard_s"] + r["swap_stall_s"] + r["mixed_s"] + r["idle_s"]
    return (f"{r['candidate']}: prefill {_dur(r['prefill_s'])} under {r['prefill_layout']}, decode "
            f"{_dur(r['decode_s'])} under {r['decode_layout']}, re-shard and swap stalls {_dur(extra)} "
            f"({n} transition{'s' if n != 1 else ''})")


def _explain(win, vllm, sim: pd.DataFrame) -> str:
    """Why the winner wins, from simulated time by phase against the best static vLLM layout."""
    head = f"{win['candidate']} wins: {win['throughput_tok_s']:,.0f} tok/s over {_dur(win['makespan_s'])}"
    if vllm is None:
        return head + "; no static vLLM layout could be simulated to compare with."
    if win["kind"] == "vllm":
        see = sim[sim["kind"] == "seesaw"]
        if not len(see):
            return head + (f". {_vllm_text(win)}. No Seesaw pair could be simulated (a pair needs two "
                           "feasible layouts with the same DP degree).")
        s = see.iloc[0]
        v_pf = win["prefill_s"] + win["mixed_s"]
        return (head + f"; the best Seesaw pair, {s['candidate']}, is "
                f"{100 * (1 - s['throughput_tok_s'] / win['throughput_tok_s']):.1f}% slower. Time by phase "
                f"(simulated): {_vllm_text(win)}; {_seesaw_text(s)}. Seesaw's separate prefill phase takes "
                f"{_dur(s['prefill_s'])} against {_dur(v_pf)} with prefill in flight, and its decode "
                f"phase {_dur(s['decode_s'])} against {_dur(win['decode_s'])}: re-sharding does not pay here.")
    v_pf = vllm["prefill_s"] + vllm["mixed_s"]
    saved, more = v_pf - win["prefill_s"], win["decode_s"] - vllm["decode_s"]
    return (head + f", {win['speedup_vs_best_vllm']:.2f}x the best static vLLM layout, {vllm['candidate']} "
            f"({vllm['throughput_tok_s']:,.0f} tok/s over {_dur(vllm['makespan_s'])}). Time by phase "
            f"(simulated): {_seesaw_text(win)}; {_vllm_text(vllm)}. Prefilling under {win['prefill_layout']} "
            f"{'saves' if saved >= 0 else 'costs'} {_dur(abs(saved))} against the time {vllm['layout']} has "
            f"prefill in flight, and decoding under {win['decode_layout']} takes {_dur(abs(more))} "
            f"{'more' if more >= 0 else 'less'} than its decode-only time (the decode phase also does the "
            "decodes vLLM overlaps with prefill).")
