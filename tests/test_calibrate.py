"""``seesaw calibrate`` end to end on the tiny model (CPU, T1 and T2).

The error bound is deliberately loose (prediction within a factor of 10 of the measurement): the
shared CI box runs at a load average several times its core count, which slows the engine's
multi-rank steps far beyond what the profile measured. ``benchmarks/calibrate_cpu.py`` measures
the real accuracy.
"""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml

from seesaw.app.calibrate import CalibrationError, Row, parse_workloads, regret


def test_parse_workloads():
    w = parse_workloads("constant:256/8, sharegpt", input_len=32, output_len=16)
    assert [(x.source, x.input_len, x.output_len) for x in w] == [("constant", 256, 8), ("sharegpt", 32, 16)]
    assert w[0].label == "constant:256/8"
    with pytest.raises(CalibrationError):
        parse_workloads("constant:a/b")
    with pytest.raises(CalibrationError):
        parse_workloads(" , ")


def test_regret():
    rows = [Row("T2", "w", 8, 100.0, 300.0, 1, 1), Row("P2", "w", 8, 120.0, 200.0, 1, 1),
            Row("T2", "v", 8, 50.0, 60.0, 1, 1), Row("P2", "v", 8, 40.0, 50.0, 1, 1)]
    r = regret(rows)
    assert r["per_workload"]["w"]["predicted_best"] == "T2"
    assert r["per_workload"]["w"]["measured_best"] == "P2"
    assert r["per_workload"]["w"]["regret"] == pytest.approx(0.2)
    assert r["per_workload"]["v"]["regret"] == 0.0
    assert r["max"] == pytest.approx(0.2)


def test_error_beyond_range():
    row = Row("P2", "w", 8, 100.0, 130.0, 1, 1, measured_runs=[90.0, 100.0, 120.0])
    assert (row.measured_min_tok_s, row.measured_max_tok_s) == (90.0, 120.0)
    assert row.rel_error == pytest.approx(0.3)
    assert row.error_beyond_range == pytest.approx(10 / 120)
    assert Row("P2", "w", 8, 100.0, 80.0, 1, 1, measured_runs=[90.0, 100.0]).error_beyond_range == pytest.approx(-1 / 9)
    assert Row("P2", "w", 8, 100.0, 95.0, 1, 1, measured_runs=[90.0, 100.0]).error_beyond_range == 0.0
    single = Row("P2", "w", 8, 100.0, 110.0, 1, 1)  # one run: its range is the run itself
    assert single.error_beyond_range == pytest.approx(single.rel_error)


def test_outputs_with_a_prediction_at_speed_for_some_rows(tmp_path):
    """Rows without a prediction at speed (a failed check) sit beside rows with one: the plot,
    CSV and summary take both, and the at-speed figures come from the rows that have them."""
    from seesaw.app.calibrate import write_outputs
    from seesaw.report.calibration import speed_line

    rows = [Row("T2", "w", 8, 100.0, 130.0, 1, 1, measured_runs=[90.0, 110.0], run_speeds=[1.2, 1.3],
                speed_ratio=1.3, predicted_at_speed_tok_s=105.0),
            Row("P2", "w", 8, 200.0, 210.0, 1, 1, measured_runs=[200.0, 190.0], run_speeds=[None, None])]
    summ = write_outputs(rows, tmp_path)
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert summ["median_abs_rel_error_at_speed"] == pytest.approx(0.05) and summ["worst_pair_at_speed"] == "T2 / w"
    assert (summ["speed_ratio_min"], summ["speed_ratio_max"]) == (1.2, 1.3)
    assert "1.20x-1.30x the profile's step times" in speed_line(summ)
    assert "measure it again" not in speed_line(summ)  # 1.2x: drift, not a stale profile
    assert speed_line(dict(summ, speed_ratio_min=1.3)).endswith(
        "every check read the machine 1.30x slower or more than the profile: "
        "measure it again (seesaw profile) for predictions at today's speed")
    assert "1.33x faster or more" in speed_line(dict(summ, speed_ratio_min=0.6, speed_ratio_max=0.75))
    header = (tmp_path / "calibration.csv").read_text().splitlines()[0]
    assert "rel_error_at_speed" in header and "run_speeds" not in header


def test_calibrate_end_to_end(tmp_path, seesaw, monkeypatch):
    from seesaw.app import calibrate as cal

    # speed checks (timed for real in the test below): 1x before round 1, 2x before round 2, 4x after
    ratios = iter([1.0, 2.0, 4.0])
    monkeypatch.setattr(cal, "speed_check", lambda profile, ranks=2, warn=None: {"speed_ratio": next(ratios)})
    out = tmp_path / "cal"
    code, stdout, err = seesaw("calibrate", "--model", "tiny", "--layouts", "T1,T2",
                               "--workload", "constant", "-n", 8, "--input-len", 32, "--output-len", 16,
                               "-o", out, "--repeat", 2, "--json")
    assert code == 0, err
    for name in ("config.yaml", "calibration.csv", "calibration.png", "summary.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0
    summ = json.loads(stdout.strip().splitlines()[-1])
    assert summ == json.loads((out / "summary.json").read_text())
    rows = list(csv.DictReader(open(out / "calibration.csv")))
    assert [(r["layout"], r["workload"]) for r in rows] == [("T1", "constant:32/16"), ("T2", "constant:32/16")]
    for r in summ["rows"]:
        assert r["num_requests"] == 8
        assert math.isfinite(r["rel_error"])
        assert r["measured_tok_s"] > 0 and r["predicted_tok_s"] > 0
        assert r["num_runs"] == 2 and r["measured_min_tok_s"] <= r["measured_tok_s"] <= r["measured_max_tok_s"]
    assert math.isfinite(summ["median_abs_rel_error"]) and math.isfinite(summ["worst_abs_rel_error"])
    reg = summ["regret"]["per_workload"]["constant:32/16"]
    assert reg["num_layouts"] == 2 and reg["regret"] >= 0
    assert "T1" in stdout and "T2" in stdout and "regret" in stdout
    assert "[1/2] engine T1" in err and "run 2 of 2" in err  # progress on stderr
    assert "inside the measured runs' range" in stdout
    # each run's speed: the geometric mean of the checks around its round; the kept run's speed
    # scales the profile's compute tables for a second, slower prediction
    for r in summ["rows"]:
        assert r["speed_ratio"] in (pytest.approx(2 ** 0.5), pytest.approx(8 ** 0.5))
        assert r["predicted_at_speed_tok_s"] < r["predicted_tok_s"]
        assert r["rel_error_at_speed"] == pytest.approx(r["predicted_at_speed_tok_s"] / r["measured_tok_s"] - 1)
    assert (summ["speed_ratio_min"], summ["speed_ratio_max"]) == (pytest.approx(2 ** 0.5), pytest.approx(8 ** 0.5))
    assert summ["median_abs_rel_error_at_speed"] <= summ["worst_abs_rel_error_at_speed"]
    assert "machine speed against the profile's over the runs: 1.41x-2.83x" in stdout
    assert "predicted at the kept runs' speed: median |error|" in stdout and "@speed" in stdout
    assert "machine speed against the profile's before round 2: 2.00x slower" in err
    # one step trace per pair: the kept (median) run's
    assert sorted(p.name for p in out.glob("steps-*")) == ["steps-T1_constant_32-16.jsonl",
                                                           "steps-T2_constant_32-16.jsonl"]


@pytest.mark.parametrize("checks, kept_speed, run_speeds", [
    ([1.0, 2.0, 4.0, 8.0], 32 ** 0.5, [2 ** 0.5, 8 ** 0.5, 32 ** 0.5]),
    ([1.0, None, 4.0, 8.0], 32 ** 0.5, [1.0, 4.0, 32 ** 0.5]),  # a failed check: its neighbours' own
    ([1.0, 2.0, 4.0, None], 4.0, [2 ** 0.5, 8 ** 0.5, 4.0]),
])
def test_a_pair_keeps_the_speed_of_its_median_runs_round(monkeypatch, checks, kept_speed, run_speeds):
    """The engine (stubbed) runs at 100, 300 and 200 tok/s in rounds 1-3: the median run is the
    third round's, so the row's speed is the checks around round 3, not round 2's (the middle
    of the sorted order)."""
    from seesaw.app import calibrate as cal
    from seesaw.engine import launch

    found = iter([{"speed_ratio": c} if c else {} for c in checks])
    monkeypatch.setattr(cal, "speed_check", lambda profile, ranks=2, warn=None: next(found))
    tok_s = iter([100.0, 300.0, 200.0])
    monkeypatch.setattr(launch, "run_batch", lambda store, items, config: {
        "tokens_per_second": next(tok_s), "elapsed_time": 1.0, "time_by_phase": {"prefill": 0.2, "decode": 0.8}})
    (row,) = cal.calibrate("tiny", ["T1"], parse_workloads("constant:16/4"), num_requests=2, repeat=3,
                           check_speed=True, progress=None)
    assert row.measured_runs == [100.0, 300.0, 200.0] and row.measured_tok_s == 200.0
    assert row.run_speeds == [pytest.approx(v) for v in run_speeds]
    assert row.speed_ratio == pytest.approx(kept_speed)
    assert row.predicted_at_speed_tok_s < row.predicted_tok_s
    rec = cal.summary([row])["rows"][0]
    assert rec["measured_runs"] == row.measured_runs and rec["run_speeds"] == row.run_speeds
    assert "run_speeds" not in row.record()  # the CSV keeps one value per column


def test_calibrate_bad_layout(tmp_path, seesaw):
    code, _, err = seesaw("calibrate", "--layouts", "T3", "-o", tmp_path)
    assert code == 2 and "error" in err.lower()


def test_speed_check_compares_with_the_profiles_tables(tmp_path, monkeypatch):
    """The same machine against the committed profile and against a copy whose GEMM and layer
    tables say everything took 10x longer: the second ratio is 10x smaller. The machine is timed
    once (the real profiler) and both checks read that one timing, so load cannot move the ratio.
    A CUDA profile is not checked."""
    from seesaw import profiling
    from seesaw.app import calibrate as cal
    from seesaw.catalog import load_measured
    from seesaw.report import calibration as cal_report

    prof = load_measured("cpu-2core")
    slow = prof.model_copy(update={"ops": tuple(t.model_copy(update={"time_s": tuple(10 * x for x in t.time_s)})
                                                for t in prof.ops)})
    path = tmp_path / "slow.yaml"
    path.write_text(yaml.safe_dump(slow.model_dump(mode="json"), sort_keys=False))
    real, timed = profiling.profile, []

    def time_once(*args, **kwargs):
        if not timed:
            timed.append(real(*args, **kwargs))
        return timed[0]

    monkeypatch.setattr(profiling, "profile", time_once)
    a, b = cal.speed_check("cpu-2core"), cal.speed_check(str(path))
    assert len(timed) == 1 and a["speed_points"] == b["speed_points"] >= 12
    assert a["speed_ratio"] / b["speed_ratio"] == pytest.approx(10)
    gpu = tmp_path / "gpu.yaml"
    gpu.write_text(yaml.safe_dump(prof.model_copy(update={"device": "cuda"}).model_dump(mode="json")))
    assert cal.speed_check(str(gpu)) == {}
    summ = {"speed_ratio_min": 1.004, "speed_ratio_max": 1.01, "median_abs_rel_error_at_speed": 0.05,
            "worst_abs_rel_error_at_speed": 0.1, "worst_pair_at_speed": "P2 / w"}
    assert cal_report.speed_line(summ).startswith("machine speed against the profile's over the runs: as fast (1.00x)")
    assert cal_report.speed_line({"median_abs_rel_error": 0.1}) is None


def test_a_scaled_profile_slows_compute_not_communication():
    """``MeasuredProfile.scaled``: GEMM, layer, embedding, attention and step tables times the
    speed ratio; collectives (the TP all-reduce op too), copies, swaps and re-shards unchanged.
    The simulator's T2 decode of the tiny model then slows by less than the ratio."""
    from seesaw.catalog import load_measured
    from seesaw.core import SpecError

    prof = load_measured("cpu-2core")
    slow = prof.scaled(2.0)
    for a, b in zip(prof.ops, slow.ops):
        factor = 1.0 if a.op in ("tp_all_reduce", "tp_all_gather") else 2.0
        assert b.time_s == pytest.approx(tuple(factor * x for x in a.time_s))
    for a, b in zip(prof.attention, slow.attention):
        assert [list(r) for r in b.time_s] == [pytest.approx([2 * x for x in r]) for r in a.time_s]
    assert slow.step_overhead[0].time_s == pytest.approx(tuple(2 * x for x in prof.step_overhead[0].time_s))
    assert (slow.collectives, slow.copies, slow.swaps, slow.reshards) == (
        prof.collectives, prof.copies, prof.swaps, prof.reshards)
    with pytest.raises(SpecError, match="speed must be positive"):
        prof.scaled(0.0)
    from seesaw.catalog import load_model, measured_node
    from seesaw.core import parse_parallel
    from simulator.cost import BatchShape, CostModel

    tiny, T2 = load_model("tiny").model_copy(update={"dtype_bytes": 4}), parse_parallel("T2")
    t = [CostModel(tiny, measured_node(p, 2), measured=p).stage_time_s(T2, 0, BatchShape.decode([64] * 8))
         for p in (prof, slow)]
    assert 1.05 < t[1] / t[0] < 2.0



def test_the_table_keeps_the_columns_that_tell_rows_apart_at_80_columns():
    """Layout and workload are never cut (they were: ``constant…``); for a narrow terminal the
    less important figures are left out instead of being cut to ``…``."""
    import io

    from rich.console import Console

    from seesaw.app.calibrate import Row
    from seesaw.report import calibration as cal_report

    rows = [Row(lay, wl, 8, 100.0, 110.0, 1.0, 1.0, measured_runs=[90.0, 100.0, 105.0], speed_ratio=1.2,
                predicted_at_speed_tok_s=95.0) for wl in ("constant:256/8", "uniform:128/32") for lay in ("T2", "P2->T2")]
    for width in (80, 120, 200):
        buf = io.StringIO()
        Console(file=buf, width=width).print(cal_report.table(rows, width=width))
        text = buf.getvalue()
        assert text.count("constant:256/8") == 2 and text.count("uniform:128/32") == 2, text
        assert text.count("P2->T2") == 2 and "…" not in text, text
        assert ("prefill" in text) == (width >= 150), text
