"""Measured tables wired to a layout: a stage's time as the engine runs a step.

Each term of a stage uses a table of the engine's own pieces (``seesaw profile``) where one
matches the shape per rank -- the layer's GEMMs and its other ops by tokens, prefill attention per
sequence by (query tokens, context), decode attention by (sequences, summed context), all-reduce /
all-gather / send / broadcast by bytes and ranks, the engine's per-step work outside the model by
sequences -- and the datasheet roofline (``simulator.cost.roofline``) otherwise. Tables are looked
up by how many ranks compute at the same time (on a CPU they share the cores). The measurements
behind these choices are in ``docs/cost-model.md``.
"""

from __future__ import annotations

from seesaw.core import CONTROL_MESSAGE_BYTES, ModelSpec, ParallelConfig
from simulator.cost.roofline import ELEMENTWISE_KERNELS, Roofline
from simulator.cost.shapes import BatchShape
from simulator.cost.stages import MeasuredStage, StageConstants, gemm_shapes, kv_heads_per_gpu
from simulator.cost.tables import Curve, MeasuredTables

__all__ = ["control_s", "measured_parts", "measured_stage"]


def measured_stage(model: ModelSpec, tb: MeasuredTables, layout: ParallelConfig, stage: int, c: StageConstants,
                   alone: bool = False) -> MeasuredStage:
    """The tables that apply to one stage of ``layout``: shapes per rank as the engine runs
    them (``seesaw.engine.model``), tables measured with as many ranks busy at once as the
    layout keeps busy (all of its ranks: TP ranks, pipeline stages and DP replicas share the
    machine; ``alone``: only this stage's ranks in every replica, the other stages idle)
    preferred, else the nearest count; collectives need their exact TP degree."""
    m, tp = model, layout.tp
    rendezvous = tb.comm("handoff", 2) is not None  # ``CostModel.handoffs_rendezvous``
    busy = layout.tp * layout.dp if alone else layout.world_size
    h, d = m.hidden_size, m.d_head
    first, last = stage == 0, stage == layout.pp - 1
    shapes = gemm_shapes(m, tp)
    found = {k: tb.op("linear", v, busy) for k, v in shapes.items()}
    misc = tb.op("layer_misc", (h, m.num_attention_heads // tp * d, kv_heads_per_gpu(m, tp) * d,
                                m.intermediate_size // tp), busy)
    parts = [f for f in found.values() if f is not None] + ([misc] if misc else [])
    layers_curve = None
    if parts:
        grid = sorted({x for f in parts for x in f.xs})
        layers_curve = Curve(grid, [c.layers * sum(f(x) for f in parts) for x in grid])
    cols = -(-m.vocab_size // tp)  # the engine pads the vocab to a multiple of tp
    heads = m.num_attention_heads / tp
    kv = kv_heads_per_gpu(m, tp)
    return MeasuredStage(
        layers_curve=layers_curve,
        missing_gemms=[shapes[k] for k, f in found.items() if f is None],
        misc_missing=misc is None,
        embed=tb.op("embed_rope", (h, d, cols), busy) if first else None,
        prefill=tb.attention("prefill", heads, kv, d, busy),
        decode=tb.attention("decode", heads, kv, d, busy),
        allreduce=tb.comm("all_reduce", tp) if tp > 1 else None,
        num_allreduce=(2 * c.layers + (1 if first else 0)) if tp > 1 else 0,
        head=tb.op("linear", (h, cols), busy) if last else None,
        gather=tb.comm("all_gather", tp) if last and tp > 1 else None,
        # sampled ids back to rank 0, a broadcast (under PP with a measured hand-off the
        # simulator charges it at the driver instead: ``pp_reply_s``)
        reply=tb.comm("broadcast", 2) if last and (layout.pp > 1 or layout.dp > 1)
        and not (layout.pp > 1 and rendezvous) else None,
        # rendezvous: the receivers of the step message wait for it (the stages after the
        # first; the first only when it holds ranks other than rank 0); else the first stage
        control_s=control_s(tb, layout) if (
            (stage > 0 or tp > 1 or layout.dp > 1) if rendezvous else first) else 0.0,
        step=tb.step(m.vocab_size, busy),
        head_cols=cols,
        allreduce_in_place=tb.op_exact("tp_all_reduce", (h,), tp) if tp > 1 else None,
        gather_in_place=tb.op_exact("tp_all_gather", (cols,), tp) if last and tp > 1 else None,
    )


def control_s(tb: MeasuredTables, layout: ParallelConfig) -> float:
    """The engine driver's step message to a replica's other ranks: one gloo broadcast of its
    fixed buffer from rank 0 (``seesaw.engine.control.ControlPlane``), which the replica's
    ranks wait for before they start; none when the replica is rank 0 alone. With a measured
    hand-off: one, since rank 0 sends it and computes on (its receivers ask late)."""
    members = layout.tp * layout.pp + (1 if layout.dp > 1 else 0)
    if members < 2:
        return 0.0
    handoff = tb.comm("handoff", 2)
    if handoff is not None:
        return handoff(CONTROL_MESSAGE_BYTES)
    found = tb.comm_ranks("broadcast")
    if not found:
        return 0.0
    ranks = min(found, key=lambda r: (abs(r - members), -r))
    return tb.comm("broadcast", ranks)(CONTROL_MESSAGE_BYTES)


def measured_parts(model: ModelSpec, rf: Roofline, c: StageConstants,
                   shape: BatchShape) -> tuple[float, float, float, float]:
    """(linear and other per-token ops, attention, communication, step overhead) of one stage
    from the measured tables, as the engine runs a step: prefill attention is one call per
    sequence, decode attention one call for the batch; the driver's step message (first
    stage) and, when the sampling rank is not rank 0, the sampled tokens' way back (last
    stage) count as communication; the driver's per-step work (scheduling, block tables,
    metadata, sampling) by sequences is the overhead."""
    m = c.measured
    n = shape.prefill_tokens + shape.decode_seqs
    np_ = shape.prefill_tokens
    # prefill sequences and their mean chunk and context (whole prompts when not given:
    # k prompts of n tokens have k n (n + 1) / 2 pairs)
    if np_:
        if shape.prefill_seqs:
            k = shape.prefill_seqs
            q = np_ / k
            ctx = max(q, shape.prefill_attn_pairs / np_ + (q - 1) / 2)
        else:
            q = max(1.0, 2 * shape.prefill_attn_pairs / np_ - 1)
            k, ctx = np_ / q, q
    else:
        k = 0
    seqs = shape.decode_seqs + k
    rows = shape.sampled_seqs if c.head_flops_per_row else 0
    if not n and not rows:
        return 0.0, 0.0, 0.0, 0.0
    lin = attn = comm = 0.0
    B = model.dtype_bytes
    if n:
        if m.layers_curve is not None:
            lin += m.layers_curve(n)
        for k_in, k_out in m.missing_gemms:
            lin += c.layers * rf.gemm_s(n, k_in, k_out, B)
        if m.misc_missing:  # no layer_misc table: the roofline's small kernels
            lin += c.layers * ELEMENTWISE_KERNELS * rf.non_gemm_kernel_s + c.misc_s_per_token * n
        if m.embed is not None:
            lin += m.embed(n)
        if m.allreduce_in_place is not None:
            comm += m.num_allreduce * m.allreduce_in_place(n)
        elif m.allreduce is not None:
            comm += m.num_allreduce * m.allreduce(n * model.hidden_size * B)
        else:
            comm += rf.stage_allreduce_s(c, n)
    if np_:
        if m.prefill is not None:
            attn += c.layers * k * m.prefill(q, ctx)
        else:
            attn += rf.prefill_attention_s(c, shape)
    if shape.decode_seqs:
        if m.decode is not None:
            attn += c.layers * m.decode(shape.decode_seqs, shape.decode_context_tokens)
        else:
            attn += rf.decode_attention_s(c, shape)
    if rows:
        h = model.hidden_size
        lin += m.head(rows) if m.head is not None else rf.gemm_s(rows, h, m.head_cols, B)
        if m.gather_in_place is not None:
            comm += m.gather_in_place(rows)
        elif m.gather is not None:
            comm += m.gather(rows * m.head_cols * B)
        else:
            comm += c.head_gather_s_per_row * rows + c.head_gather_fixed_s
        if m.reply is not None:
            comm += m.reply(8 * rows)  # int64 token ids
    # every stage of the engine pays a whole step's bookkeeping for its micro-batch (block-table
    # views, slot mapping, attention metadata, positions: ``ModelRunner.run_tables``); rank 0
    # also schedules and the last stage samples, each about a step's share. So, unlike the
    # roofline's per-step overhead, the measured one is not split over the stages.
    over = m.step(seqs) if m.step is not None and seqs else c.overhead_s
    comm += m.control_s
    return lin, attn, comm, over
