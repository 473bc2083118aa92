"""What the planner tries: layouts, policy variants and their knobs.

Every static ``DdTtPp`` with ``d*t*p`` = the node's GPUs (all nodes' on a cluster, TP kept inside a node) (``layout_grid``, the one enumeration of
layouts; ``seesaw run --auto`` plans through ``plan()`` too) whose tensor degree shards the model
(``ParallelConfig.check_model``) and whose weights plus one full-length sequence of KV fit
(``CostModel.check_fits``); each rejected layout is kept with its one-line reason. vLLM
variants per feasible layout: chunked prefill off, or on with each chunk size, times each
``max_num_seqs``. Every Seesaw pair ``c_p -> c_d`` (``c_p != c_d``, equal DP) times host-pool
sizes (fractions of ``simulator.sim.default_host_kv_bytes``) times the watermarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence as Seq


from seesaw.core import DEFAULT_BLOCK_SIZE, DEFAULT_MAX_NUM_BATCHED_TOKENS, GiB, ModelSpec, NodeSpec, ParallelConfig, SeesawPolicy, SpecError, VllmPolicy
from simulator.cost import CostModel
from simulator.cost.cluster import tp_spans_nodes
from simulator.sim import default_host_kv_bytes

__all__ = ["COMPARE_SPACE", "Candidate", "SearchSpace", "enumerate_candidates", "enumerate_layouts",
           "layout_grid"]


@dataclass(frozen=True)
class SearchSpace:
    """Knobs the planner tries. Defaults: a few chunk sizes, batch caps and host-pool settings."""

    chunk_sizes: tuple[int, ...] = (512, 2048, 8192)
    max_num_seqs: tuple[int, ...] = (256, 512)
    seesaw_max_num_seqs: tuple[int, ...] = (256, 512)
    host_pool_fractions: tuple[float, ...] = (1.0, 0.5, 0.25)   # of default_host_kv_bytes
    host_full_watermarks: tuple[float, ...] = (1.0, 0.5)
    decode_low_watermarks: tuple[float, ...] = (0.5, 1.0)        # 1.0 = the paper's switch-back rule
    max_num_batched_tokens: int = DEFAULT_MAX_NUM_BATCHED_TOKENS  # prefill budget without chunking
    gpu_memory_utilization: float = 0.9
    block_size: int = DEFAULT_BLOCK_SIZE                         # tokens per KV block (the engine's)


# ``seesaw compare``: every layout and pair, defaults elsewhere (no batch-cap or pool sweep).
COMPARE_SPACE = SearchSpace(max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                            host_pool_fractions=(1.0,), host_full_watermarks=(1.0,),
                            decode_low_watermarks=(0.5,))


@dataclass(frozen=True)
class Candidate:
    policy: VllmPolicy | SeesawPolicy
    host_fraction: float | None = None

    @property
    def kind(self) -> str:
        return self.policy.kind

    @property
    def name(self) -> str:
        p = self.policy
        if isinstance(p, VllmPolicy):
            s = f"vllm {p.layout}" + (f" chunk={p.max_num_batched_tokens}" if p.enable_chunked_prefill else "")
        else:
            s = f"seesaw {p.prefill_layout}->{p.decode_layout}"
            s += f" pool={self.host_fraction:g}x" if self.host_fraction != 1.0 else ""
            s += f" wm={p.host_full_watermark:g}" if p.host_full_watermark != 1.0 else ""
            s += f" dl={p.decode_low_watermark:g}" if p.decode_low_watermark != 0.5 else ""
        return s + (f" seqs={p.max_num_seqs}" if p.max_num_seqs != 256 else "")


def layout_grid(n: int):
    """Every ``DdTtPp`` with ``d * t * p == n``, DP outermost, then TP (a stable order)."""
    for d in range(1, n + 1):
        if n % d:
            continue
        for t in range(1, n // d + 1):
            if (n // d) % t == 0:
                yield ParallelConfig(dp=d, tp=t, pp=n // d // t)


def enumerate_layouts(model: ModelSpec, node: NodeSpec, cost: CostModel | None = None,
                      space: SearchSpace = SearchSpace()) -> tuple[list[ParallelConfig], list[tuple[str, str]]]:
    """Every ``DdTtPp`` using all GPUs of ``node`` (of all its nodes when it is a cluster):
    (feasible, [(layout, reason), ...]). On a cluster a layout whose TP groups span nodes is
    rejected (TP inside a node, PP and DP across: the usual rule; ``simulate`` still costs such a
    layout, with its all-reduces over the network)."""
    cost = cost or CostModel(model, node)
    feasible, rejected = [], []
    for c in layout_grid(node.total_gpus):
        spans = [s for s in range(c.pp) if tp_spans_nodes(node, c, s)]
        if spans:
            rejected.append((c.full_name(), f"TP spans nodes (tp={c.tp} over nodes of {node.num_gpus} GPUs): "
                             "TP stays inside a node, PP and DP go across"))
            continue
        try:
            cost.check_fits(c, space.gpu_memory_utilization,
                            max_num_batched_tokens=space.max_num_batched_tokens)
        except SpecError as e:
            rejected.append((c.full_name(), str(e).removeprefix(f"layout {c}: ")))
        else:
            feasible.append(c)
    return feasible, rejected


def enumerate_candidates(model: ModelSpec, node: NodeSpec, layouts: Seq[ParallelConfig],
                         space: SearchSpace = SearchSpace()) -> tuple[list[Candidate], list[tuple[str, str]]]:
    """vLLM variants per layout and Seesaw variants per equal-DP pair; (candidates, rejected)."""
    util, budget = space.gpu_memory_utilization, space.max_num_batched_tokens
    out: list[Candidate] = []
    for c in layouts:
        for seqs in space.max_num_seqs:
            common = dict(layout=c, max_num_seqs=seqs, gpu_memory_utilization=util, block_size=space.block_size)
            out.append(Candidate(VllmPolicy(max_num_batched_tokens=budget, **common)))
            out.extend(Candidate(VllmPolicy(enable_chunked_prefill=True, max_num_batched_tokens=k, **common))
                       for k in space.chunk_sizes)
    pool = default_host_kv_bytes(model, node)
    rejected = []
    pairs = [(a, b) for a in layouts for b in layouts if a != b and a.dp == b.dp]
    if pairs and pool <= 0:
        rejected.append(("seesaw (all pairs)", f"no host memory left for a KV pool "
                         f"({node.host_memory_bytes / GiB:.0f} GiB host, weights {model.weight_bytes * node.num_nodes / GiB:.0f} GiB)"))
        pairs = []
    for a, b in pairs:
        for seqs in space.seesaw_max_num_seqs:
            for frac in space.host_pool_fractions:
                for wm in space.host_full_watermarks:
                    for dl in space.decode_low_watermarks:
                        out.append(Candidate(SeesawPolicy(
                            prefill_layout=a, decode_layout=b, host_kv_bytes=frac * pool,
                            host_full_watermark=wm, decode_low_watermark=dl, max_num_seqs=seqs,
                            max_num_batched_tokens=budget, gpu_memory_utilization=util,
                            block_size=space.block_size),
                            host_fraction=frac))
    return out, rejected
