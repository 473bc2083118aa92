"""Golden outputs: three scenarios whose results were recorded before the layered restructure
(issue 19) and must stay exactly the same: a simulate summary, a plan ranking, a what-if table.

A change that moves these numbers on purpose (a cost-model fix) regenerates the files with the
commands in each test and says so in its commit.
"""

import json
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden")


def _last_json(stdout: str) -> dict:
    return json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])


def _strip_wall(obj):
    """Without wall-clock fields, the only ones a machine's speed moves."""
    if isinstance(obj, dict):
        return {k: _strip_wall(v) for k, v in obj.items() if k != "wall_s"}
    return [_strip_wall(v) for v in obj] if isinstance(obj, list) else obj


def _golden_json(name: str) -> dict:
    return json.loads((GOLDEN / name).read_text())


def test_simulate_summary_is_unchanged(seesaw):
    res = seesaw("simulate", "--model", "llama2-70b", "--gpu", "l4", "--num-gpus", "8", "--workload", "sharegpt",
                 "-n", "300", "--layout", "P8->T4P2", "--seed", "0", "--json")
    assert res.returncode == 0, res.stderr
    assert _strip_wall(_last_json(res.stdout)) == _golden_json("simulate_70b_8xl4_P8-T4P2.json")


def test_plan_ranking_is_unchanged(seesaw, tmp_path):
    res = seesaw("plan", "--model", "llama2-13b", "--gpu", "a100-40g", "--num-gpus", "4", "--workload", "sharegpt",
                 "-n", "200", "--seed", "0", "--workers", "1", "--json", "-o", tmp_path / "plan")
    assert res.returncode == 0, res.stderr
    assert _strip_wall(_last_json(res.stdout)) == _golden_json("plan_13b_4xa100.json")
    ranking = (tmp_path / "plan" / "candidates.csv").read_text()
    assert ranking == (GOLDEN / "plan_13b_4xa100_candidates.csv").read_text()


def test_whatif_table_is_unchanged(seesaw, tmp_path):
    res = seesaw("whatif", "--model", "llama2-13b", "--gpu", "l4,a10", "--num-gpus", "4", "--workload", "sharegpt",
                 "-n", "2000", "--sample-size", "200", "--workers", "1", "-o", tmp_path / "wi")
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "wi" / "options.csv").read_text() == (GOLDEN / "whatif_13b_l4_a10_options.csv").read_text()
