"""Hardware as data: one accelerator (``GpuSpec``), a node of identical ones (``NodeSpec``) and the
inter-node link of each of its GPUs (``NetworkSpec``).

A cluster is a ``NodeSpec`` with ``num_nodes > 1``: that many identical nodes joined by their
``network`` (the one definition of a cluster; ``num_gpus`` stays the GPUs of one node and
``total_gpus`` counts them all). Ranks fill node 0 first (rank ``r`` sits on node
``r // num_gpus``), so with the rank order of ``ParallelConfig`` (TP-contiguous, PP-strided, DP
outermost) TP groups stay inside a node whenever ``tp`` divides ``num_gpus``.

Every figure is a datasheet value or a measurement, cited in the profile YAML that fills it; units
are SI and in the field names (``_bytes_per_s``, ``_s``, ``peak_flops``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from seesaw.core.base import Spec
from seesaw.core.errors import SpecError


class UnsupportedPrecision(SpecError):
    """A precision the GPU cannot run (FP8 weights without FP8 tensor cores). One line."""


class GpuSpec(Spec):
    """One accelerator, from its datasheet (or a measured profile)."""

    name: str
    memory_bytes: float = Field(gt=0, description="device memory usable by the framework")
    hbm_bandwidth_bytes_per_s: float = Field(gt=0, description="peak device-memory bandwidth")
    peak_flops: float = Field(gt=0, description="dense fp16/bf16 tensor-core FLOP/s (no sparsity)")
    peak_flops_fp8: float | None = Field(
        default=None, gt=0, description="dense FP8 tensor-core FLOP/s (no sparsity); none: no FP8 tensor cores")
    compute_efficiency: float = Field(
        default=0.7, gt=0, le=1, description="achievable fraction of peak_flops on large GEMMs"
    )
    memory_efficiency: float = Field(
        default=0.8, gt=0, le=1, description="achievable fraction of HBM bandwidth on streaming reads"
    )
    compute_saturation_tokens: float = Field(
        default=96.0, ge=0,
        description="n0 of the GEMM efficiency curve compute_efficiency * n / (n + n0): rows (tokens) "
        "at which a GEMM reaches half of compute_efficiency (96 fits Vidur's A100 GEMM profiles)",
    )
    kernel_overhead_s: float = Field(
        default=5e-6, ge=0,
        description="fixed GPU time per GEMM kernel (launch, ramp-up, tail), added to its roofline time; also "
        "every other kernel's unless non_gemm_kernel_s is given",
    )
    non_gemm_kernel_s: float | None = Field(
        default=None, ge=0,
        description="fixed GPU time of each non-GEMM kernel (a layer's RMSNorms, RoPE, SiLU-and-mul, residual "
        "adds, and its prefill attention), added to its roofline time (default: kernel_overhead_s)",
    )
    elementwise_memory_efficiency: float = Field(
        default=0.55, gt=0, le=1,
        description="fraction of HBM bandwidth reached by a layer's small memory-bound kernels (RMSNorms, "
        "RoPE, SiLU-and-mul, residual adds); each also costs non_gemm_kernel_s",
    )
    # attention (defaults: the A100 fit of benchmarks/calibrate_a100.py, carried to other GPUs as
    # fractions of their datasheet peaks; see profiles/README.md)
    attention_compute_efficiency: float = Field(
        default=0.476, gt=0, le=1,
        description="fraction of peak_flops that prefill attention (FlashAttention-2) reaches on long "
        "contexts; fitted to Vidur's A100 attention kernels",
    )
    attention_saturation_keys: float = Field(
        default=1408.0, ge=0,
        description="k0 of the prefill-attention efficiency curve attention_compute_efficiency * k / (k + k0), "
        "k = mean keys per query: each query costs k0 extra key-pairs of work (per-query-tile fixed work)",
    )
    decode_attention_memory_efficiency: float = Field(
        default=0.777, gt=0, le=1,
        description="fraction of HBM bandwidth at which decode attention reads the KV cache",
    )
    decode_attention_floor_s: float = Field(
        default=15e-6, ge=0, description="fixed GPU time of one decode-attention kernel call (per layer)",
    )
    price_per_hour_usd: float | None = Field(
        default=None, gt=0, description="on-demand price per GPU-hour, for cost objectives"
    )
    source: str = Field(default="", description="datasheet or measurement this comes from")

    @property
    def dtypes(self) -> tuple[str, ...]:
        """The weight precisions this GPU's tensor cores run (``--dtype``)."""
        return ("bf16", "fp16", "fp8") if self.peak_flops_fp8 else ("bf16", "fp16")

    def gemm_peak_flops(self, fp8: bool = False) -> float:
        """Dense tensor FLOP/s of a GEMM in 16-bit or (``fp8``) FP8; FP8 on a GPU without FP8
        tensor cores is a one-line error (weight-only FP8 with 16-bit GEMMs is not modelled)."""
        if not fp8:
            return self.peak_flops
        if self.peak_flops_fp8 is None:
            raise UnsupportedPrecision(f"GPU {self.name} has no FP8 tensor cores: --dtype fp8 is not supported; it supports "
                            f"{', '.join(self.dtypes)}")
        return self.peak_flops_fp8


class NetworkSpec(Spec):
    """The inter-node link of one GPU: its share of the node's NICs (InfiniBand, EFA, RoCE)."""

    kind: Literal["infiniband", "efa", "roce", "ethernet"] = Field(description="the fabric between nodes")
    bandwidth_bytes_per_s: float = Field(
        gt=0, description="per-GPU unidirectional inter-node bandwidth (the node's NIC bandwidth / GPUs)")
    latency_s: float = Field(default=10e-6, ge=0, description="one small send/recv between two nodes")
    allreduce_latency_s: float = Field(
        default=50e-6, ge=0,
        description="small-message floor of one all-reduce whose ring spans nodes (NCCL over the network)")
    source: str = Field(default="", description="datasheet, instance page or measurement this comes from")


class NodeSpec(Spec):
    """A node of identical GPUs: how they talk to each other and to host memory."""

    name: str
    gpu: GpuSpec
    num_gpus: int = Field(gt=0)
    interconnect: Literal["pcie", "nvlink", "xgmi", "loopback"] = Field(
        description="how collectives travel; xgmi: AMD Infinity Fabric; loopback: ranks of one host "
        "talking through the OS (gloo over TCP on a CPU 'node' built from a measured profile)")
    gpu_link_bandwidth_bytes_per_s: float = Field(
        gt=0, description="per-GPU unidirectional GPU-GPU bandwidth used by collectives"
    )
    host_link_bandwidth_bytes_per_s: float = Field(
        gt=0, description="per-GPU host<->device copy bandwidth (one direction)"
    )
    host_memory_bytes_per_gpu: float = Field(gt=0, description="CPU DRAM per GPU")
    allreduce_latency_s: float = Field(default=10e-6, ge=0, description="per ring step latency")
    allreduce_base_s: float = Field(
        default=0.0, ge=0,
        description="small-message floor of one all-reduce independent of the GPU count (NCCL launch and "
        "synchronisation), added to the 2(t-1) ring steps",
    )
    allreduce_small_base_s: float | None = Field(
        default=None, ge=0,
        description="floor of NCCL's low-latency protocol (LL/LL128) for small all-reduces, added to the same "
        "2(t-1) ring steps; an all-reduce takes the faster protocol (default: none, one protocol)",
    )
    allreduce_small_bandwidth_bytes_per_s: float | None = Field(
        default=None, gt=0, description="per-GPU bus bandwidth of that low-latency protocol",
    )
    p2p_latency_s: float = Field(default=10e-6, ge=0, description="one send/recv latency")
    p2p_bandwidth_bytes_per_s: float | None = Field(
        default=None, gt=0,
        description="one send/recv's bandwidth between two GPUs (default: gpu_link_bandwidth_bytes_per_s)",
    )
    p2p_small_latency_s: float | None = Field(
        default=None, ge=0,
        description="floor of the low-latency protocol for small send/recvs; a send/recv takes the faster "
        "protocol (default: none, one protocol)",
    )
    p2p_small_bandwidth_bytes_per_s: float | None = Field(
        default=None, gt=0, description="bandwidth of that low-latency send/recv protocol",
    )
    step_overhead_s: float = Field(default=2e-3, ge=0, description="fixed CPU/launch cost per step")
    network: NetworkSpec | None = Field(
        default=None, description="each GPU's link to other nodes; needed when num_nodes > 1")
    num_nodes: int = Field(default=1, gt=0, description="identical nodes of this kind (a cluster when > 1)")
    source: str = ""

    @model_validator(mode="after")
    def _cluster_has_network(self) -> "NodeSpec":
        if self.num_nodes > 1 and self.network is None:
            raise ValueError(f"{self.num_nodes} nodes of {self.name} need a 'network' section (the inter-node "
                             "link per GPU); see `seesaw catalog --template node`")
        return self

    @model_validator(mode="after")
    def _small_protocols_paired(self) -> "NodeSpec":
        for a, b in (("allreduce_small_base_s", "allreduce_small_bandwidth_bytes_per_s"),
                     ("p2p_small_latency_s", "p2p_small_bandwidth_bytes_per_s")):
            if (getattr(self, a) is None) != (getattr(self, b) is None):
                raise ValueError(f"{a} and {b} go together: give both or neither")
        return self

    @property
    def total_gpus(self) -> int:
        """GPUs of all nodes."""
        return self.num_gpus * self.num_nodes

    @property
    def host_memory_bytes(self) -> float:
        """Host memory of all nodes."""
        return self.host_memory_bytes_per_gpu * self.total_gpus

    def node_of_rank(self, rank: int) -> int:
        """The node global rank ``rank`` runs on (ranks fill node 0 first)."""
        return rank // self.num_gpus
