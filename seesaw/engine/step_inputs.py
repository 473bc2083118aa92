"""A step's model inputs, built once per step into tensors that live as long as the runner.

``StepInputs.build`` turns the step's sequences (new token ids, tokens already cached, block
table) into the token ids, positions, KV slots, logits rows and the ``AttnMetadata`` that every
layer reads. The integers are computed with numpy straight into two host buffers (int64: ids,
positions, slots, rows; int32: query offsets, context lengths, block table) that grow when a step
needs more and are otherwise reused; on CUDA they are pinned, and each reaches the device in one
asynchronous copy into a device buffer that is reused too, so a step costs two copies and no
allocation of its own. The tensors handed out are views of those buffers: valid until the next
``build`` (the runner runs one step at a time; a copy into a buffer is ordered after the kernels
of the previous step on the same stream, and the host side waits for the previous copy before it
writes the host buffer again).
"""

from __future__ import annotations

import numpy as np
import torch

from seesaw.engine.attention import AttnMetadata

__all__ = ["StepInputs", "StepBatch"]


class StepBatch:
    """One step's inputs (views into ``StepInputs`` buffers)."""

    __slots__ = ("token_ids", "positions", "logits_rows", "meta")

    def __init__(self, token_ids, positions, logits_rows, meta: AttnMetadata):
        self.token_ids = token_ids  # [T] long, or None when the tokens are not ours (later stages)
        self.positions = positions  # [T] long
        self.logits_rows = logits_rows  # [N] long or None (every row)
        self.meta = meta


class _Buffer:
    """A host buffer (pinned on CUDA) and its device twin, grown by doubling."""

    def __init__(self, dtype: torch.dtype, device: torch.device):
        self.dtype, self.device = dtype, device
        self.host = self.dev = None
        self.copied = None  # CUDA event of the last host-to-device copy
        self.reserve(4096)

    def reserve(self, n: int) -> None:
        if self.host is not None and self.host.numel() >= n:
            return
        size = max(n, 2 * (0 if self.host is None else self.host.numel()))
        pin = self.device.type == "cuda"
        self.host = torch.empty(size, dtype=self.dtype, pin_memory=pin)
        self.dev = self.host if self.device.type == "cpu" else torch.empty(size, dtype=self.dtype, device=self.device)
        self.copied = None

    def numpy(self) -> np.ndarray:
        if self.copied is not None:
            self.copied.synchronize()  # the previous step's copy has read the host buffer
        return self.host.numpy()

    def upload(self, n: int) -> torch.Tensor:
        if self.dev is self.host:
            return self.dev
        self.dev[:n].copy_(self.host[:n], non_blocking=True)
        self.copied = torch.cuda.Event()
        self.copied.record()
        return self.dev


class StepInputs:
    """Reusable input buffers of one runner; see the module docstring."""

    def __init__(self, device: torch.device, block_size: int):
        self.device = torch.device(device)
        self.block_size = block_size
        self.i64 = _Buffer(torch.long, self.device)
        self.i32 = _Buffer(torch.int32, self.device)

    def build(self, tokens: list[list[int]] | None, starts: list[int], query_lens: list[int],
              tables: list[list[int]], logits_for: list[int] | None) -> StepBatch:
        """Inputs of a step whose sequence ``i`` has ``starts[i]`` tokens cached, ``query_lens[i]``
        new ones (ids ``tokens[i]``; None on a stage that receives activations) and its blocks in
        ``tables[i]``; ``logits_for``: indices of the sequences whose last token's logits are
        wanted (None: every token's)."""
        bs = self.block_size
        S, T = len(query_lens), sum(query_lens)
        lens = np.asarray(query_lens, dtype=np.int64)
        ctx = np.asarray(starts, dtype=np.int64) + lens
        width = int(-(-ctx.max() // bs))
        cu = np.zeros(S + 1, dtype=np.int64)
        np.cumsum(lens, out=cu[1:])
        n_rows = 0 if logits_for is None else len(logits_for)

        # int32: cu_query [S+1], seq_lens [S], cu_keys [S+1], block table [S, width]
        o_seq, o_cuk, o_tab = S + 1, 2 * S + 1, 3 * S + 2
        self.i32.reserve(o_tab + S * width)
        h32 = self.i32.numpy()
        h32[:S + 1] = cu
        h32[o_seq:o_cuk] = ctx
        h32[o_cuk] = 0
        np.cumsum(ctx, out=h32[o_cuk + 1:o_tab])
        tab = h32[o_tab:o_tab + S * width].reshape(S, width)
        tab[:] = 0
        for i, (t, nb) in enumerate(zip(tables, (-(-ctx // bs)).tolist())):
            tab[i, :nb] = t[:nb]

        # int64: token ids [T], positions [T], slots [T], logits rows [N]
        o_pos, o_slot, o_rows = T, 2 * T, 3 * T
        self.i64.reserve(o_rows + n_rows)
        h64 = self.i64.numpy()
        seq_of = np.repeat(np.arange(S), lens)  # [T]
        pos = h64[o_pos:o_slot]
        np.subtract(np.arange(T), np.repeat(cu[:-1] - ctx + lens, lens), out=pos)
        h64[o_slot:o_rows] = tab[seq_of, pos // bs].astype(np.int64) * bs + pos % bs
        if tokens is not None:
            h64[:T] = [t for toks in tokens for t in toks]
        if n_rows:
            h64[o_rows:o_rows + n_rows] = cu[1:][np.asarray(logits_for, dtype=np.int64)] - 1

        d32 = self.i32.upload(o_tab + S * width)
        d64 = self.i64.upload(o_rows + n_rows)
        meta = AttnMetadata(list(query_lens), ctx.tolist(), slot_mapping=d64[o_slot:o_rows],
                            block_table=d32[o_tab:o_tab + S * width].view(S, width), cu_query=d32[:S + 1],
                            seq_lens=d32[o_seq:o_cuk], cu_keys=d32[o_cuk:o_tab])
        return StepBatch(d64[:T] if tokens is not None else None, d64[o_pos:o_slot],
                         d64[o_rows:o_rows + n_rows] if n_rows else None, meta)
