"""vLLM-style continuous batching for one data-parallel replica.

Policy (after vLLM v0's default scheduler and Sarathi-Serve's chunked prefill):

* Without chunked prefill, prefill has priority: whenever waiting requests can be admitted (blocks
  free above a small watermark, fewer than ``max_num_seqs`` in the micro-batch, whole prompts up to
  ``max_num_batched_tokens``) the step is a ``Prefill``; otherwise it is a ``Decode`` of the running
  sequences.
* With chunked prefill, every step is built decodes-first: all runnable decodes, then chunks of
  partially prefilled sequences, then new admissions, until the token budget is spent (``Mixed``).
* When a decode needs a block and none is free, the most recently admitted running sequence that is
  not in flight is preempted by recompute (its KV is dropped; it re-enters the waiting queue at the
  front and later re-prefills its prompt plus what it had generated).
* Pipeline parallelism keeps up to ``pipeline_depth`` micro-batches in flight; a sequence is in at
  most one, and a decode micro-batch takes at most its fair share (running / depth) of sequences,
  so the micro-batches hold disjoint, similar-sized groups (the paper: "each decoding step
  processes 1/PP of the sequences").

The executor calls ``schedule()`` until it returns ``None`` or the pipeline is full, runs the steps,
and reports each back through ``on_step_done``.
"""

from __future__ import annotations

from collections import deque
from operator import attrgetter
from typing import Iterable

from seesaw.scheduling.state import (
    NOT_IN_FLIGHT, BlockPool, Flight, SchedulerError, Sequence, SeqStatus, blocks_for,
)
from seesaw.scheduling.steps import Decode, Forward, Mixed, Prefill, mark_in_flight

__all__ = ["VllmScheduler"]

_ADMIT_ORDER = attrgetter("admit_order")


class VllmScheduler:
    """Continuous batching over one replica's device KV blocks."""

    def __init__(
        self,
        num_device_blocks: int,
        *,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        enable_chunked_prefill: bool = False,
        pipeline_depth: int = 1,
        replica: int = 0,
        watermark: float = 0.01,
    ):
        if pipeline_depth < 1:
            raise SchedulerError(f"pipeline_depth must be >= 1, got {pipeline_depth}")
        self.blocks = BlockPool(num_device_blocks, block_size)
        self.block_size = block_size
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.chunked = enable_chunked_prefill
        self.pipeline_depth = pipeline_depth
        self.replica = replica
        self.watermark_blocks = int(watermark * num_device_blocks)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[str, Sequence] = {}     # admission order
        # chunked prefill only: the running sequences with more than one token to compute (mid
        # prefill), in running order, so a step's chunks are found without a scan of ``running``
        self.prefilling: dict[str, Sequence] = {}
        self.seqs: list[Sequence] = []              # every sequence ever added, in order
        self.num_in_flight = 0
        self.num_preemptions = 0
        self.num_finished = 0
        self._admit_counter = 0
        # the running sequences not in flight with one token to compute (the decode candidates;
        # without chunked prefill, every running sequence not in flight), in running order, when
        # known without a scan (see ``_take_decodes``); None when unknown
        self.idle_known: list[Sequence] | None = None
        # the (completed) ``Flight`` every sequence of ``idle_known`` points to, when they share
        # one; a decode of them takes it again (``batch_flight``) instead of a write per member
        self.idle_flight: Flight | None = None
        self.batch_flight: Flight | None = None
        # what the last decode's completion learnt of its survivors (see ``on_step_done``):
        # (survivors, those at a block boundary, sum of their num_computed_tokens)
        self._survivors: tuple | None = None

    @classmethod
    def from_policy(cls, policy, num_device_blocks: int, replica: int = 0) -> "VllmScheduler":
        return cls(
            num_device_blocks,
            block_size=policy.block_size,
            max_num_seqs=policy.max_num_seqs,
            max_num_batched_tokens=policy.max_num_batched_tokens,
            enable_chunked_prefill=policy.enable_chunked_prefill,
            pipeline_depth=policy.layout.pp,
            replica=replica,
        )

    # ------------------------------------------------------------------ requests
    def add_request(self, req) -> Sequence:
        """Queue a request (anything with ``id``, ``prompt_len``, ``output_len``)."""
        seq = Sequence(
            req_id=str(req.id),
            prompt_len=int(req.prompt_len),
            max_output_len=int(req.output_len),
            arrival_time_s=float(getattr(req, "arrival_time_s", 0.0)),
            replica=self.replica,
        )
        self.check_servable(seq)
        self.waiting.append(seq)
        self.seqs.append(seq)
        return seq

    def check_servable(self, seq: Sequence) -> None:
        total = seq.prompt_len + seq.max_output_len
        need = blocks_for(total, self.block_size)
        if need > self.blocks.num_blocks:
            raise SchedulerError(
                f"request {seq.req_id}: {total} tokens need {need} KV blocks, "
                f"the device pool has {self.blocks.num_blocks}"
            )
        if not self.chunked and total > self.max_num_batched_tokens:
            # a preempted sequence re-prefills prompt + output, so both must fit the budget
            raise SchedulerError(
                f"request {seq.req_id}: prompt + output ({total} tokens) exceeds "
                f"max_num_batched_tokens={self.max_num_batched_tokens}; enable chunked prefill "
                "or raise the budget"
            )

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def peak_kv_usage(self) -> float:
        """Highest fraction of device KV blocks in use so far."""
        return self.blocks.peak_used / self.blocks.num_blocks if self.blocks.num_blocks else 0.0

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running)

    # ------------------------------------------------------------------ scheduling
    def schedule(self) -> Forward | None:
        """Next micro-batch, or None when the pipeline is full or nothing can run now."""
        if self.num_in_flight >= self.pipeline_depth:
            return None
        if self.chunked:
            step = self._schedule_chunked()
        else:
            step = self._schedule_prefill() or self._schedule_decode()
        if step is None:
            return None
        mark_in_flight(step)
        self.num_in_flight += 1
        return step

    def _admit(self, seq: Sequence, num_tokens: int) -> None:
        self.blocks.allocate(blocks_for(num_tokens, self.block_size))
        seq.num_blocks = blocks_for(num_tokens, self.block_size)
        seq.status = SeqStatus.RUNNING
        self._admit_counter += 1
        seq.admit_order = self._admit_counter
        self.running[seq.req_id] = seq
        if self.chunked and seq.num_tokens - seq.num_computed_tokens > 1:
            self.prefilling[seq.req_id] = seq

    def _reserve(self) -> int:
        """Blocks kept free at admission for running sequences to grow into (vLLM's watermark).

        With nothing running there is nothing to protect, so a request that needs every block can
        still be admitted.
        """
        return self.watermark_blocks if self.running else 0

    def _seq_cap(self) -> int:
        # sequences that may hold device KV at once: one full micro-batch per pipeline slot
        return self.max_num_seqs * self.pipeline_depth

    def _schedule_prefill(self) -> Prefill | None:
        if not self.waiting:
            return None
        # while KV is full the head of the queue fails every step (asked twice per completion):
        # ``_admit_waiting``'s first test, inline, before any list is built
        head = self.waiting[0]
        n = head.num_tokens - head.num_computed_tokens
        running = self.running
        if (len(running) >= self.max_num_seqs * self.pipeline_depth or n > self.max_num_batched_tokens
                or -(-n // self.block_size) + (self.watermark_blocks if running else 0) > self.blocks.num_free):
            return None
        seqs: list[Sequence] = []
        counts: list[int] = []
        self._admit_waiting(seqs, counts, self.max_num_batched_tokens, chunked=False)
        if not seqs:
            return None
        return Prefill(replica=self.replica, seqs=seqs, num_new_tokens=counts)

    def _admit_waiting(self, seqs: list[Sequence], counts: list[int], budget: int, *, chunked: bool) -> int:
        """Admit waiting requests first-come first-served into this step; return the budget left.

        Whole prompts without chunking; with it, the last admission may be a chunk. Stops at the
        token budget, the batch cap, or when blocks run out (above the watermark).
        """
        while (self.waiting and budget > 0 and len(seqs) < self.max_num_seqs
               and len(self.running) < self._seq_cap()):
            seq = self.waiting[0]
            n = min(seq.num_new_tokens, budget) if chunked else seq.num_new_tokens
            if n > budget or not self.blocks.can_allocate(blocks_for(n, self.block_size), self._reserve()):
                break
            self.waiting.popleft()
            self._admit(seq, n)
            seqs.append(seq)
            counts.append(n)
            budget -= n
        return budget

    def _take_decodes(self, limit: int) -> tuple[list[Sequence], int]:
        """Pick up to ``limit`` decodes oldest-first, preempting the newest when blocks run out.
        Returns them and the sum of their ``num_computed_tokens`` when known without a pass
        (else -1).

        The batch is always a prefix of the candidates (oldest first): a candidate is taken unless
        it is itself preempted, which ends the batch, so only the candidates at a block boundary
        need a look of their own (one pass, or none when the candidates are the last decode's
        survivors, all taken: its completion found them; the hot path of a decode step).
        """
        known = self._survivors
        self._survivors = None
        flight = self.idle_flight
        self.idle_flight = self.batch_flight = None
        # usually the candidates are the last decode's survivors, known without a scan
        # (``idle_known``)
        cands = self.idle_known
        if cands is None:
            if self.chunked:
                cands = [s for s in self.running.values()
                         if not s.flight.live and s.num_tokens - s.num_computed_tokens == 1]
            else:
                # whole prefills only: a running sequence not in flight has sampled its last
                # token (prefilled, decoded or swapped in), so it is a decode candidate
                cands = [s for s in self.running.values() if not s.flight.live]   # ``in_flight``
        self.idle_known = None                   # a preemption below leaves it unknown
        bs = self.block_size
        end = len(cands)                 # cands[end:] were preempted as victims
        if limit > end:
            limit = end
        rest_known = None                # (edges, computed tokens) of cands[limit:], when known
        if known is not None and known[0] is cands:
            edges, computed = known[1], known[2]
            if limit < end:              # the batch is a prefix: split what is known at it
                cut = cands[limit].admit_order   # candidates are in admission order
                rest_computed = sum([s.num_computed_tokens for s in cands[limit:]])
                edges = [s for s in edges if s.admit_order < cut]
                rest_known = (known[1][len(edges):], rest_computed)
                computed -= rest_computed
        else:
            # the new token's KV goes in slot num_computed_tokens: a new block at a block boundary
            edges = [s for s in (cands if limit == end else cands[:limit])
                     if s.num_computed_tokens >= s.num_blocks * bs]
            computed = -1
        pool = self.blocks
        owed = 0                         # blocks given to edges, allocated in one go
        for seq in edges:                # all within cands[:limit]
            if end < limit and cands.index(seq) >= end:
                break                    # preempted as a victim, with every later candidate
            need = -(-(seq.num_computed_tokens + 1) // bs) - seq.num_blocks   # ``blocks_for`` inline
            if need > pool.num_free - owed:
                j = cands.index(seq)
                pool.allocate(owed)
                owed = 0
                while need > pool.num_free:
                    if end > j + 1:
                        end -= 1
                        victim = cands[end]
                    else:
                        victim = self._partial_prefill_victim()
                    if victim is None:
                        self._preempt(seq)
                        return cands[:j], -1
                    self._preempt(victim)
            owed += need
            seq.num_blocks += need
        pool.allocate(owed)
        taken = min(limit, end)
        if end == len(cands):
            # no candidate was a victim (a chunked prefill victim is none): the rest stays idle
            rest = self.idle_known = cands[taken:]
            if flight is not None:
                # the candidates share a completed flight (one decode's survivors): the batch
                # takes it again, the rest gets one of its own
                self.batch_flight = flight
                if rest:
                    own = self.idle_flight = Flight(False)
                    for s in rest:
                        s.flight = own
            if not rest:
                self._survivors = (rest, [], 0)
            elif rest_known is not None:
                self._survivors = (rest, *rest_known)
        if taken == len(cands):
            return cands, computed       # every candidate (a list nobody else holds any more)
        return cands[:taken], (computed if end == len(cands) else -1)

    def _partial_prefill_victim(self) -> Sequence | None:
        """Newest running sequence mid-prefill (chunked) that is not in flight."""
        for seq in reversed((self.prefilling if self.chunked else self.running).values()):
            if not seq.flight.live and seq.num_tokens - seq.num_computed_tokens > 1:
                return seq
        return None

    def _preempt(self, seq: Sequence) -> None:
        self.idle_known = self.idle_flight = None
        seq.flight = NOT_IN_FLIGHT
        self.blocks.free(seq.num_blocks)
        seq.num_blocks = 0
        seq.num_computed_tokens = 0
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        del self.running[seq.req_id]
        if self.chunked:
            self.prefilling.pop(seq.req_id, None)
        self.waiting.appendleft(seq)

    def _decode_limit(self) -> int:
        share = -(-len(self.running) // self.pipeline_depth)
        return min(self.max_num_seqs, max(1, share))

    def _schedule_decode(self) -> Decode | None:
        limit = -(-len(self.running) // self.pipeline_depth)   # ``_decode_limit``, inline (hot)
        if limit > self.max_num_seqs:
            limit = self.max_num_seqs
        seqs, computed = self._take_decodes(limit if limit > 1 else 1)
        return Decode(replica=self.replica, seqs=seqs, num_new_tokens=[1] * len(seqs),
                      computed_tokens=computed, flight=self.batch_flight) if seqs else None

    def _schedule_chunked(self) -> Forward | None:
        budget = self.max_num_batched_tokens
        decodes, computed = self._take_decodes(min(self._decode_limit(), budget))
        budget -= len(decodes)
        seqs = list(decodes)
        counts = [1] * len(decodes)
        # chunks of sequences already admitted but not fully prefilled (in running order)
        cap, bs, pool = self.max_num_seqs, self.block_size, self.blocks
        for seq in self.prefilling.values():
            if budget <= 0 or len(seqs) >= cap:
                break
            if seq.flight.live:              # ``in_flight``
                continue
            n = seq.num_tokens - seq.num_computed_tokens
            if n > budget:
                n = budget
            need = -(-(seq.num_computed_tokens + n) // bs) - seq.num_blocks   # ``blocks_for`` inline
            if need > pool.num_free:
                continue
            pool.allocate(need)
            seq.num_blocks += need
            seqs.append(seq)
            counts.append(n)
            budget -= n
        # new admissions
        self._admit_waiting(seqs, counts, budget, chunked=True)
        if len(seqs) == len(decodes):
            return Decode(replica=self.replica, seqs=seqs, num_new_tokens=counts,
                          computed_tokens=computed, flight=self.batch_flight) if seqs else None
        if decodes:
            return Mixed(replica=self.replica, seqs=seqs, num_new_tokens=counts, num_decodes=len(decodes))
        return Prefill(replica=self.replica, seqs=seqs, num_new_tokens=counts)

    # ------------------------------------------------------------------ completion
    def on_step_done(self, step: Forward, stopped: Iterable[str] = ()) -> list[Sequence]:
        """Account a completed micro-batch. ``stopped``: ids that hit EOS/stop (engine only).

        Returns the sequences that finished with this step.
        """
        stopped = set(stopped) if stopped else None
        finished: list[Sequence] = []
        idle, known = self.idle_known, self._survivors
        self.idle_known = self._survivors = self.idle_flight = None
        step.flight.live = False             # every member is out of flight
        edges: list[Sequence] = []
        hot = type(step) is Decode and stopped is None
        if hot:
            # the hot path: every member was scheduled one token short of its num_tokens (a
            # decode candidate), so that token completes it and a new one is sampled. It also
            # notes which survivors the next decode of them finds at a block boundary
            # (``_take_decodes``; total >= num_blocks * bs, without building the product)
            bs = self.block_size
            for seq in step.seqs:
                total = seq.num_computed_tokens = seq.num_tokens
                seq.num_tokens = new = total + 1
                if new >= seq.max_num_tokens:
                    finished.append(seq)
                elif total // bs >= seq.num_blocks:
                    edges.append(seq)
        elif type(step) is Decode or not self.chunked:
            self._account(step.seqs, step.num_new_tokens, stopped, finished, None)
        else:
            # chunked prefill: the first ``num_decodes`` members are decodes (a prefix of the
            # candidates), the rest chunks and admissions (in running order): the members that
            # become decode candidates join the idle set as two runs in running order
            nd = step.num_decodes if type(step) is Mixed else 0
            track = idle is not None and nd >= 0
            ready_dec: list[Sequence] | None = [] if track else None
            ready_pre: list[Sequence] | None = [] if track else None
            seqs, counts = step.seqs, step.num_new_tokens
            if nd > 0:
                # the decodes: each member completes its one token and samples (the hot loop's)
                for seq in seqs[:nd]:
                    total = seq.num_computed_tokens = seq.num_tokens
                    seq.num_tokens = total = total + 1
                    if total >= seq.max_num_tokens or (stopped and seq.req_id in stopped):
                        finished.append(seq)
                    elif track:
                        ready_dec.append(seq)
                seqs, counts = seqs[nd:], counts[nd:]
            self._account(seqs, counts, stopped, finished, ready_pre)
            if track:
                self.idle_known = _merge(_merge(idle, ready_dec), ready_pre)
        for seq in finished:
            seq.finish_reason = "stop" if stopped and seq.req_id in stopped else "length"
            self._finish(seq)
        if idle is not None and type(step) is Decode:
            # the survivors join the idle set; a decode takes a prefix of the candidates, so they
            # are in running order, which is admission order (``admit_order`` grows as sequences
            # enter ``running``): two sorted runs to merge
            survivors = step.seqs
            if finished:
                survivors = survivors.copy()
                for seq in finished:
                    survivors.remove(seq)        # by identity, in C: cheaper than a filter by status
            if hot:
                # the survivors' computed tokens: each member's grew by one
                computed = step.computed_tokens
                if computed >= 0:
                    computed += len(step.seqs)
                    for seq in finished:
                        computed -= seq.num_computed_tokens
                else:
                    computed = sum([s.num_computed_tokens for s in survivors])
            if idle:
                merged = self.idle_known = _merge(idle, survivors)
                if hot and known is not None and known[0] is idle:
                    self._survivors = (merged, _merge(known[1], edges), known[2] + computed)
            else:
                self.idle_known = survivors
                self.idle_flight = step.flight   # theirs alone (the finished left it)
                if hot:
                    self._survivors = (survivors, edges, computed)
        self.num_in_flight -= 1
        return finished

    def _account(self, seqs: list[Sequence], counts: list[int], stopped: set | None,
                 finished: list[Sequence], ready: list[Sequence] | None) -> None:
        """Count the tokens a completed step computed for ``seqs``; append those that finished to
        ``finished`` and, when ``ready`` is given, the others now decode candidates to ``ready``."""
        pre = self.prefilling if self.chunked else None
        for seq, n in zip(seqs, counts):
            done = seq.num_computed_tokens = seq.num_computed_tokens + n
            total = seq.num_tokens
            if done < total:             # a prefill chunk: no token sampled yet
                if pre is not None and done + 1 == total:
                    del pre[seq.req_id]  # one token left: a decode candidate now
                    if ready is not None:
                        ready.append(seq)
                continue
            if n > 1 and pre is not None:
                del pre[seq.req_id]      # its prompt is done (a one-token step was a candidate's)
            seq.num_tokens = total = total + 1
            if total >= seq.max_num_tokens or (stopped and seq.req_id in stopped):
                finished.append(seq)
            elif ready is not None:
                ready.append(seq)

    def _finish(self, seq: Sequence) -> None:
        seq.flight = NOT_IN_FLIGHT
        self.blocks.free(seq.num_blocks)
        seq.num_blocks = 0
        seq.status = SeqStatus.FINISHED
        del self.running[seq.req_id]
        self.num_finished += 1


def _merge(a: list[Sequence], b: list[Sequence]) -> list[Sequence]:
    """Two lists of sequences in admission order, merged in admission order."""
    if not a or not b:
        return a + b
    if a[-1].admit_order < b[0].admit_order:
        return a + b
    if b[-1].admit_order < a[0].admit_order:
        return b + a
    return sorted(a + b, key=_ADMIT_ORDER)
