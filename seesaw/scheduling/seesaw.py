"""Seesaw's transition-minimizing policy for one data-parallel replica.

Two modes, each under its own layout (same DP, same GPUs):

* PREFILL under ``prefill_layout``: admit waiting requests whole (token budget
  ``max_num_batched_tokens``); each needs host-pool blocks for its KV and transient device blocks
  for the forward pass. When a prefill micro-batch completes, a ``SwapOut`` moves its KV to the
  host pool and then frees the device blocks.
* DECODE under ``decode_layout``: vLLM-style decode over the sequences on the device; ``SwapIn``
  steps prefetch sequences from the host pool whenever device blocks are free, one micro-batch
  worth at a time, overlapping compute. A sequence becomes schedulable once its swap-in completes.

Transitions (the paper's rule, "switch only when the CPU store is full or empty"):

* PREFILL -> DECODE when the host pool cannot take the next waiting request (its occupancy would
  pass ``host_full_watermark``), or nothing is left to prefill. In-flight prefills and swap-outs
  drain first, then ``Reshard(prefill_layout, decode_layout)``.
* DECODE -> PREFILL when the host pool is empty, requests are waiting, at least one decode step
  ran in this phase, and the device has drained below ``decode_low_watermark`` of both its own
  KV pool and the host pool it will be evicted into, leaving host room for the next prompt (the
  paper switches as soon as the host pool is empty, a watermark of 1.0; right after the last
  swap-in the device is full of fresh sequences and evicting them at once wastes two copies, and
  with a small host pool the evicted sequences would fill it and leave nothing to prefill). Once
  decided the switch is final: decodes in flight drain, the sequences left on the device are
  swapped out, then ``Reshard`` back. Every cycle therefore decodes at least once and prefills at
  least one new request. Each decision is logged in ``transition_log`` with its reason.
* With ``prefill_layout == decode_layout`` nothing needs re-laying out, so prefilled KV stays on
  the device (no swap), prefill stops when the device is full, and the policy degenerates to a
  phase-separated continuous batching of that layout.

Choices the paper leaves open, made here:

* Sequences still decoding at the switch back are swapped out to the host pool (one device->host
  copy under ``decode_layout``) and resume in the next decode phase. Keeping them on the device
  would leave prefill almost no KV blocks: at the switch the device is full, because decode keeps
  it full by swapping in. (Measured in the simulator: LLaMA2-70B, 8xL4, 2000 ShareGPT requests,
  P8->T4P2 prefill took 303 s with retained decodes.)
* Preemption during decode swaps the victim out to the host pool when it has room (recompute
  otherwise), so running out of device blocks does not send work back to prefill.
* The device is empty at every switch (prefill KV has been offloaded; decodes are evicted), so
  each layout uses its own device KV capacity: ``num_device_blocks`` under the prefill layout and
  ``num_decode_blocks`` under the decode layout. Sizing both by the smaller would shrink the decode
  batch (PP stages hold unsplit activation reserves and embedding/LM head).
* Host blocks of a sequence are freed when its swap-in completes (the device copy is then the only
  one).
"""

from __future__ import annotations

from seesaw.scheduling.state import BlockPool, SchedulerError, Sequence, SeqStatus, blocks_for
from seesaw.scheduling.steps import Forward, Prefill, Reshard, Step, SwapIn, SwapOut, mark_in_flight
from seesaw.scheduling.vllm import VllmScheduler
from seesaw.core import ParallelConfig

__all__ = ["SeesawScheduler", "PREFILL", "DECODE"]

PREFILL, DECODE = "prefill", "decode"


class SeesawScheduler(VllmScheduler):
    """Prefill under one layout into a host KV pool, decode under another, re-shard rarely."""

    def __init__(
        self,
        num_device_blocks: int,
        num_host_blocks: int,
        prefill_layout: ParallelConfig,
        decode_layout: ParallelConfig,
        *,
        num_decode_blocks: int | None = None,
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        host_full_watermark: float = 1.0,
        decode_low_watermark: float = 0.5,
        replica: int = 0,
        watermark: float = 0.01,
    ):
        super().__init__(
            num_device_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, enable_chunked_prefill=False,
            pipeline_depth=prefill_layout.pp, replica=replica, watermark=watermark,
        )
        if num_host_blocks <= 0:
            raise SchedulerError("the host KV pool holds no block; give the policy a larger host_kv_bytes")
        self.host = BlockPool(num_host_blocks, block_size)
        self.pools = {PREFILL: self.blocks,
                      DECODE: BlockPool(num_decode_blocks or num_device_blocks, block_size)}
        self.host_limit = int(host_full_watermark * num_host_blocks)
        self.decode_low_watermark = decode_low_watermark
        self.leaving_decode = False
        self.same_layout = prefill_layout == decode_layout
        if self.same_layout:
            self.pools[DECODE] = self.blocks
        self.decode_steps_in_phase = 0
        self.transition_log: list[dict] = []
        self._leave_reason = ""
        self.prefill_layout = prefill_layout
        self.decode_layout = decode_layout
        self.layout = prefill_layout
        self.mode = PREFILL
        self.on_host: list[Sequence] = []          # prefilled, KV in the host pool, FIFO
        self.to_offload: list[Sequence] = []       # prefilled on device, waiting for SwapOut
        self.num_swaps_in_flight = 0
        self.reshard_in_flight = False
        self.num_transitions = 0
        self.swapped_out_tokens = 0
        self.swapped_in_tokens = 0

    @classmethod
    def from_policy(cls, policy, num_device_blocks: int, replica: int = 0, *, num_host_blocks: int,
                    num_decode_blocks: int | None = None) -> "SeesawScheduler":
        """The scheduler of a ``SeesawPolicy``: ``num_device_blocks`` KV blocks under the prefill
        layout (``num_decode_blocks`` under the decode layout, default the same), ``num_host_blocks``
        in the replica's host pool."""
        return cls(
            num_device_blocks, num_host_blocks, policy.prefill_layout, policy.decode_layout,
            num_decode_blocks=num_decode_blocks, block_size=policy.block_size, max_num_seqs=policy.max_num_seqs,
            max_num_batched_tokens=policy.max_num_batched_tokens, host_full_watermark=policy.host_full_watermark,
            decode_low_watermark=policy.decode_low_watermark, replica=replica,
        )

    # ------------------------------------------------------------------ requests
    def check_servable(self, seq: Sequence) -> None:
        super().check_servable(seq)
        need = blocks_for(seq.prompt_len + seq.max_output_len, self.block_size)
        if need > self.pools[DECODE].num_blocks:
            raise SchedulerError(
                f"request {seq.req_id}: {seq.prompt_len + seq.max_output_len} tokens need {need} KV "
                f"blocks, the device pool under {self.decode_layout} has {self.pools[DECODE].num_blocks}"
            )
        need = blocks_for(seq.prompt_len + seq.max_output_len, self.block_size)
        if not self.same_layout and need > self.host_limit:
            raise SchedulerError(
                f"request {seq.req_id}: {seq.prompt_len + seq.max_output_len} tokens need {need} "
                f"host KV blocks, the host pool holds {self.host_limit}; give the policy a larger host_kv_bytes"
            )

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running or self.on_host or self.to_offload)

    @property
    def num_unfinished(self) -> int:
        return len(self.waiting) + len(self.running) + len(self.on_host)

    # ------------------------------------------------------------------ scheduling
    def schedule(self) -> Step | None:
        if self.reshard_in_flight:
            return None
        if self.to_offload:
            return self._launch(SwapOut(replica=self.replica, seqs=self._pop_offload()))
        if self.mode == PREFILL:
            reason = self._leave_prefill_reason()
            if reason:
                return self._maybe_reshard(DECODE, reason)
            return self._forward(self._schedule_prefill())
        if not self.leaving_decode:
            on_host = self.on_host
            if on_host:                          # (the helpers' first tests, inline: asked twice per step)
                if not self.num_swaps_in_flight:
                    # a swap-in takes nothing when the head of the host queue does not fit
                    running = self.running
                    if (len(running) < self.max_num_seqs * self.pipeline_depth
                            and -(-(on_host[0].num_computed_tokens + 1) // self.block_size)
                            + (self.watermark_blocks if running else 0) <= self.blocks.num_free):
                        return self._launch(self._schedule_swap_in())
            elif self.waiting and not self.num_swaps_in_flight:
                self._leave_reason = self._leave_decode_reason()
                self.leaving_decode = bool(self._leave_reason)
        if self.leaving_decode:
            if self.num_in_flight or self.num_swaps_in_flight:
                return None                      # drain the decodes in flight
            if self.running and not self.same_layout:
                for seq in list(self.running.values()):
                    self._preempt(seq)               # to the host pool, or recompute if it is full
                if self.to_offload:
                    return self._launch(SwapOut(replica=self.replica, seqs=self._pop_offload()))
            return self._maybe_reshard(PREFILL, self._leave_reason)
        if self.num_in_flight >= self.pipeline_depth:
            return None                          # the pipeline is full
        step = self._schedule_decode()
        if step is not None:
            self.num_in_flight += 1
            mark_in_flight(step)
        return step

    def _launch(self, step: Step) -> Step:
        if isinstance(step, Forward):
            mark_in_flight(step)
            return step
        if isinstance(step, (SwapIn, SwapOut)):
            self.num_swaps_in_flight += 1
        for s in getattr(step, "seqs", ()):
            s.in_flight = True
        return step

    def _forward(self, step: Forward | None) -> Forward | None:
        # callers check the pipeline depth before building the step
        if step is None:
            return None
        self.num_in_flight += 1
        return self._launch(step)

    def _pop_offload(self) -> list[Sequence]:
        seqs, self.to_offload = self.to_offload, []
        return seqs

    # prefill mode ------------------------------------------------------
    def _host_has_room_for(self, seq: Sequence) -> bool:
        return self.host.num_used + blocks_for(seq.num_tokens, self.block_size) <= self.host_limit

    def _leave_prefill_reason(self) -> str:
        if not self.waiting:
            return "nothing_waiting"
        head = self.waiting[0]
        if not self.same_layout and not self._host_has_room_for(head):
            return "host_full"
        idle = not self.num_in_flight and not self.num_swaps_in_flight
        need = blocks_for(head.num_new_tokens, self.block_size)
        if idle and not self.blocks.can_allocate(need, self._reserve()):
            return "device_full"                 # only with same_layout: prefilled KV stays on device
        return ""

    def _schedule_prefill(self) -> Prefill | None:
        if self.num_in_flight >= self.layout.pp:
            return None
        seqs, counts = [], []
        budget = self.max_num_batched_tokens
        while self.waiting and len(seqs) < self.max_num_seqs:
            seq = self.waiting[0]
            n = seq.num_new_tokens
            host_need = blocks_for(seq.num_tokens, self.block_size)
            if n > budget or (not self.same_layout and not self._host_has_room_for(seq)):
                break
            if not self.blocks.can_allocate(blocks_for(n, self.block_size), self._reserve()):
                break
            self.waiting.popleft()
            self._admit(seq, n)
            if not self.same_layout:
                self.host.allocate(host_need)
                seq.num_host_blocks = host_need
            seqs.append(seq)
            counts.append(n)
            budget -= n
        if not seqs:
            return None
        return Prefill(replica=self.replica, seqs=seqs, num_new_tokens=counts,
                       offload_to_host=not self.same_layout)

    # decode mode -------------------------------------------------------
    def _schedule_swap_in(self) -> SwapIn:
        """Swap in from the head of the host queue, one micro-batch worth at most (``schedule``
        asks only when none is in flight and the head fits)."""
        running, on_host, pool, bs = self.running, self.on_host, self.blocks, self.block_size
        limit = min(max(1, -(-self.max_num_seqs // self.layout.pp)), len(on_host))
        cap = self._seq_cap()
        taken = 0
        while taken < limit and len(running) < cap:
            seq = on_host[taken]
            need = -(-(seq.num_computed_tokens + 1) // bs)                  # ``blocks_for`` inline
            if need + (self.watermark_blocks if running else 0) > pool.num_free:   # ``_reserve()``
                break
            pool.allocate(need)
            seq.num_blocks = need
            seq.status = SeqStatus.RUNNING
            self._admit_counter += 1
            seq.admit_order = self._admit_counter
            running[seq.req_id] = seq
            taken += 1
        seqs = on_host[:taken]
        del on_host[:taken]                      # the head of the FIFO, in one move
        return SwapIn(replica=self.replica, seqs=seqs)

    def _leave_decode_reason(self) -> str:
        if (not self.waiting or self.on_host or self.num_swaps_in_flight
                or not self.decode_steps_in_phase or self.blocks.usage >= self.decode_low_watermark):
            return ""
        head = blocks_for(self.waiting[0].num_tokens, self.block_size)
        if self.same_layout:
            return "device_drained" if self.blocks.can_allocate(head, self._reserve()) else ""
        evict = sum(blocks_for(q.num_tokens, self.block_size) for q in self.running.values())
        if evict > self.decode_low_watermark * self.host_limit:
            return ""
        if self.host.num_used + evict + head > self.host_limit:
            return ""
        return "host_empty"

    def _swap_out_now(self, seq: Sequence) -> None:
        """Give up ``seq``'s device blocks now; its KV travels to the host in the next SwapOut."""
        need = blocks_for(seq.num_tokens, self.block_size)
        self.host.allocate(need)
        seq.num_host_blocks = need
        self.blocks.free(seq.num_blocks)
        seq.num_blocks = 0
        del self.running[seq.req_id]
        seq.status = SeqStatus.ON_HOST
        seq.in_flight = True                     # not schedulable until the copy lands
        self.to_offload.append(seq)

    def _preempt(self, seq: Sequence) -> None:
        """Evict ``seq`` from the device: to the host pool when it has room, else by recompute.

        The room is checked per sequence at eviction time: decodes that drained after the
        decision to switch back may have crossed a block boundary.
        """
        self.idle_known = self.idle_flight = None
        if self.mode == DECODE and self.host.can_allocate(blocks_for(seq.num_tokens, self.block_size)):
            if not self.leaving_decode:
                seq.num_preemptions += 1
                self.num_preemptions += 1
            self._swap_out_now(seq)
        else:
            super()._preempt(seq)

    # transitions -------------------------------------------------------
    def _maybe_reshard(self, target: str, reason: str) -> Reshard | None:
        if self.num_in_flight or self.num_swaps_in_flight:
            return None   # drain first
        self.transition_log.append({
            "to": target, "reason": reason, "host_used_blocks": self.host.num_used,
            "host_limit_blocks": self.host_limit, "device_used_blocks": self.blocks.num_used,
            "num_waiting": len(self.waiting), "num_on_host": len(self.on_host),
        })
        src, dst = (self.prefill_layout, self.decode_layout) if target == DECODE else (
            self.decode_layout, self.prefill_layout)
        self.reshard_in_flight = True
        self._target = target
        return Reshard(replica=self.replica, src=src, dst=dst)

    # ------------------------------------------------------------------ completion
    def on_step_done(self, step: Step, stopped=()) -> list[Sequence]:
        if isinstance(step, Forward):
            if self.mode == DECODE:
                self.decode_steps_in_phase += 1
            finished = super().on_step_done(step, stopped)   # also counts the forward as done
            for seq in finished:
                if seq.num_host_blocks:
                    self.host.free(seq.num_host_blocks)
                    seq.num_host_blocks = 0
            if type(step) is Prefill and step.offload_to_host:
                self.to_offload.extend(s for s in step.seqs if not s.is_finished)
            return finished
        if isinstance(step, Reshard):
            self.idle_known = self.idle_flight = None
            self.reshard_in_flight = False
            self.leaving_decode = False
            self.mode = self._target
            self.decode_steps_in_phase = 0
            if not self.same_layout:
                assert self.blocks.num_used == 0, "the device KV must be empty at a re-shard"
                self.blocks = self.pools[self.mode]
            self.layout = step.dst
            self.pipeline_depth = step.dst.pp
            self.num_transitions += 1
            return []
        if isinstance(step, SwapOut):
            # the idle set does not change: a prefill's sequences were in flight, a decode's
            # victims left ``running`` when they were evicted
            self.num_swaps_in_flight -= 1
            for seq in step.seqs:
                seq.in_flight = False
                if seq.num_blocks:               # a prefill's KV: device copy no longer needed
                    self.blocks.free(seq.num_blocks)
                    seq.num_blocks = 0
                    del self.running[seq.req_id]
                seq.status = SeqStatus.ON_HOST
                self.on_host.append(seq)
                self.swapped_out_tokens += seq.num_computed_tokens
            return []
        assert isinstance(step, SwapIn), step
        # its sequences become idle; they were the last admitted to ``running`` (nothing is
        # admitted while a swap-in is in flight: decode mode admits only through swap-ins,
        # one at a time), so the known idle set grows by them at its end
        idle, known = self.idle_known, self._survivors
        if idle is not None:
            self.idle_known = idle + step.seqs
            self.idle_flight = None              # theirs is not the idle set's
        self.num_swaps_in_flight -= 1
        computed = 0
        for seq in step.seqs:
            seq.in_flight = False
            self.host.free(seq.num_host_blocks)
            seq.num_host_blocks = 0
            computed += seq.num_computed_tokens
        self.swapped_in_tokens += computed
        if known is not None and known[0] is idle:
            # what the next decode needs of them stays known: a swap-in allocates the blocks of
            # the next token too, so none of its sequences is at a block boundary
            self._survivors = (self.idle_known, known[1], known[2] + computed)
        return []

    def peak_kv_usage(self) -> float:
        return max(p.peak_used / p.num_blocks for p in self.pools.values() if p.num_blocks)

    def stats(self) -> dict:
        return {
            "num_transitions": self.num_transitions,
            "swapped_out_tokens": self.swapped_out_tokens,
            "swapped_in_tokens": self.swapped_in_tokens,
            "host_kv_peak_usage": self.host.peak_used / self.host.num_blocks,
        }
