"""What every engine rank runs: the run's configuration, the control plane, and the step worker.

``EngineConfig`` is everything a rank needs to know about a run (pickled to the ranks).
``ControlPlane`` carries the driver's step messages (rank 0 -> the ranks of a replica) and the
sampled tokens (the replica's sampling rank -> rank 0) as gloo broadcasts. ``StepWorker`` executes
the messages on one rank: block tables as the driver sends them, the model runner, sampling.
The driver loop itself (rank 0) is ``seesaw.engine.driver``; the Seesaw steps (re-shard, swaps)
are handlers that ``seesaw.engine.seesaw_driver.SeesawWorker`` adds to ``StepWorker.handlers``.

Every message is a dict ``{"op": name, ...}``; two keys apply to any op and are handled before it:
``"free"`` (sequence ids whose device blocks the driver released: drop their tables) and
``"sync"`` (``"poll"`` or ``"wait"``: the replica agrees on finished KV copies first, see
``SeesawWorker``).
"""

from __future__ import annotations

import os
import pickle
import re
import time
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from seesaw.engine.kv import KVCache
from seesaw.engine.runner import WARMUP_SEQ_LEN, ModelRunner
from seesaw.scheduling import split_across_replicas
from seesaw.core import ParallelConfig

__all__ = ["EngineConfig", "EngineError", "ControlPlane", "StepWorker", "PHASES", "reason", "kv_blocks_for_budget",
           "workload_blocks", "agree_num_blocks"]

PHASES = ("prefill", "decode", "mixed", "reshard", "swap_stall", "idle")  # as the simulator's
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class EngineError(RuntimeError):
    """The run cannot go on (a rank died or timed out, the scheduler stalled). One line."""


@dataclass
class EngineConfig:
    """Everything every rank needs to know about a run (pickled to the ranks).

    ``decode_layout`` set: a Seesaw run (prefill under ``layout``, decode under ``decode_layout``,
    KV buffered in a host pool of ``host_kv_blocks`` blocks per replica, or ``host_kv_bytes`` for
    the whole run; default 1 GiB, capped at what the workload can fill)."""

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
    step_trace: str = ""                   # JSONL file: one record per forward step (rank 0's clock)
    warmup: bool = True                    # a dummy max-size prefill on every rank before the clock
    # Seesaw
    decode_layout: ParallelConfig | None = None
    host_kv_bytes: float | None = None     # host KV pool of the whole run (split over DP replicas)
    host_kv_blocks: int | None = None      # or: host blocks per replica
    host_full_watermark: float = 1.0
    decode_low_watermark: float = 0.5

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def seesaw(self) -> bool:
        return self.decode_layout is not None

    @property
    def layout_name(self) -> str:
        return f"{self.layout}->{self.decode_layout}" if self.seesaw else str(self.layout)


def reason(e: BaseException) -> str:
    """Last meaningful line of a backend error, without gloo's source-file prefix and advice."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    text = re.sub(r"^\[[^\]]*\]\s*", "", lines[-1])
    if "Connection closed by peer" in text or "Connection reset by peer" in text:
        return "a peer closed its connection (the rank crashed or was killed)"
    if "timed out" in text.lower():
        return f"a rank did not respond within the timeout ({text[:120]})"
    return text[:300]


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
    buffer (8-byte length, then the bytes), with a second broadcast for what does not fit.

    ``layouts``: one layout, or every layout the run uses (Seesaw: prefill and decode, same DP
    and world size, so a replica's ranks are the same under both); the sampling rank (last stage,
    TP rank 0) may differ between them, so a result group is built for each, and ``use(d,
    layout)`` switches replica ``d`` after a re-shard."""

    def __init__(self, layouts, rank: int, timeout_s: float, capacity: int = 1 << 15):
        layouts = [layouts] if isinstance(layouts, ParallelConfig) else list(layouts)
        layout = self.layout = layouts[0]
        self.rank, self.capacity = rank, capacity
        self.timeout = timedelta(seconds=timeout_s)
        self.replica_ranks = [[layout.rank(d, t, p) for p in range(layout.pp) for t in range(layout.tp)]
                              for d in range(layout.dp)]
        self.sampler = [self.sampler_of(layout, d) for d in range(layout.dp)]
        self.msg_groups: list = []
        self.result_groups: dict[tuple[int, int], object] = {}
        for d in range(layout.dp):
            members = sorted({0, *self.replica_ranks[d]})
            g = dist.new_group(members, timeout=self.timeout, backend="gloo") if len(members) > 1 else None
            self.msg_groups.append(g if rank in members else None)
        for lay in layouts:
            for d in range(layout.dp):
                s = self.sampler_of(lay, d)
                if s == 0 or (d, s) in self.result_groups:
                    continue
                g = dist.new_group([0, s], timeout=self.timeout, backend="gloo")
                self.result_groups[d, s] = g if rank in (0, s) else None
        self._recv_buf = torch.empty(capacity, dtype=torch.uint8)
        self.pending: list[tuple] = []   # (work, buffers) of async broadcasts still in progress

    @staticmethod
    def sampler_of(layout: ParallelConfig, d: int) -> int:
        return layout.rank(d, 0, layout.pp - 1)

    def use(self, d: int, layout: ParallelConfig) -> None:
        """Replica ``d`` now runs ``layout`` (its sampling rank may have changed)."""
        self.sampler[d] = self.sampler_of(layout, d)

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
        group = self.result_groups[d, self.sampler[d]]
        self._keep(dist.broadcast(tokens, self.sampler[d], group=group, async_op=True), tokens)

    def recv_tokens(self, d: int, n: int):
        """Rank 0: post the receive of a step's ``n`` tokens; returns (buffer, work)."""
        buf = torch.empty(n, dtype=torch.long)
        group = self.result_groups[d, self.sampler[d]]
        return buf, dist.broadcast(buf, self.sampler[d], group=group, async_op=True)

    def gather(self, d: int, obj) -> list:
        """Every member of replica ``d``'s message group (rank 0 included, possibly with None):
        all members' ``obj`` in group-rank order (blocking). Without a group: ``[obj]``."""
        group = self.msg_groups[d]
        if group is None:
            return [obj]
        out: list = [None] * dist.get_world_size(group)
        dist.all_gather_object(out, obj, group=group)
        return out

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
        self.is_sampler = runner.shard.is_last and comm.tp_rank == 0
        self.num_forward = 0
        self.handlers = {"forward": self.forward}

    def serve(self) -> None:
        while True:
            msg = self.plane.recv(self.replica)
            if msg["op"] == "stop":
                break
            self.handle(msg)
        self.flush()

    def flush(self) -> None:
        """Wait for this rank's sends still in flight: activations to the next stage, then step
        messages and sampled tokens."""
        if self.runner is not None:
            self.runner.finish_sends()
        self.plane.flush()

    def handle(self, msg: dict):
        handler = self.handlers.get(msg["op"])
        if handler is None:
            raise EngineError(f"rank {self.rank}: unknown step operation {msg['op']!r}")
        for sid in msg.get("free", ()):
            self.tables.pop(sid, None)
        if msg.get("sync"):
            self.sync(msg["sync"])
        return handler(msg)

    def sync(self, mode: str) -> None:
        """Agree with the replica on finished KV copies (only Seesaw workers copy KV)."""
        raise EngineError(f"rank {self.rank}: this worker has no KV copies to agree on")

    def forward(self, msg: dict) -> torch.Tensor | None:
        """Run one micro-batch; the sampling rank returns (rank 0) or sends its tokens."""
        self._maybe_fault()
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
        for i, (sid, start, toks, _, sample, temp, seed) in enumerate(msg["seqs"]):
            if sample:
                out[i] = self._sample(logits[sid], temp, seed, start + len(toks))
        if self.rank != 0:
            self.plane.send_tokens(self.replica, out)
        return out

    @staticmethod
    def _sample(row: torch.Tensor, temperature: float, seed: int, position: int) -> int:
        """Greedy at temperature 0; otherwise a draw seeded by the request's seed and the sampled
        token's position, so samples depend on neither batching, nor layout, nor which rank
        samples (Seesaw moves the sampling rank at every re-shard), nor preemption."""
        if temperature <= 0:
            return int(row.argmax())
        gen = torch.Generator(device=row.device).manual_seed((seed << 24) + position)
        probs = torch.softmax(row.float() / temperature, dim=-1)
        return int(torch.multinomial(probs, 1, generator=gen))

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


# --------------------------------------------------------------------------------------------
# KV sizing (every rank agrees on its block count)


@dataclass
class _Len:
    id: str
    prompt_len: int
    output_len: int


def replica_buckets(items: list, dp: int) -> list[list[_Len]]:
    """The workload's requests (lengths only) as the driver splits them over ``dp`` replicas."""
    return split_across_replicas([_Len(str(i), it.prompt_len, it.max_tokens) for i, it in enumerate(items)], dp)


def kv_blocks_for_budget(model, budget_bytes: float, block_size: int, shard=None) -> int:
    """How many KV blocks of ``block_size`` tokens fit ``budget_bytes`` on this rank (holding
    ``shard``, default the model's own)."""
    spec, shard = model.spec, shard or model.shard
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


def workload_blocks(items: list, dp: int, block_size: int) -> list[int]:
    """KV blocks every request of each DP replica needs at full length, summed per replica."""
    need = [0] * dp
    for d, bucket in enumerate(replica_buckets(items, dp)):
        need[d] = sum(-(-(r.prompt_len + r.output_len) // block_size) for r in bucket)
    return need


def agree_num_blocks(config: EngineConfig, model, device, group, items: list | None,
                      shard=None) -> int:
    """Every rank's KV block count: ``config.num_blocks``, or the smallest that fits any rank's
    budget, capped by what the workload could ever hold at once (rank 0 knows the workload).
    ``shard``: size for this rank's shard under another layout (Seesaw's decode layout)."""
    if config.num_blocks is not None:
        return config.num_blocks
    n = kv_blocks_for_budget(model, _rank_kv_budget(config, device), config.block_size, shard)
    if items is not None:
        need = max(workload_blocks(items, config.layout.dp, config.block_size))
        n = min(n, need + need // 100 + 1)  # + the scheduler's 1% admission watermark
    x = torch.tensor([n], dtype=torch.long)
    dist.all_reduce(x, op=dist.ReduceOp.MIN, group=group)
    if int(x) < 1:
        raise EngineError("no memory left for the KV cache on some rank; lower the model size or raise the budget")
    return int(x)
