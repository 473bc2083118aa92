"""One run, one folder: every command writes its results into one folder that describes one
run, touches nothing outside it, and refuses a folder that holds an earlier run unless told
``--overwrite`` (or, for ``seesaw run``, ``--resume``), with one line that says what to type."""

import json
import shlex

import pytest
import yaml

from tests.factories import assert_one_line_exit_2, tiny_plan_file
from seesaw.report.claim import MARKER, check_folder, record_files, start_folder, used_files

TINY_RUN = ["run", "--model", "tiny", "--input", "constant", "-n", 2, "--input-len", 8, "--output-len", 2,
            "--layout", "T1", "--no-warmup"]



def test_the_default_folder_twice_asks_for_overwrite_and_says_what_to_type(seesaw, tmp_path):
    """The README's main job run twice in a fresh folder: the second run writes nothing and says
    the exact command that replaces the first; ``--overwrite`` then replaces it whole (the first
    run's plan.json and comparison.json do not stay beside the new summary)."""
    plan = tiny_plan_file(tmp_path / "plan.json")
    first = seesaw("run", "--plan", plan, "--input", "constant", "-n", 2, "--input-len", 8, "--output-len", 2,
                   "--no-warmup", "--no-speed-check", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    folder = tmp_path / "seesaw-run"
    assert {p.name for p in folder.iterdir()} == {MARKER, "outputs.jsonl", "config.yaml", "summary.json",
                                                   "plan.json", "comparison.json"}
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    again = seesaw(*TINY_RUN, cwd=tmp_path)
    assert_one_line_exit_2(again, "seesaw-run/ already holds a run", "--resume")
    typed = again.stderr.split("`")[1]
    assert shlex.split(typed) == ["seesaw", *map(str, TINY_RUN), "--overwrite"]
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before  # nothing touched

    res = seesaw(*shlex.split(typed)[1:], cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert {p.name for p in folder.iterdir()} == {MARKER, "outputs.jsonl", "config.yaml", "summary.json"}
    assert yaml.safe_load((folder / "config.yaml").read_text())["policy"]["layout"] == "T1"
    assert len((folder / "outputs.jsonl").read_text().splitlines()) == 2
    # --resume continues the same folder; --overwrite and --resume exclude each other
    assert seesaw(*TINY_RUN, "--resume", cwd=tmp_path).returncode == 0
    assert_one_line_exit_2(seesaw(*TINY_RUN, "--resume", "--overwrite", cwd=tmp_path), "exclude each other")


def test_an_explicit_output_gets_its_own_folder_beside_it(seesaw, tmp_path):
    """``--output out.jsonl`` alone: the run's folder is ``out-run/``; a plan run writes its
    plan.json and comparison.json there, not into ./seesaw-run/ (nothing else in the cwd)."""
    plan = tiny_plan_file(tmp_path / "plan.json")
    (tmp_path / "work").mkdir()
    res = seesaw("run", "--plan", plan, "--input", "constant", "-n", 2, "--input-len", 8, "--output-len", 2,
                 "--output", "out.jsonl", "--no-warmup", "--no-speed-check", cwd=tmp_path / "work")
    assert res.returncode == 0, res.stderr
    work = tmp_path / "work"
    assert {p.name for p in work.iterdir()} == {"out.jsonl", "out-run"}
    assert {p.name for p in (work / "out-run").iterdir()} == {MARKER, "config.yaml", "summary.json", "plan.json",
                                                               "comparison.json"}
    assert yaml.safe_load((work / "out-run" / "config.yaml").read_text())["output"] == "out.jsonl"
    # the same output again: its results would be overwritten, so it is refused
    again = seesaw("run", "--plan", plan, "--input", "constant", "-n", 2, "--input-len", 8, "--output-len", 2,
                   "--output", "out.jsonl", "--no-speed-check", cwd=work)
    assert_one_line_exit_2(again, "out-run/ already holds a run", "--overwrite")


def test_an_explicit_output_dir_holds_outputs_and_errors(seesaw, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "a", "prompt": "hi", "max_tokens": 2}) + "\n{bad\n")
    res = seesaw("run", "--model", "tiny", "--input", inp, "--output-dir", tmp_path / "r", "--no-warmup")
    assert res.returncode == 0, res.stderr
    assert {p.name for p in (tmp_path / "r").iterdir()} == {MARKER, "outputs.jsonl", "outputs.errors.jsonl",
                                                             "config.yaml", "summary.json"}
    assert {p.name for p in tmp_path.iterdir()} == {"in.jsonl", "r"}


@pytest.mark.parametrize("command,args", [
    ("simulate", ["--layout", "P2->T2"]),
    ("compare", ["--workers", "1"]),
    ("plan", ["--workers", "1"]),
    ("whatif", ["--gpu", "l4", "--num-gpus", "2", "--sample-size", "10", "--workers", "1"]),
])
def test_simulator_commands_refuse_a_used_folder(seesaw, tmp_path, command, args):
    base = [command, "--model", "llama2-7b", "--gpu", "l4", "--num-gpus", "2", "--workload", "sharegpt", "-n", "10",
            *args, "-o", tmp_path / "out"]
    if command == "whatif":
        base = [command, "--model", "llama2-7b", "--workload", "sharegpt", "-n", "10", *args, "-o", tmp_path / "out"]
    assert seesaw(*base).returncode == 0
    written = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()}
    assert_one_line_exit_2(seesaw(*base), "out/ already holds a run", "--overwrite`")
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").iterdir()} == written
    assert seesaw(*base, "--overwrite").returncode == 0


def test_simulate_overwrite_leaves_no_file_of_the_earlier_run(seesaw, tmp_path):
    base = ["simulate", "--model", "llama2-7b", "--gpu", "l4", "--num-gpus", "2", "-n", "10", "-o", tmp_path / "o"]
    assert seesaw(*base, "--layout", "P2->T2").returncode == 0
    assert (tmp_path / "o" / "timeline.png").is_file()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    assert seesaw(*base, "--layout", "T2", "--overwrite").returncode == 0
    assert not (tmp_path / "o" / "timeline.png").exists()  # a Seesaw plot beside a static run's summary
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"  # not ours: kept


def test_calibrate_refuses_a_used_folder_before_any_engine_run(seesaw, tmp_path):
    out = tmp_path / "cal"
    out.mkdir()
    (out / "summary.json").write_text("{}")  # a folder written before the marker existed
    res = seesaw("calibrate", "--model", "tiny", "--layouts", "T1", "-o", out)
    assert_one_line_exit_2(res, "cal/ already holds a run (summary.json)", "--overwrite`")
    assert [p.name for p in out.iterdir()] == ["summary.json"]


def test_claim_rules(tmp_path):
    folder = tmp_path / "f"
    assert used_files(folder) == [] and used_files(tmp_path) == []
    start_folder(folder, "run")
    assert used_files(folder) == []  # a started run that wrote nothing is no run
    (folder / "a.csv").write_text("x")
    (folder / "user.txt").write_text("y")
    record_files(folder, [folder / "a.csv", tmp_path / "elsewhere.jsonl"])
    assert used_files(folder) == ["a.csv"]
    with pytest.raises(Exception, match="already holds a run"):
        check_folder(folder)
    check_folder(folder, overwrite=True)
    check_folder(folder, resume=True)
    out = tmp_path / "out.jsonl"
    out.write_text("{}\n")
    assert used_files(tmp_path / "free", also=[out]) == [str(out)]
    start_folder(folder, "simulate", overwrite=True)
    assert sorted(p.name for p in folder.iterdir()) == [MARKER, "user.txt"]
