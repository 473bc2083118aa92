"""One DP replica in the discrete-event simulation: its driver, pipeline stages and host link.

The driver keeps up to ``pp`` micro-batches in flight: it asks the pure scheduler for steps,
starts them, and hands each completed step back (``on_step_done``). It runs as simpy callbacks
rather than a generator process, with the events a ``simpy.Store``-fed process would get (a put
schedules the hand-over, the hand-over schedules the driver's wake-up), so every completion is
handled at the same place in simpy's event order as before. A forward whose end is known at launch
(no rendezvous hand-offs) needs no process: one timeout, and when nothing else is due at that
instant the driver takes the step at once (the put and the wake-up could not be interleaved with
anything, so skipping them changes no outcome).

A micro-batch walks the pipeline stages, each stage serving micro-batches in order (its free-at
time plays the role of a capacity-one resource), so pipeline bubbles and stage imbalance emerge
from the schedule instead of being assumed. Host<->device copies (Seesaw) share one host link per
replica (the replica's GPUs copy in parallel, each over its own link), served in request order;
swaps run as callbacks with the events of a process holding a capacity-one simpy resource.
"""

from __future__ import annotations

import simpy
from simpy.events import NORMAL, URGENT

from seesaw.core import ParallelConfig
from seesaw.scheduling import (
    Decode, Forward, Mixed, PhaseClock, Prefill, Reshard, SchedulerError, SwapIn, SwapOut,
)
from simulator.cost import BatchShape

__all__ = ["Replica", "batch_shape", "STEP_KIND"]

# the phase each kind of step books while in flight (``seesaw.scheduling.phase_of``)
PHASE_KIND = {Prefill: "prefill", Decode: "decode", Mixed: "mixed", Reshard: "reshard",
              SwapIn: "swap_stall", SwapOut: "swap_stall"}
# ``Step.kind`` by type, without building the string per step
STEP_KIND = {t: t.__name__.lower() for t in PHASE_KIND}


def batch_shape(step: Forward) -> BatchShape:
    """Aggregate what the cost model needs from a forward step (before it is accounted)."""
    if type(step) is Decode:
        n = len(step.seqs)
        computed = step.computed_tokens
        if computed < 0:
            computed = sum([s.num_computed_tokens for s in step.seqs])
        return BatchShape(decode_seqs=n, decode_context_tokens=computed + n, sampled_seqs=n)
    shape = BatchShape()
    for seq, n in zip(step.seqs, step.num_new_tokens):
        past = seq.num_computed_tokens
        if n == 1 and seq.num_tokens > seq.prompt_len and past == seq.num_tokens - 1:   # a decode
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


class _Call:
    """A triggered event for simpy's queue that only runs one callback (lighter than
    ``simpy.Event``: ``Environment.step`` reads nothing but ``callbacks`` and ``_ok``)."""

    __slots__ = ("callbacks", "_ok", "value")

    def __init__(self, callback, value):
        self.callbacks = [callback]
        self._ok = True
        self.value = value


class Replica:
    """One DP replica: its scheduler, pipeline stages and bookkeeping.

    ``sim`` is the simulation it belongs to: ``env``, ``cost``, ``model``, ``record_step``,
    ``shapes`` and ``swap_bytes`` (see ``simulator.sim``).
    """

    def __init__(self, sim, index: int, scheduler, layout: ParallelConfig, max_pp: int):
        self.sim = sim
        self.index = index
        self.sched = scheduler
        self.layout = layout
        self.env = sim.env
        self.stage_free_s = [0.0] * max_pp
        # the host link: a capacity-one resource served in request order (see ``_swap_start``)
        self.link_busy = False
        self.link_queue: list[tuple] = []
        # the driver's mailbox: completed steps it has not taken yet, and whether it waits
        self.items: list = []
        self.waiting = False
        self.pending = 0
        self.direct = not sim.cost.handoffs_rendezvous
        # time by phase (``seesaw.scheduling.phase_of``): between events, the phase of what is in flight
        self.clock = PhaseClock(0.0)
        self.skip_first_token_check = not getattr(scheduler, "chunked", True)
        self.host_pool = getattr(scheduler, "host", None)   # Seesaw's host KV pool
        self._walk_key: tuple | None = None
        self._timers: list = []
        self._send: dict[int, list[float]] = {}
        self._done = self._forward_done          # bound once (a forward's completion callback)

    def start(self) -> None:
        """Run the driver's first pass once the simulation starts (a process's start event)."""
        self.env.schedule(_Call(self._wake, None), URGENT)

    # ------------------------------------------------------------------ the driver
    def _wake(self, event) -> None:
        if event.value is not None:
            self._receive(event.value, self.env.now)
        else:
            self._cycle(self.env.now)

    def _receive(self, step, now: float) -> None:
        """The driver takes one completed step, then schedules what can run ``now``."""
        self.pending -= 1
        kind = type(step)
        self.clock.end(PHASE_KIND[kind], now)
        finished = self.sched.on_step_done(step)   # [] for a step that is not a forward
        # whole prefills only: a decode's members sampled their first token before
        if (kind is not Decode or not self.skip_first_token_check) and isinstance(step, Forward):
            for seq in [s for s in step.seqs if s.first_token_time_s is None]:
                if seq.num_tokens > seq.prompt_len:      # sampled its first token
                    seq.first_token_time_s = now
        for seq in finished:
            seq.finish_time_s = now
        self._cycle(now)

    def _cycle(self, now: float) -> None:
        """Start every step the scheduler offers ``now``, then wait for the next completion."""
        sched = self.sched
        if not (self.pending or sched.has_unfinished()):
            self.clock.advance(now)
            return
        # forwards offered in this pass start once it is over (their stage recurrence sees every
        # step of the pass booked in the phase clock)
        launched = []
        while True:
            step = sched.schedule()
            if step is None:
                break
            self.clock.start(PHASE_KIND[type(step)], now)
            self.pending += 1
            if self.direct and isinstance(step, Forward):
                launched.append(step)
            elif type(step) is SwapIn or type(step) is SwapOut:
                self.env.schedule(_Call(self._swap_start, step), URGENT)   # a process's start event
            else:
                self.env.process(self._execute(step))
        if not self.pending:
            raise SchedulerError(
                f"replica {self.index}: scheduler stalled with {sched.num_unfinished} unfinished requests"
            )
        for step in launched:
            self._launch(step, now)
        if self.items:
            self.env.schedule(_Call(self._wake, self.items.pop(0)), NORMAL)
        else:
            self.waiting = True

    def put(self, step) -> simpy.Event:
        """A completed step for the driver (``simpy.Store.put``'s events)."""
        self.items.append(step)
        event = simpy.Event(self.env)
        event.callbacks.append(self._hand_over)
        event.succeed()
        return event

    def _hand_over(self, _event) -> None:
        if self.waiting and self.items:
            self.waiting = False
            self.env.schedule(_Call(self._wake, self.items.pop(0)), NORMAL)

    # ------------------------------------------------------------------ forwards
    def _launch(self, step: Forward, now: float) -> None:
        """Start a forward without a process: its end time is known at launch (no rendezvous)."""
        shape = batch_shape(step)
        end = self._stage_walk(step, shape, now)
        self.env.schedule(_Call(self._done, (step, now, shape)), NORMAL, end - now)

    def _forward_done(self, event) -> None:
        step, start, shape = event.value
        env = self.env
        now = env.now
        self.sim.record_forward(self, step, start, now, shape)
        if self.waiting and not self.items and env.peek() > now:
            # nothing else is due now: the put and the wake-up would come next, back to back
            self.waiting = False
            self._receive(step, now)
        else:
            self.put(step)

    def _stage_walk(self, step: Forward, shape: BatchShape, now: float) -> float:
        """When ``step`` leaves the last stage, launched ``now`` (see ``_forward``); books the stages."""
        cost = self.sim.cost
        layout = self.layout
        free = self.stage_free_s
        last = layout.pp - 1
        rendezvous = last and not self.direct   # ``cost.handoffs_rendezvous``
        # the only step in flight: no other micro-batch can start before it completes (steps
        # are issued at completions; a swap completing meanwhile could free blocks or bring
        # sequences in, so none may be in flight either), so each stage has the machine to
        # itself while it computes (measured profiles time stages both alone and all ranks busy;
        # the roofline ignores it)
        alone = False
        if last and cost.tables is not None:
            k = self.clock.live
            alone = k["prefill"] + k["decode"] + k["mixed"] == 1 and not k["swap_stall"] and not k["reshard"]
        if self._walk_key != (layout, alone):
            # per layout: the stages' time functions and hand-off times by token count
            self._walk_key, self._timers, self._send = (layout, alone), cost.stage_timers(layout, alone), {}
        sends = ()
        if last:  # each boundary's hand-off (one crossing nodes goes over the network)
            tokens = shape.prefill_tokens + shape.decode_seqs
            sends = self._send.get(tokens)
            if sends is None:
                sends = self._send[tokens] = cost.pp_sends_s(layout, tokens)
        t = now
        if not rendezvous:           # the common case: each hand-off overlaps the next stage's wait
            for stage, stage_time_s in enumerate(self._timers):
                f = free[stage]
                t = free[stage] = (t if t > f else f) + stage_time_s(shape)
                if stage < last:
                    t += sends[stage]
            return t
        for stage, stage_time_s in enumerate(self._timers):
            start = t if t > free[stage] else free[stage]
            if stage:
                start += sends[stage - 1]  # the receiving stage waits through the hand-off
            t = free[stage] = start + stage_time_s(shape)
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
        env = self.env
        shape = batch_shape(step)
        self.sim.shapes[id(step)] = shape
        yield env.timeout(self._stage_walk(step, shape, env.now) - env.now)
        if self.sim.cost.handoffs_rendezvous and self.layout.pp > 1:
            layout, cost, free = self.layout, self.sim.cost, self.stage_free_s
            # the sampled ids reach the driver (stage 0's rank) once it is done with the
            # micro-batches it is computing; it waits through the hand-off
            reply = cost.pp_reply_s(layout, shape.sampled_seqs)
            if reply:
                done = (env.now if env.now > free[0] else free[0]) + reply
                free[0] = done
                yield env.timeout(done - env.now)

    # ------------------------------------------------------------------ swaps
    # A swap copies over the host link: every GPU of the replica copies its own shard over its
    # own link, in parallel. It runs as callbacks with the events ``simpy.Resource(capacity=1)``
    # would give a process that requests the link, holds it for the copy and releases it: the
    # start (URGENT, now), the grant (NORMAL, now or at a release), the copy's end, then the
    # release event (which grants the next request in FIFO order) before the driver's hand-over.
    def _swap_start(self, event) -> None:
        step = event.value
        self.link_queue.append((step, self.env.now, sum([s.num_computed_tokens for s in step.seqs])))
        self._grant(None)

    def _grant(self, _event) -> None:
        # ``Resource._trigger_put``: looks at the head of the queue only
        if not self.link_busy and self.link_queue:
            self.link_busy = True
            self.env.schedule(_Call(self._swap_granted, self.link_queue.pop(0)), NORMAL)

    def _swap_granted(self, event) -> None:
        step, _start, tokens = event.value
        kind = "in" if type(step) is SwapIn else "out"
        self.env.schedule(_Call(self._swap_done, event.value), NORMAL, self.sim.cost.swap_s(self.layout, kind, tokens))

    def _swap_done(self, event) -> None:
        step, start, tokens = event.value
        self.link_busy = False
        if self.link_queue:
            # the release event; with nobody queued it would grant nothing (a request made
            # before it fires finds the link free and is granted at once)
            self.env.schedule(_Call(self._grant, None), NORMAL)
        self.sim.swap_bytes[id(step)] = tokens * self.sim.model.kv_bytes_per_token
        self.sim.record_step(self, step, start, self.env.now)
        self.items.append(step)                  # ``put`` without an event a process could wait on
        self.env.schedule(_Call(self._hand_over, None), NORMAL)

    # ------------------------------------------------------------------ other steps
    def _execute(self, step):
        env = self.env
        start = env.now
        if isinstance(step, Forward):
            yield from self._forward(step)
        elif isinstance(step, Reshard):
            yield env.timeout(self.sim.cost.reshard_s(step.src, step.dst))
            self.layout = step.dst
        self.sim.record_step(self, step, start, env.now)
        yield self.put(step)
