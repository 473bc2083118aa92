"""Honest planned runs: ``seesaw run --auto`` / ``--plan`` check the machine they run on (its
cores, its hardware against the plan's, its speed against the measured profile) and say how
much of the measured/predicted gap the machine's speed explains."""

import json
import math

import pytest

from seesaw.app import machine_check
from seesaw.app.autotune import comparison
from seesaw.app.machine_check import SpeedCheck, speed_section
from seesaw.report.comparison import comparison_lines
from tests.factories import assert_one_line_exit_2, tiny_plan_file

SMALL = ["--input", "constant", "-n", 3, "--input-len", 8, "--output-len", 3, "--no-warmup"]



def test_more_ranks_than_cores_is_refused_unless_oversubscribe(seesaw, tmp_path, monkeypatch):
    monkeypatch.setattr(machine_check, "usable_cores", lambda: 1)
    assert_one_line_exit_2(seesaw("run", "--model", "tiny", "--layout", "P2", *SMALL, "-d", tmp_path / "a"),
              "layout P2 would run 2 CPU ranks on 1 core(s)", "--num-ranks 1", "--oversubscribe")
    assert_one_line_exit_2(seesaw("run", "--auto", "--model", "tiny", "--num-ranks", 3, *SMALL, "-d", tmp_path / "b"),
              "--auto --num-ranks 3 would run 3 CPU ranks on 1 core(s)")
    for d in ("a", "b"):  # refused before anything was written
        assert not (tmp_path / d).exists() or not list((tmp_path / d).iterdir())
    res = seesaw("run", "--model", "tiny", "--layout", "P2", *SMALL, "-d", tmp_path / "c", "--oversubscribe")
    assert res.returncode == 0, res.stderr


def test_a_plan_for_other_hardware_is_refused_and_force_repredicts_it_here(seesaw, tmp_path):
    from seesaw import catalog

    plan = tiny_plan_file(tmp_path / "l4.json", "P2", node=catalog.make_node("l4", 2), predicted=2263.3)
    assert_one_line_exit_2(seesaw("run", "--plan", plan, *SMALL, "-d", tmp_path / "a"),
              "the plan is for 2xl4 (2 x l4) but this run is on 2xcpu-2core (2 x cpu-2core)", "--force")
    assert not (tmp_path / "a").exists()
    res = seesaw("run", "--plan", plan, *SMALL, "-d", tmp_path / "b", "--force", "--no-speed-check", "--json")
    assert res.returncode == 0, res.stderr
    assert "--force: the plan is for 2xl4" in res.stderr
    comp = json.loads((tmp_path / "b" / "comparison.json").read_text())
    assert comp["planned_for"] == "2xl4 (2 x l4)" and "cpu-2core" in comp["machine"]
    # the prediction is this machine's (the measured profile), not the L4 plan's 2263.3 tokens/s
    from seesaw.app.machine_check import simulate_policy
    from seesaw.app.autotune import machine, load_plan

    written = load_plan(tmp_path / "b" / "plan.json")
    assert written.node.name == "2xcpu-2core" and written.provenance["planned_for"] == "2xl4 (2 x l4)"
    pred = comp["metrics"]["tokens_per_second"]["predicted"]
    assert pred != 2263.3 and pred == written.predicted.throughput_tok_s
    from seesaw.engine.batch_io import prepare_requests
    from seesaw.engine.checkpoint import resolve_checkpoint
    from seesaw.engine.tokenizer import load_tokenizer

    items, _ = prepare_requests("constant", load_tokenizer(resolve_checkpoint("tiny", None)), max_position=4096,
                                num_requests=3, input_len=8, output_len=3)
    again = simulate_policy(written.model, machine(2, "cpu"), written.policy, items)
    assert again.tokens_per_second == pytest.approx(pred)


def test_a_plan_for_this_machine_is_compared_at_its_speed(seesaw, tmp_path, monkeypatch):
    """The speed check (stubbed to a 2x slower machine: the check itself is tested in
    test_calibrate) runs before the plan; the comparison has the prediction at that speed and the
    share of the gap it explains, printed and in comparison.json."""
    calls = []

    def slow(profile, ranks=2, warn=None):
        calls.append((profile, ranks))
        return {"speed_ratio": 2.0}

    monkeypatch.setattr(machine_check, "speed_check", slow)
    plan = tiny_plan_file(tmp_path / "plan.json", "P2")
    res = seesaw("run", "--plan", plan, *SMALL, "-d", tmp_path / "r")
    assert res.returncode == 0, res.stderr
    assert calls == [("cpu-2core", 2)]
    assert "machine speed: 2.00x slower than measured profile 'cpu-2core'" in res.stderr
    assert "warning: this machine runs 2.00x slower" in res.stderr and "seesaw profile" in res.stderr
    assert "at speed" in res.stdout and "Machine speed: 2.00x slower than profile 'cpu-2core'" in res.stdout
    assert "speed explains" in " ".join(res.stdout.split())
    comp = json.loads((tmp_path / "r" / "comparison.json").read_text())
    s, tok = comp["speed_check"], comp["metrics"]["tokens_per_second"]
    assert s["speed_ratio"] == 2.0 and s["stale"] is True
    assert 100.0 / 2.0 <= s["predicted_at_speed_tok_s"] < 100.0  # compute slows 2x, not the collectives
    assert tok["predicted_at_speed"] == s["predicted_at_speed_tok_s"]
    assert s["explained_by_speed"] == pytest.approx(
        math.log(100.0 / s["predicted_at_speed_tok_s"]) / math.log(100.0 / tok["measured"]))
    # --no-speed-check: no check, no speed section
    res = seesaw("run", "--plan", plan, *SMALL, "-d", tmp_path / "s", "--no-speed-check")
    assert res.returncode == 0 and len(calls) == 1 and "Machine speed" not in res.stdout
    assert "speed_check" not in json.loads((tmp_path / "s" / "comparison.json").read_text())


@pytest.mark.parametrize("predicted,at,measured,share,words", [
    (100.0, 50.0, 40.0, math.log(2) / math.log(2.5), "speed explains 76% of the gap"),
    (100.0, 50.0, 50.0, 1.0, "speed explains all of the gap"),
    (100.0, 120.0, 40.0, math.log(100 / 120) / math.log(2.5), "speed explains none of the gap"),
])
def test_speed_section_share_of_the_gap(predicted, at, measured, share, words):
    from seesaw.core import Plan, VllmPolicy, parse_parallel
    from seesaw import catalog

    check = SpeedCheck("cpu-2core", 1.5, effect=at / predicted,
                       predicted_at_speed={"tokens_per_second": at, "elapsed_time": 1.0 / (at / predicted)})
    sec = speed_section(check, predicted, measured)
    assert sec["explained_by_speed"] == pytest.approx(share)
    assert sec["gap"] == pytest.approx(measured / predicted) and sec["gap_at_speed"] == pytest.approx(measured / at)
    plan = Plan(model=catalog.load_model("tiny"), node=catalog.measured_node("cpu-2core", 1),
                policy=VllmPolicy(layout=parse_parallel("T1")), workload="w",
                predicted={"throughput_tok_s": predicted, "makespan_s": 1.0})
    result = {"tokens_per_second": measured, "output_tokens_per_second": measured / 2, "elapsed_time": 2.0,
              "layout": "T1", "time_by_phase": {"prefill": 0.5, "decode": 1.5}}
    lines = comparison_lines(comparison(plan, result, check))
    assert all(len(line) <= 80 for line in lines), lines
    text = " ".join(lines)
    assert "Machine speed: 1.50x slower than profile 'cpu-2core'" in text and words in text
