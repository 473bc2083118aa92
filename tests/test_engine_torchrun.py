"""``seesaw run`` across nodes with ``torchrun``: two torchrun agents on this machine play two
"nodes" of 2 CPU ranks each (``--nnodes 2 --nproc-per-node 2``, static rendezvous on a free port
found at run time, gloo), each agent in a folder of its own: the input is only in node 0's folder
and the output goes there, so node 1's folder staying empty shows that the other node reads and
writes nothing. Layouts put TP inside a node and PP or DP across (``T2P2``, ``D2T2``) and a Seesaw
pair re-shards within each node's own host KV pool (``P4->T2P2``); each run's outputs equal the
single-process (``T1``) run's token for token. A rank on node 1 that dies ends both nodes with
one line on node 0 naming the failed step and what is saved, and ``--resume`` then completes the
run with the same outputs. Every agent runs in a session of its own under a deadline and is
killed with its session on failure; its ranks die with it (they are bound to their agent).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seesaw.core import SpecError, parse_layout
from seesaw.engine.hf_config import read_config, spec_from_config
from seesaw.engine.host_pools import check_node_pools
from tests.engine_helpers import stable_outputs

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_S = 240.0
TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                "MASTER_PORT", "TORCHELASTIC_RUN_ID", "SEESAW_FAULT")


def _write_input(path: Path, n: int = 8) -> Path:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"q{i}", "prompt": f"question {i}: " + "abc" * (i % 5 + 1),
                                "max_tokens": 12}) + "\n")
    return path


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in TORCHRUN_ENV}
    env.update(OMP_NUM_THREADS="1", **extra)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_args(ckpt: Path, layout: str, *extra: str) -> list[str]:
    return ["run", "--model", str(ckpt), "--input", "in.jsonl", "--output", "out.jsonl", "--layout", layout,
            "--oversubscribe", "--timeout", "60", *extra]


def _start(folder: Path, ckpt: Path, layout: str, *extra: str, env: dict | None = None) -> list[subprocess.Popen]:
    """One torchrun agent per "node" (cwd ``folder/node0``, ``folder/node1``), each in a session of
    its own; stdout and stderr go to ``folder/nodeN.out`` / ``.err`` (files, not pipes that a
    surviving rank would hold open)."""
    port = _free_port()
    procs = []
    for node in (0, 1):
        cwd = folder / f"node{node}"
        cwd.mkdir(exist_ok=True)
        argv = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "2",
                "--node-rank", str(node), "--master-addr", "127.0.0.1", "--master-port", str(port),
                "-m", "seesaw.cli", *_run_args(ckpt, layout, *extra)]
        with (folder / f"node{node}.out").open("w") as out, (folder / f"node{node}.err").open("w") as err:
            procs.append(subprocess.Popen(argv, cwd=cwd, env=env or _env(), stdout=out, stderr=err,
                                          start_new_session=True))
    return procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # the agent's ranks die with it (bound to their parent)
            p.wait()


def _two_nodes(folder: Path, ckpt: Path, layout: str, *extra: str, env: dict | None = None) -> list[tuple]:
    """Run both agents to the end (``_start``); [(returncode, stdout, stderr)] by node. Kills both
    sessions past the deadline."""
    procs = _start(folder, ckpt, layout, *extra, env=env)
    try:
        deadline = time.monotonic() + DEADLINE_S
        for p in procs:
            p.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        _stop(procs)
    return [(p.returncode, (folder / f"node{n}.out").read_text(), (folder / f"node{n}.err").read_text())
            for n, p in enumerate(procs)]


def _node_pools() -> set[str]:
    """Per-node host KV pools in /dev/shm (``host_pools.named_host_pools``: ``seesaw-kv-ID-nNODE-REPLICA``)."""
    shm = Path("/dev/shm")
    return {n for n in os.listdir(shm) if re.fullmatch(r"seesaw-kv-\w+-n\d+-\d+", n)} if shm.is_dir() else set()


def _errors(stderr: str) -> list[str]:
    return [ln for ln in stderr.splitlines() if ln.startswith("error: ")]


@pytest.fixture(scope="module")
def reference(ckpt, tmp_path_factory) -> tuple[Path, dict]:
    """(the input, the single-process T1 run's outputs)."""
    folder = tmp_path_factory.mktemp("torchrun-ref")
    inp = _write_input(folder / "in.jsonl")
    res = subprocess.run([sys.executable, "-m", "seesaw.cli", *_run_args(ckpt, "T1")], cwd=folder, env=_env(),
                         capture_output=True, text=True, timeout=DEADLINE_S)
    assert res.returncode == 0, res.stderr
    return inp, stable_outputs(folder / "out.jsonl")


@pytest.mark.parametrize("layout", ["T2P2", "D2T2", "P4->T2P2"])
def test_two_nodes_equal_one_process(ckpt, reference, tmp_path, layout):
    inp, ref = reference
    (tmp_path / "node0").mkdir()
    (tmp_path / "node0" / "in.jsonl").write_bytes(inp.read_bytes())  # the input on node 0 only
    shm_before = _node_pools()
    (n0, out0, err0), (n1, out1, err1) = _two_nodes(tmp_path, ckpt, layout)
    print(f"{layout} node 0:", *out0.splitlines(), *err0.splitlines()[-1:], sep="\n  ")
    assert (n0, n1) == (0, 0), f"node 0: {err0[-2000:]}\nnode 1: {err1[-2000:]}"
    assert "wrote 8 line(s) to out.jsonl" in err0
    assert stable_outputs(tmp_path / "node0" / "out.jsonl") == ref
    assert list((tmp_path / "node1").iterdir()) == []  # node 1 read no input and wrote nothing
    assert out1.strip() == "" and _errors(err1) == []
    if "->" in layout:
        assert "1 transition(s)" in out0
    assert _node_pools() - shm_before == set()  # each node's host pools are gone from its /dev/shm


def test_a_dead_rank_on_node_1_ends_both_nodes_and_resume_completes(ckpt, reference, tmp_path):
    inp, ref = reference
    (tmp_path / "node0").mkdir()
    (tmp_path / "node0" / "in.jsonl").write_bytes(inp.read_bytes())
    t0 = time.monotonic()
    (n0, _, err0), (n1, _, err1) = _two_nodes(tmp_path, ckpt, "T2P2", env=_env(SEESAW_FAULT="rank=3,after=3"))
    took = time.monotonic() - t0
    lines = _errors(err0)
    print("node 0:", *lines, "node 1:", *_errors(err1), f"both ended {took:.1f} s after the start", sep="\n  ")
    assert n0 != 0 and n1 != 0
    rank0 = [ln for ln in lines if "requests finished and saved in out.jsonl" in ln]
    assert len(rank0) == 1 and "failed: a peer closed its connection" in rank0[0], err0[-2000:]
    assert str(ROOT / "seesaw") not in err0 + err1  # no traceback through our code (torchrun prints its own)
    (n0, out0, err0), (n1, _, err1) = _two_nodes(tmp_path, ckpt, "T2P2", "--resume")
    assert (n0, n1) == (0, 0), f"node 0: {err0[-2000:]}\nnode 1: {err1[-2000:]}"
    assert stable_outputs(tmp_path / "node0" / "out.jsonl") == ref


def _procs_in(folder: Path) -> set[int]:
    """Live processes whose working directory is ``folder`` (an agent and its ranks)."""
    out = set()
    for d in os.listdir("/proc"):
        try:
            if d.isdigit() and os.readlink(f"/proc/{d}/cwd") == str(folder):
                with open(f"/proc/{d}/stat") as f:
                    if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                        out.add(int(d))
        except OSError:
            continue
    return out


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="finds the ranks through /proc")
def test_kill_9_of_a_node_agent_takes_its_ranks_and_ends_node_0(ckpt, tmp_path):
    """Without the binding, node 1's ranks would outlive their agent and finish the run."""
    (tmp_path / "node0").mkdir()
    out = tmp_path / "node0" / "out.jsonl"
    with (tmp_path / "node0" / "in.jsonl").open("w") as f:  # long enough to be killed mid-run
        for i in range(200):
            f.write(f'{{"id": "q{i}", "prompt": "question {i}", "max_tokens": 48}}\n')
    procs = _start(tmp_path, ckpt, "T2P2", "--max-num-seqs", "2")
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not (out.exists() and out.read_bytes().count(b"\n")) and time.monotonic() < deadline:
            assert procs[0].poll() is None, (tmp_path / "node0.err").read_text()[-2000:]
            time.sleep(0.2)
        ranks = _procs_in(tmp_path / "node1") - {procs[1].pid}
        assert len(ranks) == 2, ranks
        t0 = time.monotonic()
        os.killpg(procs[1].pid, signal.SIGKILL)  # the agent alone: torchrun starts each rank in a session of its own
        code = procs[0].wait(timeout=DEADLINE_S)
        took = time.monotonic() - t0
        while _procs_in(tmp_path / "node1") and time.monotonic() - t0 < 10:
            time.sleep(0.2)
        left = _procs_in(tmp_path / "node1")
    finally:
        _stop(procs)
    lines = _errors((tmp_path / "node0.err").read_text())
    print(f"node 0 ended {took:.1f} s after kill -9 of node 1's agent:", *lines, sep="\n  ")
    assert left == set(), f"node 1's ranks {sorted(left)} outlived their agent"
    assert code != 0 and any("a peer closed its connection" in ln and "saved in out.jsonl" in ln for ln in lines)
    saved = out.read_text().splitlines()
    assert 0 < len(saved) < 200 and all(json.loads(ln)["custom_id"] for ln in saved)


def test_a_waiting_rank_outwaits_the_store_timeout_and_ends_when_the_store_goes():
    """The other ranks wait for rank 0's run however long it takes to post (loading, tokenizing,
    planning: past the store's own timeout here) and stop as soon as the store is gone."""
    import threading
    from datetime import timedelta

    import torch.distributed as dist

    from seesaw.engine.torchrun_job import wait_for_run

    port = _free_port()
    server = dist.TCPStore("127.0.0.1", port, 2, True, timeout=timedelta(seconds=1), wait_for_workers=False)
    client = dist.TCPStore("127.0.0.1", port, 2, False, timeout=timedelta(seconds=1))
    threading.Timer(3.0, server.set, ("run", pickle.dumps({"layout": "T2P2"}))).start()
    assert wait_for_run(client, "run") == {"layout": "T2P2"}
    assert server.add("run/read", 0) == 1  # rank 0 (with nothing to run) waits for this count

    port = _free_port()
    host = subprocess.Popen([sys.executable, "-c", (
        "import time, datetime, torch.distributed as d; "
        f"s = d.TCPStore('127.0.0.1', {port}, 2, True, timeout=datetime.timedelta(seconds=30), "
        "wait_for_workers=False); print('up', flush=True); time.sleep(2)")], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == "up"
        client = dist.TCPStore("127.0.0.1", port, 2, False, timeout=timedelta(seconds=30))
        with pytest.raises(dist.DistNetworkError):
            wait_for_run(client, "run")
    finally:
        host.kill()
        host.wait()


@pytest.mark.parametrize("pair, per_node, ok", [
    ("P4->T2P2", 2, True),       # TP inside a node, PP across: each node keeps its layers
    ("D2P2->D2T2", 2, True),     # a replica per node
    ("P4->T4", 2, False),        # a node's decode ranks need every layer
    ("P2->T2", 1, False),
    ("P2->T2", 2, True),         # one node
])
def test_node_pools_hold_what_the_node_reads(ckpt, pair, per_node, ok):
    spec = spec_from_config(read_config(ckpt), "tiny")
    c_p, c_d = parse_layout(pair)
    if ok:
        check_node_pools(spec, c_p, c_d, per_node)
        return
    with pytest.raises(SpecError, match=rf"cannot run {pair} on nodes of {per_node} rank.*own host KV pool"):
        check_node_pools(spec, c_p, c_d, per_node)
