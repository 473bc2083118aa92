"""What a profile measures: the grid of shapes (``Grid``) and the plan of tables (``Task``s),
which tables for which models, on how many ranks.

Shapes are those one rank holds under TP (``seesaw.engine.model.Shard``); a TP degree is kept
where the model shards evenly and the ranks suffice. Seesaw's pieces (swap steps, re-shards) are
planned for P_k and T_k on k = 2..ranks ranks. No timing here; it imports torch only through
the engine's ``Shard``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from seesaw.engine.model import Shard
from seesaw.core import DEFAULT_BLOCK_SIZE, DTYPE_BYTES, ModelSpec, ParallelConfig, SpecError

__all__ = ["Grid", "Task", "BLOCK_SIZE", "plan_tasks", "shard_keys", "swap_box", "attention_points"]

BLOCK_SIZE = DEFAULT_BLOCK_SIZE  # the engine's default KV block (ModelRunner, run_layout)
_DTYPE_BYTES_MAX = max(DTYPE_BYTES.values())  # the swap grid's byte cap: the widest dtype (fp32) bounds the rest


def _pow(lo: int, hi: int, factor: int = 2) -> tuple[int, ...]:
    out, x = [], lo
    while x <= hi:
        out.append(x)
        x *= factor
    return tuple(out)


@dataclass(frozen=True)
class Grid:
    """What to measure. ``default()`` covers the ``tiny`` and ``smollm2-135m`` shapes at TP 1-3 in
    minutes on a CPU; ``quick()`` takes seconds (tiny only, for CI). Why the axes are what they
    are: docs/profiling.md."""

    models: tuple[str, ...] = ("tiny", "smollm2-135m")
    tp: tuple[int, ...] = (1, 2, 3)  # kept where the model shards evenly and ranks suffice
    # step tokens for GEMMs and per-token ops, up to the engine's default max_num_batched_tokens:
    # beyond ~2048 rows the activations leave the cache and a row costs more
    tokens: tuple[int, ...] = _pow(1, 8192)
    # new tokens of one sequence (1 = decode) by its context. Every size is also a context (a whole
    # prompt; see ``prefill_axis``), and the steps are a factor 2: prefill attention is not a power
    # law of either
    prefill_tokens: tuple[int, ...] = _pow(2, 2048)
    prefill_context: tuple[int, ...] = (*_pow(2, 2048), 4096)
    decode_batch: tuple[int, ...] = _pow(1, 256, 2)  # also the LM head's rows
    decode_context: tuple[int, ...] = _pow(16, 16384, 4)  # summed over the batch
    comm_bytes: tuple[int, ...] = _pow(4, 64 * 4**10, 4)  # 4 B .. 64 MiB
    bcast_bytes: tuple[int, ...] = _pow(8, 8 * 4096, 8)  # int64 sampled ids .. the driver's message
    copy_bytes: tuple[int, ...] = _pow(4096, 4096 * 4**8, 4)  # 4 KiB .. 256 MiB
    step_seqs: tuple[int, ...] = _pow(1, 256, 4)
    swap_tokens: tuple[int, ...] = _pow(64, 16384, 4)  # KV tokens of one Seesaw swap step
    swap_max_bytes: int = 256 * 2**20  # largest box of KV one rank copies per swap step
    busy: tuple[int, ...] = (2,)  # also time TP-1 forward passes and driver steps on this many ranks at once
    repeats: int = 15  # timed samples per point (forward passes and driver runs: a fifth)
    passes: int = 3  # the task list runs this many times, each with its share of the samples
    warmup: int = 2
    min_repeat_s: float = 2e-3
    max_calls: int = 1000  # per sample

    @classmethod
    def default(cls, **kw) -> "Grid":
        return replace(cls(), **kw)

    @classmethod
    def quick(cls, **kw) -> "Grid":
        return replace(cls(
            models=("tiny",), tp=(1, 2), tokens=(1, 4, 16, 64),
            prefill_tokens=(2, 16, 64), prefill_context=(2, 16, 64, 256), decode_batch=(1, 4, 16),
            decode_context=(16, 64, 256), comm_bytes=(4, 256, 16384, 1 << 20), bcast_bytes=(8, 512),
            copy_bytes=(4096, 1 << 16, 1 << 20, 1 << 24), step_seqs=(1, 4, 16), swap_tokens=(64, 1024),
            repeats=3, passes=1, warmup=1, min_repeat_s=3e-4, max_calls=200,
        ), **kw)

    @property
    def prefill_axis(self) -> tuple[int, ...]:
        """The prefill table's contexts: ``prefill_context`` and every size (a whole prompt of
        that size, its own context), so the table holds each size's no-past point."""
        return tuple(sorted({*self.prefill_context, *self.prefill_tokens}))

    @property
    def forward_repeats(self) -> int:
        return max(3, self.repeats // 5)

    def per_pass(self, samples: int) -> int:
        """Sweeps of one pass for ``samples`` per point in all."""
        return max(1, -(-samples // self.passes))


@dataclass(frozen=True)
class Task:
    """One group of tables to measure on ranks ``0 .. ranks-1`` (the others skip it)."""

    kind: str  # forward | step | comm | copy | swap | reshard
    ranks: int
    points: int  # grid points, for progress
    args: dict = field(default_factory=dict)


def _valid_tp(spec: ModelSpec, tp: int) -> bool:
    try:
        Shard.of(spec, ParallelConfig(tp=tp), 0)
    except SpecError:
        return False
    return True


def shard_keys(spec: ModelSpec, tp: int) -> dict:
    """What one TP rank of ``spec`` runs, as the tables key it: GEMM ``(in, out)`` per op, the
    layer_misc and embed_rope dims, and the attention heads ``(q heads, KV heads, head_dim)``."""
    shard = Shard.of(spec, ParallelConfig(tp=tp), 0)
    h, d = spec.hidden_size, spec.d_head
    hq, hkv = len(shard.q_heads(spec)), len(shard.kv_heads(spec))
    inter, cols = len(shard.mlp_cols(spec)), len(shard.vocab_rows(spec))
    return dict(
        gemms={"qkv": (h, (hq + 2 * hkv) * d), "o": (hq * d, h), "gate_up": (h, 2 * inter),
               "down": (inter, h), "head": (h, cols)},
        misc=(h, hq * d, hkv * d, inter), embed=(h, d, cols), heads=(hq, hkv, d),
    )


def attention_points(sizes, context) -> list[tuple[int, int]]:
    """Distinct (size, context) pairs to run: a context below the size is measured at the size
    (whole prompt / one token per sequence)."""
    return sorted({(s, max(s, c)) for s in sizes for c in context})


def plan_tasks(grid: Grid, ranks: int, specs: list[ModelSpec], device: str = "cpu") -> list[Task]:
    """Every table of ``grid`` for these models on at most ``ranks`` ranks, in measuring order."""
    tasks: list[Task] = []
    seen: set = set()
    for spec in specs:
        for tp in grid.tp:
            if tp > ranks or not _valid_tp(spec, tp) or (spec.name, tp) in seen:
                continue
            seen.add((spec.name, tp))
            points = (len(grid.tokens) + len(attention_points(grid.prefill_tokens, grid.prefill_axis))
                      + len(attention_points(grid.decode_batch, grid.decode_context)))
            tasks.append(Task("forward", tp, points, dict(model=spec, tp=tp, **shard_keys(spec, tp))))
        if _valid_tp(spec, 1):
            # TP-1 shards on several ranks at once (no collectives between them): pipeline stages
            # and DP replicas share the machine's cores and memory bandwidth with each other
            for busy in grid.busy:
                if 1 < busy <= ranks and (spec.name, "busy", busy) not in seen:
                    seen.add((spec.name, "busy", busy))
                    tasks.append(Task("forward", busy, points, dict(model=spec, tp=1, **shard_keys(spec, 1))))
        for busy in (1, *grid.busy):
            if busy <= ranks and ("step", spec.vocab_size, busy) not in seen:
                seen.add(("step", spec.vocab_size, busy))
                tasks.append(Task("step", busy, 2 * len(grid.step_seqs), dict(model=spec)))
        tasks += _seesaw_tasks(grid, ranks, spec, seen)
    if device == "cuda" or ranks > 1:
        for k in range(2, ranks + 1):
            for op in ("all_reduce", "all_gather"):
                tasks.append(Task("comm", k, len(grid.comm_bytes), dict(op=op, sizes=grid.comm_bytes)))
            tasks.append(Task("comm", k, len(grid.bcast_bytes), dict(op="broadcast", sizes=grid.bcast_bytes)))
        if ranks >= 2:
            tasks.append(Task("comm", 2, len(grid.comm_bytes), dict(op="send_recv", sizes=grid.comm_bytes)))
            if device == "cpu":  # async transfers need a core that busy ranks also want
                tasks.append(Task("comm", 2, len(grid.comm_bytes), dict(op="handoff", sizes=grid.comm_bytes)))
    for kind in (("h2d", "d2h", "h2h") if device == "cuda" else ("h2h",)):
        tasks.append(Task("copy", 1, len(grid.copy_bytes), dict(kind=kind, sizes=grid.copy_bytes)))
    return tasks


def _layout_if_valid(spec: ModelSpec, text: str) -> ParallelConfig | None:
    from seesaw.core import parse_parallel

    layout = parse_parallel(text)
    try:
        for rank in range(layout.world_size):
            Shard.of(spec, layout, rank)
    except SpecError:
        return None
    return layout


def swap_box(spec: ModelSpec, layout: ParallelConfig) -> tuple[int, int, int]:
    """(layers, KV heads, head_dim) of the largest KV box one rank of ``layout`` holds: what it
    copies per swapped token (the swap tables' key)."""
    shards = [Shard.of(spec, layout, rank) for rank in range(layout.gpus_per_replica)]
    return (max(len(s.layers) for s in shards), max(len(s.kv_heads(spec)) for s in shards), spec.d_head)


def _seesaw_tasks(grid: Grid, ranks: int, spec: ModelSpec, seen: set) -> list[Task]:
    """Seesaw's pieces on k = 2..ranks ranks: KV swap steps under P_k and T_k (each layout's
    box), and re-shards between them both ways."""
    tasks = []
    for k in range(2, ranks + 1):
        pp, tp = _layout_if_valid(spec, f"P{k}"), _layout_if_valid(spec, f"T{k}")
        for layout in (pp, tp):
            if layout is None:
                continue
            box = swap_box(spec, layout)
            per_token = 2 * box[0] * box[1] * box[2] * _DTYPE_BYTES_MAX
            points = [t for t in grid.swap_tokens if t * per_token <= grid.swap_max_bytes] or [grid.swap_tokens[0]]
            if ("swap", box, k) not in seen:
                seen.add(("swap", box, k))
                tasks.append(Task("swap", k, 2 * len(points), dict(model=spec, layout=layout, tokens=points)))
        if pp is not None and tp is not None:
            tasks.append(Task("reshard", k, 2, dict(model=spec, pair=(pp, tp))))
    return tasks
