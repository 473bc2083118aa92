"""The step worker every engine rank runs (rank 0 included), and the warm-up before the clock.

``StepWorker`` executes the driver's step messages (``seesaw.engine.messages``) on one rank:
it keeps the block tables as the driver sends them, runs the model (``runner.ModelRunner``) and,
on the replica's sampling rank (last pipeline stage, TP rank 0), samples and sends the tokens
back. It dispatches on the message's type through ``handlers``; the Seesaw steps (re-shard, swaps)
are handlers that ``seesaw_worker.SeesawWorker`` adds. ``warm_up`` runs the workload's largest
prefill step once on every rank before the run's clock starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.distributed as dist

from seesaw.engine.config import EngineConfig, EngineError
from seesaw.engine.control import ControlPlane
from seesaw.engine.kv_sizing import replica_buckets
from seesaw.engine.messages import ForwardMsg, Message, StopMsg
from seesaw.engine.runner import WARMUP_SEQ_LEN, ModelRunner
from seesaw.engine.sampling import sample_rows

__all__ = ["StepWorker", "warmup_shape", "warm_up"]


class StepWorker:
    """One rank's executor: block tables as the driver sends them, the model runner, sampling.

    ``handlers`` maps a message type to a method; ``serve`` runs until a ``StopMsg``."""

    def __init__(self, runner: ModelRunner, comm, plane: ControlPlane, config: EngineConfig, rank: int):
        self.runner, self.comm, self.plane, self.config, self.rank = runner, comm, plane, config, rank
        self.replica = comm.dp_rank
        self.tables: dict[int, list[int]] = {}
        self.is_sampler = runner.shard.is_last and comm.tp_rank == 0
        self.num_forward = 0
        self.handlers: dict[type[Message], Callable] = {ForwardMsg: self.forward}

    def serve(self) -> None:
        while True:
            msg = self.plane.recv(self.replica)
            if isinstance(msg, StopMsg):
                break
            self.handle(msg)
        self.flush()

    def flush(self) -> None:
        """Wait for this rank's sends still in flight: activations to the next stage, then step
        messages and sampled tokens."""
        if self.runner is not None:
            self.runner.finish_sends()
        self.plane.flush()

    def handle(self, msg: Message):
        handler = self.handlers.get(type(msg))
        if handler is None:
            raise EngineError(f"rank {self.rank}: unknown step operation {msg.op!r}")
        for sid in msg.free:
            self.tables.pop(sid, None)
        if msg.sync:
            self.sync(msg.sync)
        return handler(msg)

    def sync(self, mode: str) -> None:
        """Agree with the replica on finished KV copies (only Seesaw workers copy KV)."""
        raise EngineError(f"rank {self.rank}: this worker has no KV copies to agree on")

    def forward(self, msg: ForwardMsg) -> torch.Tensor | None:
        """Run one micro-batch; the sampling rank returns (rank 0) or sends its tokens."""
        self._maybe_fault()
        seqs = []
        for sid, start, toks, new_blocks, *_ in msg.seqs:
            if start == 0:
                self.tables[sid] = []
            self.tables[sid].extend(new_blocks)
            seqs.append((sid, start, toks))
        wanted = [e[0] for e in msg.seqs if e[4]]
        rows, logits = self.runner.run_tables_logits(seqs, self.tables, wanted)
        if not self.is_sampler:
            return None
        out = torch.full((len(seqs),), -1, dtype=torch.long)
        if rows:
            picked = [e for e in msg.seqs if e[4]]  # the rows of ``logits``, in order
            tokens = sample_rows(logits, [e[5] for e in picked], [e[6] for e in picked],
                                 [e[1] + len(e[2]) for e in picked])
            out[[i for i, e in enumerate(msg.seqs) if e[4]]] = tokens.cpu()  # the step's one host sync
        if self.rank != 0:
            self.plane.send_tokens(self.replica, out)
        return out

    def _maybe_fault(self) -> None:
        self.num_forward += 1
        f = self.config.fault
        if f and f.get("rank") == self.rank and self.num_forward > f.get("after_steps", 0):
            if f.get("action", "exit") == "hang":
                time.sleep(10 * self.config.timeout_s + 60)
            os._exit(int(f.get("exit_code", 17)))


def warmup_shape(items: list, config: EngineConfig) -> tuple[int, int]:
    """(tokens, prompt length) of the warm-up step for this workload: the largest prefill step a
    DP replica can take (its ``max_num_seqs`` longest prompts, within ``max_num_batched_tokens``)
    in prompts of the longest prompt's length, at most ``WARMUP_SEQ_LEN``. A few short prompts
    warm up with a few short prompts: a full 8192-token step of SmolLM2 is seconds of CPU."""
    tokens = 0
    for bucket in replica_buckets(items, config.layout.dp):
        lens = sorted((r.prompt_len for r in bucket), reverse=True)[:config.max_num_seqs]
        tokens = max(tokens, min(config.max_num_batched_tokens, sum(lens)))
    if not tokens:
        return 0, 0
    return tokens, min(WARMUP_SEQ_LEN, max(it.prompt_len for it in items))


def warm_up(runner: ModelRunner, config: EngineConfig, group, items: list | None) -> float:
    """Every rank, before the run's clock starts: ``ModelRunner.warmup`` with the workload's
    largest prefill step (``warmup_shape``; rank 0 knows the workload and the ranks agree on it
    in ``group``, all ranks), then a barrier, so the clock starts on warm ranks together.
    Seconds taken (0 when ``config.warmup`` is off)."""
    if not config.warmup:
        return 0.0
    t0 = time.perf_counter()
    shape = torch.tensor(warmup_shape(items, config) if items is not None else (0, 0), dtype=torch.long)
    dist.all_reduce(shape, op=dist.ReduceOp.MAX, group=group)
    tokens, seq_len = (int(v) for v in shape)
    if tokens:
        runner.warmup(tokens, max_seq_len=seq_len, max_seqs=config.max_num_seqs)
    dist.barrier(group=group)
    return time.perf_counter() - t0
