"""Layouts over several nodes: which collectives and hand-offs cross a node boundary, and their cost.

Ranks fill node 0 first (``NodeSpec.node_of_rank``) in ``ParallelConfig``'s rank order
(TP-contiguous, PP-strided, DP outermost), so a TP group spans nodes only when ``tp`` does not
fit in (or straddles) one node, and a PP stage boundary crosses nodes when its two stages sit on
different ones. Replicas may differ when a replica's GPUs do not divide a node's: a stage or a
boundary is costed as crossing when it crosses in any replica (the slowest replica decides).

Costs over the network (``NetworkSpec``, per GPU):
- a send/recv across nodes: the bytes at ``min(p2p link, network)`` plus the network's latency
  (each TP rank sends its own copy to its peer over its own share of the NICs);
- a ring all-reduce spanning nodes: NCCL builds one ring per NIC and each ring crosses every node
  boundary once, so the bus bandwidth is the NIC bandwidth of the group's GPUs in one node (``g``
  GPUs x the per-GPU network bandwidth), capped by the intra-node link; its small-message floor
  is the network's ``allreduce_latency_s`` (nccl-tests PERFORMANCE.md bus bandwidth; ring
  analysis from memory, not re-checked against a multi-node run).
The host link stays per GPU: swaps and re-shards do not touch the network.
"""

from __future__ import annotations

from seesaw.core import NodeSpec, ParallelConfig

__all__ = ["boundary_crosses_nodes", "cross_node_allreduce", "cross_node_send", "tp_spans_nodes"]


def _replicas(layout: ParallelConfig):
    return range(layout.dp)


def tp_spans_nodes(node: NodeSpec, layout: ParallelConfig, stage: int) -> bool:
    """Whether the TP group of PP stage ``stage`` spans nodes in some replica."""
    if node.num_nodes == 1 or layout.tp == 1:
        return False
    return any(node.node_of_rank(layout.rank(d, 0, stage)) != node.node_of_rank(layout.rank(d, layout.tp - 1, stage))
               for d in _replicas(layout))


def boundary_crosses_nodes(node: NodeSpec, layout: ParallelConfig, boundary: int) -> bool:
    """Whether the hand-off from stage ``boundary`` to ``boundary + 1`` crosses nodes in some replica
    (some TP rank's peer on the next stage is on another node)."""
    if node.num_nodes == 1:
        return False
    return any(node.node_of_rank(layout.rank(d, t, boundary)) != node.node_of_rank(layout.rank(d, t, boundary + 1))
               for d in _replicas(layout) for t in range(layout.tp))


def cross_node_send(node: NodeSpec) -> tuple[float, float]:
    """(bytes per second, latency in s) of one send/recv between GPUs on two nodes."""
    net = node.network
    assert net is not None, "a cluster always has a network (NodeSpec validates it)"
    p2p = node.p2p_bandwidth_bytes_per_s or node.gpu_link_bandwidth_bytes_per_s
    return min(p2p, net.bandwidth_bytes_per_s), net.latency_s


def cross_node_allreduce(node: NodeSpec, tp: int) -> tuple[float, float]:
    """(bus bytes per second, fixed s) of a ring all-reduce over ``tp`` GPUs that spans nodes:
    the ring's bus bandwidth is the NIC bandwidth of the group's GPUs in one node (capped by the
    intra-node link); the fixed time is the network's all-reduce floor (it replaces the
    intra-node floor and ring-step latencies)."""
    net = node.network
    assert net is not None, "a cluster always has a network (NodeSpec validates it)"
    per_node = min(tp, node.num_gpus)
    return min(node.gpu_link_bandwidth_bytes_per_s, per_node * net.bandwidth_bytes_per_s), net.allreduce_latency_s
