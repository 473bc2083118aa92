"""Closed-form makespan estimate of one candidate, to rank candidates before simulating.

The paper's App. A stage times through ``CostModel``: prefill at the micro-batch each policy
forms, decode at the batch KV allows with a greedy slot model for the tail, plus swap and
re-shard bounds. It ranks layouts well and knobs poorly, so the search simulates the best. It
assumes every replica's share of the sample stands for its whole share (``ReplicaWork``).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass

import numpy as np

from seesaw.scheduling import split_across_replicas
from seesaw.core import ParallelConfig, SeesawPolicy, VllmPolicy
from simulator.cost import BatchShape, CostModel
from simulator.planner.enumerate import Candidate
from simulator.sim import host_blocks_per_replica

__all__ = ["ReplicaWork", "equivalence_key", "estimate_makespan_s", "host_limit_tokens", "replica_works"]


@dataclass
class ReplicaWork:
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
    chain, slowest = cost.chain_s(c, shape)
    return max(chain, m * slowest)


def _decode_shape(b: float, ctx: float, k_prefill: float = 0.0, pairs_per_token: float = 0.0) -> BatchShape:
    return BatchShape(prefill_tokens=k_prefill, prefill_attn_pairs=k_prefill * pairs_per_token,
                      decode_seqs=b, decode_context_tokens=b * ctx, sampled_seqs=b)


def _prefill_shape(k: float, w: ReplicaWork) -> BatchShape:
    return BatchShape(prefill_tokens=k, prefill_attn_pairs=k * w.pairs_per_token, sampled_seqs=k / w.mean_p)


def _decode_time_s(cost: CostModel, c: ParallelConfig, w: ReplicaWork, r: int) -> float:
    """Decode rounds of the slot schedule, each at the time of its active batch."""
    lengths, active, _, _ = w.slots(r)
    grid = np.unique(np.geomspace(1, max(1, r), 24).round())
    t_grid = np.array([_pipeline_period_s(cost, c, _decode_shape(a / min(c.pp, a), w.ctx), min(c.pp, a))
                       for a in grid])
    t = np.interp(np.maximum(active, 1), grid, t_grid) * (active > 0)
    return float((lengths * t).sum())


def _kv_slots(cost: CostModel, c: ParallelConfig, w: ReplicaWork, util: float, budget: int, seq_cap: int,
              cap_tokens: int | None = None) -> int:
    cap = cost.kv_capacity_tokens(c, util, budget) if cap_tokens is None else cap_tokens
    return max(1, min(seq_cap, int(cap / w.ctx)))


def _estimate_vllm(cost: CostModel, policy: VllmPolicy, w: ReplicaWork) -> dict[str, float]:
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
    _, init_stage = cost.chain_s(c, _prefill_shape(init_mb, w))
    t_init = math.ceil(p_init / init_mb) * init_stage
    t_dec = _decode_time_s(cost, c, w, r)
    if p_rest <= 0:
        return {"prefill": t_init, "decode": t_dec}
    b = r / c.pp
    dec_chain, dec_stage = cost.chain_s(c, _decode_shape(b, w.ctx))
    burst = min(budget, max(w.mean_p, w.size_biased_p))
    if not policy.enable_chunked_prefill:
        n = p_rest / burst
        pf_chain, _ = cost.chain_s(c, _prefill_shape(burst, w))
        return {"prefill": t_init + n * max(0.0, pf_chain - (c.pp - 1) * dec_stage), "decode": t_dec}
    room = max(1.0, budget - b)                  # prefill tokens a mixed step can carry
    steps = max(p_rest / burst, p_rest / room)
    k = p_rest / steps
    mixed_chain, _ = cost.chain_s(c, _decode_shape(b, w.ctx, k, w.pairs_per_token))
    return {"prefill": t_init, "decode": t_dec, "mixed": steps * max(0.0, mixed_chain - dec_chain)}


def _estimate_seesaw(cost: CostModel, policy: SeesawPolicy, w: ReplicaWork) -> dict[str, float]:
    """Prefill every prompt under c_p in full micro-batches (bounded by the swap-out steps), decode
    under c_d at the KV bound (bounded by the swap-in steps), one re-shard each way per host-pool fill."""
    util, budget = policy.gpu_memory_utilization, policy.max_num_batched_tokens
    cp, cd = policy.prefill_layout, policy.decode_layout
    # the device is empty at each switch, so each layout has its own device KV pool
    cap_p, cap_d = cost.kv_capacity_tokens(cp, util, budget), cost.kv_capacity_tokens(cd, util, budget)
    k = min(budget, policy.max_num_seqs * w.mean_p)
    m = max(1, min(cp.pp, int(cap_p // k)))      # prefills in flight need transient device KV
    chain, stage = cost.chain_s(cp, _prefill_shape(k, w))
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


def _estimate_replica(cost: CostModel, policy, w: ReplicaWork) -> dict[str, float]:
    if isinstance(policy, VllmPolicy):
        return _estimate_vllm(cost, policy, w)
    return _estimate_seesaw(cost, policy, w)


def estimate_makespan_s(cost: CostModel, policy, works: list[ReplicaWork]) -> tuple[float, dict[str, float]]:
    """Closed-form makespan (the slowest DP replica) and its time by phase."""
    best = None
    for w in works:
        phases = _estimate_replica(cost, policy, w)
        total = sum(phases.values())
        if best is None or total > best[0]:
            best = (total, phases)
    return best


def replica_works(requests: list, dp: int) -> list[ReplicaWork]:
    """Each DP replica's share of ``requests`` (as the simulator splits them), empty ones left out."""
    parts = split_across_replicas(list(requests), dp)
    return [ReplicaWork(np.array([r.prompt_len for r in part]), np.array([r.output_len for r in part]))
            for part in parts if part]


def host_limit_tokens(policy: SeesawPolicy, cost: CostModel) -> int:
    """Tokens one replica may park in the host pool before it counts as full (as ``sim`` sizes it)."""
    blocks = host_blocks_per_replica(cost.model, policy, policy.host_kv_bytes)
    return int(policy.host_full_watermark * blocks) * policy.block_size


def equivalence_key(cand: Candidate, works: list[ReplicaWork], cost: CostModel) -> tuple | None:
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
    pool = host_blocks_per_replica(cost.model, p, p.host_kv_bytes) * bs
    if host_limit_tokens(p, cost) < prompts or pool < full:
        return None
    return (p.prefill_layout, p.decode_layout, p.max_num_seqs, p.max_num_batched_tokens, "pool holds all")

