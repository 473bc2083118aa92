"""Bad input and unusable outputs end with one line and exit 2, never a traceback: a batch run's
output files are checked before any rank starts and locked for the whole run (an output in use,
the input itself, a missing or unwritable directory, a directory given as the file: nothing is
written then); a negative seed; a compare where no layout fits."""

import os
import subprocess
import sys

import pytest

from seesaw.app.outputs import OutputError, OutputLock, check_output
from tests.engine_helpers import stable_outputs, write_prompts
from tests.factories import assert_one_line_exit_2


def _run(seesaw, ckpt, inp, out, *extra):
    return seesaw("run", "--model", ckpt, "--input", inp, "--output", out, "--layout", "T1", *extra)



def test_a_second_run_on_a_locked_output_exits_2_naming_the_holder(ckpt, tmp_path, seesaw):
    inp, out = write_prompts(tmp_path / "in.jsonl", n=3), tmp_path / "o.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom seesaw.app.outputs import OutputLock\n"
        f"with OutputLock({str(out)!r}):\n    print('locked', flush=True)\n    sys.stdin.read()\n")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        res = _run(seesaw, ckpt, inp, out)
        assert_one_line_exit_2(res, str(out), "in use", f"pid {holder.pid}")
        assert out.read_text() == ""  # the holder's file, untouched
    finally:
        holder.communicate("", timeout=30)
    res = _run(seesaw, ckpt, inp, out)  # released when the holder ends
    assert res.returncode == 0, res.stderr
    assert len(stable_outputs(out)) == 3 and not (tmp_path / "o.jsonl.lock").exists()


def test_the_lock_goes_with_its_process_whatever_kills_it(tmp_path):
    out = tmp_path / "o.jsonl"
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time\nfrom seesaw.app.outputs import OutputLock\n"
        f"with OutputLock({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(600)\n")],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(OutputError, match=f"pid {holder.pid}"):
        OutputLock(out).__enter__()
    holder.kill()
    holder.wait(timeout=30)
    with OutputLock(out):  # a stale OUT.lock file does not matter: the kernel's lock is gone
        pass


def test_output_equal_to_input_is_refused(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=3)
    before = inp.read_text()
    res = _run(seesaw, ckpt, inp, inp)
    assert_one_line_exit_2(res, "is the input file")
    assert inp.read_text() == before


@pytest.mark.parametrize("case", ["missing", "directory", "unwritable"])
def test_an_output_that_cannot_be_written_fails_before_any_rank_starts(ckpt, tmp_path, seesaw, case):
    inp = write_prompts(tmp_path / "in.jsonl", n=3)
    if case == "missing":
        out, words = tmp_path / "no" / "such" / "o.jsonl", ["does not exist"]
    elif case == "directory":
        out, words = tmp_path, ["is a directory"]
    else:  # /sys takes no new file, even for root (a chmod'ed folder would not stop root)
        out, words = "/sys/seesaw-test-output.jsonl", ["cannot write in /sys"]
        if os.path.exists(out):
            pytest.skip("unexpected file in /sys")
    res = _run(seesaw, ckpt, inp, out)
    assert_one_line_exit_2(res, *words)
    assert not (tmp_path / "in.jsonl.errors.jsonl").exists()


def test_check_output_names_the_errors_file_too(tmp_path):
    check_output(tmp_path / "o.jsonl", tmp_path / "o.errors.jsonl")
    (tmp_path / "o.errors.jsonl").mkdir()
    with pytest.raises(OutputError, match="the errors file .* is a directory"):
        check_output(tmp_path / "o.jsonl", tmp_path / "o.errors.jsonl")


@pytest.mark.parametrize("command", ["simulate", "run"])
def test_a_negative_seed_is_refused_in_one_line(seesaw, command):
    res = seesaw(command, "--seed", "-1", "-n", "2")
    assert res.returncode == 2 and "Traceback" not in res.stderr and "--seed" in res.stderr, res.stderr


def test_the_api_refuses_a_negative_seed_as_a_spec_error():
    import seesaw

    with pytest.raises(seesaw.SpecError, match="seed must be a non-negative integer"):
        seesaw.load_workload("sharegpt", 5, seed=-1)


def test_compare_with_no_feasible_layout_exits_2(seesaw):
    res = seesaw("compare", "--model", "llama2-70b", "--gpu", "l4", "--num-gpus", "2", "-n", "10", "--workers", "1")
    assert res.returncode == 2 and "Rejected" in res.stdout, (res.stdout, res.stderr)
    assert res.stderr.strip().splitlines()[-1] == "error: no feasible layout for llama2-70b on 2xl4: see the reasons above"
