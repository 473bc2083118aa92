"""The one progress display: plain lines off a terminal on a fake clock, a Rich bar on one."""

import io

from seesaw.progress import Progress, format_eta


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _plain(clock, **kw) -> tuple[Progress, io.StringIO]:
    buf = io.StringIO()
    return Progress(kw.pop("what", "run"), kw.pop("total", 64), stream=buf, clock=clock, terminal=False,
                    heartbeat=False, **kw), buf


def test_plain_lines_every_few_seconds_with_rate_and_eta():
    clock = FakeClock()
    bar, buf = _plain(clock, unit="requests", every_s=5.0)
    with bar:
        clock.now += 2.0
        bar.advance(4, tokens=400)          # 2 s in: too soon for a line
        assert buf.getvalue() == ""
        clock.now += 8.0
        bar.advance(12, tokens=11_940)      # 10 s: 16 of 64 done, 12,340 tokens
        clock.now += 1.0
        bar.advance(1, tokens=10)           # 11 s: within 5 s of the last line
        clock.now += 4.0
        bar(32, tokens=18_000)              # 15 s: half done
    lines = buf.getvalue().splitlines()
    assert lines == ["run: 16/64 requests, 1,234 tok/s, ETA 0:30",
                     "run: 32/64 requests, 1,200 tok/s, ETA 0:15",
                     "run: 32/64 requests, 1,200 tok/s, done in 0:15"]


def test_plain_lines_without_tokens_or_total_and_with_a_changing_total():
    clock = FakeClock()
    bar, buf = _plain(clock, what="plan", total=None, unit="simulations", every_s=5.0)
    with bar:
        clock.now += 5.0
        bar(3, what="simulating T4P2")
        clock.now += 5.0
        bar(6, 12, "simulating P8->T4P2")
    assert buf.getvalue().splitlines() == ["plan: 3 simulations, 0:05 elapsed (simulating T4P2)",
                                           "plan: 6/12 simulations, ETA 0:10 (simulating P8->T4P2)",
                                           "plan: 6/12 simulations, done in 0:10"]


def test_short_work_prints_nothing_and_a_disabled_display_never_prints():
    clock = FakeClock()
    bar, buf = _plain(clock, total=5)
    with bar:
        clock.now += 1.0
        bar.advance(5)
    assert buf.getvalue() == "" and bar.done == 5
    bar, buf = _plain(clock, total=4, every_s=0.0, enabled=False)
    with bar:
        clock.now += 60
        bar.advance(4, tokens=10)
    assert buf.getvalue() == "" and bar.done == 4 and bar.tokens == 10


def test_the_heartbeat_prints_once_started_while_nothing_finishes():
    """A real (short) interval: before the work reports, the helper thread prints nothing (input
    checked up front fails in one line); after ``bar(0)`` it prints without further updates."""
    import time

    buf = io.StringIO()
    with Progress("run", 8, unit="requests", stream=buf, terminal=False, every_s=0.05) as bar:
        time.sleep(0.3)
        assert buf.getvalue() == ""
        bar(0)
        deadline = time.monotonic() + 30
        while "run: 0/8 requests" not in buf.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
    assert "run: 0/8 requests" in buf.getvalue()


def test_no_last_line_when_the_work_fails():
    clock = FakeClock()
    bar, buf = _plain(clock, every_s=1.0)
    try:
        with bar:
            clock.now += 2
            bar(3)
            raise ValueError("bad")
    except ValueError:
        pass
    assert buf.getvalue().splitlines() == ["run: 3/64, ETA 0:41"]


def test_the_terminal_bar_shows_count_rate_and_eta():
    clock = FakeClock()
    buf = io.StringIO()
    bar = Progress("run T1", 64, unit="requests", stream=buf, clock=clock, terminal=True)
    with bar:
        clock.now += 10
        bar.advance(16, tokens=12_340)
        assert bar.bar is not None
        task = bar.bar.tasks[0]
        assert task.fields["count"] == "16/64 requests" and task.fields["rate"] == "1,234 tok/s"
        assert task.completed == 16 and task.total == 64


def test_the_eta_follows_the_tokens_when_their_total_is_known():
    clock = FakeClock()
    bar, buf = _plain(clock, total=8, unit="requests", tokens_total=10_000, every_s=5.0)
    with bar:
        clock.now += 5
        bar.advance(0, tokens=2_500)       # no request finished yet: a quarter of the tokens in 5 s
    assert buf.getvalue().splitlines()[0] == "run: 0/8 requests, 500 tok/s, ETA 0:15"


def test_format_eta():
    assert [format_eta(s) for s in (0, 41, 725, 3723)] == ["0:00", "0:41", "12:05", "1:02:03"]


def test_a_run_off_a_terminal_prints_progress_lines_on_stderr_only(ckpt, tmp_path):
    """``seesaw run`` with stderr a pipe: plain progress lines from rank 0 on stderr (one per update
    here), the results alone on stdout."""
    import os
    import re
    import subprocess
    import sys

    from tests.engine_helpers import write_prompts

    inp, out = write_prompts(tmp_path / "in.jsonl", n=8), tmp_path / "out.jsonl"
    env = {**os.environ, "SEESAW_PROGRESS_EVERY_S": "0"}  # a line at every finished request
    r = subprocess.run([sys.executable, "-m", "seesaw.cli", "run", "--model", str(ckpt), "--input", str(inp),
                        "--output", str(out), "--output-dir", str(tmp_path / "run"), "--max-tokens", "24"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    progress = [x for x in lines if x.startswith("run T1: ")]
    assert progress, r.stderr
    assert all(re.fullmatch(r"run T1: \d+/8 requests, .*", x) for x in progress), progress
    assert re.fullmatch(r"run T1: 8/8 requests, [\d,]+ output tok/s, done in \d+:\d\d", progress[-1]), progress
    assert "run T1" not in r.stdout and r.stdout.startswith("Throughput: "), r.stdout
