"""The step worker of a Seesaw run: a ``StepWorker`` that also swaps KV through the host pool
and re-shards its model between the prefill and the decode layout.

Its handlers (``messages``): ``SwapOutMsg`` / ``SwapInMsg`` queue each sequence's copy of this
rank's box (a PP stage its layers, a TP rank its heads) on the rank's ``prefetch.Prefetcher``
thread; ``EvictMsg`` copies synchronously in the message stream; ``ReshardMsg`` drops the KV cache
and runner, re-shards the weights in place from the host ``WeightStore`` (``reshard.reshard``),
builds the runner and KV cache of the new layout and re-points the prefetcher. A message's
``sync`` ("poll" or "wait") agrees with the replica's other ranks on finished copies
(``prefetch.ReplicaCompletions``, one all-gather); rank 0 reads the agreed ids from ``agreed``.

Every rank writes its KV heads on swap-out, also a TP rank whose heads replicate a peer's
(``host_kv.kv_writer`` would skip it): an evicted sequence may be swapped back in before a peer
has processed its ``EvictMsg``, so a rank must never depend on another rank's write.
"""

from __future__ import annotations

import torch

from seesaw.engine.config import EngineConfig, EngineError
from seesaw.engine.control import ControlPlane
from seesaw.engine.host_kv import HostKVPool, kv_box, swap_out_many
from seesaw.engine.kv import block_slots
from seesaw.engine.messages import EvictMsg, ReshardMsg, SwapInMsg, SwapOutMsg, SyncMsg
from seesaw.engine.prefetch import Prefetcher, ReplicaCompletions
from seesaw.engine.reshard import reshard  # at import: ~10 ms on a rank's first re-shard otherwise
from seesaw.engine.runner import ModelRunner
from seesaw.engine.worker import StepWorker

__all__ = ["SeesawWorker"]


class SeesawWorker(StepWorker):
    """A ``StepWorker`` that also swaps KV through the host pool and re-shards its model."""

    def __init__(self, runner: ModelRunner, comms: dict, plane: ControlPlane, config: EngineConfig,
                 rank: int, store, pool: HostKVPool, num_blocks: dict[str, int]):
        super().__init__(runner, comms[str(config.layout)], plane, config, rank)
        self.store, self.pool, self.comms, self.num_blocks = store, pool, comms, num_blocks
        self.model = runner.model
        self.pf = Prefetcher(pool, runner.kv, *kv_box(store.spec, self.model.shard), write_out=True,
                             name=f"seesaw-prefetch-{rank}")
        self.agree = ReplicaCompletions(plane.msg_groups[self.replica], int_ids=True)
        self.agreed: list = []                    # rank 0: agreed copies not yet read by the driver
        self.evict_bytes = 0
        self.reshards: list[dict] = []
        self.handlers.update({SwapOutMsg: self.swap_out, SwapInMsg: self.swap_in, EvictMsg: self.evict,
                              ReshardMsg: self.reshard, SyncMsg: lambda msg: None})

    def serve(self) -> None:
        try:
            super().serve()
            self.plane.gather(self.replica, self.stats())  # rank 0 collects every rank's figures
        finally:
            self.close()

    def close(self) -> None:
        self.pf.close()

    def stats(self) -> dict:
        return {"rank": self.rank, "swap_in_bytes": self.pf.bytes_in,
                "swap_out_bytes": self.pf.bytes_out + self.evict_bytes,
                "prefetch_busy_s": round(self.pf.busy_s, 6), "reshards": self.reshards}

    def sync(self, mode: str) -> None:
        local = self.pf.wait(self.config.timeout_s) if mode == "wait" else self.pf.poll_completed()
        self.agreed.extend(self.agree.update(local))

    def _slots(self, sid: int, n: int) -> torch.Tensor:
        """Device slots [n] of token positions 0..n-1 of ``sid``."""
        return block_slots(self.tables[sid], 0, n, self.config.block_size)

    def swap_out(self, msg: SwapOutMsg) -> None:
        self.pf.swap_out_many([(sid, host_blocks, self._slots(sid, n)) for sid, host_blocks, n in msg.seqs])

    def evict(self, msg: EvictMsg) -> None:
        layers, heads = kv_box(self.store.spec, self.model.shard)
        seqs = [(self._slots(sid, n), host_blocks) for sid, host_blocks, n in msg.seqs]
        self.evict_bytes += swap_out_many(self.runner.kv, seqs, self.pool, layers, heads)
        for sid, _, _ in msg.seqs:
            self.tables.pop(sid, None)

    def swap_in(self, msg: SwapInMsg) -> None:
        for sid, _, blocks, _ in msg.seqs:
            self.tables[sid] = list(blocks)
        self.pf.swap_in_many([(sid, host_blocks, self._slots(sid, n)) for sid, host_blocks, _, n in msg.seqs])

    def reshard(self, msg: ReshardMsg) -> None:
        src, dst = msg.src, msg.dst
        left = self.pf.wait(self.config.timeout_s)
        if left or self.tables:
            raise EngineError(f"rank {self.rank}: re-shard with KV still in use ({len(self.tables)} sequences, "
                              f"{len(left)} unagreed copies)")
        self.pf.release()
        self.runner.finish_sends()
        self.runner = None  # the device KV cache goes with it
        stats = reshard(self.model, self.store, src, dst, self.rank, self.comms[str(dst)])
        self.runner = ModelRunner(self.model, self.num_blocks[str(dst)], self.config.block_size, seed=self.config.seed)
        self.pf.rebind(self.runner.kv, *kv_box(self.store.spec, self.model.shard), write_out=True)
        self.comm = self.comms[str(dst)]
        self.is_sampler = self.model.shard.is_last and self.comm.tp_rank == 0
        self.plane.use(self.replica, dst)
        rec = {k: stats.as_dict()[k] for k in ("rank", "src", "dst", "reshard_s", "free_s", "load_s",
                                                 "barrier_s", "bytes_loaded", "peak_bytes")}
        self.reshards.append(rec)
        if self.replica != 0:
            # rank 0 (an observer of this replica's group) learns that the re-shard is done; in
            # replica 0 the barrier at the end of ``reshard`` already told it. The figures go to
            # rank 0 with the rest at the end (``stats``).
            self.plane.gather(self.replica, None)
