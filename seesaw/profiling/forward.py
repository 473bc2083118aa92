"""The forward-pass tables of one (model, TP): GEMMs (``linear``: fused QKV, O, fused gate/up,
down, LM head), ``layer_misc``, ``embed_rope``, attention, and at TP > 1 the engine's own
all-reduces and logits gather, all timed where they run.

Real steps go through the engine's ``LlamaShard`` (this rank's TP slice, random weights,
``ModelRunner.run_tables`` over a paged KV cache, as the driver runs them); a ``Probe`` times
every GEMM module, the attention call (passed to the shard as its ``attend``), each layer, the
embedding and RoPE. A grid point is a step: ``tokens`` (prompts of up to 64 tokens: GEMM rows,
per-token ops), ``prefill`` (``prefill_seqs`` sequences' chunks by context) or ``decode``
(sequences by summed context; its logits rows time the LM head). Assumes the shard keeps as many
layers as the engine streams through the last-level cache (all, or enough to exceed it twice),
so calls see the cache as the engine's do (docs/profiling.md: why in place).
"""

from __future__ import annotations

import functools
from typing import Callable

import torch

from seesaw.engine.attention import paged_attention
from seesaw.engine.model import LlamaShard, LocalComm, Shard
from seesaw.engine.runner import ModelRunner
from seesaw.profiling.attention import attention_figures, attention_tables, prefill_seqs
from seesaw.profiling.collectives import TPComm
from seesaw.profiling.grid import BLOCK_SIZE, Task, attention_points
from seesaw.profiling.probe import Probe
from seesaw.profiling.records import Point, Table, center
from seesaw.profiling.timing import Rank, init_weights

__all__ = ["forward_tables", "steps_for"]

_GEMMS = ("qkv", "o", "gate_up", "down")  # a layer's GEMM modules, as ``shard_keys`` names them


def steps_for(kind: str, size: int, context: int) -> list[tuple[int, int]]:
    """(context after the step, new tokens) per sequence of one grid point's step."""
    if kind == "tokens":  # GEMM rows: prompts of up to 64 tokens, so attention stays small
        return [(size, size)] if size <= 64 else [(64, 64)] * (size // 64)
    if kind == "prefill":  # sequences of ``size`` new tokens each, their context then ``context``
        return [(context, size)] * prefill_seqs(size, context)
    return [(max(1, context // size), 1)] * size  # ``size`` sequences decoding, ``context`` in all


def _plans(points, vocab_size: int) -> tuple[dict, int]:
    """Each point's ``run_tables`` arguments (sequences, block tables, decoding ids) and the
    blocks the largest needs."""
    plans, blocks_needed = {}, 0
    for kind, size, ctx in points:
        seqs, tables, next_block = [], {}, 0
        for sid, (c, n) in enumerate(steps_for(kind, size, ctx)):
            nb = -(-c // BLOCK_SIZE)
            tables[sid] = list(range(next_block, next_block + nb))  # distinct blocks, as in the engine
            next_block += nb
            seqs.append((sid, c - n, [sid % vocab_size] * n))
        blocks_needed = max(blocks_needed, next_block)
        plans[(kind, size, ctx)] = (seqs, tables, [sid for sid, _, _ in seqs] if kind == "decode" else [])
    return plans, blocks_needed


def forward_tables(r: Rank, task: Task, attention: Callable = paged_attention) -> list[Table]:
    """The layer tables of one (model, TP) (see the module docstring). ``attention``: the paged
    attention the shard calls, timed (the engine's own by default).

    ``layer_misc`` = layer - its GEMMs and attention - the timers' own cost. Each call is a
    sample (layers x forward passes); their mean is kept. At TP > 1 the forward pass runs the
    engine's all-reduces and logits gather between the TP ranks (``tp_all_reduce``,
    ``tp_all_gather``), which layer and embedding times exclude.
    """
    a, g = task.args, r.grid
    spec, tp, busy = a["model"], a["tp"], task.ranks  # busy: ranks running forward passes at once
    (k_in, k_out), (_, k2) = a["gemms"]["qkv"], a["gemms"]["gate_up"]
    layer_bytes = (k_in * k_out + a["gemms"]["o"][0] * k_in + k_in * k2 + k2 // 2 * k_in) * r.dtype.itemsize
    layers = r.copies(layer_bytes, spec.num_hidden_layers)
    shard = Shard(spec.num_hidden_layers, 0, layers, r.rank % tp, tp, 0, 1)  # first and last stage
    comm = TPComm(r.groups[tp], tp) if tp > 1 else LocalComm()
    probe = Probe(r.device.type == "cuda")
    model = init_weights(LlamaShard(spec, shard, comm, dtype=r.dtype, device=r.device,
                                    attend=probe.wrap("attn", attention)))

    points = ([("tokens", n, n) for n in g.tokens]
              + [("prefill", q, c) for q, c in attention_points(g.prefill_tokens, g.prefill_axis)]
              + [("decode", b, c) for b, c in attention_points(g.decode_batch, g.decode_context)])
    plans, blocks_needed = _plans(points, spec.vocab_size)
    runner = ModelRunner(model, blocks_needed, BLOCK_SIZE)

    for layer in model.layers.values():
        layer.forward = probe.wrap("layer", layer.forward)
        for key, mod in zip(_GEMMS, (layer.attn.qkv_proj, layer.attn.o_proj, layer.mlp.gate_up_proj,
                                     layer.mlp.down_proj)):
            mod.forward = probe.wrap(key, mod.forward)
    model.lm_head.forward = probe.wrap("head", model.lm_head.forward)
    if tp > 1:  # the collectives where the engine calls them, between the ranks' real compute
        comm.all_reduce = probe.wrap("ar", comm.all_reduce)
        comm.all_gather = probe.wrap("gather", comm.all_gather)
    model.embed = probe.wrap("embed", model.embed)
    model.rope = probe.wrap("rope", model.rope)

    def step(point: tuple[str, int, int]) -> None:
        probe.point = point
        runner.run_tables(*plans[point])
        if probe.cuda:
            torch.cuda.synchronize(r.device)
            probe.collect()

    overhead = probe.overhead_s()
    fns = {p: functools.partial(step, p) for p in points}
    with torch.inference_mode():
        for fn in fns.values():  # a first pass unrecorded (allocations, lazy initialisation)
            fn()
        probe.on = True
        r.measure(fns, task.ranks, repeats=g.per_pass(g.forward_repeats), warmup=0)
        probe.on = False
    figures = r.slowest(_figures(probe.records, points, g, layers, tp, overhead), task.ranks)
    return _tables(figures, a, g, spec.hidden_size, tp, busy, overhead)


def _figures(rec: dict, points: list, g, layers: int, tp: int, overhead: float) -> dict[Point, float]:
    """Every figure of the forward tables by name, from the probe's records of this rank."""

    def all_reduces(p) -> tuple[list[float], list[float]]:
        """Point ``p``'s all-reduces (TP): the embedding's, one per forward pass, and each
        layer's two (attention + MLP) summed, one per layer call; zeros at TP 1."""
        ars = rec.get((p, "ar"), [])
        if not ars:
            n = len(rec[(p, "embed")])
            return [0.0] * n, [0.0] * (n * layers)
        per = 1 + 2 * layers
        assert len(ars) % per == 0, (len(ars), per)
        layer = [x for f in range(0, len(ars), per) for x in ars[f + 1:f + per]]
        return ars[::per], [x + y for x, y in zip(layer[::2], layer[1::2])]

    def decode_pooled(key: str, b: int) -> list[float]:
        return [v for p in points if p[0] == "decode" and p[1] == b for v in rec[(p, key)]]

    tok = [p for p in points if p[0] == "tokens"]
    ar = {p: all_reduces(p) for p in tok}
    fig: dict[Point, float] = {}
    for key in _GEMMS:
        fig.update({Point("ops", key, p[1]): center(rec[(p, key)]) for p in tok})
    timers = 5 if tp == 1 else 7  # wrapped calls inside a layer: 4 GEMMs, attention (+ 2 all-reduces)
    for p in tok:
        parts = zip(rec[(p, "layer")], ar[p][1], *(rec[(p, k)] for k in (*_GEMMS, "attn")))
        fig[Point("ops", "layer_misc", p[1])] = center(
            [max(1e-9, lay - sum(ops) - timers * overhead) for lay, *ops in parts])
    over = overhead if tp > 1 else 0.0  # the all-reduce's timer inside the embedding's
    for p in tok:
        fig[Point("ops", "embed_rope", p[1])] = center(
            [max(1e-9, e - x - over + q) for e, x, q in zip(rec[(p, "embed")], ar[p][0], rec[(p, "rope")])])
    fig.update(attention_figures(points, rec))
    fig.update({Point("ops", "head", b): center(decode_pooled("head", b)) for b in g.decode_batch})
    if tp > 1:
        # an all-reduce of n rows: the prompt step's and those of decode steps of n sequences
        # (same bytes), pooled: the call's mean is noisy (long-tailed wake-ups), more samples help
        fig.update({Point("ops", "tp_all_reduce", p[1]): center(rec[(p, "ar")] + decode_pooled("ar", p[1]))
                    for p in tok})
        fig.update({Point("ops", "tp_all_gather", b): center(decode_pooled("gather", b)) for b in g.decode_batch})
    return fig


def _tables(fig: dict[Point, float], a: dict, g, hidden: int, tp: int, busy: int, overhead: float) -> list[Table]:
    """The tables of one (model, TP) in the profile's order: the four layer GEMMs, the LM head,
    layer_misc, embed_rope, prefill and decode attention, and at TP > 1 the collectives."""
    gemms, rows, batch = a["gemms"], list(g.tokens), list(g.decode_batch)

    def ops(op: str, dims, sizes: list[int], name: str | None = None, ranks: int = busy,
            minus: float | None = None):
        times = [fig[Point("ops", name or op, n)] for n in sizes]
        if minus is not None:  # the timer's own cost, off a collective's figure
            times = [max(1e-9, t - minus) for t in times]
        return Table("ops", dict(op=op, dims=list(dims), ranks=ranks, tokens=sizes, time_s=times))

    out = [ops("linear", gemms[key], rows, name=key) for key in _GEMMS]
    out.append(ops("linear", gemms["head"], batch, name="head"))
    out.append(ops("layer_misc", a["misc"], rows))
    out.append(ops("embed_rope", a["embed"], rows))
    out += attention_tables(fig, a["heads"], busy, g)
    if tp > 1:
        out.append(ops("tp_all_reduce", [hidden], rows, ranks=tp, minus=overhead))
        out.append(ops("tp_all_gather", [gemms["head"][1]], batch, ranks=tp, minus=overhead))
    return out
