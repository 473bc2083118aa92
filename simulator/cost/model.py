"""``CostModel``: per-step time of one pipeline stage, transfers, and memory sizing.

Ties the pieces together for one ``ModelSpec`` on one ``NodeSpec``: the layout's stage constants
(``stages``, computed once per layout, so the simulator's hot path is a handful of float
operations), the datasheet roofline (``roofline``) and, with ``measured=``, a profile's tables
(``tables``, ``measured``), which win wherever one matches the shape. Assumes vLLM's layer split
and Megatron-LM tensor parallelism; a stage's time excludes the send to the next stage
(``pp_send_s``). Memory: weights per GPU of its stage, an activation reserve of
``max_num_batched_tokens`` rows (the peak live tensors in the MLP, as vLLM's profiling run
measures it), the rest is KV.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Callable

from seesaw.core import GiB, MeasuredProfile, ModelSpec, NodeSpec, ParallelConfig, SpecError
from simulator.cost.cluster import boundary_crosses_nodes, cross_node_send
from simulator.cost.measured import measured_parts, measured_stage
from simulator.cost.roofline import Roofline, build_stages
from simulator.cost.shapes import BatchShape
from simulator.cost.stages import StageConstants, gemm_shapes, kv_heads_per_gpu, layers_per_stage
from simulator.cost.tables import MeasuredTables

__all__ = ["CostModel"]


class CostModel:
    """Roofline x efficiency cost of one pipeline stage of ``model`` on ``node``."""

    def __init__(self, model: ModelSpec, node: NodeSpec, measured: MeasuredProfile | None = None):
        self.model = model
        self.node = node
        self.measured = measured
        self.tables = MeasuredTables(measured) if measured is not None else None
        # a measured hand-off table makes pipeline hand-offs rendezvous (``handoffs_rendezvous``)
        self._handoff = self.tables.comm("handoff", 2) if self.tables is not None else None
        if measured is not None and model.dtype_bytes != measured.dtype_bytes:
            raise SpecError(
                f"model {model.name} has dtype_bytes={model.dtype_bytes} but profile {measured.name!r} "
                f"was measured in {measured.dtype} ({measured.dtype_bytes} bytes); use "
                f"model.model_copy(update={{'dtype_bytes': {measured.dtype_bytes}}}) for an engine run in that dtype"
            )
        # large-GEMM throughput and streaming bandwidth actually reached (profile efficiencies)
        self.roofline = Roofline.of(node, fp8=model.fp8_weights)
        self._stages: dict[tuple, list] = {}  # StageConstants, or timers (``stage_timers``)
        self._crosses: dict[tuple, list[bool]] = {}  # per layout: which stage boundaries cross nodes

    # ---------------------------------------------------------------------------------------
    # layout constants

    def layers_per_stage(self, layout: ParallelConfig) -> list[int]:
        """Decoder layers on each PP stage. Embedding sits on the first, LM head on the last."""
        return layers_per_stage(self.model, layout)

    def gemm_shapes(self, tp: int) -> dict[str, tuple[float, float]]:
        """Per-GPU ``(in_features, out_features)`` of one layer's GEMMs under ``tp``."""
        return gemm_shapes(self.model, tp)

    def stages(self, layout: ParallelConfig, alone: bool = False) -> list[StageConstants]:
        """The per-stage constants of ``layout`` (built once, then cached)."""
        # measured: DP changes the driver's messages and, with ``alone``, the tables' busy ranks
        key = (layout.tp, layout.pp, layout.dp, alone)
        stages = self._stages.get(key)
        if stages is None:
            stages = self._stages[key] = self._build(layout, alone)
        return stages

    def _build(self, layout: ParallelConfig, alone: bool = False) -> list[StageConstants]:
        layout.check_model(self.model)
        out = build_stages(self.model, self.node, self.roofline, layout)
        if self.tables is not None:
            for s, c in enumerate(out):
                c.measured = measured_stage(self.model, self.tables, layout, s, c, alone)
        return out

    # ---------------------------------------------------------------------------------------
    # per-step time (hot path)

    def stage_time_s(self, layout: ParallelConfig, stage: int, shape: BatchShape, alone: bool = False) -> float:
        """Seconds for PP stage ``stage`` of ``layout`` to run micro-batch ``shape``: its linear
        layers, attention, TP all-reduces, LM head (last stage) and its share of the per-step
        overhead. ``alone``: the other stages are idle meanwhile (a measured profile then uses
        tables timed with only this stage's ranks busy: on a CPU the stages share the cores)."""
        c = self.stages(layout, alone and self.tables is not None and layout.pp > 1)[stage]
        if c.measured is not None:
            return sum(measured_parts(self.model, self.roofline, c, shape))
        return self.roofline.stage_s(c, shape)

    def stage_timers(self, layout: ParallelConfig, alone: bool = False) -> list[Callable[[BatchShape], float]]:
        """``stage_time_s(layout, stage, shape, alone)`` of every stage as a function of the shape
        alone, built once per layout (the simulator calls one per stage per step)."""
        key = (layout.tp, layout.pp, layout.dp, alone, "timers")
        timers = self._stages.get(key)
        if timers is None:
            consts = self.stages(layout, alone and self.tables is not None and layout.pp > 1)
            timers = self._stages[key] = [
                partial(self.roofline.stage_s, c) if c.measured is None
                else partial(self.stage_time_s, layout, s, alone=alone)
                for s, c in enumerate(consts)
            ]
        return timers

    def stage_breakdown(
        self, layout: ParallelConfig, stage: int, shape: BatchShape
    ) -> dict[str, float]:
        """``stage_time_s`` split into parts that sum to ``total_s`` (for plots).

        ``compute_s`` / ``weight_read_s``: linear layers (LM head included), booked under whichever
        roofline term bounds them; ``attention_s``: prefill and decode attention; ``comm_s``: TP
        all-reduces and the logits gather; ``overhead_s``: this stage's share of the step overhead.
        """
        c = self.stages(layout)[stage]
        if c.measured is not None:
            lin, attn, comm, over = measured_parts(self.model, self.roofline, c, shape)
            return dict(compute_s=lin, weight_read_s=0.0, attention_s=attn, comm_s=comm,
                        overhead_s=over, total_s=lin + attn + comm + over)
        parts = dict(compute_s=0.0, weight_read_s=0.0, attention_s=0.0, comm_s=0.0, overhead_s=0.0)
        self.roofline.stage_s(c, shape, parts)
        parts["total_s"] = sum(parts.values())
        return parts

    def chain_s(self, layout: ParallelConfig, shape: BatchShape) -> tuple[float, float]:
        """(one micro-batch of ``shape`` through all stages plus the sends between them, the
        slowest stage)."""
        times = [self.stage_time_s(layout, s, shape) for s in range(layout.pp)]
        return sum(times) + sum(self.pp_sends_s(layout, shape.num_tokens)), max(times)

    def pipeline_time_s(
        self, layout: ParallelConfig, shape: BatchShape, num_microbatches: int | None = None
    ) -> float:
        """Time for ``num_microbatches`` (default ``pp``) copies of ``shape`` to pass every stage.

        Classic pipeline schedule: the first micro-batch crosses all stages and boundaries, each
        later one leaves the slowest stage one stage-time after the previous (GPipe's
        (pp + m - 1) stage times when stages are equal).
        """
        m = layout.pp if num_microbatches is None else num_microbatches
        chain, slowest = self.chain_s(layout, shape)
        return chain + (m - 1) * slowest

    def gemm_time_s(self, tokens: int, in_features: float, out_features: float,
                    measured: bool = True) -> float:
        """One GEMM kernel of ``tokens`` rows against an ``[in_features, out_features]`` weight
        (the measured table of that shape, measured alone, when there is one)."""
        if measured and self.tables is not None:
            curve = self.tables.op("linear", (in_features, out_features), 1)
            if curve is not None:
                return curve(tokens)
        return self.roofline.gemm_s(tokens, in_features, out_features, self.model.linear_bytes_per_param)

    # ---------------------------------------------------------------------------------------
    # communication and copies

    def allreduce_s(self, nbytes: float, tp: int) -> float:
        """Ring all-reduce of ``nbytes`` over ``tp`` GPUs (0 when tp == 1)."""
        if tp <= 1:
            return 0.0
        curve = self.tables.comm("all_reduce", tp) if self.tables is not None else None
        if curve is not None:
            return curve(nbytes)
        return self.roofline.allreduce_s(nbytes, tp)

    @property
    def handoffs_rendezvous(self) -> bool:
        """Pipeline hand-offs start when the receiver asks and keep it waiting (measured
        ``handoff`` table; see ``docs/cost-model.md``), instead of overlapping its work."""
        return self._handoff is not None

    def pp_reply_s(self, layout: ParallelConfig, rows: int) -> float:
        """The sampled ids of ``rows`` sequences from the last stage back to the driver under PP
        with rendezvous hand-offs (0 otherwise: then the last stage's time includes them)."""
        if layout.pp == 1 or not rows or self._handoff is None:
            return 0.0
        return self._handoff(8 * rows)  # int64 token ids

    def pp_send_s(self, layout: ParallelConfig, num_tokens: int, boundary: int = 0) -> float:
        """Activations ``[tokens, hidden]`` across stage boundary ``boundary`` (stage ``boundary``
        to ``boundary + 1``; each TP rank sends its copy to its peer in parallel, as vLLM does, so
        the time does not depend on tp); over the network when the boundary crosses nodes."""
        nbytes = num_tokens * self.model.hidden_size * self.model.dtype_bytes
        crossings = self._crossings(layout)   # cached for the layout's own boundaries only
        if (crossings[boundary] if boundary < len(crossings) else boundary_crosses_nodes(self.node, layout, boundary)):
            bw, latency_s = cross_node_send(self.node)
            return nbytes / bw + latency_s
        curve = self.tables.handoff() if self.tables is not None else None
        if curve is not None:
            return curve(max(nbytes, 1))
        return self.roofline.send_s(nbytes)

    def _crossings(self, layout: ParallelConfig) -> list[bool]:
        key = (layout.tp, layout.pp, layout.dp)
        out = self._crosses.get(key)
        if out is None:
            out = self._crosses[key] = [boundary_crosses_nodes(self.node, layout, b) for b in range(layout.pp - 1)]
        return out

    def pp_sends_s(self, layout: ParallelConfig, num_tokens: int) -> list[float]:
        """``pp_send_s`` of every stage boundary of ``layout`` (``pp - 1`` of them), in order."""
        return [self.pp_send_s(layout, num_tokens, b) for b in range(layout.pp - 1)]

    def host_copy_s(self, nbytes: float) -> float:
        """Copy ``nbytes`` between one GPU and host memory over that GPU's host link."""
        curve = self.tables.copy() if self.tables is not None else None
        if curve is not None and nbytes > 0:
            return curve(nbytes)
        return self.roofline.host_copy_s(nbytes)

    def reshard_s(self, src: ParallelConfig, dst: ParallelConfig) -> float:
        """Switch weights from ``src`` to ``dst``: every GPU loads its whole new shard from the
        host copy over its own host link, all in parallel, so the slowest GPU decides. A
        measured profile's re-shard table (the engine's whole re-shard, barrier and new KV cache
        included, by bytes loaded per rank) wins over the host-copy bandwidth."""
        if (src.dp, src.tp, src.pp) == (dst.dp, dst.tp, dst.pp):
            return 0.0
        nbytes = self.weight_bytes_per_gpu(dst)
        curve = self.tables.reshard(dst.gpus_per_replica) if self.tables is not None else None
        if curve is not None:
            return curve(nbytes)
        return self.host_copy_s(nbytes)

    def swap_box(self, layout: ParallelConfig) -> tuple[int, int, int]:
        """(layers, KV heads, head_dim) of the largest KV box one GPU of ``layout`` holds."""
        return (max(self.layers_per_stage(layout)), kv_heads_per_gpu(self.model, layout.tp), self.model.d_head)

    def swap_s(self, layout: ParallelConfig, kind: str, tokens: int) -> float:
        """One Seesaw swap step moving the KV of ``tokens`` tokens between the GPUs of a replica
        of ``layout`` and host memory (``kind`` "out": to the host, "in": back). Every GPU
        copies its own box over its own host link, in parallel. A measured profile's swap steps
        (the engine's whole step: message, copies, agreement) win over the host-copy bandwidth:
        the table of this box by tokens, else every measured box's by the bytes a rank moves (on
        a CPU the whole step costs ~30x a memcpy of its bytes, so a memcpy would favour Seesaw
        pairs outside the profiled shapes)."""
        if tokens <= 0:
            return 0.0
        nbytes = tokens * self.swap_bytes_per_token(layout)
        if self.tables is not None:
            curve = self.tables.swap(kind, self.swap_box(layout), layout.gpus_per_replica)
            if curve is not None:
                return curve(tokens)
            curve = self.tables.swap_bytes(kind, layout.gpus_per_replica)
            if curve is not None:
                return curve(nbytes)
        return self.host_copy_s(nbytes)

    def swap_bytes_per_token(self, layout: ParallelConfig) -> float:
        """KV bytes one GPU moves per swapped token under ``layout`` (the most loaded stage;
        replicated KV heads, when tp > h_kv, are copied to every GPU that holds them)."""
        return max(c.kv_bytes_per_token for c in self.stages(layout))

    # ---------------------------------------------------------------------------------------
    # memory

    def stage_weight_bytes_per_gpu(self, layout: ParallelConfig) -> list[float]:
        return [c.weight_bytes for c in self.stages(layout)]

    def weight_bytes_per_gpu(self, layout: ParallelConfig) -> float:
        """Weights on the most loaded GPU of ``layout``."""
        return max(self.stage_weight_bytes_per_gpu(layout))

    def activation_reserve_bytes(
        self, layout: ParallelConfig, max_num_batched_tokens: int = 8192
    ) -> float:
        """Peak activations of one forward pass of ``max_num_batched_tokens`` tokens on one GPU:
        residual and normed hidden states [n, h] x 2 plus the MLP's gate/up output [n, 2i/tp] and
        activation [n, i/tp] (the largest live set, which vLLM's profiling run measures)."""
        m = self.model
        per_token = 2 * m.hidden_size + 3 * m.intermediate_size / layout.tp
        return max_num_batched_tokens * m.dtype_bytes * per_token

    def kv_capacity_tokens(
        self, layout: ParallelConfig, gpu_memory_utilization: float = 0.9,
        max_num_batched_tokens: int = 8192,
    ) -> int:
        """KV tokens one DP replica can hold on device: per stage, (memory x utilization - weights -
        activation reserve) / KV bytes per token on that GPU; the tightest stage decides."""
        budget = self.node.gpu.memory_bytes * gpu_memory_utilization
        reserve = self.activation_reserve_bytes(layout, max_num_batched_tokens)
        cap = min((budget - c.weight_bytes - reserve) / c.kv_bytes_per_token
                  for c in self.stages(layout))
        return max(0, math.floor(cap))

    def check_fits(
        self, layout: ParallelConfig, gpu_memory_utilization: float = 0.9,
        min_kv_tokens: int | None = None, max_num_batched_tokens: int = 8192,
    ) -> None:
        """Raise ``SpecError`` (one line, with the numbers) unless ``layout`` can serve ``model`` on
        ``node``: shardable, enough GPUs, weights fit, and at least ``min_kv_tokens`` of KV per
        replica (default: one sequence of ``max_position_embeddings``, as vLLM requires)."""
        m, node, gpu = self.model, self.node, self.node.gpu
        layout.check_model(m)
        if layout.world_size > node.total_gpus:
            where = "node" if node.num_nodes == 1 else f"cluster ({node.num_nodes} nodes)"
            raise SpecError(f"layout {layout}: needs {layout.world_size} GPUs, {where} {node.name} has {node.total_gpus}")
        budget = gpu.memory_bytes * gpu_memory_utilization
        weights = self.weight_bytes_per_gpu(layout)
        where = f"on {gpu.name} ({gpu.memory_bytes / GiB:.1f} GiB x {gpu_memory_utilization:.2f})"
        if weights > budget:
            raise SpecError(
                f"layout {layout}: weights need {weights / GiB:.1f} GiB per GPU, "
                f"{budget / GiB:.1f} GiB available {where}"
            )
        need = m.max_position_embeddings if min_kv_tokens is None else min_kv_tokens
        have = self.kv_capacity_tokens(layout, gpu_memory_utilization, max_num_batched_tokens)
        if have < need:
            reserve = self.activation_reserve_bytes(layout, max_num_batched_tokens)
            raise SpecError(
                f"layout {layout}: KV for {have} tokens fits per replica, {need} needed "
                f"(weights {weights / GiB:.1f} GiB + activations {reserve / GiB:.1f} GiB per GPU "
                f"of {budget / GiB:.1f} GiB available {where})"
            )
