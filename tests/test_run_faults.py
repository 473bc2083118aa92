"""``seesaw run`` under the faults an operator meets, each in a real subprocess on the tiny model
with two CPU ranks (P2): SIGTERM, SIGKILL and Ctrl-C (SIGINT to the process group) to the
launcher, ``kill -9`` of one rank, a full disk (a file-size limit, RLIMIT_FSIZE, with SIGXFSZ
ignored: it works without root, unlike a small tmpfs), a read-only directory (a read-only bind
mount: root ignores chmod; skipped where mounting is not allowed). Each ends with one line (or
none for SIGKILL, which nothing can catch), no rank alive 10 s later, nothing of ours left in
/dev/shm, and ``--resume`` gives exactly the uninterrupted run's outputs, each id once.
No room in shared memory for the weights is one line too. Plus the pieces alone: the
signal-to-exception switch, the parent-death binding, the writer's cut of a torn line, and
``--resume``'s atomic clean rewrite under the lock. (The read-only case that needs no mount, /sys,
and two runs on one output are in ``test_bad_input``.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seesaw.app.outputs import OutputError, OutputLock, resume_output
from seesaw.core import Interrupted, interrupt_on_signals
from tests.engine_helpers import stable_outputs

linux_proc = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="walks /proc for the rank processes")
ROOT = Path(__file__).resolve().parents[1]
N = 40  # requests; at two sequences at a time the run lasts seconds, so a signal lands mid-run


def _write_input(path: Path, n: int = N, max_tokens: int = 48, id_pad: str = "") -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i:04d}{id_pad}", "prompt": f"question {i}: " + "abc" * (i % 7 + 1),
                                "max_tokens": max_tokens}) + "\n")
    return path


def _argv(ckpt, inp, out, *extra) -> list[str]:
    return [sys.executable, "-m", "seesaw.cli", "run", "--model", str(ckpt), "--input", str(inp), "--output",
            str(out), "--layout", "P2", "--max-num-seqs", "2", "--timeout", "30", *map(str, extra)]


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "SEESAW_FAULT"}
    env["OMP_NUM_THREADS"] = "1"
    return env


def _run(argv, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd=ROOT, env=_env(), **kw)


@pytest.fixture(scope="module")
def batch(ckpt, tmp_path_factory):
    """(input, the uninterrupted run's output) for the module's runs."""
    folder = tmp_path_factory.mktemp("faults")
    inp, full = _write_input(folder / "in.jsonl"), folder / "full.jsonl"
    res = _run(_argv(ckpt, inp, full))
    assert res.returncode == 0, res.stderr
    return inp, full


# --------------------------------------------------------------------------------------------
# processes


def _stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (st := _stat(int(d))) is not None:
            children.setdefault(int(st[1]), []).append(int(d))
    out, todo = [], [pid]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def _num_lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def _shm() -> set[str]:
    return set(os.listdir("/dev/shm")) if Path("/dev/shm").is_dir() else set()


def _in_use(name: str) -> bool:
    """Whether some live process maps or holds ``/dev/shm/name`` (another job's, not a leak)."""
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/maps") as f:
                if name in f.read():
                    return True
            if any(name in os.readlink(f"/proc/{d}/fd/{fd}") for fd in os.listdir(f"/proc/{d}/fd")):
                return True
        except OSError:
            continue
    return False


def _leftovers(before: set[str], wait_s: float = 10.0) -> set[str]:
    """New /dev/shm entries nobody holds, after up to ``wait_s`` for the tracker's clean-up."""
    deadline = time.monotonic() + wait_s
    while True:
        left = {n for n in _shm() - before if not _in_use(n)}
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.5)


class Launcher:
    """``seesaw run`` in its own session (so the test can signal its process group as a terminal
    does, and kill whatever is left at the end); stderr goes to a file, not a pipe a surviving
    rank would hold open."""

    def __init__(self, argv, tmp_path: Path, **kw):
        self.tree: list[int] = []
        self.err_path = tmp_path / "stderr.txt"
        self.err = self.err_path.open("w")
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=self.err, cwd=ROOT, env=_env(),
                                     start_new_session=True, **kw)

    def wait_for_lines(self, out: Path, n: int, timeout_s: float = 180) -> None:
        deadline = time.monotonic() + timeout_s
        while _num_lines(out) < n:
            assert self.proc.poll() is None, self.stderr()
            assert time.monotonic() < deadline, "no output lines in time"
            time.sleep(0.05)

    def ranks(self) -> list[int]:
        """The rank processes: the launcher's grandchildren (children of the forkserver). Also
        notes the whole tree (with the forkserver and the resource tracker) for ``close``."""
        self.tree = _descendants(self.proc.pid)
        direct = [c for c in self.tree if (_stat(c) or [0, 0])[1] == str(self.proc.pid)]
        return [p for p in self.tree if p not in direct]

    def holder_of(self, path: Path) -> int:
        """The rank that has ``path`` open: the driver (rank 0) writing the output."""
        for p in self.ranks():
            try:
                if any(os.readlink(f"/proc/{p}/fd/{fd}") == str(path) for fd in os.listdir(f"/proc/{p}/fd")):
                    return p
            except OSError:
                continue
        raise AssertionError(f"no rank has {path} open")

    def stderr(self) -> str:
        self.err.flush()
        return self.err_path.read_text()

    def close(self) -> None:
        # the helpers end on their own once the ranks are gone: the resource tracker unlinks the
        # semaphores of a SIGKILLed launcher then, so it must not be killed before it has
        _no_survivor(self.tree, within_s=15)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # whatever is left of the session
        except OSError:
            pass
        self.proc.wait(timeout=30)
        self.err.close()


def _no_survivor(ranks: list[int], within_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + within_s
    while any(_alive(p) for p in ranks) and time.monotonic() < deadline:
        time.sleep(0.1)
    return [p for p in ranks if _alive(p)]


def _assert_resume_completes(ckpt, inp, out, full):
    res = _run(_argv(ckpt, inp, out, "--resume"))
    assert res.returncode == 0, res.stderr
    ids = [json.loads(x)["custom_id"] for x in out.read_text().splitlines()]
    assert len(ids) == len(set(ids)) == N, "each id exactly once"
    assert stable_outputs(out) == stable_outputs(full)


# --------------------------------------------------------------------------------------------
# the launcher signalled or killed, a rank killed


@linux_proc
@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT to the group (Ctrl-C)", "SIGKILL", "kill -9 the driver rank"])
def test_a_stopped_run_leaves_no_rank_and_resumes_to_the_full_outputs(ckpt, batch, tmp_path, how):
    inp, full = batch
    out = tmp_path / "out.jsonl"
    shm_before = _shm()
    run = Launcher(_argv(ckpt, inp, out), tmp_path)
    try:
        run.wait_for_lines(out, 3)
        ranks = run.ranks()
        assert len(ranks) == 2, ranks
        if how == "SIGTERM":
            run.proc.send_signal(signal.SIGTERM)
        elif how.startswith("SIGINT"):
            os.killpg(run.proc.pid, signal.SIGINT)
        elif how == "SIGKILL":
            run.proc.kill()
        else:
            os.kill(run.holder_of(out), signal.SIGKILL)
        code = run.proc.wait(timeout=120)
        saved = _num_lines(out)
        assert _no_survivor(ranks) == [], f"ranks outlived the launcher ({how})"
        assert _num_lines(out) == saved, "nothing is written once the launcher has ended"
        err = run.stderr()
    finally:
        run.close()
    left = _leftovers(shm_before)
    assert left == set(), f"left in /dev/shm: {sorted(left)}"
    assert saved < N, "the signal landed after the run had finished: make the batch longer"
    if how == "SIGKILL":
        assert code == -signal.SIGKILL
    else:
        expected = {"SIGTERM": 143, "kill -9 the driver rank": 1}.get(how, 130)
        assert code == expected and err.count("\n") == 1 and err.startswith("error: "), (code, err)
        assert f"of {N} requests" in err and f"saved in {out}" in err and "--resume" in err, err
        if how.startswith("kill"):
            assert "rank 0 exited with code -9" in err and f"{saved} of {N} requests saved in {out}" in err
        else:
            name = "SIGTERM" if how == "SIGTERM" else "SIGINT"
            assert f"interrupted by {name}: {saved} of {N} requests saved in {out}; continue with: seesaw run " in err
            assert err.rstrip().endswith("--resume"), err
    recs = [json.loads(x) for x in out.read_text().splitlines()]  # every line complete
    assert all(r["error"] is None for r in recs)
    _assert_resume_completes(ckpt, inp, out, full)


# --------------------------------------------------------------------------------------------
# a full disk, a read-only directory


def _limit_file_size(limit: int):
    def pre():
        import resource

        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of a kill
    return pre


@pytest.mark.slow
@pytest.mark.timeout(400)
@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_a_full_disk_ends_with_one_line_and_resume_completes(ckpt, tmp_path):
    # 1 MB per file: above the weight store's shared-memory file (the limit counts it, 0.73 MB),
    # below the output (1200 lines of ~0.9 KB: long ids)
    inp = _write_input(tmp_path / "in.jsonl", n=1200, max_tokens=2, id_pad="-" + "x" * 400)
    out = tmp_path / "out.jsonl"
    argv = _argv(ckpt, inp, out)
    argv[argv.index("--max-num-seqs") + 1] = "64"
    res = _run(argv, preexec_fn=_limit_file_size(1_000_000))
    assert res.returncode == 1, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr, res.stderr
    assert f"cannot write {out}: File too large" in res.stderr and "--resume" in res.stderr, res.stderr
    data = out.read_bytes()
    assert data.endswith(b"\n"), "the torn line was cut"
    saved = [json.loads(x)["custom_id"] for x in data.splitlines()]
    assert 0 < len(saved) < 1200 and f"{len(saved)} of 1200 requests finished and saved in {out}" in res.stderr
    res = _run(_argv(ckpt, inp, out, "--resume"))
    assert res.returncode == 0, res.stderr
    ids = [json.loads(x)["custom_id"] for x in out.read_text().splitlines()]
    assert ids[:len(saved)] == saved and len(ids) == len(set(ids)) == 1200


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_FSIZE is POSIX")
def test_no_room_for_the_weights_in_shared_memory_is_one_line(ckpt, tmp_path):
    inp = _write_input(tmp_path / "in.jsonl", n=3)
    shm_before = _shm()
    res = _run(_argv(ckpt, inp, tmp_path / "out.jsonl"), preexec_fn=_limit_file_size(100_000))
    assert res.returncode == 1 and res.stderr.count("\n") == 1, res.stderr
    assert res.stderr.startswith("error: cannot place the weights") and "shared memory" in res.stderr, res.stderr
    assert _leftovers(shm_before, wait_s=0) == set()  # torch's half-made file is removed


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder with one file, bind-mounted read-only (root too is refused writes there)."""
    src, ro = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    ro.mkdir()
    (src / "out.jsonl").write_text("")
    try:
        subprocess.run(["mount", "--bind", "-o", "ro", str(src), str(ro)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("a read-only bind mount needs mount rights")
    try:
        yield ro
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


@pytest.mark.parametrize("resume", [False, True])
def test_a_read_only_directory_fails_before_any_rank_starts(ckpt, tmp_path, read_only_dir, seesaw, resume):
    out, inp = read_only_dir / "out.jsonl", _write_input(tmp_path / "in.jsonl", n=3)
    res = seesaw("run", "--model", ckpt, "--input", inp, "--output", out, *(["--resume"] if resume else []))
    assert res.returncode == 2 and res.stderr.count("\n") == 1, res.stderr
    assert f"cannot write in {read_only_dir}" in res.stderr and "Read-only file system" in res.stderr, res.stderr


# --------------------------------------------------------------------------------------------
# the pieces


def test_signals_become_one_interrupted_and_the_handlers_come_back():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Interrupted) as e:
        with interrupt_on_signals():
            with interrupt_on_signals():  # nested: the outer one stays in charge
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)
    assert e.value.exit_code == 143 and e.value.signal_name == "SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before
    assert Interrupted(signal.SIGINT).exit_code == 130
    assert not isinstance(e.value, (KeyboardInterrupt, Exception))  # Typer and `except Exception` let it pass


def test_a_second_signal_does_not_break_the_clean_up():
    cleaned = []
    with pytest.raises(Interrupted):
        with interrupt_on_signals():
            try:
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(5)
            finally:
                os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C during the clean-up
                time.sleep(0.05)
                cleaned.append(True)
    assert cleaned == [True]


_ORPHAN = """
import os, sys, time
from seesaw.engine import lifecycle
if sys.argv[1] == "watchdog":  # as where there is no parent-death signal
    lifecycle.set_parent_death_signal = lambda *a: False
from seesaw.engine.lifecycle import bind_to_launcher
launcher = os.getpid()
child = os.fork()
if child == 0:
    bind_to_launcher(launcher, poll_s=0.1)
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
time.sleep(120)
"""


@linux_proc
@pytest.mark.timeout(120)
@pytest.mark.parametrize("guard", ["parent-death signal", "watchdog"])
def test_a_bound_process_dies_with_its_launcher_killed_by_sigkill(guard):
    launcher = subprocess.Popen([sys.executable, "-c", _ORPHAN, guard], stdout=subprocess.PIPE, text=True,
                                cwd=ROOT, start_new_session=True)
    try:
        child = int(launcher.stdout.readline())
        assert _alive(child)
        launcher.kill()  # not reaped yet: a zombie launcher must count as dead too
        assert _no_survivor([child]) == []
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)
        except OSError:
            pass
        launcher.wait(timeout=30)


_FULL = """
import resource, signal, sys
from seesaw.engine.batch_io import OutputWriter
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
w = OutputWriter(sys.argv[1])
n = 0
try:
    while True:
        w.write({"custom_id": f"r{n}", "error": None, "pad": "x" * 150})
        n += 1
except OSError as e:
    print(n, e.errno, flush=True)
w.close()
"""


def test_a_failed_write_cuts_its_torn_line(tmp_path):
    out = tmp_path / "o.jsonl"
    res = subprocess.run([sys.executable, "-c", _FULL, str(out)], capture_output=True, text=True, timeout=60, cwd=ROOT)
    n, errno_ = map(int, res.stdout.split())
    import errno

    assert errno_ == errno.EFBIG and n > 0, res.stderr
    data = out.read_bytes()
    assert data.endswith(b"\n") and len(data) <= 1000
    assert [json.loads(x)["custom_id"] for x in data.splitlines()] == [f"r{i}" for i in range(n)]


def test_resume_rewrites_a_torn_file_clean_and_keeps_the_lock(tmp_path):
    out = tmp_path / "o.jsonl"
    line = {i: json.dumps({"custom_id": f"r{i}", "error": None}) + "\n" for i in range(4)}
    failed = json.dumps({"custom_id": "r3", "error": {"message": "x"}}) + "\n"
    out.write_text(line[0] + line[1] + line[1] + "{not json\n" + failed + "[1, 2]\n" + line[2] + line[3][:9])
    os.chmod(out, 0o640)
    with OutputLock(out) as lock:
        inode = out.stat().st_ino
        done, dropped = resume_output(out, lock)
        assert done == {"r0", "r1", "r2"} and dropped == 5
        assert out.read_text() == line[0] + line[1] + line[2]
        assert out.stat().st_ino != inode and out.stat().st_mode & 0o777 == 0o640
        with pytest.raises(OutputError, match="in use"):
            OutputLock(out).__enter__()  # the new file is locked too
        assert resume_output(out, lock) == ({"r0", "r1", "r2"}, 0)
    assert not list(tmp_path.glob(".o.jsonl.*"))  # no temp file left


def test_the_resume_command_is_the_same_command_with_resume():
    from seesaw.cli.errors import resume_command

    argv = ["/venv/bin/seesaw", "run", "--input", "my prompts.jsonl", "-o", "out.jsonl"]
    assert resume_command(argv) == "seesaw run --input 'my prompts.jsonl' -o out.jsonl --resume"
    assert resume_command([*argv, "--resume"]) == resume_command(argv)
    assert resume_command([*argv, "--overwrite"]) == resume_command(argv)  # it would drop what was saved


def test_interrupted_is_rebuilt_from_its_args():
    import pickle

    from seesaw.core import RunInterrupted

    for e in (Interrupted(signal.SIGINT), RunInterrupted(signal.SIGTERM, 3, 8, "o.jsonl")):
        again = type(e)(*e.args)  # as simpy re-raises an exception from a process
        assert str(again) == str(e) and again.exit_code == e.exit_code
        assert str(pickle.loads(pickle.dumps(e))) == str(e)
    assert str(RunInterrupted(signal.SIGTERM, 3, 8, "o.jsonl")) == "interrupted by SIGTERM: 3 of 8 requests saved in o.jsonl"
