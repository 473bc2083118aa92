"""Rank 0's driver loop under the shared Seesaw policy: the ``SeesawScheduler`` (the simulator's
policy object) driving engine ranks that re-shard between a prefill layout ``c_p`` and a decode
layout ``c_d`` and buffer KV in a host pool in shared memory.

How each scheduler step maps onto engine operations (rank 0 drives; a message goes to every rank
of the step's replica, in one order, so every rank sees the same stream):

* ``Prefill`` (``offload_to_host``): a forward micro-batch under ``c_p``, as in the vllm driver.
* ``SwapOut`` after a prefill: the driver allocates the sequences' host blocks
  (``HostBlockAllocator``) and sends a ``SwapOutMsg``; every rank queues the copy of its own box
  (a PP stage its layers, a TP rank its heads) for all the step's sequences at once on its
  ``Prefetcher`` thread, which overlaps the next prefills. The device blocks stay allocated until
  the replica agrees the copies are done.
* ``SwapIn``: the driver takes device blocks for the sequence (as many as the scheduler counted,
  including the block its next token needs) and sends a ``SwapInMsg``; every rank queues the copy
  of its box into them on its prefetcher. The sequence is not schedulable yet.
* Agreement (``prefetch.ReplicaCompletions``): a message may carry ``sync="poll"`` (each rank
  adds the copies its prefetcher finished, without waiting) or ``"wait"`` (each rank first waits
  for all its queued copies). Both are one all-gather over the replica's message group, so rank
  0 learns the sequences copied on *every* rank; only then does it report the ``SwapIn`` /
  ``SwapOut`` done to the scheduler (swap-ins become schedulable, swap-out device blocks and
  swap-in host blocks are freed). A poll rides on a forward message when the replica has no
  forward in flight (the ranks are idle then, so the all-gather costs no pipeline overlap); a
  wait is sent when the replica cannot run anything until its copies land (time counted as
  ``swap_stall``).
* Eviction (the scheduler evicts decodes when device KV runs out, and every decode at the switch
  back to prefill): the scheduler frees the device blocks at once and may hand them to another
  sequence in the same step, so the copy cannot wait for a background thread: the driver sends
  an ``EvictMsg`` before anything else, each rank copies synchronously in its message stream, and
  the following ``SwapOut`` step is complete as soon as it is scheduled.
* ``Reshard(src, dst)``: the scheduler issues it with nothing in flight and the device KV empty;
  every rank drops its KV cache and runner, re-shards its weights in place from the host
  ``WeightStore`` (``reshard.reshard``, layer by layer, barrier), builds the ``ModelRunner`` and
  KV cache of ``dst`` and re-points its prefetcher; the ranks' ``ReshardStats`` are gathered by
  rank 0, which times the whole step.
* ``Decode``: a forward under ``c_d``. Finished requests free their device and host blocks.

The ranks' side of these steps is ``seesaw_worker.SeesawWorker``; the host pools are sized and
made by ``host_pools``; ``launch`` builds the ranks of a run.

Assumptions: ``c_p`` and ``c_d`` have the same DP degree and world size (a replica's ranks are the
same under both); one host pool per replica, created by the launching process and shared with
the spawned ranks (under ``torchrun``: named pools in each node's ``/dev/shm``, one set per node).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from seesaw.engine.batch_io import BatchItem
from seesaw.engine.config import EngineConfig, EngineError, reason
from seesaw.engine.host_kv import HostBlockAllocator
from seesaw.engine.kv import ReplicaBlocks
from seesaw.engine.messages import EvictMsg, ForwardMsg, Message, ReshardMsg, SwapInMsg, SwapOutMsg, SyncMsg
from seesaw.engine.prefetch import ReplicaCompletions
from seesaw.engine.seesaw_worker import SeesawWorker
from seesaw.engine.vllm_driver import Driver
from seesaw.scheduling import Reshard, SwapIn, SwapOut
from seesaw.scheduling.seesaw import SeesawScheduler

__all__ = ["SeesawDriver"]


@dataclass
class _Swap:
    """A SwapIn/SwapOut step whose copies are in flight on the replica's prefetchers."""

    step: object
    left: set = field(default_factory=set)   # sequence ids not yet agreed
    sids: list = field(default_factory=list)
    tokens: int = 0                          # KV tokens copied (each rank its own box of them)
    t_launch: float = 0.0


class SeesawDriver(Driver):
    """The driver loop over ``SeesawScheduler``s (one per DP replica); see the module docstring."""

    policy = "seesaw"

    def __init__(self, worker: SeesawWorker, items: list[BatchItem], config: EngineConfig,
                 num_blocks: dict[str, int], host_blocks: int, tokenizer=None):
        self.blocks_by_layout, self.host_blocks = dict(num_blocks), host_blocks
        super().__init__(worker, items, config, num_blocks[str(config.layout)], tokenizer)
        dp = self.layout.dp
        self.host = [HostBlockAllocator(host_blocks, config.block_size) for _ in range(dp)]
        self.swaps: list[list[_Swap]] = [[] for _ in range(dp)]
        self.evicted: list[set[int]] = [set() for _ in range(dp)]   # copied by "evict", SwapOut not seen yet
        self.observers = {d: ReplicaCompletions(self.plane.msg_groups[d], int_ids=True) for d in range(1, dp)}
        self.reshard_log: list[dict] = []
        self.rank_stats: list[dict] = []
        self.num_waits = 0

    def _make_scheduler(self, d: int) -> SeesawScheduler:
        cfg = self.config
        return SeesawScheduler.from_policy(
            cfg.policy, self.blocks_by_layout[str(cfg.layout)], replica=d, num_host_blocks=self.host_blocks,
            num_decode_blocks=self.blocks_by_layout[str(cfg.decode_layout)])

    def run(self) -> dict:
        try:
            return super().run()
        finally:
            self.worker.close()

    # -- messages other than forwards --------------------------------------------------------
    def _send(self, d: int, msg: Message):
        """Send ``msg`` to replica ``d``, run rank 0's part; returns rank 0's result."""
        try:
            if self.plane.remote(d):
                self.plane.send(d, msg)
            out = self.worker.handle(msg) if d == 0 else None
            if isinstance(msg, ReshardMsg) and d != 0:
                self.plane.gather(d, None)  # wait until the replica's ranks are done
            self._after_send(d, msg)
            return out
        except (RuntimeError, TimeoutError) as e:
            if isinstance(e, EngineError):
                raise
            ranks = ", ".join(map(str, self.replica_ranks[d]))
            raise EngineError(f"{msg.op} on replica {d} (ranks {ranks}) failed: {reason(e)}") from None

    def _before_send(self, d: int, msg: ForwardMsg) -> None:
        if self.swaps[d] and self.num_inflight[d] == 0:
            msg.sync = "poll"  # the replica's ranks are idle: agreeing costs no overlap

    def _after_send(self, d: int, msg: Message) -> None:
        if not msg.sync:
            return
        if d == 0:
            agreed, self.worker.agreed = self.worker.agreed, []
        else:
            agreed = self.observers[d].update([], observer=True)
        self._agreed(d, agreed)

    def _agreed(self, d: int, sids: list) -> None:
        done = set(sids)
        now = time.perf_counter()
        for sw in list(self.swaps[d]):
            sw.left -= done
            if sw.left:
                continue
            self.swaps[d].remove(sw)
            if isinstance(sw.step, SwapOut):
                for sid in sw.sids:               # the host copy is complete on every rank
                    self.kv[d].free(sid)
                    self.pending_free[d].append(sid)
            else:
                for sid in sw.sids:               # the device copy is now the only one
                    self.host[d].free(sid)
            self.scheds[d].on_step_done(sw.step)
            self.clocks[d].end("swap_stall", now)
            if self.trace is not None:
                self.trace.append({"replica": d, "kind": sw.step.kind, "launch_s": sw.t_launch - self._t0,
                                   "done_s": now - self._t0, "num_seqs": len(sw.sids), "tokens": sw.tokens})

    def _wait_for_copies(self) -> bool:
        waited = False
        for d in range(self.layout.dp):
            if self.swaps[d] and self.num_inflight[d] == 0:
                self._send(d, self._message(d, SyncMsg, sync="wait"))
                self.num_waits += 1
                if self.swaps[d]:
                    raise EngineError(f"replica {d}: KV copies of {len(self.swaps[d])} swap steps were not "
                                      "agreed after every rank finished its copies")
                waited = True
        return waited

    def _track(self, d: int, step, sids: list, tokens: int) -> None:
        now = time.perf_counter()
        self.swaps[d].append(_Swap(step, set(sids), list(sids), tokens, now))
        self.clocks[d].start("swap_stall", now)

    # -- the scheduler's steps -----------------------------------------------------------------
    def _after_schedule(self, d: int, step) -> None:
        """Copy out, synchronously on every rank, the sequences the scheduler just evicted: their
        device blocks are already free in its accounting and may be reused by the next step."""
        sched, kv = self.scheds[d], self.kv[d]
        cands = list(sched.to_offload) + (list(step.seqs) if isinstance(step, SwapOut) else [])
        out = []
        for seq in cands:
            sid = int(seq.req_id)
            if seq.num_blocks or sid not in kv.block_tables or sid in self.evicted[d]:
                continue
            n = seq.num_computed_tokens
            assert kv.num_tokens[sid] == n, (sid, kv.num_tokens[sid], n)
            out.append((sid, self.host[d].allocate(sid, n), n))
            kv.free(sid)
            self.evicted[d].add(sid)
        if out:
            now = time.perf_counter()
            self.clocks[d].start("swap_stall", now)
            self._send(d, self._message(d, EvictMsg, seqs=out))
            done = time.perf_counter()
            self.clocks[d].end("swap_stall", done)
            if self.trace is not None:
                self.trace.append({"replica": d, "kind": "evict", "launch_s": now - self._t0, "done_s": done - self._t0,
                                   "num_seqs": len(out), "tokens": sum(n for _, _, n in out)})

    def _dispatch(self, d: int, step) -> None:
        if isinstance(step, SwapOut):
            self._swap_out(d, step)
        elif isinstance(step, SwapIn):
            self._swap_in(d, step)
        elif isinstance(step, Reshard):
            self._reshard(d, step)
        else:
            raise EngineError(f"the Seesaw driver cannot execute a {step.kind} step")

    def _swap_out(self, d: int, step: SwapOut) -> None:
        seqs = []
        for seq in step.seqs:
            sid = int(seq.req_id)
            if sid in self.evicted[d]:
                self.evicted[d].discard(sid)      # copied already
                continue
            n = seq.num_computed_tokens
            assert self.kv[d].num_tokens[sid] == n, (sid, self.kv[d].num_tokens[sid], n)
            seqs.append((sid, self.host[d].allocate(sid, n), n))
        if not seqs:
            self.scheds[d].on_step_done(step)
            return
        self._track(d, step, [s for s, _, _ in seqs], sum(n for _, _, n in seqs))
        self._send(d, self._message(d, SwapOutMsg, seqs=seqs))

    def _swap_in(self, d: int, step: SwapIn) -> None:
        seqs = []
        for seq in step.seqs:
            sid = int(seq.req_id)
            n = seq.num_computed_tokens
            blocks = self.kv[d].reserve(sid, n, seq.num_blocks)
            seqs.append((sid, self.host[d].block_tables[sid], blocks, n))
        self._track(d, step, [s for s, _, _, _ in seqs], sum(n for _, _, _, n in seqs))
        self._send(d, self._message(d, SwapInMsg, seqs=seqs))

    def _reshard(self, d: int, step: Reshard) -> None:
        if step.src == step.dst:  # a phase switch only: weights and KV stay where they are
            self.scheds[d].on_step_done(step)
            return
        assert not self.swaps[d] and not self.kv[d].block_tables, "re-shard with KV in use"
        t0 = time.perf_counter()
        self.clocks[d].start("reshard", t0)
        self._send(d, self._message(d, ReshardMsg, src=step.src, dst=step.dst))
        t1 = time.perf_counter()
        self.clocks[d].end("reshard", t1)
        if self.trace is not None:
            self.trace.append({"replica": d, "kind": "reshard", "src": str(step.src), "dst": str(step.dst),
                               "launch_s": t0 - self._t0, "done_s": t1 - self._t0})
        # the ranks' own figures (rank_s, bytes_loaded_per_rank) are filled in at the end, from
        # the statistics every rank sends when it stops (``_reshard_log``)
        self.reshard_log.append({"replica": d, "src": str(step.src), "dst": str(step.dst),
                                 "wall_s": round(t1 - t0, 6)})
        self.kv[d] = ReplicaBlocks(self.blocks_by_layout[str(step.dst)], self.config.block_size)
        self.plane.use(d, step.dst)
        self.scheds[d].on_step_done(step)

    def _reshard_log(self, ranks: list[dict]) -> list[dict]:
        """The driver's re-shard records with each rank's time and bytes loaded (the k-th re-shard
        of a replica is the k-th record in each of its ranks' lists)."""
        by_rank = {r["rank"]: r["reshards"] for r in ranks}
        seen = [0] * self.layout.dp
        out = []
        for rec in self.reshard_log:
            d, k = rec["replica"], seen[rec["replica"]]
            seen[d] += 1
            mine = [by_rank[r][k] for r in self.replica_ranks[d] if r in by_rank and k < len(by_rank[r])]
            out.append({**rec, "rank_s": [round(m["reshard_s"], 6) for m in mine],
                        "bytes_loaded_per_rank": [m["bytes_loaded"] for m in mine]})
        return out

    # -- completion -------------------------------------------------------------------------
    def _finish(self, d: int, seq, now: float) -> None:
        super()._finish(d, seq, now)
        self.host[d].free(int(seq.req_id))

    def _replica_done(self, d: int) -> bool:
        return super()._replica_done(d) and not self.swaps[d]

    def _stop_replica(self, d: int) -> None:
        if self.stopped[d]:
            return
        super()._stop_replica(d)
        mine = self.worker.stats() if d == 0 else None
        try:
            got = self.plane.gather(d, mine) if self.plane.remote(d) else [mine]
        except (RuntimeError, TimeoutError) as e:
            raise EngineError(f"collecting replica {d}'s figures failed: {reason(e)}") from None
        self.rank_stats += [r for r in got if r is not None]

    def _extra(self, phases: dict) -> dict:
        stats = [s.stats() for s in self.scheds]
        ranks = sorted(self.rank_stats, key=lambda r: r["rank"])
        swapped = sum(r["swap_in_bytes"] + r["swap_out_bytes"] for r in ranks)
        return {
            "num_transitions": max(st["num_transitions"] for st in stats),
            "reshard_time": phases["reshard"],
            "swap_stall_time": phases["swap_stall"],
            "swapped_bytes": float(swapped),
            "host_kv_peak_usage": max(st["host_kv_peak_usage"] for st in stats),
            "host_kv_blocks_per_replica": self.host_blocks,
            "host_kv_bytes": float(self.host_blocks * self.worker.pool.bytes_per_block * self.layout.dp),
            "kv_blocks_by_layout": self.blocks_by_layout,
            "swap_bytes_per_rank": {r["rank"]: {"in": r["swap_in_bytes"], "out": r["swap_out_bytes"]} for r in ranks},
            "num_swap_waits": self.num_waits,
            "reshards": self._reshard_log(ranks),
            "transitions": [dict(t, replica=d) for d, s in enumerate(self.scheds) for t in s.transition_log],
        }
