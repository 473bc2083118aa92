"""The driver loop of the real executor: the shared ``vllm`` policy run over engine ranks.

One process per device (``layout.world_size`` of them). Rank 0 is the driver *and* a worker of
replica 0: it runs one ``VllmScheduler`` per DP replica (requests split by
``split_across_replicas``), owns each replica's KV block allocation (a ``kv.BlockManager`` whose
block count is the scheduler's ``num_device_blocks``, so the two agree block for block), turns
every scheduled micro-batch into a step message and sends it to the ranks of its replica; the
replica's sampling rank (last pipeline stage, TP rank 0) sends the sampled tokens back, and the
driver reports them through ``on_step_done(step, stopped=ids_that_hit_eos)``.

Step message (pickled, broadcast by rank 0 in a gloo group of rank 0 and the replica's ranks, see
``ControlPlane``; every rank of a replica gets the same messages in the same order)::

    {"op": "forward", "step": k, "free": [seq ids finished since the last message],
     "seqs": [(seq_id, start, new_token_ids, new_block_ids, sample, temperature, seed), ...]}

``start`` is how many tokens of the sequence are already cached (its new tokens take positions
``start..``), ``new_block_ids`` extend its block table (a ``start`` of 0 starts a new table: a
first prefill, or a re-prefill after preemption), ``sample`` says whether its last new token is the
end of its known tokens (otherwise it is a prefill chunk and nothing is sampled). The reply,
broadcast by the sampling rank in a group with rank 0, is an int64 tensor with one token per
sequence (-1 where not sampled). A replica with nothing left to do gets ``{"op": "stop"}`` at once.
Other operations plug in as handlers on ``StepWorker.handlers`` (``{"op": name, ...}`` ->
``handler(msg)``): the Seesaw steps (re-shard, swap in/out) are meant to be added that way, with a
``Driver`` method that turns the scheduler's step into that message.

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
(``batch_io.OutputWriter``), so ``--resume`` continues where a failed run stopped.

Launch: ``run_batch`` spawns the ranks locally (``dist.spawn``: file:// rendezvous in a temp dir,
gloo on CPU, NCCL on CUDA); under ``torchrun`` every process calls ``rank_main`` itself after
``init_process(..., "env://")`` (see ``seesaw.cli_run``).
"""

from __future__ import annotations

import os
import pickle
import re
import tempfile
import time
import zlib
from collections import deque
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from seesaw.engine.batch_io import BatchItem, OutputWriter, append_errors, response_record
from seesaw.engine.kv import BlockManager, KVCache, KVCacheFull
from seesaw.engine.runner import ModelRunner
from seesaw.scheduling import Forward, SchedulerError, SeqStatus, VllmScheduler, split_across_replicas
from seesaw.specs import ParallelConfig, RunResult

__all__ = ["EngineConfig", "EngineError", "ControlPlane", "StepWorker", "Driver", "rank_main", "run_batch",
           "PHASES", "kv_blocks_for_budget"]

PHASES = ("prefill", "decode", "mixed", "reshard", "swap_stall", "idle")  # as the simulator's
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineError(RuntimeError):
    """The run cannot go on (a rank died or timed out, the scheduler stalled). One line."""


@dataclass
class EngineConfig:
    """Everything every rank needs to know about a run (pickled to the ranks)."""

    layout: ParallelConfig
    model_dir: str = ""
    model_name: str = "model"
    block_size: int = 16
    num_blocks: int | None = None          # KV blocks per replica; None: from kv_cache_bytes/memory
    kv_cache_bytes: float | None = None    # per-rank KV budget on CPU (default 1 GiB)
    gpu_memory_utilization: float = 0.9
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    enable_chunked_prefill: bool = False
    dtype: str = "float32"
    device: str = "cpu"
    seed: int = 0
    timeout_s: float = 120.0
    eos_token_ids: tuple[int, ...] = ()
    output: str = ""
    errors_output: str = ""
    append: bool = False                   # resume: append to an existing output file
    progress: bool = False
    fault: dict | None = None              # test hook: {"rank", "after_steps", "action": exit|hang}
    return_token_ids: bool = False         # add {custom_id: output token ids} to the result

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]


# --------------------------------------------------------------------------------------------
# Control messages


class ControlPlane:
    """Gloo groups that carry the driver's step messages and the sampled tokens.

    Per replica ``d``: a message group (rank 0 plus the replica's ranks) in which rank 0
    broadcasts each message, and, unless rank 0 samples for it, a result group (rank 0 and the
    replica's sampling rank) in which the sampling rank broadcasts the tokens. Broadcasts rather
    than send/recv: on a busy CPU box a gloo point-to-point hop costs ~1.5-2.5 ms and a small
    broadcast ~0.3-0.5 ms (measured with 2 ranks at load average ~9). Every rank must build it,
    in the same order (it creates groups). A message is pickled into a fixed ``capacity``-byte
    buffer (8-byte length, then the bytes), with a second broadcast for what does not fit."""

    def __init__(self, layout: ParallelConfig, rank: int, timeout_s: float, capacity: int = 1 << 15):
        self.layout, self.rank, self.capacity = layout, rank, capacity
        self.timeout = timedelta(seconds=timeout_s)
        self.replica_ranks = [[layout.rank(d, t, p) for p in range(layout.pp) for t in range(layout.tp)]
                              for d in range(layout.dp)]
        self.sampler = [layout.rank(d, 0, layout.pp - 1) for d in range(layout.dp)]
        self.msg_groups: list = []
        self.result_groups: list = []
        for d in range(layout.dp):
            members = sorted({0, *self.replica_ranks[d]})
            g = dist.new_group(members, timeout=self.timeout, backend="gloo") if len(members) > 1 else None
            self.msg_groups.append(g if rank in members else None)
            pair = [0, self.sampler[d]]
            g = dist.new_group(pair, timeout=self.timeout, backend="gloo") if self.sampler[d] != 0 else None
            self.result_groups.append(g if rank in pair else None)
        self._recv_buf = torch.empty(capacity, dtype=torch.uint8)
        self.pending: list[tuple] = []   # (work, buffers) of async broadcasts still in progress

    def remote(self, d: int) -> bool:
        """Does replica ``d`` have ranks other than rank 0?"""
        return self.msg_groups[d] is not None

    def _keep(self, work, *bufs) -> None:
        self.pending.append((work, bufs))
        if len(self.pending) > 64:
            self.pending = [p for p in self.pending if not p[0].is_completed()]

    def send(self, d: int, msg: dict) -> None:
        """Rank 0: broadcast ``msg`` to replica ``d`` (asynchronously)."""
        data = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
        room = self.capacity - 8
        buf = torch.zeros(self.capacity, dtype=torch.uint8)
        head = len(data).to_bytes(8, "little") + data[:room]
        buf[:len(head)] = torch.frombuffer(bytearray(head), dtype=torch.uint8)
        group = self.msg_groups[d]
        self._keep(dist.broadcast(buf, 0, group=group, async_op=True), buf)
        if len(data) > room:
            rest = torch.frombuffer(bytearray(data[room:]), dtype=torch.uint8)
            self._keep(dist.broadcast(rest, 0, group=group, async_op=True), rest)

    def recv(self, d: int) -> dict:
        """A rank of replica ``d``: the next message from rank 0 (blocking, with the timeout)."""
        group, buf, room = self.msg_groups[d], self._recv_buf, self.capacity - 8
        dist.broadcast(buf, 0, group=group)
        n = int.from_bytes(buf[:8].numpy().tobytes(), "little")
        data = buf[8:8 + min(n, room)].numpy().tobytes()
        if n > room:
            rest = torch.empty(n - room, dtype=torch.uint8)
            dist.broadcast(rest, 0, group=group)
            data += rest.numpy().tobytes()
        return pickle.loads(data)

    def send_tokens(self, d: int, tokens: torch.Tensor) -> None:
        """The sampling rank of replica ``d``: broadcast a step's tokens to rank 0 (async)."""
        tokens = tokens.contiguous()
        self._keep(dist.broadcast(tokens, self.sampler[d], group=self.result_groups[d], async_op=True), tokens)

    def recv_tokens(self, d: int, n: int):
        """Rank 0: post the receive of a step's ``n`` tokens; returns (buffer, work)."""
        buf = torch.empty(n, dtype=torch.long)
        return buf, dist.broadcast(buf, self.sampler[d], group=self.result_groups[d], async_op=True)

    def flush(self) -> None:
        for work, _ in self.pending:
            work.wait(timeout=self.timeout)
        self.pending = []


# --------------------------------------------------------------------------------------------
# Worker side (every rank, rank 0 included)


class StepWorker:
    """One rank's executor: block tables as the driver sends them, the model runner, sampling.

    ``handlers`` maps a message's ``op`` to a method; ``serve`` runs until ``stop``."""

    def __init__(self, runner: ModelRunner, comm, plane: ControlPlane, config: EngineConfig, rank: int):
        self.runner, self.comm, self.plane, self.config, self.rank = runner, comm, plane, config, rank
        self.replica = comm.dp_rank
        self.tables: dict[int, list[int]] = {}
        self.generators: dict[int, torch.Generator] = {}
        self.is_sampler = runner.shard.is_last and comm.tp_rank == 0
        self.num_forward = 0
        self.handlers = {"forward": self.forward}

    def serve(self) -> None:
        while True:
            msg = self.plane.recv(self.replica)
            if msg["op"] == "stop":
                break
            self.handle(msg)
        self.plane.flush()

    def handle(self, msg: dict):
        handler = self.handlers.get(msg["op"])
        if handler is None:
            raise EngineError(f"rank {self.rank}: unknown step operation {msg['op']!r}")
        return handler(msg)

    def forward(self, msg: dict) -> torch.Tensor | None:
        """Run one micro-batch; the sampling rank returns (rank 0) or sends its tokens."""
        self._maybe_fault()
        for sid in msg["free"]:
            self.tables.pop(sid, None)
            self.generators.pop(sid, None)
        seqs = []
        for sid, start, toks, new_blocks, *_ in msg["seqs"]:
            if start == 0:
                self.tables[sid] = []
            self.tables[sid].extend(new_blocks)
            seqs.append((sid, start, toks))
        wanted = [e[0] for e in msg["seqs"] if e[4]]
        logits = self.runner.run_tables(seqs, self.tables, wanted)
        if not self.is_sampler:
            return None
        out = torch.full((len(seqs),), -1, dtype=torch.long)
        for i, (sid, _, _, _, sample, temp, seed) in enumerate(msg["seqs"]):
            if sample:
                out[i] = self._sample(sid, logits[sid], temp, seed)
        if self.rank != 0:
            self.plane.send_tokens(self.replica, out)
        return out

    def _sample(self, sid: int, row: torch.Tensor, temperature: float, seed: int) -> int:
        if temperature <= 0:
            return int(row.argmax())
        gen = self.generators.get(sid)
        if gen is None:  # one stream per request: samples do not depend on batching or layout
            gen = self.generators[sid] = torch.Generator(device=row.device).manual_seed(seed)
        probs = torch.softmax(row.float() / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))

    def _maybe_fault(self) -> None:
        self.num_forward += 1
        f = self.config.fault
        if f and f.get("rank") == self.rank and self.num_forward > f.get("after_steps", 0):
            if f.get("action", "exit") == "hang":
                time.sleep(10 * self.config.timeout_s + 60)
            os._exit(int(f.get("exit_code", 17)))


# --------------------------------------------------------------------------------------------
# Driver side (rank 0)


class _ReplicaBlocks(BlockManager):
    """The driver's block allocation of one replica (the workers only follow it)."""

    def extend(self, seq_id, num_new_tokens: int) -> list[int]:
        """Like ``allocate``, but return the sequence's new block ids instead of slot tensors."""
        need = self.blocks_needed(seq_id, num_new_tokens)
        if need > len(self._free):
            raise KVCacheFull(f"sequence {seq_id!r} needs {need} more KV blocks, {len(self._free)} free")
        new = [self._free.pop() for _ in range(need)]
        self.block_tables.setdefault(seq_id, []).extend(new)
        self.num_tokens[seq_id] = self.num_tokens.get(seq_id, 0) + num_new_tokens
        return new


@dataclass
class _Req:
    """What the scheduler sees of a request (``id`` is the engine's sequence id as a string)."""

    id: str
    prompt_len: int
    output_len: int


@dataclass
class _Flight:
    replica: int
    step: Forward
    k: int                              # step number within the replica
    entries: list
    result: torch.Tensor | None = None
    work: object = None


class _PhaseClock:
    """Wall time of one replica by what it has in flight (the simulator's phase rule)."""

    def __init__(self, t0: float):
        self.last = t0
        self.live = dict.fromkeys(("prefill", "decode", "mixed"), 0)
        self.seconds = dict.fromkeys(PHASES, 0.0)

    def _advance(self, now: float) -> None:
        kinds = [k for k, n in self.live.items() if n]
        phase = "idle" if not kinds else kinds[0] if len(kinds) == 1 else "mixed"
        self.seconds[phase] += now - self.last
        self.last = now

    def start(self, kind: str, now: float) -> None:
        self._advance(now)
        self.live[kind] += 1

    def end(self, kind: str, now: float) -> None:
        self._advance(now)
        self.live[kind] -= 1


def _reason(e: BaseException) -> str:
    """Last meaningful line of a backend error, without gloo's source-file prefix and advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])
    if "Connection closed by peer" in text or "Connection reset by peer" in text:
        return "a peer closed its connection (the rank crashed or was killed)"
    if "timed out" in text.lower():
        return f"a rank did not respond within the timeout ({text[:120]})"
    return text[:300]


class Driver:
    """Rank 0's loop: schedule, send, execute its own part, collect tokens, write outputs."""

    def __init__(self, worker: StepWorker, items: list[BatchItem], config: EngineConfig,
                 num_blocks: int, tokenizer=None):
        self.worker, self.items, self.config, self.tokenizer = worker, items, config, tokenizer
        L = self.layout = config.layout
        self.plane = worker.plane
        self.replica_ranks, self.sampler = self.plane.replica_ranks, self.plane.sampler
        self.stopped = [False] * L.dp                # replicas told to stop (no work left)
        self.num_blocks = num_blocks
        self.scheds = [
            VllmScheduler(num_blocks, block_size=config.block_size, max_num_seqs=config.max_num_seqs,
                          max_num_batched_tokens=config.max_num_batched_tokens,
                          enable_chunked_prefill=config.enable_chunked_prefill, pipeline_depth=L.pp, replica=d)
            for d in range(L.dp)
        ]
        self.kv = [_ReplicaBlocks(num_blocks, config.block_size) for _ in range(L.dp)]
        self.seqs: dict[int, object] = {}         # sid -> scheduler Sequence
        self.tokens: dict[int, list[int]] = {}    # sid -> prompt + generated token ids
        self.first_token_s: dict[int, float] = {}
        self.pending_free: list[list[int]] = [[] for _ in range(L.dp)]
        self.num_sent = [0] * L.dp                # steps sent to each replica
        self.inflight: deque[_Flight] = deque()
        self.eos = set(config.eos_token_ids)
        self.rejected: list[tuple] = []
        self.finished: list[tuple[int, int]] = []  # (sid, num output tokens)
        self.output_ids: dict[str, list[int]] = {}
        self.num_steps = 0
        self.writer: OutputWriter | None = None
        self._t0 = self._t_end = 0.0
        reqs = [_Req(str(sid), it.prompt_len, it.max_tokens) for sid, it in enumerate(items)]
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

    # -- the loop -------------------------------------------------------------------------
    def run(self) -> dict:
        """Run every request to completion; returns the ``RunResult`` as a dict."""
        cfg = self.config
        if self.rejected and cfg.errors_output:
            append_errors(cfg.errors_output, self.rejected)
        self.writer = OutputWriter(cfg.output, append=cfg.append) if cfg.output else None
        bar = _Progress(len(self.seqs), f"seesaw run {self.layout}", cfg.progress)
        self._bar = bar
        self._t0 = time.perf_counter()
        self.clocks = [_PhaseClock(self._t0) for _ in range(self.layout.dp)]
        try:
            with bar:
                self._loop()
            self._stop_workers()
        except (RuntimeError, TimeoutError) as e:
            if isinstance(e, EngineError):
                raise EngineError(f"{e}; {self._saved_note()}") from None
            raise EngineError(f"run stopped on rank 0: {_reason(e)}; {self._saved_note()}") from None
        finally:
            if self.writer is not None:
                self.writer.close()
        return self.summary()

    def _saved_note(self) -> str:
        where = f" in {self.config.output}" if self.config.output else ""
        return f"{len(self.finished)} of {len(self.seqs)} requests finished and saved{where} (rerun with --resume)"

    def _loop(self) -> None:
        while True:
            self._issue()
            if not self.inflight:
                if any(s.has_unfinished() for s in self.scheds):
                    raise EngineError("the scheduler cannot make progress (KV cache too small?)")
                break
            self._complete(self.inflight.popleft())
        self._t_end = time.perf_counter()

    def _issue(self) -> None:
        # remote replicas first, so their steps overlap rank 0's own compute
        for d in reversed(range(self.layout.dp)):
            sched = self.scheds[d]
            while True:
                preempted = sched.num_preemptions
                step = sched.schedule()
                if sched.num_preemptions != preempted:
                    self._free_preempted(d)
                if step is None:
                    break
                self._launch(d, step)

    def _free_preempted(self, d: int) -> None:
        kv = self.kv[d]
        for sid in list(kv.block_tables):
            if self.seqs[sid].status is SeqStatus.WAITING:
                kv.free(sid)  # its KV is recomputed from the prompt + generated tokens later

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
        msg = {"op": "forward", "step": k, "free": self.pending_free[d], "seqs": entries}
        self.pending_free[d] = []
        flight = _Flight(d, step, k, entries)
        self.clocks[d].start(step.kind, time.perf_counter())
        self.num_sent[d] += 1
        self.num_steps += 1
        try:
            if self.plane.remote(d):
                self.plane.send(d, msg)
            if self.sampler[d] != 0:
                flight.result, flight.work = self.plane.recv_tokens(d, len(entries))
            if d == 0:
                out = self.worker.handle(msg)
                if out is not None:
                    flight.result = out
        except (RuntimeError, TimeoutError) as e:
            ranks = ", ".join(map(str, self.replica_ranks[d]))
            raise EngineError(f"step {k} of replica {d} (ranks {ranks}) failed: {_reason(e)}") from None
        self.inflight.append(flight)

    def _complete(self, flight: _Flight) -> None:
        d, cfg = flight.replica, self.config
        if flight.work is not None:
            try:
                flight.work.wait(timeout=timedelta(seconds=cfg.timeout_s))
            except (RuntimeError, TimeoutError) as e:
                who = f"rank {self.sampler[d]} (replica {d}, last stage)"
                if "timed out" in str(e).lower() or isinstance(e, TimeoutError):
                    raise EngineError(f"{who} did not return step {flight.k} within {cfg.timeout_s:.0f} s") from None
                raise EngineError(f"{who} failed before returning step {flight.k}: {_reason(e)}") from None
        now = time.perf_counter()
        self.clocks[d].end(flight.step.kind, now)
        tokens = flight.result.tolist()
        stopped = []
        for (sid, _, _, _, sample, _, _), tok in zip(flight.entries, tokens):
            if not sample:
                continue
            assert tok >= 0, (sid, tok)
            self.tokens[sid].append(tok)
            self.first_token_s.setdefault(sid, now - self._t0)
            if tok in self.eos and not self.items[sid].ignore_eos:
                stopped.append(str(sid))
        for seq in self.scheds[d].on_step_done(flight.step, stopped=stopped):
            sid = int(seq.req_id)
            self.kv[d].free(sid)
            self.pending_free[d].append(sid)
            self._write(sid, seq, now)
        if not self.scheds[d].has_unfinished() and self.scheds[d].num_in_flight == 0:
            self._stop_replica(d)  # idle ranks would otherwise wait on rank 0 up to the timeout

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
        timing = {"first_token_s": round(self.first_token_s.pop(sid, now - self._t0), 6),
                  "finished_s": round(now - self._t0, 6), "replica": seq.replica,
                  "num_preemptions": seq.num_preemptions}
        self.writer.write(response_record(item, out_ids, text, seq.finish_reason or "length",
                                          self.config.model_name, timing))

    def _stop_replica(self, d: int) -> None:
        if not self.stopped[d] and self.plane.remote(d):
            try:
                self.plane.send(d, {"op": "stop"})
            except (RuntimeError, TimeoutError) as e:
                raise EngineError(f"stopping replica {d} failed: {_reason(e)}") from None
        self.stopped[d] = True

    def _stop_workers(self) -> None:
        for d in range(self.layout.dp):
            self._stop_replica(d)
        try:
            self.plane.flush()
        except (RuntimeError, TimeoutError) as e:
            raise EngineError(f"stopping the workers failed: {_reason(e)}") from None

    # -- results --------------------------------------------------------------------------
    def summary(self) -> dict:
        elapsed = max(self._t_end - self._t0, 1e-9)
        for c in self.clocks:
            c._advance(self._t_end)  # a replica that finished early waits: idle
        phases = {k: round(sum(c.seconds[k] for c in self.clocks) / len(self.clocks), 6) for k in PHASES}
        n = len(self.finished)
        out_tokens = sum(k for _, k in self.finished)
        total = out_tokens + sum(self.items[sid].prompt_len for sid, _ in self.finished)
        result = RunResult(
            elapsed_time=elapsed, num_requests=n, total_num_tokens=total, total_output_tokens=out_tokens,
            requests_per_second=n / elapsed, tokens_per_second=total / elapsed,
            output_tokens_per_second=out_tokens / elapsed, layout=str(self.layout), policy="vllm",
            time_by_phase=phases,
            peak_kv_usage=max(s.blocks.peak_used / max(1, s.blocks.num_blocks) for s in self.scheds),
            num_preemptions=sum(s.num_preemptions for s in self.scheds),
            num_steps=self.num_steps, num_rejected=len(self.rejected), kv_blocks_per_replica=self.num_blocks,
            block_size=self.config.block_size, device=self.config.device, dtype=self.config.dtype,
        )
        out = result.model_dump()
        if self.config.return_token_ids:
            out["output_token_ids"] = self.output_ids
        return out


class _Progress:
    """Rich progress bar on stderr (silent when stderr is not a terminal or when disabled)."""

    def __init__(self, total: int, what: str, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            console = Console(stderr=True)
            if console.is_terminal:
                self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                    TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                    console=console, transient=True)
                self.task = self.bar.add_task(what, total=total)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)

    def __enter__(self):
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False


# --------------------------------------------------------------------------------------------
# KV sizing


def kv_blocks_for_budget(model, budget_bytes: float, block_size: int) -> int:
    """How many KV blocks of ``block_size`` tokens fit ``budget_bytes`` on this rank."""
    spec, shard = model.spec, model.shard
    per_block = KVCache.bytes_per_block(block_size, len(shard.layers), len(shard.kv_heads(spec)),
                                        spec.d_head, torch.tensor([], dtype=model.dtype).element_size())
    return int(budget_bytes // per_block)


def _rank_kv_budget(config: EngineConfig, device: torch.device) -> float:
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        # leave (1 - utilization) of the device, plus room for activations and logits
        act = config.max_num_batched_tokens * 64 * 1024
        return max(0.0, free - (1 - config.gpu_memory_utilization) * total - act)
    return config.kv_cache_bytes if config.kv_cache_bytes is not None else 1024**3


def _agree_num_blocks(config: EngineConfig, model, device, group, items: list[BatchItem] | None) -> int:
    """Every rank's KV block count: ``config.num_blocks``, or the smallest that fits any rank's
    budget, capped by what the workload could ever hold at once (rank 0 knows the workload)."""
    if config.num_blocks is not None:
        return config.num_blocks
    n = kv_blocks_for_budget(model, _rank_kv_budget(config, device), config.block_size)
    if items is not None:
        bs, dp = config.block_size, config.layout.dp
        need = [0] * dp
        reqs = [_Req(str(i), it.prompt_len, it.max_tokens) for i, it in enumerate(items)]
        for d, bucket in enumerate(split_across_replicas(reqs, dp)):
            need[d] = sum(-(-(r.prompt_len + r.output_len) // bs) for r in bucket)
        n = min(n, max(need) + max(need) // 100 + 1)  # + the scheduler's 1% admission watermark
    x = torch.tensor([n], dtype=torch.long)
    dist.all_reduce(x, op=dist.ReduceOp.MIN, group=group)
    if int(x) < 1:
        raise EngineError("no memory left for the KV cache on some rank; lower the model size or raise the budget")
    return int(x)


# --------------------------------------------------------------------------------------------
# Ranks and launch


def rank_main(rank: int, world_size: int, device, store, config: EngineConfig,
              requests=None) -> dict | None:
    """Everything one rank does in a run (process group already initialised). Rank 0 drives and
    returns the ``RunResult`` dict; the other ranks serve steps and return None. ``requests``
    (rank 0 only): the ``BatchItem`` list, or the path of a pickle of it."""
    from seesaw.engine.dist import TorchComm
    from seesaw.engine.weights import build_shard, load_checkpoint

    layout = config.layout
    if world_size != layout.world_size:
        raise EngineError(f"layout {layout} needs {layout.world_size} ranks, the job has {world_size}")
    device = torch.device(device)
    if store is None:
        store = load_checkpoint(config.model_dir, share_memory=False, name=config.model_name)
    comm = TorchComm(layout, rank, device, timeout_s=config.timeout_s)
    plane = ControlPlane(layout, rank, config.timeout_s)
    model = build_shard(store, layout, rank, comm, dtype=config.torch_dtype, device=device)
    items = None
    if rank == 0 and isinstance(requests, (str, os.PathLike)):
        with open(requests, "rb") as f:
            items = pickle.load(f)
    elif rank == 0:
        items = list(requests)
    num_blocks = _agree_num_blocks(config, model, device, comm.control_group, items)
    runner = ModelRunner(model, num_blocks, config.block_size, seed=config.seed)
    worker = StepWorker(runner, comm, plane, config, rank)
    if rank != 0:
        worker.serve()
        return None
    tokenizer = None
    if config.output:
        from seesaw.engine.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(config.model_dir)
    return Driver(worker, items, config, num_blocks, tokenizer).run()


def _spawned_rank(rank, world_size, device, store, config, requests_path):
    return rank_main(rank, world_size, device, store, config, requests_path)


def run_batch(store, items: list[BatchItem], config: EngineConfig, launch_timeout_s: float | None = None) -> dict:
    """Run ``items`` under ``config.layout`` on local ranks (spawned; gloo on CPU, NCCL on CUDA)
    and return rank 0's ``RunResult`` dict. ``store``: a ``WeightStore`` loaded in this process
    (shared with the ranks) or None (each rank loads ``config.model_dir``). Raises
    ``dist.RankError`` when a rank fails (rank 0's ``EngineError`` line is its ``last_line``)."""
    from seesaw.engine.dist import spawn

    backend = "nccl" if config.device == "cuda" else "gloo"
    with tempfile.TemporaryDirectory(prefix="seesaw-run-") as tmp:
        path = Path(tmp) / "requests.pkl"
        with path.open("wb") as f:
            pickle.dump(items, f, protocol=pickle.HIGHEST_PROTOCOL)
        results = spawn(_spawned_rank, config.layout.world_size, (store, config, str(path)), backend=backend,
                        timeout_s=launch_timeout_s or 10 * 24 * 3600.0, collective_timeout_s=config.timeout_s,
                        prefer_rank=0)
    return results[0]
