"""Attention figures: prefill (chunks of several sequences a step, by new tokens and context)
and decode (sequences by summed context), timed at the engine's ``paged_attention`` call inside
real forward passes (``seesaw.profiling.forward``).

The engine's attention call of a prefill step attends all its sequences at once (one kernel call
per layer), so a prefill point's step holds ``prefill_seqs`` sequences and its figure is the
call's time per sequence. Why several (measurements): docs/profiling.md.
"""

from __future__ import annotations

from seesaw.profiling.grid import Grid
from seesaw.profiling.records import Point, Table, center

__all__ = ["prefill_seqs", "attention_figures", "attention_tables"]

# a prefill attention point's step (``prefill_seqs``): new tokens, context tokens, attention
# pairs (new tokens x context), sequences
_PREFILL_STEP_TOKENS, _PREFILL_STEP_CONTEXT = 1024, 16384
_PREFILL_STEP_PAIRS, _PREFILL_STEP_SEQS = 1 << 19, 16


def prefill_seqs(size: int, context: int) -> int:
    """Sequences in the step that times a prefill attention point (``size`` new tokens of each,
    ``context`` after the step): as many as fit ``_PREFILL_STEP_TOKENS`` new and
    ``_PREFILL_STEP_CONTEXT`` context tokens and ``_PREFILL_STEP_PAIRS`` attention pairs, at most
    ``_PREFILL_STEP_SEQS``, at least one.

    The engine's attention call of a prefill step attends every sequence of the step (32 prompts
    of 256 tokens in an 8192-token step). A lone call in its step is crowded by the
    step's all-reduces (and the other rank's traffic), a run of them is not. Large points stay
    alone: their call dwarfs that cost, and every sequence adds a forward pass's worth of GEMM
    rows to the profile's time."""
    k = min(_PREFILL_STEP_SEQS, _PREFILL_STEP_TOKENS // size, _PREFILL_STEP_CONTEXT // context,
            _PREFILL_STEP_PAIRS // (size * context))
    return max(1, k)


def attention_figures(points: list[tuple[str, int, int]], records: dict) -> dict[Point, float]:
    """``Point("attention", kind, (size, context))`` for every prefill and decode grid point
    ``(kind, size, context)`` from the probe's ``records[(point, "attn")]``; a prefill point's
    figure is per sequence (its step's call covers ``prefill_seqs`` of them)."""
    return {Point("attention", kind, (size, ctx)):
            center(records[((kind, size, ctx), "attn")]) / (prefill_seqs(size, ctx) if kind == "prefill" else 1)
            for kind, size, ctx in points if kind != "tokens"}


def attention_tables(figures: dict[Point, float], heads: tuple[int, int, int], ranks: int,
                     grid: Grid) -> list[Table]:
    """The prefill and decode attention tables of one shard's ``heads`` (q heads, KV heads,
    head_dim): sizes by contexts, a context below the size read at the size."""
    hq, hkv, d = heads
    out = []
    for kind, sizes, context in (("prefill", grid.prefill_tokens, grid.prefill_axis),
                                 ("decode", grid.decode_batch, grid.decode_context)):
        times = [[figures[Point("attention", kind, (s, max(s, c)))] for c in context] for s in sizes]
        out.append(Table("attention", dict(kind=kind, num_heads=hq, num_kv_heads=hkv, head_dim=d, ranks=ranks,
                                           sizes=list(sizes), context_tokens=list(context), time_s=times)))
    return out
