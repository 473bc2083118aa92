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
* DECODE -> PREFILL when the host pool is empty and requests are waiting. Decodes in flight drain
  first, the sequences left on the device are swapped out, then ``Reshard`` back.

Choices the paper leaves open, made here:

* Sequences still decoding at the switch back are swapped out to the host pool (one device->host
  copy under ``decode_layout``) and resume in the next decode phase. Keeping them on the device
  would leave prefill almost no KV blocks: at the switch the device is full, because decode keeps
  it full by swapping in. (Measured in the simulator: LLaMA2-70B, 8xL4, 2000 ShareGPT requests,
  P8->T4P2 prefill took 303 s with retained decodes.)
* Preemption during decode swaps the victim out to the host pool when it has room (recompute
  otherwise), so running out of device blocks does not send work back to prefill.
* The device pool is the ``min`` of the KV capacity under the two layouts.
* Host blocks of a sequence are freed when its swap-in completes (the device copy is then the only
  one).
"""

from __future__ import annotations

from seesaw.scheduling.state import BlockPool, SchedulerError, Sequence, SeqStatus, blocks_for
from seesaw.scheduling.steps import Forward, Prefill, Reshard, Step, SwapIn, SwapOut
from seesaw.scheduling.vllm import VllmScheduler
from seesaw.specs import ParallelConfig

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
        block_size: int = 16,
        max_num_seqs: int = 256,
        max_num_batched_tokens: int = 8192,
        host_full_watermark: float = 1.0,
        replica: int = 0,
        watermark: float = 0.01,
    ):
        super().__init__(
            num_device_blocks, block_size=block_size, max_num_seqs=max_num_seqs,
            max_num_batched_tokens=max_num_batched_tokens, enable_chunked_prefill=False,
            pipeline_depth=prefill_layout.pp, replica=replica, watermark=watermark,
        )
        if num_host_blocks <= 0:
            raise SchedulerError("the host KV pool holds no block; give a larger --host-kv-gib")
        self.host = BlockPool(num_host_blocks, block_size)
        self.host_limit = int(host_full_watermark * num_host_blocks)
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

    # ------------------------------------------------------------------ requests
    def check_servable(self, seq: Sequence) -> None:
        super().check_servable(seq)
        need = blocks_for(seq.prompt_len + seq.max_output_len, self.block_size)
        if need > self.host_limit:
            raise SchedulerError(
                f"request {seq.req_id}: {seq.prompt_len + seq.max_output_len} tokens need {need} "
                f"host KV blocks, the host pool holds {self.host_limit}; give a larger --host-kv-gib"
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
            if self._should_leave_prefill():
                return self._maybe_reshard(DECODE)
            return self._forward(self._schedule_prefill())
        swap = self._schedule_swap_in()
        if swap is not None:
            return self._launch(swap)
        if self._should_leave_decode():
            if self.num_in_flight:
                return None                      # drain the decodes in flight
            if self.running:
                for seq in list(self.running.values()):
                    self._swap_out_now(seq)
                return self._launch(SwapOut(replica=self.replica, seqs=self._pop_offload()))
            return self._maybe_reshard(PREFILL)
        return self._forward(self._schedule_decode())

    def _launch(self, step: Step) -> Step:
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

    def _should_leave_prefill(self) -> bool:
        if not self.waiting or not self._host_has_room_for(self.waiting[0]):
            return True
        # device blocks held by retained decodes leave no room for the next prompt: decode first
        idle = not self.num_in_flight and not self.num_swaps_in_flight
        need = blocks_for(self.waiting[0].num_new_tokens, self.block_size)
        return idle and not self.blocks.can_allocate(need, self.watermark_blocks)

    def _schedule_prefill(self) -> Prefill | None:
        if self.num_in_flight >= self.layout.pp:
            return None
        seqs, counts = [], []
        budget = self.max_num_batched_tokens
        while self.waiting and len(seqs) < self.max_num_seqs:
            seq = self.waiting[0]
            n = seq.num_new_tokens
            host_need = blocks_for(seq.num_tokens, self.block_size)
            if n > budget or not self._host_has_room_for(seq):
                break
            if not self.blocks.can_allocate(blocks_for(n, self.block_size), self.watermark_blocks):
                break
            self.waiting.popleft()
            self._admit(seq, n)
            self.host.allocate(host_need)
            seq.num_host_blocks = host_need
            seqs.append(seq)
            counts.append(n)
            budget -= n
        if not seqs:
            return None
        return Prefill(replica=self.replica, seqs=seqs, num_new_tokens=counts, offload_to_host=True)

    # decode mode -------------------------------------------------------
    def _schedule_swap_in(self) -> SwapIn | None:
        if self.num_swaps_in_flight or not self.on_host:
            return None
        limit = max(1, -(-self.max_num_seqs // self.layout.pp))
        seqs: list[Sequence] = []
        while self.on_host and len(seqs) < limit and len(self.running) < self._seq_cap():
            seq = self.on_host[0]
            need = blocks_for(seq.num_computed_tokens + 1, self.block_size)
            if not self.blocks.can_allocate(need, self.watermark_blocks):
                break
            self.on_host.pop(0)
            self.blocks.allocate(need)
            seq.num_blocks = need
            seq.status = SeqStatus.RUNNING
            self._admit_counter += 1
            seq.admit_order = self._admit_counter
            self.running[seq.req_id] = seq
            seqs.append(seq)
        return SwapIn(replica=self.replica, seqs=seqs) if seqs else None

    def _should_leave_decode(self) -> bool:
        return bool(self.waiting) and not self.on_host and not self.num_swaps_in_flight

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
        if self.mode == DECODE and self.host.can_allocate(blocks_for(seq.num_tokens, self.block_size)):
            seq.num_preemptions += 1
            self.num_preemptions += 1
            self._swap_out_now(seq)
        else:
            super()._preempt(seq)

    def _schedule_decode(self):
        if self.num_in_flight >= self.layout.pp:
            return None
        return super()._schedule_decode()

    # transitions -------------------------------------------------------
    def _maybe_reshard(self, target: str) -> Reshard | None:
        if self.num_in_flight or self.num_swaps_in_flight:
            return None   # drain first
        src, dst = (self.prefill_layout, self.decode_layout) if target == DECODE else (
            self.decode_layout, self.prefill_layout)
        self.reshard_in_flight = True
        self._target = target
        return Reshard(replica=self.replica, src=src, dst=dst)

    # ------------------------------------------------------------------ completion
    def on_step_done(self, step: Step, stopped=()) -> list[Sequence]:
        if isinstance(step, Reshard):
            self.reshard_in_flight = False
            self.mode = self._target
            self.layout = step.dst
            self.pipeline_depth = step.dst.pp
            self.num_transitions += 1
            return []
        if isinstance(step, SwapOut):
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
        if isinstance(step, SwapIn):
            self.num_swaps_in_flight -= 1
            for seq in step.seqs:
                seq.in_flight = False
                self.host.free(seq.num_host_blocks)
                seq.num_host_blocks = 0
                self.swapped_in_tokens += seq.num_computed_tokens
            return []
        finished = super().on_step_done(step, stopped)   # also counts the forward as done
        for seq in finished:
            if seq.num_host_blocks:
                self.host.free(seq.num_host_blocks)
                seq.num_host_blocks = 0
        if isinstance(step, Prefill) and step.offload_to_host:
            self.to_offload.extend(s for s in step.seqs if not s.is_finished)
        return finished

    def stats(self) -> dict:
        return {
            "num_transitions": self.num_transitions,
            "swapped_out_tokens": self.swapped_out_tokens,
            "swapped_in_tokens": self.swapped_in_tokens,
            "host_kv_peak_usage": self.host.peak_used / self.host.num_blocks,
        }
