"""Step-shaped execution of one rank's model shard over a paged KV cache, and reference generation.

A step is what a vLLM-style scheduler hands out: ``{seq_id: [new token ids]}`` -- a whole prompt,
a prefill chunk or a single decode token per sequence, mixed freely. ``ModelRunner.execute`` runs
it and returns ``{seq_id: next_token}``. The KV positions of a sequence are implicit: its new tokens
follow whatever it already has in the cache, so a chunked prefill is just several steps.

Under pipeline parallelism the step's sequences are split into micro-batches that flow through
the stages (receive from the previous stage, run local layers, send to the next); the last stage
samples and broadcasts the next tokens to every rank of the replica. With a ``LocalComm`` (single
process) the same code runs the whole model. ``generate`` is the single-process reference path.

A step's inputs (ids, positions, KV slots, block tables) are built once per micro-batch into
reused buffers (``step_inputs``) that every layer reads; on CUDA a one-rank runner replays its
decode steps from CUDA graphs (``cuda_graphs``); greedy tokens are chosen on the device.

``run_tables`` is the step worker's entry point (``seesaw.engine.worker.StepWorker``): one micro-batch whose block
tables the driver allocated and sent, so the runner keeps no bookkeeping of its own and the
scheduler's block counts are the engine's.
"""

from __future__ import annotations

import gc

import torch

from seesaw.engine.cuda_graphs import DecodeGraphs, graphs_enabled
from seesaw.engine.kv import BlockManager, KVCache, KVCacheFull
from seesaw.engine.sampling import greedy_tokens
from seesaw.engine.step_inputs import StepInputs
from seesaw.engine.model import LlamaShard

__all__ = ["ModelRunner", "split_micro_batches", "run_generation", "generate", "WARMUP_SEQ_LEN"]

WARMUP_SEQ_LEN = 512  # prompt length of the dummy sequences of ``ModelRunner.warmup``


def split_micro_batches(query_lens: list[int], num_micro_batches: int) -> list[list[int]]:
    """Split sequence indices into at most ``num_micro_batches`` contiguous groups with about
    equal token counts (every group non-empty)."""
    n = len(query_lens)
    m = max(1, min(num_micro_batches, n))
    total = sum(query_lens)
    groups, current, done = [], [], 0
    for i, q in enumerate(query_lens):
        current.append(i)
        done += q
        left_groups = m - len(groups) - 1
        left_seqs = n - i - 1
        target = total * (len(groups) + 1) / m
        if left_groups and (done >= target or left_seqs == left_groups):
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


class ModelRunner:
    """One rank's shard + KV cache + block tables; executes steps."""

    def __init__(self, model: LlamaShard, num_blocks: int, block_size: int = 16,
                 num_micro_batches: int = 1, seed: int = 0, max_graph_batch: int = 256):
        self.model = model
        self.comm = model.comm
        self.shard = model.shard
        self.blocks = BlockManager(num_blocks, block_size)
        graphs = graphs_enabled(model, block_size)  # CUDA only; one scratch block more for its padding rows
        self.kv = KVCache.for_model(model, num_blocks + graphs, block_size)
        self.inputs = StepInputs(model.device, block_size)  # the step's input tensors, reused
        self.graphs = DecodeGraphs(model, self.kv, block_size, max_graph_batch,
                                   model.spec.max_position_embeddings) if graphs else None
        self.num_micro_batches = num_micro_batches
        self.generator = torch.Generator(device=model.device).manual_seed(seed)
        self._sending: list = []  # send handles of the last micro-batch's activations, see run_tables
        # Everything alive now (the model, the loaded checkpoint's and the libraries' objects) into
        # the collector's permanent generation, once the model is set up: the steps'
        # short-lived tensors still trigger collections, which then no longer walk all of them
        # (perf, decode of 64 x 438 tokens: ~10% of the samples in the collector before, 0.01%
        # after). Objects freed later by reference counting are freed as before.
        gc.freeze()

    def finish_sends(self) -> None:
        """Wait until the next stage has taken every activation this rank sent."""
        for handle in self._sending:
            handle.wait()
        self._sending = []

    @property
    def device(self) -> torch.device:
        return self.model.device

    def free(self, seq_id) -> None:
        """Forget a finished (or preempted) sequence and release its KV blocks."""
        self.blocks.free(seq_id)

    def num_cached_tokens(self, seq_id) -> int:
        return self.blocks.num_tokens.get(seq_id, 0)

    def _allocate(self, step_tokens: dict) -> None:
        need = sum(self.blocks.blocks_needed(s, len(t)) for s, t in step_tokens.items())
        if need > self.blocks.num_free_blocks:
            raise KVCacheFull(f"step needs {need} KV blocks, {self.blocks.num_free_blocks} free")
        for s, t in step_tokens.items():
            self.blocks.allocate(s, len(t))

    @torch.inference_mode()
    def step_logits(self, step_tokens: dict[object, list[int]], all_tokens: bool = False,
                    num_micro_batches: int | None = None) -> dict[object, torch.Tensor]:
        """Run one step; on the last stage return fp32 logits per sequence: [V] for its last new
        token, or [n, V] for every new token when ``all_tokens``. Other stages return {}."""
        out: dict[object, torch.Tensor] = {}
        for ids, lens, y in self._step(step_tokens, all_tokens, num_micro_batches):
            out.update(zip(ids, y.split(lens)) if all_tokens else zip(ids, y))
        return out

    @torch.inference_mode()
    def _step(self, step_tokens: dict[object, list[int]], all_tokens: bool = False,
              num_micro_batches: int | None = None) -> list[tuple[list, list[int], torch.Tensor]]:
        """Run one step; on the last stage ``(seq ids, new token counts, logits)`` per micro-batch
        (last-token logits [N, V], or every token's [T, V] when ``all_tokens``)."""
        seq_ids = list(step_tokens)
        if not seq_ids:
            return []
        if any(len(t) == 0 for t in step_tokens.values()):
            raise ValueError("every sequence in a step needs at least one new token")
        self._allocate(step_tokens)
        query_lens = [len(step_tokens[s]) for s in seq_ids]
        groups = split_micro_batches(query_lens, num_micro_batches or self.num_micro_batches)
        out, pending = [], []
        for group in groups:
            ids = [seq_ids[i] for i in group]
            lens = [query_lens[i] for i in group]
            starts = [self.blocks.num_tokens[s] - n for s, n in zip(ids, lens)]
            y, handle = self._forward_group(ids, starts, [step_tokens[s] for s in ids],
                                            [self.blocks.block_tables[s] for s in ids],
                                            None if all_tokens else list(range(len(ids))))
            pending.append(handle)
            if y is not None:
                out.append((ids, lens, y))
        for handle in pending:
            if handle is not None:
                handle.wait()
        return out

    def _forward_group(self, ids: list, starts: list[int], tokens: list[list[int]], tables: list[list[int]],
                       logits_for: list[int] | None):
        """One micro-batch through this rank's layers: sequence ``ids[i]`` has ``starts[i]``
        tokens cached, new tokens ``tokens[i]`` and its blocks in ``tables[i]``. Returns
        (logits, None) on the last stage -- last-token logits [N, V] of the sequences at indices
        ``logits_for``, or every token's [T, V] when None -- and (None, send handle) on the
        other stages."""
        lens = [len(t) for t in tokens]
        first, last = self.shard.is_first, self.shard.is_last
        batch = self.inputs.build(tokens if first else None, starts, lens, tables, logits_for if last else None)
        if self.graphs is not None and self.graphs.fits(batch.meta):  # a whole-model decode step on CUDA
            y = self.graphs.run(batch.token_ids, batch.positions, batch.meta)
            if y is not None:
                return (y if batch.logits_rows is None else y[batch.logits_rows]), None
        if first:
            x = batch.token_ids
        else:
            x = self.comm.recv_prev((sum(lens), self.model.hidden_size), self.model.dtype)
        y = self.model(x, batch.positions, batch.meta, self.kv, batch.logits_rows)  # [T, H] or logits [N, V]
        if not last:
            return None, self.comm.send_next(y.contiguous())
        return y, None

    def run_tables(self, seqs: list[tuple], block_tables: dict[object, list[int]],
                   logits_for: list | None = None) -> dict[object, torch.Tensor]:
        """One micro-batch whose KV placement the caller decides (a driver that owns the block
        allocation). ``seqs``: ``(seq_id, start, new_tokens)`` -- the sequence already has
        ``start`` tokens in the cache and its new tokens take positions ``start..``;
        ``block_tables[seq_id]`` must cover them. The runner's own ``blocks`` are not used.
        On the last stage returns last-token fp32 logits [V] of the sequences in ``logits_for``
        (default: all); {} on other stages (after the activations are sent on)."""
        ids, y = self.run_tables_logits(seqs, block_tables, logits_for)
        return {} if y is None else dict(zip(ids, y))

    @torch.inference_mode()
    def run_tables_logits(self, seqs: list[tuple], block_tables: dict[object, list[int]],
                          logits_for: list | None = None) -> tuple[list, torch.Tensor | None]:
        """``run_tables`` with the logits as one tensor: (the ids of its rows in ``seqs`` order,
        last-token logits [N, V]) on the last stage, ([], None) on the others. A decode-only
        micro-batch replays a captured CUDA graph where the runner has them (``cuda_graphs``)."""
        if not seqs:
            return [], None
        ids = [s for s, _, _ in seqs]
        if min(len(toks) for _, _, toks in seqs) == 0:
            raise ValueError("every sequence in a step needs at least one new token")
        wanted = set(ids if logits_for is None else logits_for)
        rows = [i for i, s in enumerate(ids) if s in wanted]
        y, handle = self._forward_group(ids, [start for _, start, _ in seqs], [toks for _, _, toks in seqs],
                                        [block_tables[s] for s in ids], rows)
        if handle is not None:
            # A send completes only once the next stage posts its receive (gloo's send is a
            # rendezvous), i.e. once that stage has finished its previous micro-batch. Waiting
            # here would hold this stage idle meanwhile; wait for the previous micro-batch's send
            # instead (long taken by now), and keep this one in flight (the handle holds the
            # tensor).
            self.finish_sends()
            self._sending.append(handle)
        if y is None:
            return [], None
        return [ids[i] for i in rows], y

    @torch.inference_mode()
    def warmup(self, num_tokens: int, max_seq_len: int = WARMUP_SEQ_LEN, max_seqs: int | None = None) -> int:
        """Run a dummy prefill step of up to ``num_tokens`` tokens (prompts of at most
        ``max_seq_len``, at most ``max_seqs`` of them) through this rank's layers, as vLLM runs a
        dummy batch before serving; returns the tokens run (0: none fit the KV cache).

        The first step of a size on a rank pays for memory the process has never touched (a CPU
        rank faulted in ~9,000 fresh pages in its first 8192-token micro-batch, 140 ms against
        68 ms for the next one, and a pipeline pays each stage's first step in turn) and for lazy
        initialisation; a run's clock should see neither. No messages: a later stage gets zeros
        as its input activations instead of the previous stage's, so every stage warms up at
        once. Under TP every rank of the stage must call it (the layers' all-reduces run). The
        dummy K/V lands in blocks that no sequence holds yet; a sequence reads only slots it has
        written itself, so nothing of it is ever read."""
        bs = self.blocks.block_size
        max_seq_len = max(1, min(max_seq_len, self.model.spec.max_position_embeddings))
        lens: list[int] = []
        tables: dict[int, list[int]] = {}  # each dummy prompt's blocks, from block 0 on
        total = used = 0
        while total < num_tokens and (max_seqs is None or len(lens) < max_seqs):
            n = min(num_tokens - total, max_seq_len, (self.blocks.num_blocks - used) * bs)
            if n <= 0:
                break
            tables[len(lens)] = list(range(used, used + -(-n // bs)))
            used += len(tables[len(lens)])
            total += n
            lens.append(n)
        if not lens:
            return 0
        dev = self.device
        first, last = self.shard.is_first, self.shard.is_last
        batch = self.inputs.build([[0] * n for n in lens] if first else None, [0] * len(lens), lens,
                                  [tables[i] for i in range(len(lens))], list(range(len(lens))) if last else None)
        if first:
            x = batch.token_ids
        else:
            x = torch.zeros((total, self.model.hidden_size), dtype=self.model.dtype, device=dev)
        self.model(x, batch.positions, batch.meta, self.kv, batch.logits_rows)
        if self.graphs is not None:  # capture the decode steps now, before the run's clock
            self.graphs.capture_all(max_seqs)
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        return total

    def sample(self, logits: dict[object, torch.Tensor], temperature: dict[object, float]) -> dict:
        """Next token per sequence from last-token logits [V], drawn at its temperature (> 0; greedy
        rows are chosen on the device by ``execute`` and never come here)."""
        return {s: int(torch.multinomial(torch.softmax(row / temperature[s], dim=-1), 1, generator=self.generator))
                for s, row in logits.items()}

    def execute(self, step_tokens: dict[object, list[int]], temperature: float | dict = 0.0,
                num_micro_batches: int | None = None) -> dict[object, int]:
        """Run one step and return ``{seq_id: next_token}`` on every rank of the replica. Greedy
        rows are chosen on the device, with one host sync for the step."""
        groups = self._step(step_tokens, num_micro_batches=num_micro_batches)
        seq_ids = list(step_tokens)
        if self.shard.is_last:
            ids = torch.cat([greedy_tokens(y) for _, _, y in groups])  # [S] in step order (groups are contiguous)
            hot = {s: t for s in seq_ids
                   if (t := temperature.get(s, 0.0) if isinstance(temperature, dict) else temperature) > 0}
            if hot:
                rows = {s: y[i] for g_ids, _, y in groups for i, s in enumerate(g_ids) if s in hot}
                chosen = self.sample(rows, hot)
                for i, s in enumerate(seq_ids):
                    if s in chosen:
                        ids[i] = chosen[s]
        else:
            ids = torch.zeros(len(seq_ids), dtype=torch.long, device=self.device)
        if self.shard.pp_size > 1:
            ids = self.comm.broadcast_from_last_stage(ids.to(self.device))
        return dict(zip(seq_ids, ids.tolist()))


def run_generation(
    runner: ModelRunner, prompts: dict[object, list[int]], max_new_tokens: int,
    eos_token_id: int | list[int] | None = None, temperature: float = 0.0,
    prefill_chunk: int | None = None,
) -> dict[object, list[int]]:
    """Prefill every prompt (in chunks of ``prefill_chunk`` tokens if given), then decode all
    unfinished sequences together, one token per step, until ``max_new_tokens`` or an EOS.
    Returns the new tokens per sequence. Every rank of a replica calls it with the same prompts."""
    eos = set([eos_token_id] if isinstance(eos_token_id, int) else (eos_token_id or []))
    outputs: dict[object, list[int]] = {s: [] for s in prompts}
    if max_new_tokens <= 0 or not prompts:
        return outputs
    longest = max(len(p) for p in prompts.values())
    chunk = prefill_chunk or longest
    for start in range(0, longest, chunk):
        step = {s: p[start:start + chunk] for s, p in prompts.items() if p[start:start + chunk]}
        nxt = runner.execute(step, temperature)
        for s, tok in nxt.items():
            if start + chunk >= len(prompts[s]):  # this chunk held the prompt's last token
                outputs[s].append(tok)
    running = [s for s in prompts if outputs[s][-1] not in eos and max_new_tokens > 1]
    for s in prompts:
        if s not in running:
            runner.free(s)
    while running:
        nxt = runner.execute({s: [outputs[s][-1]] for s in running}, temperature)
        still = []
        for s in running:
            outputs[s].append(nxt[s])
            if nxt[s] not in eos and len(outputs[s]) < max_new_tokens:
                still.append(s)
            else:
                runner.free(s)
        running = still
    return outputs


def generate(
    model: LlamaShard, prompts: list[list[int]], max_new_tokens: int, greedy: bool = True,
    eos_token_id: int | list[int] | None = None, block_size: int = 16, temperature: float = 1.0,
    prefill_chunk: int | None = None, seed: int = 0,
) -> list[list[int]]:
    """Single-process reference generation of ``prompts`` (token id lists) with a paged KV cache
    sized to fit them all; greedy unless ``greedy=False`` (then sampled at ``temperature``).
    Returns the new tokens of each prompt."""
    longest = max(len(p) for p in prompts) + max_new_tokens
    num_blocks = len(prompts) * -(-longest // block_size)
    runner = ModelRunner(model, num_blocks, block_size, seed=seed)
    out = run_generation(runner, dict(enumerate(prompts)), max_new_tokens, eos_token_id,
                         0.0 if greedy else temperature, prefill_chunk)
    return [out[i] for i in range(len(prompts))]
