"""The datasheet roofline: a stage's time from FLOPs, bytes and the node's rates.

Every term is ``max(flops / (peak * eff_compute), bytes / (bw * eff_mem))`` plus a fixed kernel
time, with the rates of ``GpuSpec``/``NodeSpec`` (attention and collectives with their own fitted
efficiencies and floors) (see ``docs/cost-model.md`` for the sources and
what each efficiency stands for). ``Roofline.stage_s`` is the one roofline of a pipeline stage:
the simulator's hot path calls it for a time, ``CostModel.stage_breakdown`` for the same time
split into parts. It assumes: all four GEMMs of a layer see the same rows, so a layer's linear
time is one max over their summed FLOPs and bytes; one attention kernel per layer and kind;
ring all-reduces with a small-message floor, at the faster of NCCL's two protocols where a node has both
(over the network, one protocol, where a TP group spans nodes: ``cluster``); the per-step overhead
shared among stages in proportion to their layers.
Precision (``ModelSpec.fp8_weights``): the decoder's GEMMs run at the GPU's FP8 peak and read 1-byte
weights; the LM head, attention, norms and collectives stay 16-bit; an FP8 KV cache halves the
KV bytes that decode attention reads and that swaps move.
"""

from __future__ import annotations

from dataclasses import dataclass

from seesaw.core import ModelSpec, NodeSpec, ParallelConfig
from simulator.cost.cluster import cross_node_allreduce, cross_node_send, tp_spans_nodes
from simulator.cost.shapes import BatchShape
from simulator.cost.stages import StageConstants, gemm_shapes, kv_heads_per_gpu, layers_per_stage

__all__ = ["ELEMENTWISE_KERNELS", "Roofline", "build_stages", "elementwise_bytes_per_token"]

ELEMENTWISE_KERNELS = 6  # per layer: 2 RMSNorms, RoPE, SiLU-and-mul, 2 residual adds (vLLM's Llama)


def elementwise_bytes_per_token(model: ModelSpec, tp: int) -> float:
    """Bytes one GPU's small kernels of one layer read and write per token: each RMSNorm reads and
    writes [h], each residual add reads two [h] and writes one, RoPE rewrites this GPU's Q and K
    heads, SiLU-and-mul reads [2i/tp] and writes [i/tp]."""
    m = model
    qk = (m.num_attention_heads / tp + kv_heads_per_gpu(m, tp)) * m.d_head
    return (2 * 2 * m.hidden_size + 2 * 3 * m.hidden_size + 2 * qk + 3 * m.intermediate_size / tp) * m.dtype_bytes


@dataclass(frozen=True, slots=True)
class Roofline:
    """Rates actually reached on one node (datasheet peaks times the profile's efficiencies)."""

    flops_per_s: float  # decoder GEMMs: the peak of their precision (16-bit or FP8) * compute_efficiency
    hbm_bytes_per_s: float  # streaming bandwidth: hbm_bandwidth * memory_efficiency
    n0: float  # compute_saturation_tokens: a GEMM of n rows costs n + n0 rows at full efficiency
    kernel_s: float  # fixed launch/ramp/tail time of one GEMM kernel
    link_bytes_per_s: float  # GPU-GPU link per GPU
    host_bytes_per_s: float  # GPU-host link per GPU
    allreduce_latency_s: float  # per ring step
    p2p_latency_s: float
    # prefill attention: FLOP/s reached on long contexts, and k0 of its efficiency curve k / (k + k0)
    attn_flops_per_s: float = 0.0
    attn_keys0: float = 0.0
    decode_bytes_per_s: float = 0.0  # decode attention's KV read rate
    decode_floor_s: float = 0.0  # one decode-attention call
    elementwise_bytes_per_s: float = 0.0  # norms, RoPE, activation, residual adds
    allreduce_base_s: float = 0.0  # one all-reduce's floor besides the ring steps
    p2p_bytes_per_s: float = 0.0  # send/recv bandwidth
    head_flops_per_s: float = 0.0  # the LM head's 16-bit GEMM (0: flops_per_s)
    # NCCL's low-latency protocol (LL/LL128): a lower floor at a lower bandwidth (0: none)
    allreduce_small_base_s: float = 0.0
    allreduce_small_bytes_per_s: float = 0.0
    p2p_small_latency_s: float = 0.0
    p2p_small_bytes_per_s: float = 0.0
    non_gemm_kernel_s: float = 0.0  # the same of a norm/RoPE/activation/add or prefill-attention kernel

    @classmethod
    def of(cls, node: NodeSpec, fp8: bool = False) -> "Roofline":
        """The rates of ``node``; ``fp8``: the decoder GEMMs at the FP8 tensor peak (one-line error
        for a GPU without FP8 tensor cores)."""
        gpu = node.gpu
        return cls(
            flops_per_s=gpu.gemm_peak_flops(fp8) * gpu.compute_efficiency,
            head_flops_per_s=gpu.peak_flops * gpu.compute_efficiency,
            hbm_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s * gpu.memory_efficiency,
            n0=float(gpu.compute_saturation_tokens),
            kernel_s=gpu.kernel_overhead_s,
            link_bytes_per_s=node.gpu_link_bandwidth_bytes_per_s,
            host_bytes_per_s=node.host_link_bandwidth_bytes_per_s,
            allreduce_latency_s=node.allreduce_latency_s,
            p2p_latency_s=node.p2p_latency_s,
            attn_flops_per_s=gpu.peak_flops * gpu.attention_compute_efficiency,
            attn_keys0=gpu.attention_saturation_keys,
            decode_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s * gpu.decode_attention_memory_efficiency,
            decode_floor_s=gpu.decode_attention_floor_s,
            elementwise_bytes_per_s=gpu.hbm_bandwidth_bytes_per_s * gpu.elementwise_memory_efficiency,
            allreduce_base_s=node.allreduce_base_s,
            p2p_bytes_per_s=node.p2p_bandwidth_bytes_per_s or node.gpu_link_bandwidth_bytes_per_s,
            allreduce_small_base_s=node.allreduce_small_base_s or 0.0,
            allreduce_small_bytes_per_s=node.allreduce_small_bandwidth_bytes_per_s or 0.0,
            p2p_small_latency_s=node.p2p_small_latency_s or 0.0,
            p2p_small_bytes_per_s=node.p2p_small_bandwidth_bytes_per_s or 0.0,
            non_gemm_kernel_s=(gpu.kernel_overhead_s if gpu.non_gemm_kernel_s is None
                                  else gpu.non_gemm_kernel_s),
        )

    # ---------------------------------------------------------------------------------------
    # one stage

    def stage_s(self, c: StageConstants, shape: BatchShape, parts: dict[str, float] | None = None) -> float:
        """Seconds for stage ``c`` to run ``shape``; when ``parts`` is given, also books each term
        into it (``compute_s``/``weight_read_s``: linear layers and LM head under whichever roofline
        term bounds them; ``attention_s``; ``comm_s``: all-reduces and the logits gather;
        ``overhead_s``). The sum is taken in one fixed order, the hot path's."""
        n = shape.prefill_tokens + shape.decode_seqs
        rows = shape.sampled_seqs if c.head_flops_per_row else 0
        if not n and not rows:
            return 0.0
        book = parts is not None
        t = c.overhead_s
        if book:
            parts["overhead_s"] = c.overhead_s
        if n:
            comp = c.lin_flops_per_token * (n + self.n0) / self.flops_per_s
            lin = (comp if comp > c.lin_read_s else c.lin_read_s) + c.lin_kernel_s + c.misc_s_per_token * n
            ar, ar_fixed = c.ar_s_per_token * n, c.ar_fixed_s
            if c.ar_small_s_per_token:  # the faster protocol for this size (as stage_allreduce_s)
                small = c.ar_small_s_per_token * n + c.ar_small_fixed_s
                if small < ar + ar_fixed:
                    ar, ar_fixed = small, 0.0
            t += lin + ar + ar_fixed
            if book:
                parts["compute_s" if comp > c.lin_read_s else "weight_read_s"] += lin
                parts["comm_s"] += ar + ar_fixed
        # attention terms written out here (the hot path, once per stage per simulated step);
        # prefill_attention_s / decode_attention_s are the same terms for the measured fallback
        if shape.prefill_tokens:
            comp = c.attn_s_per_pair * shape.prefill_attn_pairs + c.attn_s_per_query * shape.prefill_tokens
            mem = c.attn_read_s_per_prefill_token * shape.prefill_tokens
            attn = (comp if comp > mem else mem) + c.attn_kernel_s
            t += attn
            if book:
                parts["attention_s"] += attn
        if shape.decode_seqs:
            attn = c.decode_s_per_token * shape.decode_context_tokens + c.decode_kernel_s
            t += attn
            if book:
                parts["attention_s"] += attn
        if rows:
            comp = c.head_flops_per_row * (rows + self.n0) / (self.head_flops_per_s or self.flops_per_s)
            head = (comp if comp > c.head_read_s else c.head_read_s) + self.kernel_s
            gather = c.head_gather_s_per_row * rows
            t += head + gather + c.head_gather_fixed_s
            if book:
                parts["compute_s" if comp > c.head_read_s else "weight_read_s"] += head
                parts["comm_s"] += gather + c.head_gather_fixed_s
        return t

    def stage_allreduce_s(self, c: StageConstants, n: int) -> float:
        """The stage's TP all-reduces of one step of ``n`` tokens, at the faster protocol (the same
        terms as ``stage_s`` writes out in its hot path)."""
        ar = c.ar_s_per_token * n + c.ar_fixed_s
        if c.ar_small_s_per_token:
            small = c.ar_small_s_per_token * n + c.ar_small_fixed_s
            if small < ar:
                return small
        return ar

    def prefill_attention_s(self, c: StageConstants, shape: BatchShape) -> float:
        """Prefill attention of the stage: QK^T and PV FLOPs over the causal pairs at the fitted
        efficiency curve ``attn_flops_per_s * k / (k + k0)``, k = keys per query (so the work of
        ``pairs + k0 * queries`` pairs at ``attn_flops_per_s``), against reading Q, K, V and
        writing O; plus one kernel's fixed time per layer."""
        comp = c.attn_s_per_pair * shape.prefill_attn_pairs + c.attn_s_per_query * shape.prefill_tokens
        mem = c.attn_read_s_per_prefill_token * shape.prefill_tokens
        return (comp if comp > mem else mem) + c.attn_kernel_s

    def decode_attention_s(self, c: StageConstants, shape: BatchShape) -> float:
        """Decode attention is memory bound: every context token's K and V of this GPU's KV heads
        are read once at the fitted decode bandwidth, plus one call's floor per layer."""
        return c.decode_s_per_token * shape.decode_context_tokens + c.decode_kernel_s

    # ---------------------------------------------------------------------------------------
    # single kernels and transfers

    def gemm_s(self, tokens: float, in_features: float, out_features: float, dtype_bytes: float) -> float:
        """One GEMM kernel of ``tokens`` rows against an ``[in_features, out_features]`` weight."""
        comp = 2.0 * in_features * out_features * (tokens + self.n0) / self.flops_per_s
        read = in_features * out_features * dtype_bytes / self.hbm_bytes_per_s
        return max(comp, read) + self.kernel_s

    def allreduce_protocols(self, tp: int) -> list[tuple[float, float]]:
        """``(fixed_s, bus_bytes_per_s)`` of each protocol an all-reduce over ``tp`` GPUs may take
        (NCCL picks the fastest for the size, as its own tuning model does): the bandwidth protocol
        (Simple), and, where the node has one, the low-latency protocol (LL/LL128: a lower floor at
        a lower bandwidth). Each costs its floor plus 2(t-1) ring steps (launch and
        synchronisation), plus the ring's bus bytes 2(t-1)/t * size per GPU (nccl-tests
        PERFORMANCE.md) at its bandwidth. The one definition of the all-reduce's constants:
        ``allreduce_s`` and the stages' per-token terms (``build_stages``) both read it."""
        steps_s = 2 * (tp - 1) * self.allreduce_latency_s
        out = [(self.allreduce_base_s + steps_s, self.link_bytes_per_s)]
        if self.allreduce_small_bytes_per_s:
            out.append((self.allreduce_small_base_s + steps_s, self.allreduce_small_bytes_per_s))
        return out

    def allreduce_s(self, nbytes: float, tp: int) -> float:
        """One all-reduce of ``nbytes`` over ``tp`` GPUs: the fastest of ``allreduce_protocols``."""
        ring = 2 * (tp - 1) / tp * nbytes
        return min(ring / bw + fixed for fixed, bw in self.allreduce_protocols(tp))

    def send_s(self, nbytes: float) -> float:
        """One send/recv between two GPUs: a floor plus the bytes at the point-to-point bandwidth,
        or the low-latency protocol's lower floor and bandwidth where the node has one and it is
        faster for this size."""
        t = nbytes / self.p2p_bytes_per_s + self.p2p_latency_s
        if self.p2p_small_bytes_per_s:
            small = nbytes / self.p2p_small_bytes_per_s + self.p2p_small_latency_s
            if small < t:
                return small
        return t

    def host_copy_s(self, nbytes: float) -> float:
        return nbytes / self.host_bytes_per_s


def build_stages(model: ModelSpec, node: NodeSpec, rf: Roofline, layout: ParallelConfig) -> list[StageConstants]:
    """The roofline constants of every stage of ``layout`` (no measured tables)."""
    m = model
    tp, pp = layout.tp, layout.pp
    h, d, B = m.hidden_size, m.d_head, m.dtype_bytes  # activations (and head, embedding, norms)
    W, KV = m.linear_bytes_per_param, m.kv_bytes_per_element  # decoder GEMM weights; KV cache
    hq_gpu = m.num_attention_heads / tp
    kv_gpu = kv_heads_per_gpu(m, tp)
    vocab_gpu = m.vocab_size / tp
    lin_params = sum(k * n for k, n in gemm_shapes(m, tp).values())
    layer_params = lin_params + 2 * h  # + two replicated RMSNorm vectors
    # ring all-reduce (NCCL): each GPU moves 2(t-1)/t of the buffer; the protocols' floors and rates
    ring_frac = 2 * (tp - 1) / tp
    (ar_latency_s, ar_bytes_per_s), *small_ar = rf.allreduce_protocols(tp)
    gather_frac = (tp - 1) / tp  # gather to one rank: it receives the other (t-1)/t shards
    parts = layers_per_stage(m, layout)
    L = m.num_hidden_layers
    out = []
    for s, layers in enumerate(parts):
        first, last = s == 0, s == pp - 1
        # a TP group spanning nodes all-reduces over the network (simulator.cost.cluster)
        link_bw, ar_lat_s, gather_lat_s, small = ar_bytes_per_s, ar_latency_s, node.p2p_latency_s, small_ar
        if tp_spans_nodes(node, layout, s):  # the network's one floor and rate replace both protocols
            (link_bw, ar_lat_s), small = cross_node_allreduce(node, tp), []
            gather_lat_s = cross_node_send(node)[1]
        head_params = vocab_gpu * h if last else 0.0
        weight_params = layers * (layer_params - lin_params) + head_params  # 16-bit: norms, head
        if first:
            weight_params += vocab_gpu * h  # vocab-parallel embedding
        if last:
            weight_params += h  # final norm
        if last and first and m.tie_word_embeddings:
            weight_params -= vocab_gpu * h  # one shared matrix
        # two all-reduces per layer (attention O, MLP down), one after the embedding
        n_ar = (2 * layers + (1 if first else 0)) if tp > 1 else 0
        attn_pair_s = 4.0 * hq_gpu * d * layers / rf.attn_flops_per_s
        out.append(StageConstants(
            layers=layers,
            weight_bytes=weight_params * B + layers * lin_params * W,
            kv_bytes_per_token=layers * 2 * kv_gpu * d * KV,
            # 2 FLOPs per multiply-accumulate per weight per token (Kaplan et al. 2020, PaLM App. B)
            lin_flops_per_token=2.0 * lin_params * layers,
            lin_read_s=lin_params * layers * W / rf.hbm_bytes_per_s,
            # fused QKV, O, fused gate/up, down: 4 GEMM kernels per layer, as in vLLM; plus the
            # layer's 6 small kernels (2 RMSNorms, RoPE, SiLU-and-mul, 2 residual adds)
            # (written as all 10 at the GEMM floor plus the small kernels' difference, which is
            # exactly 0 when a GPU gives one floor for both)
            lin_kernel_s=((4 + ELEMENTWISE_KERNELS) * layers * rf.kernel_s
                          + ELEMENTWISE_KERNELS * layers * (rf.non_gemm_kernel_s - rf.kernel_s)),
            misc_s_per_token=layers * elementwise_bytes_per_token(m, tp) / rf.elementwise_bytes_per_s,
            attn_kernel_s=layers * rf.non_gemm_kernel_s,
            # QK^T and PV: 2 x 2d FLOPs per (query, key) pair per head (FlashAttention paper), at
            # the fitted curve: the work of pairs + k0 pairs per query at attn_flops_per_s
            attn_s_per_pair=attn_pair_s,
            attn_s_per_query=attn_pair_s * rf.attn_keys0,
            # Seesaw App. A attention KV movement: read Q, K, V, write O once per token
            attn_read_s_per_prefill_token=(2 * hq_gpu + 2 * kv_gpu) * d * B * layers / rf.hbm_bytes_per_s,
            decode_s_per_token=layers * 2 * kv_gpu * d * KV / rf.decode_bytes_per_s,
            decode_kernel_s=layers * rf.decode_floor_s,
            ar_s_per_token=n_ar * ring_frac * h * B / link_bw,
            ar_fixed_s=n_ar * ar_lat_s,
            ar_small_s_per_token=n_ar * ring_frac * h * B / small[0][1] if small and n_ar else 0.0,
            ar_small_fixed_s=n_ar * small[0][0] if small else 0.0,
            head_flops_per_row=2.0 * head_params,
            head_read_s=head_params * B / rf.hbm_bytes_per_s,
            head_gather_s_per_row=(gather_frac * m.vocab_size * B / link_bw
                                   if last and tp > 1 else 0.0),
            head_gather_fixed_s=gather_lat_s if last and tp > 1 else 0.0,
            overhead_s=node.step_overhead_s * layers / L,
        ))
    return out
