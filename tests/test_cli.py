"""The `seesaw` command: help, catalog, workload describe, and one-line errors with exit code 2."""

import json
import os
import subprocess
import sys

import pytest


def test_console_script_runs_as_a_process():
    r = subprocess.run([sys.executable, "-m", "seesaw.cli", "simulate", "--gpu", "v100"],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert r.returncode == 2 and r.stderr.startswith("error: ") and "Traceback" not in r.stderr


def test_help_lists_commands(seesaw):
    r = seesaw("--help")
    assert r.returncode == 0
    for cmd in ("catalog", "workload", "simulate"):
        assert cmd in r.stdout


def test_catalog_lists_profiles_and_json(seesaw):
    r = seesaw("catalog", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout.strip().splitlines()[-1])["profiles"]
    names = {(row["kind"], row["name"]) for row in rows}
    assert ("gpus", "l4") in names and ("models", "llama2-70b") in names and ("nodes", "8xa10") in names


def test_workload_describe_builtin(seesaw):
    r = seesaw("workload", "describe", "sharegpt", "-n", "500", "--json")
    assert r.returncode == 0, r.stderr
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    assert stats["num_requests"] == 500 and stats["pd_ratio"] > 0


def _bad_files(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.csv").write_text("num_prefill_tokens,num_decode_tokens\n10,-3\n")
    (tmp_path / "nocols.csv").write_text("a,b\n1,2\n")
    (tmp_path / "bad.yaml").write_text("name: x\nnum_hidden_layers: [unclosed\n")
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "prompt": "hi"}\n{oops\n')


@pytest.mark.parametrize("args,fragment", [
    (["workload", "describe", "missing.jsonl"], "missing.jsonl"),
    (["workload", "describe", "bad.json"], "bad.json"),
    (["workload", "describe", "bad.csv"], "num_decode_tokens"),
    (["workload", "describe", "nocols.csv"], "num_prefill_tokens"),
    (["workload", "describe", "bad.jsonl"], "line 2"),
    (["workload", "describe", "nosuchgen"], "sharegpt"),
    (["simulate", "--model", "llama9-1t", "-n", "5"], "llama2-70b"),
    (["simulate", "--gpu", "v100", "-n", "5"], "l4"),
    (["simulate", "--model", "bad.yaml", "-n", "5"], "bad.yaml"),
    (["simulate", "--layout", "T4X2", "-n", "5"], "T4X2"),
    (["simulate", "--layout", "P4->T8", "-n", "5"], "GPUs"),
    (["simulate", "--model", "llama2-70b", "--layout", "D8", "-n", "5"], "GiB"),
    (["simulate", "--workload", "constant", "--input-len", "-5", "-n", "5"], "input-len"),
])
def test_bad_input_is_one_line_and_exit_2(seesaw, tmp_path, args, fragment):
    _bad_files(tmp_path)
    r = seesaw(*args, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr
    assert fragment.lower() in r.stderr.lower(), r.stderr
    # our own errors are exactly one line; click usage errors may draw a small box
    if lines[0].startswith("error:"):
        assert len(lines) == 1, r.stderr


def test_simulate_says_what_it_simulated_before_the_result(seesaw):
    r = seesaw("simulate", "--model", "llama2-13b", "--gpu", "l4", "-N", 4, "--layout", "P4->T4",
               "--workload", "constant", "--input-len", 64, "--output-len", 8, "-n", 20, "--seed", 3)
    assert r.returncode == 0, r.stderr
    first, second = r.stdout.splitlines()[:2]
    assert first == ("Simulated llama2-13b on 4xl4 (4 x L4, pcie), seesaw P4->T4; workload constant: "
                     "20 requests, seed 3")
    assert second.startswith("Throughput: ")
