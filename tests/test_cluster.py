"""Clusters: N identical nodes joined by a per-GPU network (``NodeSpec.num_nodes``, ``NetworkSpec``).

Layouts over nodes (TP inside a node in the planner), cross-node hand-offs and all-reduces costed
over the network, DP replicas on separate nodes, and the one-line errors of ``--num-nodes``.
"""

import pytest

from seesaw import catalog
from seesaw.app.simulate import resolve_node
from seesaw.core import GiB, ParallelConfig, SpecError, VllmPolicy, parse_parallel
from seesaw.workload import load_workload
from simulator.cost import CostModel
from simulator.planner import enumerate_layouts
from simulator.sim import default_host_kv_bytes, simulate
from tests.factories import assert_one_line_exit_2


def test_a_cluster_is_num_nodes_copies_of_a_node_with_ranks_filling_node_0_first():
    one = catalog.load_node("8xl4")
    two = resolve_node("8xl4", num_nodes=2)
    assert (two.name, two.num_nodes, two.num_gpus, two.total_gpus) == ("2x8xl4", 2, 8, 16)
    assert two.host_memory_bytes == 2 * one.host_memory_bytes
    assert two.host_link_bandwidth_bytes_per_s == one.host_link_bandwidth_bytes_per_s  # per GPU, unchanged
    assert [two.node_of_rank(r) for r in (0, 7, 8, 15)] == [0, 0, 1, 1]
    # the host weight store is one full copy per node
    model = catalog.load_model("llama2-13b")
    assert default_host_kv_bytes(model, two) == pytest.approx(0.8 * two.host_memory_bytes - 2 * model.weight_bytes)
    # the entry syntax: 2x8xl4 is 2 nodes, 8xa100-80g 8 GPUs of a catalog GPU (on its NVLink node)
    assert resolve_node("2x8xl4") == two
    assert resolve_node("8xa100-80g").name == "8xa100-80g-nvlink"
    assert resolve_node("2x8xa100-80g").total_gpus == 16
    assert resolve_node("l4", 4, None, 2).name == "2x4xl4"


def test_a_two_node_plan_keeps_tp_inside_a_node_and_says_why_it_rejects_the_rest():
    model, node = catalog.load_model("llama2-13b"), resolve_node("8xh100", num_nodes=2)
    feasible, rejected = enumerate_layouts(model, node)
    assert all(c.world_size == 16 and c.tp <= 8 for c in feasible)
    names = {str(c) for c in feasible}
    assert {"D2T4P2", "D2T8", "T8P2", "D4T4", "T4P4", "D16"} <= names  # PP and DP go across nodes
    reasons = dict(rejected)
    assert reasons["D1T16P1"].startswith("TP spans nodes (tp=16 over nodes of 8 GPUs)")
    # tp=16 would shard 13B's 40 heads unevenly anyway; 70B (64 heads) shows the rule alone rejects it
    big = dict(enumerate_layouts(catalog.load_model("llama2-70b"), node)[1])
    assert "TP spans nodes" in big["D1T16P1"]


def test_a_pp_boundary_that_crosses_nodes_costs_the_network_hand_off():
    model, node = catalog.load_model("llama2-70b"), resolve_node("8xl4", num_nodes=2)
    cost = CostModel(model, node)
    layout = parse_parallel("T4P4")  # stages on ranks 0-3 | 4-7 || 8-11 | 12-15: boundary 1 crosses
    tokens = 256
    nbytes = tokens * model.hidden_size * model.dtype_bytes
    intra, cross, intra2 = cost.pp_sends_s(layout, tokens)
    net = node.network
    assert intra == intra2 == pytest.approx(nbytes / node.gpu_link_bandwidth_bytes_per_s + node.p2p_latency_s)
    link = min(node.gpu_link_bandwidth_bytes_per_s, net.bandwidth_bytes_per_s)
    assert cross == pytest.approx(nbytes / link + net.latency_s)
    assert cross > 5 * intra  # 12.5 Gb/s per GPU against 8.5 GB/s of PCIe
    # one node of the same GPUs: no boundary crosses; chain_s adds each boundary once
    alone = CostModel(model, catalog.load_node("8xl4").model_copy(update={"num_gpus": 16}))
    assert alone.pp_sends_s(layout, tokens) == pytest.approx([intra] * 3)
    shape_chain = cost.chain_s(layout, _decode(tokens))[0] - alone.chain_s(layout, _decode(tokens))[0]
    assert shape_chain == pytest.approx(cross - intra)


def _decode(seqs):
    from simulator.cost import BatchShape

    return BatchShape(decode_seqs=seqs, decode_context_tokens=seqs * 512, sampled_seqs=seqs)


def test_a_tp_group_spanning_nodes_all_reduces_over_the_network():
    model, node = catalog.load_model("llama2-70b"), resolve_node("8xh100", num_nodes=2)
    cost = CostModel(model, node)
    span, inside = cost.stages(parse_parallel("T16"))[0], cost.stages(parse_parallel("D2T8"))[0]
    n_ar = 2 * model.num_hidden_layers + 1
    net = node.network
    assert span.ar_fixed_s == pytest.approx(n_ar * net.allreduce_latency_s)
    assert inside.ar_fixed_s == pytest.approx(n_ar * (node.allreduce_base_s + 14 * node.allreduce_latency_s))
    bus = min(node.gpu_link_bandwidth_bytes_per_s, 8 * net.bandwidth_bytes_per_s)  # one ring per NIC
    assert span.ar_s_per_token == pytest.approx(n_ar * 2 * 15 / 16 * model.hidden_size * model.dtype_bytes / bus)
    assert span.ar_fixed_s > inside.ar_fixed_s


def test_dp_across_two_nodes_gives_twice_one_node_on_a_balanced_workload():
    model = catalog.load_model("llama2-13b")
    one, two = catalog.load_node("8xl4"), resolve_node("8xl4", num_nodes=2)
    reqs = load_workload("constant", num_requests=400, input_len=512, output_len=128)
    single = simulate(model, one, VllmPolicy(layout=parse_parallel("D2T4")), reqs[:200])
    double = simulate(model, two, VllmPolicy(layout=parse_parallel("D4T4")), reqs)
    assert double.tokens_per_second / single.tokens_per_second == pytest.approx(2.0, rel=0.02)


def test_simulate_refuses_a_layout_that_does_not_use_every_gpu_of_the_cluster():
    model, node = catalog.load_model("llama2-13b"), resolve_node("8xl4", num_nodes=2)
    with pytest.raises(SpecError, match="uses 8 GPUs but the node 2x8xl4 has 16"):
        simulate(model, node, VllmPolicy(layout=ParallelConfig(tp=4, pp=2)), load_workload("constant", 4))
    with pytest.raises(SpecError, match="needs 32 GPUs, cluster \\(2 nodes\\) 2x8xl4 has 16"):
        CostModel(model, node).check_fits(parse_parallel("D8T4"))


def test_a_node_yaml_with_num_nodes_is_a_cluster_and_one_without_a_network_is_refused(tmp_path):
    good = tmp_path / "my-cluster.yaml"
    good.write_text(catalog.profile_path("nodes", "8xl40s").read_text() + "num_nodes: 3\nname: my-cluster\n")
    node = resolve_node(str(good))
    assert (node.name, node.total_gpus, node.network.kind) == ("my-cluster", 24, "efa")
    assert resolve_node(str(good), num_nodes=1).total_gpus == 8  # --num-nodes wins over the file
    bad = tmp_path / "bad.yaml"
    bad.write_text(catalog.profile_path("nodes", "8xrtx4090").read_text() + "num_nodes: 2\n")
    with pytest.raises(catalog.CatalogError, match="bad.yaml: .*2 nodes of 8xrtx4090 need a 'network' section"):
        catalog.load_node(str(bad))


def test_every_cited_network_is_per_gpu_and_below_the_intra_node_link():
    for name in catalog.list_catalog()["nodes"]:
        node = catalog.load_node(name)
        if node.network is not None:
            assert node.network.source and node.network.bandwidth_bytes_per_s <= 100e9
            assert node.network.bandwidth_bytes_per_s < node.gpu_link_bandwidth_bytes_per_s or node.interconnect == "pcie"


def test_the_api_takes_num_nodes():
    import seesaw

    kw = dict(model="llama2-13b", gpu="8xl4", workload="constant", num_requests=40, input_len=256, output_len=16)
    assert seesaw.simulate(num_nodes=2, **kw).tokens_per_second > 0  # default layout: D2T4P2
    with pytest.raises(SpecError, match="uses 8 GPUs but the node 2x8xl4 has 16"):
        seesaw.simulate(num_nodes=2, layout="T4P2", **kw)


@pytest.mark.parametrize("args, words", [
    (("simulate", "-g", "8xrtx4090", "--num-nodes", "2"), ("8xrtx4090", "network")),
    (("plan", "-g", "rtx4090", "--num-nodes", "2", "-n", "5"), ("8xrtx4090", "inter-node link")),
    (("whatif", "-g", "l4", "--num-nodes", "1,x", "-n", "5"), ("--num-nodes", "integers")),
    (("whatif", "-g", "l4", "--num-nodes", "0", "-n", "5"), ("--num-nodes", "positive")),
    (("whatif", "-g", "l4,2x8xrtx4090", "-n", "5"), ("8xrtx4090", "network")),
])
def test_bad_node_counts_are_one_line_errors(seesaw, tmp_path, args, words):
    assert_one_line_exit_2(seesaw(*args, "-o", tmp_path / "out") if args[0] != "simulate" else seesaw(*args),
                           *words)


def test_num_nodes_below_one_is_refused_by_the_cli(seesaw):
    res = seesaw("simulate", "--num-nodes", "0")
    assert res.returncode == 2 and "--num-nodes" in res.stderr and "Traceback" not in res.stderr


def test_plan_on_two_nodes_prints_the_tp_rejection(seesaw):
    res = seesaw("compare", "-m", "llama2-70b", "-g", "8xl4", "--num-nodes", "2", "-w", "constant",
                 "--input-len", "256", "--output-len", "16", "-n", "16", "--sample-size", "16", "--workers", "1")
    assert res.returncode == 0, res.stderr
    assert "2x8xl4" in res.stdout and "TP spans nodes" in res.stdout


def test_host_pool_error_counts_one_weight_copy_per_node():
    model, node = catalog.load_model("llama2-13b"), resolve_node("8xl4", num_nodes=2)
    from seesaw.core import SeesawPolicy

    too_big = node.host_memory_bytes - model.weight_bytes  # fits one copy, not two
    policy = SeesawPolicy(prefill_layout=parse_parallel("D2P8"), decode_layout=parse_parallel("D2T4P2"),
                          host_kv_bytes=too_big)
    with pytest.raises(SpecError, match=f"- {2 * model.weight_bytes / GiB:.1f} GiB"):
        simulate(model, node, policy, load_workload("constant", 4))


def test_whatif_compares_one_node_with_a_cluster_entry_and_node_counts():
    import seesaw

    kw = dict(model="llama2-13b", workload="constant", num_requests=40, input_len=256, output_len=16,
              sample_size=40, workers=1)
    res = seesaw.whatif(gpu="8xl4,2x8xl4", num_gpus="8", **kw)
    rows = {r["option"]: r for r in res.table().to_dict("records")}
    assert {k: rows[k]["num_gpus"] for k in rows} == {"8xl4": 8, "2x8xl4": 16}
    two = rows["2x8xl4"]
    assert two["gpu_hours"] == pytest.approx(16 * two["makespan_s"] / 3600)
    assert [o.name for o in seesaw.whatif(gpu="l4", num_gpus="4", num_nodes="1,2", **kw).options] == ["4xl4", "2x4xl4"]


def test_a_cluster_plan_does_not_match_one_node_of_its_kind():
    """A plan made for 2 x 8 H100 is for 16 GPUs: one 8-GPU machine of the same GPU is other hardware."""
    from types import SimpleNamespace

    from seesaw.app.machine_check import plan_mismatch

    one, two = resolve_node("8xh100"), resolve_node("8xh100", num_nodes=2)
    why = plan_mismatch(SimpleNamespace(node=two), SimpleNamespace(node=one))
    assert why is not None and "2 nodes x 8 x h100" in why
    assert plan_mismatch(SimpleNamespace(node=one), SimpleNamespace(node=one)) is None


def test_a_hand_off_time_is_defined_without_a_stage_boundary():
    """pp == 1 has no boundary, yet callers (notebook 01's breakdown) ask a hand-off's time: the
    node's own send, as on one node."""
    model = catalog.load_model("llama2-13b")
    node = resolve_node("8xl4", num_nodes=2)
    cost = CostModel(model, node)
    t8 = parse_parallel("D2T8")
    assert cost.pp_send_s(t8, 256) == CostModel(model, catalog.load_node("8xl4")).pp_send_s(parse_parallel("T8"), 256)
