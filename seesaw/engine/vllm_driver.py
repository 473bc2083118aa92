"""Rank 0's driver loop of the real executor under the shared ``vllm`` policy.

Rank 0 is the driver *and* a worker of replica 0: it runs one ``VllmScheduler`` per DP replica
(requests split by ``split_across_replicas``), owns each replica's KV block allocation (a
``kv.ReplicaBlocks`` whose block count is the scheduler's ``num_device_blocks``, so the two agree
block for block), turns every scheduled micro-batch into a ``messages.ForwardMsg`` and sends it to
the ranks of its replica (``control.ControlPlane``); the replica's sampling rank (last pipeline
stage, TP rank 0) sends the sampled tokens back, and the driver reports them through
``on_step_done(step, stopped=ids_that_hit_eos)``. A replica with nothing left to do gets a
``StopMsg`` at once. ``seesaw_driver.SeesawDriver`` runs the Seesaw policy through this class's
hooks.

Pipeline parallelism: a scheduled ``Forward`` is one micro-batch; the scheduler keeps up to ``pp``
of them in flight per replica (its ``pipeline_depth``). The driver sends each as soon as it is
scheduled; stage ``p`` receives its activations from stage ``p-1`` and sends its own on, so stage
0 works on micro-batch ``k+1`` while later stages work on ``k``. The driver waits for the oldest
in-flight micro-batch only when it cannot schedule another, and schedules again as soon as one
completes (a sequence's next decode needs its last token, so at most ``pp`` micro-batches of
disjoint sequences overlap). DP replicas run independently; rank 0 computes its own replica's
steps in between (remote replicas' steps are sent first, so they overlap rank 0's compute).

Preemption by recompute: when the scheduler preempts a sequence it drops its KV; the driver frees
its engine blocks before allocating the step, and the sequence later re-prefills its prompt plus
the tokens it had generated (a new table from ``start`` 0). EOS: a sampled token in the
tokenizer's EOS set stops the request (``finish_reason`` "stop"), unless the request ignores EOS.

Faults: every wait has a deadline (``timeout_s``; the process groups have the same timeout), and a
rank that dies closes its sockets, so the driver's next exchange with it fails at once. The
driver then raises ``EngineError`` with one line naming the rank or replica, after fsyncing every
finished output. Finished requests are appended to the output file as they finish
(``batch_io.OutputWriter``), so ``--resume`` continues where a failed run stopped; a write that
fails (a full disk) ends the run the same way, its torn line cut off.
"""

from __future__ import annotations

import json
import time
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from typing import TypeVar

import torch

from seesaw.engine.batch_io import BatchItem, OutputWriter, append_errors, response_record
from seesaw.engine.config import EngineConfig, EngineError, reason
from seesaw.engine.kv import ReplicaBlocks
from seesaw.engine.lifecycle import exit_if_orphaned
from seesaw.engine.messages import ForwardMsg, Message, SeqChunk, StopMsg
from seesaw.progress import Progress
from seesaw.engine.worker import StepWorker
from seesaw.scheduling import Forward, PhaseClock, SchedulerError, SeqStatus, VllmScheduler, split_across_replicas
from seesaw.core import PHASES, RunResult

__all__ = ["Driver"]

M = TypeVar("M", bound=Message)


@dataclass
class _Req:
    """What the scheduler sees of a request: a ``BatchItem``'s lengths under the engine's sequence
    id (its index, as a string; KV tables and step messages go by index, not by ``custom_id``)."""

    id: str
    prompt_len: int
    output_len: int


@dataclass
class _Flight:
    replica: int
    step: Forward
    k: int                              # step number within the replica
    entries: list[SeqChunk]
    result: torch.Tensor | None = None
    work: object = None
    t_launch: float = 0.0


class Driver:
    """Rank 0's loop: schedule, send, execute its own part, collect tokens, write outputs.

    Subclasses (``seesaw_driver.SeesawDriver``) plug in through ``_make_scheduler``,
    ``_after_schedule``, ``_dispatch`` (non-forward steps), ``_before_send``, ``_after_send``,
    ``_wait_for_copies``, ``_replica_done``, ``_stop_replica``, ``_finish`` and ``_extra``."""

    policy = "vllm"
    warmup_s = 0.0  # rank 0's warm-up before the clock (``worker.warm_up``), reported in the summary

    def __init__(self, worker: StepWorker, items: list[BatchItem], config: EngineConfig,
                 num_blocks: int, tokenizer=None):
        self.worker, self.items, self.config, self.tokenizer = worker, items, config, tokenizer
        L = self.layout = config.layout
        self.plane = worker.plane
        self.replica_ranks, self.sampler = self.plane.replica_ranks, self.plane.sampler
        self.stopped = [False] * L.dp                # replicas told to stop (no work left)
        self.num_blocks = num_blocks
        self.scheds = [self._make_scheduler(d) for d in range(L.dp)]
        self.kv = [ReplicaBlocks(num_blocks, config.block_size) for _ in range(L.dp)]
        self.seqs: dict[int, object] = {}         # sid -> scheduler Sequence
        self.tokens: dict[int, list[int]] = {}    # sid -> prompt + generated token ids
        self.first_token_s: dict[int, float] = {}
        self.pending_free: list[list[int]] = [[] for _ in range(L.dp)]
        self.num_sent = [0] * L.dp                # steps sent to each replica
        self.inflight: deque[_Flight] = deque()
        self.num_inflight = [0] * L.dp            # forwards in flight per replica
        self.eos = set(config.eos_token_ids)
        self.rejected: list[tuple] = []
        self.finished: list[tuple[int, int]] = []  # (sid, num output tokens)
        self.output_ids: dict[str, list[int]] = {}
        self.num_steps = 0
        self.writer: OutputWriter | None = None
        self.trace: list[dict] | None = [] if config.step_trace else None  # see write_trace
        self._t0 = self._t_end = 0.0
        reqs = [_Req(str(sid), it.prompt_len, it.output_len) for sid, it in enumerate(items)]
        for d, bucket in enumerate(split_across_replicas(reqs, L.dp)):
            for r in bucket:
                sid = int(r.id)
                item = items[sid]
                try:
                    self.seqs[sid] = self.scheds[d].add_request(r)
                except SchedulerError as e:
                    msg = str(e).replace(f"request {r.id}", f"request {item.custom_id!r}")
                    self.rejected.append((item.line, msg, item.custom_id))
                    continue
                self.tokens[sid] = list(item.prompt_ids)

    def _make_scheduler(self, d: int) -> VllmScheduler:
        return VllmScheduler.from_policy(self.config.policy, self.num_blocks, replica=d)

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        """Run every request to completion; returns the ``RunResult`` as a dict."""
        cfg = self.config
        if self.rejected and cfg.errors_output:
            append_errors(cfg.errors_output, self.rejected)
        guard = partial(exit_if_orphaned, cfg.launcher_pid) if cfg.launcher_pid else None
        self.writer = OutputWriter(cfg.output, append=cfg.append, guard=guard) if cfg.output else None
        bar = Progress(f"run {cfg.layout_name}", len(self.seqs), unit="requests", enabled=cfg.progress,
                       rate_label="output tok/s", tokens_total=sum(self.items[sid].max_tokens for sid in self.seqs))
        self._bar = bar
        self._t0 = time.perf_counter()
        self.clocks = [PhaseClock(self._t0) for _ in range(self.layout.dp)]
        try:
            with bar:
                bar(0)  # started: plain lines from here on, even before a request finishes
                self._loop()
            self._stop_workers()
        except (RuntimeError, TimeoutError) as e:
            if isinstance(e, EngineError):
                raise EngineError(f"{e}; {self._saved_note()}") from None
            raise EngineError(f"run stopped on rank 0: {reason(e)}; {self._saved_note()}") from None
        finally:
            if self.writer is not None:
                self.writer.close()
            self.write_trace()
        return self.summary()

    def write_trace(self) -> None:
        """``config.step_trace``: one JSON line per completed forward step, times in seconds since
        the run started on rank 0's clock: ``launch_s`` (message sent), ``done_s`` (sampled
        tokens back), ``in_flight`` (forwards of the replica in flight then, this one included), and
        ``seqs``: ``[start, new_tokens, sampled]`` per sequence (what ``seesaw calibrate
        --step-trace`` compares with the cost model step by step). The Seesaw driver adds its
        other steps: ``swapout`` / ``swapin`` (sent, then agreed done by every rank) and
        ``evict`` with ``num_seqs`` and ``tokens``, and ``reshard`` with ``src`` and ``dst``."""
        if self.trace is None:
            return
        with open(self.config.step_trace, "w") as f:
            for rec in self.trace:
                f.write(json.dumps(rec) + "\n")

    def _saved_note(self) -> str:
        where = f" in {self.config.output}" if self.config.output else ""
        return f"{len(self.finished)} of {len(self.seqs)} requests finished and saved{where} (rerun with --resume)"

    def _loop(self) -> None:
        while True:
            self._issue()
            if self._wait_for_copies():
                continue
            if not self.inflight:
                if any(s.has_unfinished() for s in self.scheds):
                    raise EngineError("the scheduler cannot make progress (KV cache too small?)")
                break
            self._complete(self.inflight.popleft())
        self._t_end = time.perf_counter()

    def _wait_for_copies(self) -> bool:
        """Block on KV copies a stalled replica waits for; True if it did (Seesaw only)."""
        return False

    def _issue(self) -> None:
        # remote replicas first, so their steps overlap rank 0's own compute
        for d in reversed(range(self.layout.dp)):
            sched = self.scheds[d]
            while True:
                preempted = sched.num_preemptions
                step = sched.schedule()
                self._after_schedule(d, step)
                if sched.num_preemptions != preempted:
                    self._free_preempted(d)
                if step is None:
                    break
                if isinstance(step, Forward):
                    self._launch(d, step)
                else:
                    self._dispatch(d, step)

    def _after_schedule(self, d: int, step) -> None:
        """Called after every ``schedule()`` (Seesaw: copy out sequences it evicted)."""

    def _dispatch(self, d: int, step) -> None:
        raise EngineError(f"the vllm driver cannot execute a {step.kind} step")

    def _free_preempted(self, d: int) -> None:
        kv = self.kv[d]
        for sid in list(kv.block_tables):
            if self.seqs[sid].status is SeqStatus.WAITING:
                kv.free(sid)  # its KV is recomputed from the prompt + generated tokens later

    def _message(self, d: int, kind: type[M], **fields) -> M:
        """A message for replica ``d``: carries the sequences freed since the last one."""
        msg = kind(free=self.pending_free[d], **fields)
        self.pending_free[d] = []
        return msg

    def _launch(self, d: int, step: Forward) -> None:
        kv, cfg = self.kv[d], self.config
        entries = []
        for seq, n in zip(step.seqs, step.num_new_tokens):
            sid = int(seq.req_id)
            start = kv.num_tokens.get(sid, 0)
            assert start == seq.num_computed_tokens, (sid, start, seq.num_computed_tokens)
            new_blocks = kv.extend(sid, n)
            toks = self.tokens[sid]
            item = self.items[sid]
            seed = (zlib.crc32(item.custom_id.encode()) ^ cfg.seed) & 0x7FFFFFFF
            entries.append((sid, start, toks[start:start + n], new_blocks, start + n == len(toks),
                            item.temperature, seed))
        assert kv.num_blocks - kv.num_free_blocks == self.scheds[d].blocks.num_used
        k = self.num_sent[d]
        msg = self._message(d, ForwardMsg, step=k, seqs=entries)
        self._before_send(d, msg)
        flight = _Flight(d, step, k, entries, t_launch=time.perf_counter())
        self.clocks[d].start(step.kind, flight.t_launch)
        self.num_sent[d] += 1
        self.num_steps += 1
        self.num_inflight[d] += 1
        try:
            if self.plane.remote(d):
                self.plane.send(d, msg)
            if self.sampler[d] != 0:
                flight.result, flight.work = self.plane.recv_tokens(d, len(entries))
            if d == 0:
                out = self.worker.handle(msg)
                if out is not None:
                    flight.result = out
            self._after_send(d, msg)
        except (RuntimeError, TimeoutError) as e:
            if isinstance(e, EngineError):
                raise
            ranks = ", ".join(map(str, self.replica_ranks[d]))
            raise EngineError(f"step {k} of replica {d} (ranks {ranks}) failed: {reason(e)}") from None
        self.inflight.append(flight)

    def _before_send(self, d: int, msg: ForwardMsg) -> None:
        """Last look at a forward message before it goes out (Seesaw: ask for a copy poll)."""

    def _after_send(self, d: int, msg: Message) -> None:
        """After rank 0 sent a message and ran its own part (Seesaw: read the copy agreement)."""

    def _complete(self, flight: _Flight) -> None:
        d, cfg = flight.replica, self.config
        if flight.work is not None:
            try:
                flight.work.wait(timeout=timedelta(seconds=cfg.timeout_s))
            except (RuntimeError, TimeoutError) as e:
                who = f"rank {self.sampler[d]} (replica {d}, last stage)"
                if "timed out" in str(e).lower() or isinstance(e, TimeoutError):
                    raise EngineError(f"{who} did not return step {flight.k} within {cfg.timeout_s:.0f} s") from None
                raise EngineError(f"{who} failed before returning step {flight.k}: {reason(e)}") from None
        now = time.perf_counter()
        self.clocks[d].end(flight.step.kind, now)
        if self.trace is not None:
            self.trace.append({"replica": d, "step": flight.k, "kind": flight.step.kind,
                               "launch_s": flight.t_launch - self._t0, "done_s": now - self._t0,
                               "in_flight": self.num_inflight[d],
                               "seqs": [[e[1], len(e[2]), int(e[4])] for e in flight.entries]})
        self.num_inflight[d] -= 1
        tokens = flight.result.tolist()
        stopped = []
        sampled = 0  # for the progress display (output tokens/s and the ETA)
        for (sid, _, _, _, sample, _, _), tok in zip(flight.entries, tokens):
            if not sample:
                continue
            assert tok >= 0, (sid, tok)
            self.tokens[sid].append(tok)
            self.first_token_s.setdefault(sid, now - self._t0)
            sampled += 1
            if tok in self.eos and not self.items[sid].ignore_eos:
                stopped.append(str(sid))
        self._bar.advance(0, tokens=sampled)
        for seq in self.scheds[d].on_step_done(flight.step, stopped=stopped):
            self._finish(d, seq, now)
        if self._replica_done(d):
            self._stop_replica(d)  # idle ranks would otherwise wait on rank 0 up to the timeout

    def _replica_done(self, d: int) -> bool:
        return not self.scheds[d].has_unfinished() and self.scheds[d].num_in_flight == 0

    def _finish(self, d: int, seq, now: float) -> None:
        sid = int(seq.req_id)
        self.kv[d].free(sid)
        self.pending_free[d].append(sid)
        self._write(sid, seq, now)

    def _write(self, sid: int, seq, now: float) -> None:
        item = self.items[sid]
        out_ids = self.tokens.pop(sid)[item.prompt_len:]
        self.finished.append((sid, len(out_ids)))
        if self.config.return_token_ids:
            self.output_ids[item.custom_id] = out_ids
        self._bar.advance()
        if self.writer is None:
            return
        text_ids = [t for t in out_ids if t not in self.eos] if seq.finish_reason == "stop" else out_ids
        text = self.tokenizer.decode(text_ids) if self.tokenizer is not None else ""
        first_token_s = self.first_token_s.pop(sid, now - self._t0)
        timing = None if not self.config.include_timing else {
            "first_token_s": round(first_token_s, 6), "finished_s": round(now - self._t0, 6),
            "replica": seq.replica, "num_preemptions": seq.num_preemptions}
        try:
            self.writer.write(response_record(item, out_ids, text, seq.finish_reason or "length",
                                              self.config.model_name, timing))
        except OSError as e:  # a full disk: the writer cut its torn line; this request is not saved
            self.finished.pop()
            raise EngineError(f"cannot write {self.config.output}: {e.strerror or e}") from None

    def _stop_replica(self, d: int) -> None:
        if not self.stopped[d] and self.plane.remote(d):
            try:
                self.plane.send(d, StopMsg())
            except (RuntimeError, TimeoutError) as e:
                raise EngineError(f"stopping replica {d} failed: {reason(e)}") from None
        self.stopped[d] = True

    def _stop_workers(self) -> None:
        for d in range(self.layout.dp):
            self._stop_replica(d)
        try:
            self.worker.flush()
        except (RuntimeError, TimeoutError) as e:
            raise EngineError(f"stopping the workers failed: {reason(e)}") from None

    # -- results --------------------------------------------------------------------------
    def summary(self) -> dict:
        elapsed = max(self._t_end - self._t0, 1e-9)
        for c in self.clocks:
            c.advance(self._t_end)  # a replica that finished early waits: idle
        phases = {k: round(sum(c.seconds[k] for c in self.clocks) / len(self.clocks), 6) for k in PHASES}
        n = len(self.finished)
        out_tokens = sum(k for _, k in self.finished)
        total = out_tokens + sum(self.items[sid].prompt_len for sid, _ in self.finished)
        result = RunResult(
            elapsed_time=elapsed, num_requests=n, total_num_tokens=total, total_output_tokens=out_tokens,
            requests_per_second=n / elapsed, tokens_per_second=total / elapsed,
            output_tokens_per_second=out_tokens / elapsed, layout=self.config.layout_name, policy=self.policy,
            time_by_phase=phases,
            peak_kv_usage=max(s.peak_kv_usage() for s in self.scheds),
            num_preemptions=sum(s.num_preemptions for s in self.scheds),
            num_steps=self.num_steps, num_rejected=len(self.rejected), kv_blocks_per_replica=self.num_blocks,
            block_size=self.config.block_size, device=self.config.device, dtype=self.config.dtype,
            warmup_s=round(self.warmup_s, 6), **self._extra(phases),
        )
        out = result.model_dump()
        if self.config.return_token_ids:
            out["output_token_ids"] = self.output_ids
        return out

    def _extra(self, phases: dict) -> dict:
        """More summary fields (Seesaw: transitions, re-shard and swap figures)."""
        return {}
