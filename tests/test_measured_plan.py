"""A measured machine is planned like a GPU node: ``--gpu`` names a measured profile."""

import json


def test_plan_on_the_measured_cpu_box(seesaw):
    res = seesaw("plan", "--gpu", "cpu-2core", "--model", "smollm2-135m", "--workload", "constant", "-n", 16,
                 "--input-len", 64, "--output-len", 8, "--workers", 1, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    plan = out["plan"]
    assert plan["provenance"]["cost_model"] == "measured profile 'cpu-2core'"
    assert plan["node"]["num_gpus"] == 3 and plan["node"]["interconnect"] == "loopback"
    assert plan["model"]["dtype_bytes"] == 4  # costed in the profile's dtype (fp32)
    assert plan["predicted"]["throughput_tok_s"] > 0


def test_simulate_on_the_measured_cpu_box_with_two_ranks(seesaw):
    res = seesaw("simulate", "--gpu", "cpu-2core", "--num-gpus", 2, "--model", "tiny", "--workload", "constant",
                 "-n", 8, "--input-len", 32, "--output-len", 4, "--layout", "P2", "--json")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["layout"] == "P2" and summary["tokens_per_second"] > 0
