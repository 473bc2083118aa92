"""Every command that writes a folder writes it through the one run-folder writer: a
``config.yaml`` with the resolved inputs and a ``summary.json`` with the figures, beside the
command's own files."""

import json

import pytest
import yaml

SMALL = ["--model", "llama2-13b", "--gpu", "a100-40g", "--num-gpus", "4", "--workload", "sharegpt", "-n", "40",
         "--workers", "1"]


@pytest.mark.parametrize("command,args,own", [
    ("simulate", ["--layout", "P4->T4"], ["requests.csv", "steps.csv", "timeline.png"]),
    ("compare", [], ["candidates.csv"]),
    ("plan", [], ["plan.json", "candidates.csv"]),
    ("whatif", ["--sample-size", "40"], ["options.csv", "report.md", "report.html"]),
])
def test_simulator_commands_write_config_and_summary(seesaw, tmp_path, command, args, own):
    args = [a if a != "a100-40g" or command != "whatif" else "a100-40g,l4" for a in SMALL + args]
    if command in ("simulate",):
        args = [a for a in args if a not in ("--workers", "1")]
    res = seesaw(command, *args, "-o", tmp_path / "out")
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load((tmp_path / "out" / "config.yaml").read_text())
    assert config["command"] == command
    assert json.loads((tmp_path / "out" / "summary.json").read_text())
    for name in own:
        assert (tmp_path / "out" / name).stat().st_size > 0, name


def test_a_batch_run_writes_config_and_summary_beside_its_outputs(seesaw, tmp_path):
    res = seesaw("run", "--model", "tiny", "--input", "constant", "-n", 3, "--input-len", 12, "--output-len", 3,
                 "--layout", "P2", "--output-dir", tmp_path / "run")
    assert res.returncode == 0, res.stderr
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["command"] == "run" and config["policy"]["layout"] == "P2" and config["policy"]["kind"] == "vllm"
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_requests"] == 3 and summary["layout"] == "P2"
    assert len((tmp_path / "run" / "outputs.jsonl").read_text().splitlines()) == 3
