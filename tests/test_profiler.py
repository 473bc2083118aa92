"""``seesaw profile``: the plan covers what the cost model looks up, the pieces run in-process,
the YAML round-trips, the quick CLI run works end to end, and CUDA is refused cleanly without it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from seesaw import profiling as profiler
from seesaw.catalog import load_measured, load_model, measured_node
from seesaw.core import (
    AttentionTable, CommTable, CopyTable, MeasuredProfile, OpTable, ReshardTable, StepTable, SwapTable,
    VllmPolicy, parse_parallel,
)
from seesaw.workload import load_workload
from simulator.cost import CostModel, Curve
from simulator.sim import simulate

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

REPO = Path(__file__).resolve().parents[1]
TINY, SMOL = load_model("tiny"), load_model("smollm2-135m")


def dry_profile(tasks: list[profiler.Task]) -> MeasuredProfile:
    """A profile with a table for every planned task and made-up times (t = 1 us x size, with 4
    significant digits, as ``write_profile`` keeps)."""
    tables: dict[str, list] = {"ops": [], "attention": [], "collectives": [], "copies": [], "step_overhead": [],
                               "swaps": [], "reshards": []}
    for t in tasks:
        a = t.args
        if t.kind == "forward":
            g = profiler.Grid.default()
            for key in ("qkv", "o", "gate_up", "down", "head"):
                rows = g.decode_batch if key == "head" else g.tokens
                tables["ops"].append(OpTable(op="linear", dims=a["gemms"][key], ranks=t.ranks, tokens=rows,
                                             time_s=[1e-6 * n for n in rows]))
            for op, dims in (("layer_misc", a["misc"]), ("embed_rope", a["embed"])):
                tables["ops"].append(OpTable(op=op, dims=dims, ranks=t.ranks, tokens=g.tokens,
                                             time_s=[1e-6 * n for n in g.tokens]))
            for kind, sizes, ctx in (("prefill", g.prefill_tokens, g.prefill_axis),
                                     ("decode", g.decode_batch, g.decode_context)):
                tables["attention"].append(AttentionTable(
                    kind=kind, num_heads=a["heads"][0], num_kv_heads=a["heads"][1], head_dim=a["heads"][2],
                    ranks=t.ranks, sizes=sizes, context_tokens=ctx,
                    time_s=[[1e-6 * s * c for c in ctx] for s in sizes]))
        elif t.kind == "comm":
            tables["collectives"].append(CommTable(op=a["op"], ranks=t.ranks, size_bytes=a["sizes"],
                                                   time_s=[1e-6 * b for b in a["sizes"]]))
        elif t.kind == "copy":
            tables["copies"].append(CopyTable(kind=a["kind"], size_bytes=a["sizes"],
                                              time_s=[1e-9 * b for b in a["sizes"]]))
        elif t.kind == "step":
            seqs = profiler.Grid().step_seqs
            tables["step_overhead"].append(StepTable(vocab_size=a["model"].vocab_size, seqs=seqs,
                                                     time_s=[1e-4 * s for s in seqs]))
        elif t.kind == "swap":
            box = profiler.swap_box(a["model"], a["layout"])
            for kind in ("out", "in"):
                tables["swaps"].append(SwapTable(kind=kind, num_layers=box[0], num_kv_heads=box[1], head_dim=box[2],
                                                 ranks=t.ranks, tokens=a["tokens"],
                                                 time_s=[1e-6 * n for n in a["tokens"]]))
        elif t.kind == "reshard":
            tables["reshards"].append(ReshardTable(ranks=t.ranks, size_bytes=[1000 * t.ranks], time_s=[1e-3]))
    data = dict(device="cpu", device_name="dry", dtype="float32", torch_version="0", threads_per_rank=1,
                num_ranks=3, cpu_count=2, memory_bytes=8e9, date="2026-01-01",
                **{k: [t.model_dump() for t in v] for k, v in tables.items()})
    return MeasuredProfile.model_validate(profiler.round_times(data))


@pytest.mark.parametrize("model, layouts", [(TINY, ["T1", "T2"]), (SMOL, ["T1", "T3", "P2", "T3P1"])])
def test_default_plan_has_every_table_the_cost_model_looks_up(model, layouts):
    tasks = profiler.plan_tasks(profiler.Grid.default(), 3, [TINY, SMOL])
    prof = dry_profile(tasks)
    fp32 = model.model_copy(update={"dtype_bytes": 4})
    for layout in layouts:
        lay = parse_parallel(layout)
        cm = CostModel(fp32, measured_node(prof, lay.world_size), measured=prof)
        for m in (c.measured for c in cm.stages(lay)):
            assert m.missing_gemms == [] and m.layers_curve is not None
            assert m.prefill is not None and m.decode is not None and m.step is not None
        first, last = cm.stages(lay)[0].measured, cm.stages(lay)[-1].measured
        assert first.embed is not None and last.head is not None
        if lay.tp > 1:
            assert first.allreduce is not None and last.gather is not None
        if lay.pp > 1:  # hand-offs measured: the later stages receive the step message, the
            # driver the sampled ids
            assert cm.handoffs_rendezvous and cm.pp_reply_s(lay, 8) > 0 and last.control_s > 0
    assert cm.pp_send_s(parse_parallel("P2"), 8) > 0 and cm.host_copy_s(1e6) > 0


@pytest.mark.parametrize("model, c_p, c_d", [(TINY, "P2", "T2"), (SMOL, "P3", "T3"), (SMOL, "P2", "P2")])
def test_default_plan_times_the_seesaw_pairs_swaps_and_reshards(model, c_p, c_d):
    """Every Seesaw pair the grid's models can run on up to 3 ranks finds its swap tables (each
    layout's box, by the engine's ``Shard``, is the box the cost model computes) and a re-shard
    table; the dry profile's made-up times come back."""
    tasks = profiler.plan_tasks(profiler.Grid.default(), 3, [TINY, SMOL])
    prof = dry_profile(tasks)
    fp32 = model.model_copy(update={"dtype_bytes": 4})
    for text in (c_p, c_d):
        lay = parse_parallel(text)
        cm = CostModel(fp32, measured_node(prof, lay.world_size), measured=prof)
        assert cm.swap_box(lay) == profiler.swap_box(model, lay)
        for kind in ("out", "in"):
            assert cm.swap_s(lay, kind, 64) == pytest.approx(64e-6)  # the table, not a memcpy
    src, dst = parse_parallel(c_p), parse_parallel(c_d)
    if src != dst:
        assert cm.reshard_s(src, dst) > 0.9e-3  # 1 ms at 1000 x ranks bytes, proportional above
    swaps = {(t.args["model"].name, str(t.args["layout"])) for t in tasks if t.kind == "swap"}
    assert swaps >= {("tiny", "P2"), ("tiny", "T2"), ("smollm2-135m", "P2"), ("smollm2-135m", "P3"),
                     ("smollm2-135m", "T3")}
    assert {(t.args["model"].name, t.ranks) for t in tasks if t.kind == "reshard"} == {
        ("tiny", 2), ("smollm2-135m", 3)}  # P_k <-> T_k where both shard the model


def test_plan_skips_tp_degrees_a_model_cannot_use():
    tasks = profiler.plan_tasks(profiler.Grid.default(), 3, [TINY, SMOL])
    tps = {(t.args["model"].name, t.args["tp"], t.ranks) for t in tasks if t.kind == "forward"}
    assert tps == {("tiny", 1, 1), ("tiny", 2, 2), ("smollm2-135m", 1, 1), ("smollm2-135m", 3, 3),  # 4 / 9 heads
                   ("tiny", 1, 2), ("smollm2-135m", 1, 2)}  # TP-1 shards on two busy ranks (stages, replicas)
    assert {(t.args["model"].vocab_size, t.ranks) for t in tasks if t.kind == "step"} == {
        (TINY.vocab_size, 1), (TINY.vocab_size, 2), (SMOL.vocab_size, 1), (SMOL.vocab_size, 2)}
    assert {t.ranks for t in tasks if t.kind == "comm"} == {2, 3}
    assert [t.args["kind"] for t in tasks if t.kind == "copy"] == ["h2h"]
    assert {t.args["kind"] for t in profiler.plan_tasks(profiler.Grid.quick(), 1, [TINY], "cuda")
            if t.kind == "copy"} == {"h2d", "d2h", "h2h"}


def test_pieces_run_in_process_on_one_rank():
    # contexts without the sizes: the prefill table still holds each size's whole-prompt point
    grid = profiler.Grid.quick(repeats=1, warmup=0, min_repeat_s=0.0, prefill_context=(4, 256))
    assert grid.prefill_axis == (2, 4, 16, 64, 256)
    tasks = [t for t in profiler.plan_tasks(grid, 1, [TINY]) if t.kind != "copy"]
    tasks.append(profiler.Task("copy", 1, 2, dict(kind="h2h", sizes=(4096, 65536))))
    out = profiler.rank_main(0, 1, torch.device("cpu"), tasks, grid, "float32", None)
    kinds = [k for k, _ in out]
    assert kinds.count("ops") == 7 and kinds.count("attention") == 2  # 5 GEMMs, misc, embed
    assert kinds.count("step_overhead") == 1 and kinds.count("copies") == 1
    for key, table in out:
        flat = table["time_s"]
        flat = [v for row in flat for v in row] if key == "attention" else flat
        assert all(v > 0 for v in flat), (key, table)
    prof = MeasuredProfile(device="cpu", device_name="x", dtype="float32", torch_version="0",
                           threads_per_rank=1, num_ranks=1, cpu_count=1, memory_bytes=1e9, date="d",
                           **{k: tuple(t for kk, t in out if kk == k) for k in set(kinds)})
    assert {t.dims for t in prof.ops if t.op == "linear"} == {(64, 128), (64, 64), (64, 256), (128, 64), (64, 260)}
    (pre,) = [a for a in prof.attention if a.kind == "prefill"]
    assert pre.sizes == (2, 16, 64) and pre.context_tokens == (2, 4, 16, 64, 256)


def test_prefill_points_time_several_sequences_a_step():
    assert profiler.prefill_seqs(256, 256) == 4 and profiler.prefill_seqs(2, 2) == 16
    assert profiler.prefill_seqs(2048, 2048) == 1 and profiler.prefill_seqs(2, 4096) == 4
    assert profiler.prefill_seqs(64, 4096) == 2 and profiler.prefill_seqs(512, 512) == 2
    assert profiler.steps_for("prefill", 256, 512) == [(512, 256)] * 4


def test_prefill_attention_figures_are_per_sequence(monkeypatch):
    """A prefill point's step holds up to 16 sequences and its attention call attends them all:
    with every prefill sequence made to take 1 ms more, each point reads 1 ms more, whatever its
    count (16 at a 2-token chunk, 2 at a 64-token chunk over a 4096-token context). The probe's
    clock is a counted one that only the attention advances, so no wall-clock window is asserted."""
    from types import SimpleNamespace

    from seesaw.engine.attention import paged_attention
    from seesaw.profiling import probe

    clock = SimpleNamespace(now=0.0)
    monkeypatch.setattr(probe, "time", SimpleNamespace(perf_counter=lambda: clock.now))

    def slow(q, k, v, meta, *caches):
        clock.now += 1e-3 * sum(1 for n in meta.query_lens if n > 1)
        return paged_attention(q, k, v, meta, *caches)

    grid = profiler.Grid.quick(repeats=1, warmup=0, min_repeat_s=0.0, tp=(1,), busy=(),
                               prefill_tokens=(2, 64), prefill_context=(2, 4096))
    tasks = [t for t in profiler.plan_tasks(grid, 1, [TINY]) if t.kind == "forward"]
    out = profiler.rank_main(0, 1, torch.device("cpu"), tasks, grid, "float32", None, attention=slow)
    (a,) = [t for k, t in out if k == "attention" and t["kind"] == "prefill"]
    assert a["sizes"] == [2, 64] and a["context_tokens"] == [2, 64, 4096]
    for row in a["time_s"]:
        assert row == pytest.approx([1e-3] * len(row), rel=1e-6), a["time_s"]


def test_passes_measure_every_table_again_and_keep_the_median_of_their_means():
    grid = profiler.Grid.quick(repeats=2, passes=2, warmup=0, min_repeat_s=0.0)
    assert grid.per_pass(grid.repeats) == 1 and grid.per_pass(3) == 2 and profiler.Grid.default().passes == 3
    tasks = [profiler.Task("copy", 1, 2, dict(kind="h2h", sizes=(4096, 65536))),
             profiler.Task("copy", 1, 1, dict(kind="h2h", sizes=(1 << 20,)))]
    seen = []
    real = profiler.Rank.measure

    def spy(self, fns, *a, **kw):
        times = real(self, fns, *a, **kw)
        seen.append(len(times))
        return times

    profiler.Rank.measure = spy
    try:
        out = profiler.rank_main(0, 1, torch.device("cpu"), tasks, grid, "float32", None)
    finally:
        profiler.Rank.measure = real
    assert seen == [2, 1, 2, 1]  # both tables, in each of the two passes
    assert [(k, t["size_bytes"]) for k, t in out] == [("copies", [4096, 65536]), ("copies", [1 << 20])]
    T = profiler.Table
    a = T("x", {"kind": "h2h", "time_s": [1.0, 4.0]})
    b = T("x", {"kind": "h2h", "time_s": [3.0, 2.0]})
    assert profiler.merge_passes([[a], [b]]) == [("x", {"kind": "h2h", "time_s": [2.0, 3.0]})]
    grid2 = T("a", {"time_s": [[1.0, 2.0], [3.0, 5.0]]})
    grid3 = T("a", {"time_s": [[3.0, 2.0], [1.0, 1.0]]})
    assert profiler.merge_passes([[grid2], [grid3]])[0][1]["time_s"] == [[2.0, 2.0], [2.0, 3.0]]
    # three passes: the median pass per point, so one pass's stall at a point is outvoted
    c = T("x", {"kind": "h2h", "time_s": [2.5, 90.0]})
    assert profiler.merge_passes([[a], [b], [c]]) == [("x", {"kind": "h2h", "time_s": [2.5, 4.0]})]
    grid4 = T("a", {"time_s": [[2.0, 60.0], [2.0, 2.0]]})
    assert profiler.merge_passes([[grid2], [grid3], [grid4]])[0][1]["time_s"] == [[2.0, 2.0], [2.0, 2.0]]
    # tables are matched by name (table and identity fields), not by their place in a pass
    d = T("x", {"kind": "d2h", "time_s": [7.0, 7.0]})
    e = T("x", {"kind": "d2h", "time_s": [9.0, 9.0]})
    assert profiler.merge_passes([[a, d], [e, b]]) == [T("x", {"kind": "h2h", "time_s": [2.0, 3.0]}),
                                                        T("x", {"kind": "d2h", "time_s": [8.0, 8.0]})]
    with pytest.raises(AssertionError):
        profiler.merge_passes([[a], [d]])


def test_write_profile_round_trips_through_the_catalog(tmp_path):
    prof = dry_profile(profiler.plan_tasks(profiler.Grid.quick(), 2, [TINY]))
    path = profiler.write_profile(prof, tmp_path / "x.yaml", "measured by hand\nline two")
    text = path.read_text()
    assert text.startswith("# measured by hand\n# line two\n")
    assert load_measured(path) == prof.model_copy(update={"name": ""})


def _cli(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "seesaw.cli", "profile", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_quick_profile_end_to_end_drives_simulate(tmp_path):
    out = tmp_path / "cpu-quick.yaml"
    run = _cli("--quick", "-o", str(out), "--json")
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert summary["path"] == str(out) and summary["wall_time_s"] > 0
    assert summary["gemm_gflops_best"] > 0 and summary["all_reduce_2_latency_us"] > 0
    text = out.read_text()
    assert text.startswith("# Measured by `seesaw profile`") and "# command: seesaw profile --quick" in text
    prof = load_measured(out)
    assert prof.name == "cpu-quick" and prof.device == "cpu" and prof.num_ranks == 2
    assert {c.op for c in prof.collectives} == {"all_reduce", "all_gather", "broadcast", "send_recv", "handoff"}
    # the pipeline send is the measured hand-off (not compared with send_recv: with --quick's 3
    # samples a ping-pong's mean can exceed it on a loaded machine; seen 2.6 ms vs 1.9 ms)
    coll = {c.op: c for c in prof.collectives}
    cm = CostModel(TINY.model_copy(update={"dtype_bytes": 4}), measured_node(prof, 2), measured=prof)
    handoff = Curve(coll["handoff"].size_bytes, coll["handoff"].time_s)
    assert cm.pp_send_s(parse_parallel("P2"), 8) == pytest.approx(handoff(8 * TINY.hidden_size * 4))
    node = measured_node(prof, 2)
    reqs = load_workload("constant", num_requests=24, input_len=40, output_len=12)
    for layout in ("T2", "P2", "D2"):
        lay = parse_parallel(layout)
        r = simulate(TINY, node, VllmPolicy(layout=lay, max_num_seqs=8), reqs,
                     cost=CostModel(TINY, node, measured=prof))
        assert r.total_output_tokens == 24 * 12 and r.elapsed_time > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is present")
def test_cuda_without_cuda_is_one_line_exit_2(tmp_path):
    run = _cli("--device", "cuda", "--quick", "-o", str(tmp_path / "gpu.yaml"), timeout=60)
    assert run.returncode == 2
    assert run.stderr.startswith("error: --device cuda: no CUDA device") and run.stderr.count("\n") == 1
    assert not (tmp_path / "gpu.yaml").exists()


def test_bad_device_and_output_are_one_line_exit_2(tmp_path):
    run = _cli("--device", "tpu", "-o", str(tmp_path / "x.yaml"), timeout=60)
    assert run.returncode == 2 and run.stderr.startswith("error: --device 'tpu'")
    run = _cli("--quick", "-o", str(tmp_path), timeout=60)
    assert run.returncode == 2 and "is a directory" in run.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_quick_profile_on_cuda(tmp_path):
    out = tmp_path / "gpu.yaml"
    run = _cli("--device", "cuda", "--quick", "--ranks", "1", "-o", str(out))
    assert run.returncode == 0, run.stderr
    prof = load_measured(out)
    assert prof.device == "cuda" and {c.kind for c in prof.copies} == {"h2d", "d2h", "h2h"}
