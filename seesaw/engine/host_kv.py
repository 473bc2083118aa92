"""Host KV pool in shared memory, its block allocator, and the swaps that convert layouts.

One pool per DP replica holds the KV of prefilled sequences between the prefill layout ``c_p`` and
the decode layout ``c_d``. Its tensor is laid out by blocks of ``block_size`` tokens:

    data[num_blocks, num_layers, 2 (k/v), num_kv_heads, block_size, head_dim]

so a block is self-contained (all layers and heads of ``block_size`` tokens, the unit the
scheduler counts), a PP stage under ``c_p`` writes ``data[blocks, its layers]`` (all its heads) and
a TP rank under ``c_d`` reads ``data[blocks, :, :, its heads]`` (all its layers). Inside a block
the (head, token, dim) order is head-major as in the paper: a rank's heads are contiguous runs of
``block_size * head_dim`` values. The device cache is token-major (``[slots, kv_heads, head_dim]``,
``seesaw.engine.kv``), so the transpose happens inside the copy: there is no separate conversion
pass and no intermediate copy in another layout.

Shared memory: ``HostKVPool(...)`` allocates an anonymous shared tensor (handed to ranks spawned
by ``seesaw.engine.dist.spawn`` through torch's multiprocessing pickler, freed with the last
process); ``HostKVPool(..., name="x")`` creates ``/dev/shm/x`` instead, which independent processes
(``torchrun``) open with ``HostKVPool.attach("x")``; the creator removes it with ``unlink()``.

``HostBlockAllocator`` hands out host block ids and keeps one host block table per sequence. Like
``kv.BlockManager`` it is plain bookkeeping: every rank of a replica makes the same calls in the
same order, so their tables agree without messages (or the driver allocates and sends the ids).

Assumptions: host and device block sizes may differ (a token ``j`` of a sequence lives in host
block ``table[j // block_size]`` at offset ``j % block_size``); each sequence owns its host
blocks, so the tail of its last block may hold padding written by ``swap_out``. When ``tp`` exceeds
the KV heads, the ranks sharing a head hold identical K/V; ``kv_writer`` picks the lowest of them
to write it. The others then read what a peer wrote, which is safe when every read follows the
replica's agreement that the swap-out finished (``prefetch.ReplicaCompletions``) or a barrier (a
re-shard); a driver that cannot promise that lets every rank write.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import torch

from seesaw.engine.kv import KVCache
from seesaw.engine.model import Shard
from seesaw.core import ModelSpec

__all__ = [
    "HostKVFull",
    "HostKVPool",
    "HostBlockAllocator",
    "kv_box",
    "kv_writer",
    "swap_out",
    "swap_in",
    "swap_out_many",
    "swap_in_many",
]

_SHM_DIR = Path("/dev/shm") if Path("/dev/shm").is_dir() else None


class HostKVFull(RuntimeError):
    """Not enough free host blocks; the scheduler's host-block count should have prevented it."""


# --------------------------------------------------------------------------------------------
# Pool


class HostKVPool:
    """KV blocks of every layer and KV head on the host, in shared memory (see module docstring)."""

    def __init__(self, num_blocks: int, num_layers: int, num_kv_heads: int, block_size: int,
                 head_dim: int, dtype: torch.dtype = torch.float32, name: str | None = None,
                 _data: torch.Tensor | None = None):
        if min(num_blocks, num_layers, num_kv_heads, block_size, head_dim) <= 0:
            raise ValueError("host KV pool dimensions must be positive")
        self.num_blocks, self.num_layers, self.num_kv_heads = num_blocks, num_layers, num_kv_heads
        self.block_size, self.head_dim, self.dtype = block_size, head_dim, dtype
        self.name = name
        self._owner = _data is None and name is not None
        shape = self.shape
        if _data is not None:
            self.data = _data.view(shape)
        elif name is None:
            self.data = torch.zeros(shape, dtype=dtype).share_memory_()
        else:
            path = self.path_of(name)
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)  # never clobber another pool
            try:
                os.ftruncate(fd, self.nbytes)  # sparse zeros
            finally:
                os.close(fd)
            self.data = self._map(path, shape, dtype)

    @classmethod
    def for_model(cls, spec: ModelSpec, num_blocks: int, block_size: int,
                  dtype: torch.dtype = torch.float32, name: str | None = None) -> "HostKVPool":
        return cls(num_blocks, spec.num_hidden_layers, spec.num_key_value_heads, block_size,
                   spec.d_head, dtype, name)

    @classmethod
    def attach(cls, name: str, num_blocks: int, num_layers: int, num_kv_heads: int,
               block_size: int, head_dim: int, dtype: torch.dtype = torch.float32) -> "HostKVPool":
        """Map the pool another process created under ``name`` (same dimensions)."""
        path = cls.path_of(name)
        if not path.is_file():
            raise FileNotFoundError(f"no host KV pool named {name!r} ({path})")
        shape = (num_blocks, num_layers, 2, num_kv_heads, block_size, head_dim)
        return cls(num_blocks, num_layers, num_kv_heads, block_size, head_dim, dtype, name,
                   _data=cls._map(path, shape, dtype))

    @staticmethod
    def path_of(name: str) -> Path:
        if "/" in name or not name:
            raise ValueError(f"host KV pool name {name!r} must be a plain file name")
        if _SHM_DIR is None:
            raise OSError("named host KV pools need /dev/shm; use an anonymous pool (name=None)")
        return _SHM_DIR / name

    @staticmethod
    def _map(path: Path, shape, dtype) -> torch.Tensor:
        numel = 1
        for s in shape:
            numel *= s
        return torch.from_file(str(path), shared=True, size=numel, dtype=dtype).view(shape)

    def unlink(self) -> None:
        """Remove a named pool's file (mappings stay valid until dropped); no-op otherwise."""
        if self._owner and self.name is not None:
            self.path_of(self.name).unlink(missing_ok=True)
            self._owner = False

    def __reduce__(self):
        dims = (self.num_blocks, self.num_layers, self.num_kv_heads, self.block_size, self.head_dim, self.dtype)
        if self.name is not None:  # re-open by name in the receiving process
            return (HostKVPool.attach, (self.name, *dims))
        return (_from_shared, (dims, self.data))  # torch's pickler passes the shared buffer

    # -- sizes ------------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return (self.num_blocks, self.num_layers, 2, self.num_kv_heads, self.block_size, self.head_dim)

    @property
    def bytes_per_block(self) -> int:
        elem = self.dtype.itemsize
        return KVCache.bytes_per_block(self.block_size, self.num_layers, self.num_kv_heads, self.head_dim, elem)

    @property
    def nbytes(self) -> int:
        return self.num_blocks * self.bytes_per_block

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)


def _from_shared(dims, data) -> HostKVPool:
    return HostKVPool(*dims, _data=data)


# --------------------------------------------------------------------------------------------
# Allocator


class HostBlockAllocator:
    """Free list of host block ids and one host block table per sequence."""

    def __init__(self, num_blocks: int, block_size: int):
        if num_blocks <= 0 or block_size <= 0:
            raise ValueError(f"num_blocks={num_blocks} and block_size={block_size} must be positive")
        self.num_blocks, self.block_size = num_blocks, block_size
        self._free = list(range(num_blocks - 1, -1, -1))  # pop() hands out 0, 1, 2, ...
        self.block_tables: dict[object, list[int]] = {}
        self.num_tokens: dict[object, int] = {}

    @property
    def num_free_blocks(self) -> int:
        return len(self._free)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - len(self._free)

    def allocate(self, seq_id, num_tokens: int) -> list[int]:
        """Host blocks for the ``num_tokens`` tokens of ``seq_id`` (its KV so far); returns its
        block table. A sequence holds one table at a time: free it before allocating again."""
        if seq_id in self.block_tables:
            raise ValueError(f"sequence {seq_id!r} already holds host blocks")
        need = -(-num_tokens // self.block_size)
        if need > len(self._free):
            raise HostKVFull(f"sequence {seq_id!r} needs {need} host KV blocks, {len(self._free)} free")
        table = [self._free.pop() for _ in range(need)]
        self.block_tables[seq_id] = table
        self.num_tokens[seq_id] = num_tokens
        return table

    def free(self, seq_id) -> None:
        """Return a sequence's host blocks (no-op for an unknown sequence): after its swap-in
        completes on every rank, or when it finishes."""
        self._free.extend(reversed(self.block_tables.pop(seq_id, [])))
        self.num_tokens.pop(seq_id, None)


# --------------------------------------------------------------------------------------------
# Which part of the pool a rank touches


def kv_box(spec: ModelSpec, shard: Shard) -> tuple[range, range]:
    """(global layers, global KV heads) whose KV the rank holding ``shard`` has on its device."""
    return shard.layers, shard.kv_heads(spec)


def kv_writer(spec: ModelSpec, shard: Shard) -> bool:
    """Whether this rank writes its KV heads on swap-out: False for all but the lowest TP rank
    sharing a replicated head (tp > num_key_value_heads), which hold the same K/V."""
    per_head = shard.tp_size // spec.num_key_value_heads
    return per_head <= 1 or shard.tp_rank % per_head == 0


# --------------------------------------------------------------------------------------------
# Copies


def _check(kv_cache: KVCache, pool: HostKVPool, seqs: list[tuple[torch.Tensor, list[int]]],
           layers: Iterable[int], heads: range) -> list[int]:
    layers = list(layers)
    for slots, blocks in seqs:
        if len(slots) > len(blocks) * pool.block_size:
            raise ValueError(f"{len(slots)} tokens do not fit in {len(blocks)} host blocks of {pool.block_size}")
    if any(layer not in kv_cache.layers for layer in layers):
        raise ValueError(f"layers {layers} are not all in the device cache's {kv_cache.layers}")
    h_dev = kv_cache.k[0].shape[2]
    if len(heads) != h_dev or heads.step != 1 or heads.stop > pool.num_kv_heads:
        raise ValueError(f"heads {heads} do not match the device cache's {h_dev} KV heads")
    return layers


def _host_positions(seqs: list[tuple[torch.Tensor, list[int]]], block_size: int
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """The host blocks the sequences use (concatenated), their device slots padded to whole
    blocks (a sequence's last slot repeated, so every block moves as one [block_size, heads, dim]
    piece), and the rows of those padded slots that are real tokens (None when none is padding)."""
    blocks, padded, spans = [], [], []
    offset, any_pad = 0, False
    for slots, host_blocks in seqs:
        n = len(slots)
        nb = -(-n // block_size)
        pad = nb * block_size - n
        blocks.extend(host_blocks[:nb])
        padded.append(torch.cat([slots, slots[-1:].expand(pad)]) if pad else slots)
        spans.append((offset, n))
        offset += nb * block_size
        any_pad = any_pad or pad > 0
    cat = padded[0] if len(padded) == 1 else torch.cat(padded)
    rows = torch.cat([torch.arange(o, o + n) for o, n in spans]) if any_pad else None
    return torch.tensor(blocks, dtype=torch.long), cat, rows


@torch.inference_mode()
def swap_out_many(kv_cache: KVCache, seqs: list[tuple[torch.Tensor, list[int]]], host_pool: HostKVPool,
                  layers: Iterable[int], heads: range) -> int:
    """Copy several sequences' KV from the device into their host blocks in one pass: ``seqs`` is
    ``[(device slots [n] of token positions 0..n-1, host block ids), ...]``; for global
    ``layers`` and the global KV ``heads`` the device cache holds (in order). One gather and one
    scatter per layer and K/V for the whole batch, so many short sequences cost about what one
    long one does. Returns the bytes of KV copied (padding excluded)."""
    seqs = [(slots, blocks) for slots, blocks in seqs if len(slots)]
    if not seqs:
        return 0
    layers = _check(kv_cache, host_pool, seqs, layers, heads)
    B, d, h = host_pool.block_size, host_pool.head_dim, len(heads)
    blocks, slots, _ = _host_positions(seqs, B)
    nb = len(blocks)
    for layer in layers:
        for kv, dev in enumerate(kv_cache.layer(layer)):
            x = dev.view(-1, h, d)[slots.to(dev.device)]  # [nb * B, h, d] gathered on the device
            x = x.view(nb, B, h, d).transpose(1, 2).to("cpu", host_pool.dtype)  # [nb, h, B, d] head-major
            host_pool.data[:, layer, kv][blocks, heads.start:heads.stop] = x
    n = sum(len(slots) for slots, _ in seqs)
    return 2 * len(layers) * n * h * d * host_pool.data.element_size()


@torch.inference_mode()
def swap_in_many(host_pool: HostKVPool, seqs: list[tuple[list[int], torch.Tensor]], kv_cache: KVCache,
                 layers: Iterable[int], heads: range, non_blocking: bool = False) -> int:
    """Copy several sequences' KV from their host blocks into device slots in one pass: ``seqs``
    is ``[(host block ids, device slots [n] of token positions 0..n-1), ...]``; for global
    ``layers`` and the global KV ``heads`` the device cache holds (a replicated head reads the
    same host head as its peers). Returns the bytes copied."""
    seqs = [(slots, blocks) for blocks, slots in seqs if len(slots)]
    if not seqs:
        return 0
    layers = _check(kv_cache, host_pool, seqs, layers, heads)
    B, d, h = host_pool.block_size, host_pool.head_dim, len(heads)
    blocks, _, rows = _host_positions(seqs, B)
    nb = len(blocks)
    device = kv_cache.k[0].device
    slots = torch.cat([s for s, _ in seqs]).to(device) if len(seqs) > 1 else seqs[0][0].to(device)
    rows = rows.to(device) if rows is not None else None
    for layer in layers:
        for kv, dev in enumerate(kv_cache.layer(layer)):
            x = host_pool.data[:, layer, kv][blocks, heads.start:heads.stop]  # [nb, h, B, d]
            if dev.device.type == "cuda" and non_blocking:
                x = x.pin_memory()  # a pageable source would make the copy synchronous
            x = x.to(dev.device, non_blocking=non_blocking)
            x = x.transpose(1, 2).reshape(nb * B, h, d)  # token-major, padded to whole blocks
            if rows is not None:
                x = x[rows]
            dev.view(-1, h, d)[slots] = x.to(dev.dtype)
    return 2 * len(layers) * len(slots) * h * d * host_pool.data.element_size()


def swap_out(kv_cache: KVCache, seq_device_slots: torch.Tensor, host_pool: HostKVPool,
             host_block_ids: list[int], layers: Iterable[int], heads: range) -> int:
    """Copy one sequence's KV from device slots ``seq_device_slots`` [n] (token positions 0..n-1)
    into its host blocks (``swap_out_many`` of one). Returns the bytes of KV copied."""
    return swap_out_many(kv_cache, [(seq_device_slots, host_block_ids)], host_pool, layers, heads)


def swap_in(host_pool: HostKVPool, host_block_ids: list[int], kv_cache: KVCache,
            seq_device_slots: torch.Tensor, layers: Iterable[int], heads: range,
            non_blocking: bool = False) -> int:
    """Copy one sequence's KV from its host blocks into device slots ``seq_device_slots`` [n]
    (``swap_in_many`` of one). Returns the bytes copied."""
    return swap_in_many(host_pool, [(host_block_ids, seq_device_slots)], kv_cache, layers, heads, non_blocking)
