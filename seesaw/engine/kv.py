"""Paged KV cache of one rank: fixed-size blocks, block tables per sequence, allocate/free.

Device layout, per local layer: K and V tensors ``[num_blocks, block_size, kv_heads, head_dim]``
(the rank's KV heads only). A token's *slot* is ``block * block_size + offset``; viewing a layer's
tensor as ``[num_slots, kv_heads, head_dim]`` makes reads and writes one index op. The later host
pool is laid out ``[layer, k/v, kv_head, token, dim]``; ``read``/``write`` copy a (layer, head
range, token range) box, which is all the layout conversion needs.

``BlockManager`` is pure bookkeeping (no torch tensors beyond the slot indices it hands out). All
ranks of a replica see the same steps in the same order, so their managers stay identical without
exchanging block tables. ``ReplicaBlocks`` is the driver's manager of a replica: it hands out block
ids, which the step messages carry to the ranks.
"""

from __future__ import annotations

import torch

__all__ = ["KVCacheFull", "BlockManager", "ReplicaBlocks", "KVCache", "block_slots"]


class KVCacheFull(RuntimeError):
    """Not enough free blocks for the requested tokens; the caller should preempt or wait."""


class BlockManager:
    """Free list of block ids and one block table per sequence."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks={num_blocks} and block_size={block_size} must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self.block_tables: dict[object, list[int]] = {}
        self.num_tokens: dict[object, int] = {}  # tokens whose KV has a slot

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    def blocks_needed(self, seq_id, num_new_tokens: int) -> int:
        have = len(self.block_tables.get(seq_id, ()))
        total = self.num_tokens.get(seq_id, 0) + num_new_tokens
        return max(0, -(-total // self.block_size) - have)

    def can_allocate(self, seq_id, num_new_tokens: int) -> bool:
        return self.blocks_needed(seq_id, num_new_tokens) <= len(self._free)

    def allocate(self, seq_id, num_new_tokens: int) -> torch.Tensor:
        """Reserve slots for the next ``num_new_tokens`` tokens of ``seq_id``; returns them [n]."""
        need = self.blocks_needed(seq_id, num_new_tokens)
        if need > len(self._free):
            raise KVCacheFull(
                f"sequence {seq_id!r} needs {need} more KV blocks, {len(self._free)} free"
            )
        table = self.block_tables.setdefault(seq_id, [])
        table.extend(self._free.pop() for _ in range(need))
        start = self.num_tokens.get(seq_id, 0)
        self.num_tokens[seq_id] = start + num_new_tokens
        return self.slots(seq_id, start, start + num_new_tokens)

    def slots(self, seq_id, start: int, end: int) -> torch.Tensor:
        """Slot indices [end - start] of token positions ``start..end-1`` of ``seq_id``."""
        return block_slots(self.block_tables[seq_id], start, end, self.block_size)

    def free(self, seq_id) -> None:
        """Return a sequence's blocks to the free list (no-op for an unknown sequence)."""
        self._free.extend(reversed(self.block_tables.pop(seq_id, [])))
        self.num_tokens.pop(seq_id, None)


class ReplicaBlocks(BlockManager):
    """The driver's block allocation of one replica: block ids rather than slots (the workers
    only follow it, through the block ids in the step messages)."""

    def extend(self, seq_id, num_new_tokens: int) -> list[int]:
        """Like ``allocate``, but return the sequence's new block ids instead of slot tensors."""
        need = self.blocks_needed(seq_id, num_new_tokens)
        if need > len(self._free):
            raise KVCacheFull(f"sequence {seq_id!r} needs {need} more KV blocks, {len(self._free)} free")
        new = [self._free.pop() for _ in range(need)]
        self.block_tables.setdefault(seq_id, []).extend(new)
        self.num_tokens[seq_id] = self.num_tokens.get(seq_id, 0) + num_new_tokens
        return new

    def reserve(self, seq_id, num_tokens: int, num_blocks: int) -> list[int]:
        """A new table of ``num_blocks`` blocks for a sequence that arrives with ``num_tokens``
        tokens of KV (a swap-in; the scheduler also counts the block its next token needs)."""
        assert seq_id not in self.block_tables and num_blocks * self.block_size >= num_tokens
        if num_blocks > len(self._free):
            raise KVCacheFull(f"sequence {seq_id!r} needs {num_blocks} KV blocks, {len(self._free)} free")
        self.block_tables[seq_id] = [self._free.pop() for _ in range(num_blocks)]
        self.num_tokens[seq_id] = num_tokens
        return list(self.block_tables[seq_id])


def block_slots(table: list[int], start: int, end: int, block_size: int) -> torch.Tensor:
    """Slot indices [end - start] of token positions ``start..end-1`` of a sequence whose blocks
    are ``table`` (slot = block * block_size + offset in the block)."""
    bs = block_size
    if end - start == 1:  # a decoding sequence: one slot, no tensor arithmetic (per-step cost)
        return torch.tensor([table[start // bs] * bs + start % bs], dtype=torch.long)
    pos = torch.arange(start, end, dtype=torch.long)
    return torch.tensor(table, dtype=torch.long)[pos // bs] * bs + pos % bs


class KVCache:
    """K and V tensors for the layers ``layers`` of one rank."""

    def __init__(
        self, layers: range, num_blocks: int, block_size: int, num_kv_heads: int, head_dim: int,
        dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
    ):
        self.layers = layers
        self.block_size = block_size
        shape = (num_blocks, block_size, num_kv_heads, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in layers]

    @classmethod
    def for_model(cls, model, num_blocks: int, block_size: int) -> "KVCache":
        """A cache shaped for ``model`` (a ``LlamaShard``): its layers and its KV heads."""
        spec, shard = model.spec, model.shard
        return cls(shard.layers, num_blocks, block_size, len(shard.kv_heads(spec)), spec.d_head,
                   dtype=model.dtype, device=model.device)

    @staticmethod
    def bytes_per_block(block_size: int, num_layers: int, num_kv_heads: int, head_dim: int,
                        dtype_bytes: int) -> int:
        return 2 * num_layers * block_size * num_kv_heads * head_dim * dtype_bytes  # K and V

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(K, V) of global layer index ``layer``, each [num_blocks, block_size, Hkv, d]."""
        i = layer - self.layers.start
        return self.k[i], self.v[i]

    def read(self, layer: int, slots: torch.Tensor, heads: slice = slice(None)):
        """Copy out K and V of ``slots`` [n] for ``heads``: two [n, h, d] tensors."""
        k, v = self.layer(layer)
        d = k.shape[-1]
        slots = slots.to(k.device)
        return k.view(-1, k.shape[2], d)[slots, heads].clone(), v.view(-1, v.shape[2], d)[slots, heads].clone()

    def write(self, layer: int, slots: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor,
              heads: slice = slice(None)) -> None:
        """Copy K and V [n, h, d] into ``slots`` [n] for ``heads``."""
        k, v = self.layer(layer)
        d = k.shape[-1]
        slots = slots.to(k.device)
        k.view(-1, k.shape[2], d)[slots, heads] = k_new.to(k)
        v.view(-1, v.shape[2], d)[slots, heads] = v_new.to(v)
