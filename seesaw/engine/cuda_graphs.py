"""Decode steps captured as CUDA graphs, one per batch-size bucket (as vLLM does).

A decode step of a small model is hundreds of short kernels; launched one by one from Python,
the GPU waits on the host. ``DecodeGraphs`` captures the whole forward pass of a decode-only
micro-batch of ``B`` sequences once per bucket ``B`` (1, 2, 4, 8, 16, 32, ... up to the largest
batch) into static input tensors, and replays it: a step of ``n`` sequences copies its inputs
into the first ``n`` rows of the bucket's tensors (device to device), points the other rows at
a scratch KV block that no sequence owns (they write and read only there), replays, and returns
the first ``n`` rows of the logits.

Used only where it is safe and tested (the GPU check, ``tests/test_cuda_graphs.py`` under the
``gpu`` marker): CUDA, one rank holding the whole model (no collectives inside the graph, no
re-shard that would replace the weights under it), the in-place paged FlashAttention path (the
portable path's shapes change with the context length). ``SEESAW_CUDA_GRAPHS=0`` turns it off.
A capture that fails turns it off for the run with one warning, and the step runs eagerly. The
CPU never takes this path.
"""

from __future__ import annotations

import logging
import os

import torch

from seesaw.engine.attention import AttnMetadata, attention_backend

__all__ = ["DecodeGraphs", "graphs_enabled", "BUCKETS"]

log = logging.getLogger(__name__)

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


def graphs_enabled(model, block_size: int) -> bool:
    """Whether a runner of ``model`` captures its decode steps (see the module docstring)."""
    shard = model.shard
    return (model.device.type == "cuda" and os.environ.get("SEESAW_CUDA_GRAPHS", "1") != "0"
            and shard.tp_size == 1 and shard.pp_size == 1
            and attention_backend(model.dtype, model.device, block_size) == "flash-paged")


class DecodeGraphs:
    """Captured decode steps of one runner. ``kv`` must hold one block more than the runner hands
    out: its last block is the padding rows' scratch block."""

    def __init__(self, model, kv, block_size: int, max_batch: int, max_context: int):
        self.model, self.kv, self.block_size = model, kv, block_size
        self.scratch = kv.k[0].shape[0] - 1
        self.width = -(-max_context // block_size)
        self.buckets = [b for b in BUCKETS if b < max_batch] + [max_batch]
        B, dev, i32 = max_batch, model.device, torch.int32
        self.ids = torch.zeros(B, dtype=torch.long, device=dev)
        self.positions = torch.zeros(B, dtype=torch.long, device=dev)
        self.slots = torch.full((B,), self.scratch * block_size, dtype=torch.long, device=dev)
        self.seq_lens = torch.ones(B, dtype=i32, device=dev)
        self.cu_query = torch.arange(B + 1, dtype=i32, device=dev)
        self.cu_keys = torch.arange(B + 1, dtype=i32, device=dev)
        self.table = torch.full((B, self.width), self.scratch, dtype=i32, device=dev)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.pool = None
        self.failed = False

    def bucket(self, n: int) -> int | None:
        return next((b for b in self.buckets if b >= n), None)

    def fits(self, meta: AttnMetadata) -> bool:
        """A decode-only micro-batch that a bucket holds."""
        return (not self.failed and max(meta.query_lens) == 1 and self.bucket(len(meta.query_lens)) is not None
                and meta.block_table.shape[1] <= self.width)

    def _meta(self, B: int) -> AttnMetadata:
        return AttnMetadata([1] * B, [1] * B, slot_mapping=self.slots[:B], block_table=self.table[:B],
                            cu_query=self.cu_query[:B + 1], seq_lens=self.seq_lens[:B], cu_keys=self.cu_keys[:B + 1])

    @torch.inference_mode()
    def capture(self, B: int) -> bool:
        """Capture the bucket of ``B`` sequences (after two eager runs on a side stream, which
        initialise what a first call initialises). False, and no more graphs, if it fails."""
        if B in self.graphs:
            return True
        meta = self._meta(B)
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    self.model(self.ids[:B], self.positions[:B], meta, self.kv, None)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                out = self.model(self.ids[:B], self.positions[:B], meta, self.kv, None)  # [B, V]
        except RuntimeError as e:  # e.g. an op that syncs with the host inside the capture
            log.warning("CUDA graph capture of a %d-sequence decode step failed (%s): decoding eagerly", B, e)
            self.failed = True
            return False
        self.pool = graph.pool()
        self.graphs[B], self.logits[B] = graph, out
        return True

    def capture_all(self, max_batch: int | None = None) -> int:
        """Capture every bucket up to ``max_batch`` (largest first, so the others reuse its memory);
        returns how many are captured."""
        for b in sorted((b for b in self.buckets if max_batch is None or b <= max_batch), reverse=True):
            if not self.capture(b):
                break
        return len(self.graphs)

    def run(self, token_ids: torch.Tensor, positions: torch.Tensor, meta: AttnMetadata) -> torch.Tensor | None:
        """Logits [n, V] of a decode micro-batch that ``fits``; None if its capture failed."""
        n = len(meta.query_lens)
        B = self.bucket(n)
        if B not in self.graphs and not self.capture(B):
            return None
        w = meta.block_table.shape[1]
        self.ids[:n].copy_(token_ids)
        self.positions[:n].copy_(positions)
        self.slots[:n].copy_(meta.slot_mapping)
        self.seq_lens[:n].copy_(meta.seq_lens)
        self.table[:n, :w].copy_(meta.block_table)
        if B > n:  # rows a larger step used: back to the scratch block, one token of context
            self.slots[n:B].fill_(self.scratch * self.block_size)
            self.seq_lens[n:B].fill_(1)
            self.table[n:B, 0].fill_(self.scratch)
        torch.cumsum(self.seq_lens[:B], 0, dtype=torch.int32, out=self.cu_keys[1:B + 1])
        self.graphs[B].replay()
        return self.logits[B][:n]
