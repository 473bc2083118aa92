"""Seesaw mode of the engine (the shared ``SeesawScheduler`` over CPU gloo ranks): greedy outputs
equal the single-process engine's token for token through several prefill -> re-shard -> decode
-> re-shard cycles (host pool small enough to force them), with evictions, DP and mixed layouts;
the result carries the simulator's keys; ``seesaw run`` with a layout pair, a plan, ``--auto``,
``--resume`` and a dying rank; a host pool that cannot hold a request is one line, exit 2."""

from __future__ import annotations

import json
import re

import pytest

from seesaw.engine.batch_io import BatchItem
from seesaw.engine.config import EngineConfig
from seesaw.engine.launch import run_batch
from seesaw.engine.runner import generate
from seesaw.engine.tiny import EOS_ID
from seesaw.engine.weights import build_shard, load_checkpoint
from seesaw.core import SeesawPolicy, VllmPolicy, parse_parallel
from tests.engine_helpers import (
    RANK_TIMEOUT_S, random_prompts, smollm2_chat_batch, stable_outputs, write_prompts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

LENGTHS = [13, 5, 20, 9, 17, 3, 11, 26]
MAX_TOKENS = 10
EOS = (EOS_ID, 22, 254)   # as test_engine_run: some requests stop early, some at the length limit
BLOCK = 4                 # 4-token blocks: a request needs 2..9 of them
HOST_BLOCKS = 12          # per replica: about three requests, so the batch takes several cycles


@pytest.fixture(scope="module")
def reference(store):
    import torch

    torch.set_num_threads(1)
    prompts = random_prompts(LENGTHS, seed=7)
    outs = generate(build_shard(store), prompts, MAX_TOKENS, eos_token_id=list(EOS))
    return prompts, {f"r{i}": o for i, o in enumerate(outs)}


def _run(store, ckpt, prompts, layout: str, **kw):
    c_p, c_d = layout.split("->")
    kw = {"block_size": BLOCK, "host_kv_blocks": HOST_BLOCKS, **kw}
    policy = SeesawPolicy(prefill_layout=parse_parallel(c_p), decode_layout=parse_parallel(c_d),
                          **{k: kw.pop(k) for k in list(kw) if k in SeesawPolicy.model_fields})
    cfg = EngineConfig(policy, model_dir=str(ckpt),
                       eos_token_ids=EOS, timeout_s=RANK_TIMEOUT_S, return_token_ids=True, **kw)
    items = [BatchItem(f"r{i}", list(p), MAX_TOKENS, line=i + 1) for i, p in enumerate(prompts)]
    return run_batch(store, items, cfg, launch_timeout_s=2 * RANK_TIMEOUT_S)


@pytest.mark.parametrize("layout", ["P2->T2", "T2->P2", "D2P2->D2T2", "P4->T2P2"])
def test_seesaw_greedy_matches_single_process(store, ckpt, reference, layout):
    prompts, ref = reference
    res = _run(store, ckpt, prompts, layout)
    assert res["output_token_ids"] == ref
    assert res["policy"] == "seesaw" and res["layout"] == layout
    assert res["num_transitions"] >= 3, res["transitions"]
    assert {t["reason"] for t in res["transitions"]} >= {"host_full"}
    assert res["num_requests"] == len(prompts) and res["total_num_tokens"] == res["total_output_tokens"] + sum(LENGTHS)
    assert res["reshard_time"] > 0 and len(res["reshards"]) >= res["num_transitions"]
    for r in res["reshards"]:  # every rank of the replica re-sharded and moved weights
        assert len(r["rank_s"]) == parse_parallel(layout.split("->")[0]).gpus_per_replica
        assert min(r["bytes_loaded_per_rank"]) > 0
    # every prefilled token's KV went out (prefill) and in (decode) at least once, on every rank's box
    spec = store.spec
    kv_per_token = 2 * spec.num_hidden_layers * spec.num_key_value_heads * spec.d_head * 4
    unfinished_after_prefill = [i for i, o in enumerate(ref.values()) if len(o) > 1]
    assert res["swapped_bytes"] >= 2 * kv_per_token * sum(LENGTHS[i] for i in unfinished_after_prefill)
    per_rank = res["swap_bytes_per_rank"]
    assert len(per_rank) == parse_parallel(layout.split("->")[0]).world_size
    assert res["host_kv_peak_usage"] <= 1.0 and res["host_kv_blocks_per_replica"] == HOST_BLOCKS
    assert res["host_kv_bytes"] == HOST_BLOCKS * parse_parallel(layout.split("->")[0]).dp * kv_per_token * BLOCK
    phases = res["time_by_phase"]
    assert phases["prefill"] > 0 and phases["decode"] > 0 and phases["reshard"] > 0


def test_evictions_under_a_small_device_pool_keep_outputs(store, ckpt, reference):
    """12 device blocks under T2: decodes outgrow the device and are swapped out to the host pool
    (not recomputed) and back in, mid-decode."""
    prompts, ref = reference
    res = _run(store, ckpt, prompts, "P2->T2", host_kv_blocks=40, num_blocks=12)
    assert res["output_token_ids"] == ref
    assert res["num_preemptions"] > 0


def test_sampling_does_not_depend_on_layout_switches(store, ckpt, reference):
    """Temperature 1: the sampling rank moves at every re-shard (P2: rank 1, T2: rank 0), yet the
    tokens equal a static single-rank run's (a draw is seeded by request and position)."""
    from dataclasses import replace

    prompts, _ = reference
    items = [BatchItem(f"r{i}", list(p), MAX_TOKENS, line=i + 1, temperature=1.0) for i, p in enumerate(prompts)]
    common = dict(model_dir=str(ckpt), eos_token_ids=EOS, timeout_s=RANK_TIMEOUT_S, return_token_ids=True,
                  seed=1)
    static = EngineConfig(VllmPolicy(layout=parse_parallel("T1"), block_size=BLOCK), **common)
    pair = SeesawPolicy(prefill_layout=parse_parallel("P2"), decode_layout=parse_parallel("T2"), block_size=BLOCK)
    seesaw = replace(static, policy=pair, host_kv_blocks=HOST_BLOCKS)
    a = run_batch(store, items, static, launch_timeout_s=2 * RANK_TIMEOUT_S)
    b = run_batch(store, items, seesaw, launch_timeout_s=2 * RANK_TIMEOUT_S)
    assert b["num_transitions"] >= 3
    assert b["output_token_ids"] == a["output_token_ids"]


def test_same_layout_keeps_kv_on_the_device(store, ckpt, reference):
    prompts, ref = reference
    res = _run(store, ckpt, prompts, "T2->T2")
    assert res["output_token_ids"] == ref
    assert res["swapped_bytes"] == 0 and res["reshard_time"] == 0


def test_result_has_the_simulators_keys(store, ckpt, reference):
    from seesaw.core import SeesawPolicy
    from simulator.sim import simulate
    from seesaw.workload import Request
    from seesaw import catalog

    prompts, _ = reference
    res = _run(store, ckpt, prompts, "P2->T2")
    spec = store.spec.model_copy(update={"dtype_bytes": 4})
    node = catalog.measured_node("cpu-2core", 2)
    pol = SeesawPolicy(prefill_layout=parse_parallel("P2"), decode_layout=parse_parallel("T2"), block_size=BLOCK)
    sim = simulate(spec, node, pol, [Request(f"r{i}", n, MAX_TOKENS) for i, n in enumerate(LENGTHS)]).summary()
    assert set(sim) <= set(res), set(sim) - set(res)
    assert set(sim["time_by_phase"]) == set(res["time_by_phase"])
    assert res["warmup_s"] > 0  # under the prefill layout, before the clock


# --------------------------------------------------------------------------------------------
# the command


def _base(ckpt, inp, out):
    return ["run", "--model", ckpt, "--input", inp, "--output", out, "--block-size", BLOCK]


def test_cli_seesaw_json_and_transitions(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=8)
    code, out, err = seesaw(*_base(ckpt, inp, tmp_path / "o.jsonl"), "--layout", "P2->T2",
                            "--host-kv-blocks", 20, "--json")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("Throughput: ")
    assert any(ln.startswith("Seesaw P2->T2: ") and "transition(s)" in ln for ln in lines)
    summary = json.loads(lines[-1])
    for key in ("elapsed_time", "num_requests", "total_num_tokens", "total_output_tokens", "requests_per_second",
                "tokens_per_second", "output_tokens_per_second", "layout", "policy", "time_by_phase",
                "num_transitions", "reshard_time", "swapped_bytes", "swap_stall_time"):
        assert key in summary
    assert summary["layout"] == "P2->T2" and summary["policy"] == "seesaw" and summary["num_transitions"] >= 3
    assert len(stable_outputs(tmp_path / "o.jsonl")) == 8


@pytest.mark.parametrize("args,message", [
    (["--layout", "P2->T2", "--host-kv-gib", "0.000001"], "host KV pool too small"),
    (["--layout", "P2->T2", "--host-kv-blocks", "2"], "cannot hold request"),
])
def test_cli_host_pool_that_cannot_hold_a_request_is_one_line_exit_2(ckpt, tmp_path, seesaw, args, message):
    inp = write_prompts(tmp_path / "in.jsonl", n=4)
    code, out, err = seesaw(*_base(ckpt, inp, tmp_path / "o.jsonl"), *args)
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err and "--host-kv-gib" in err, err
    assert not (tmp_path / "o.jsonl").exists()


def test_cli_seesaw_resume_completes_a_partial_file(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=8)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    flags = ["--layout", "P2->T2", "--host-kv-blocks", 20]
    assert seesaw(*_base(ckpt, inp, full), *flags)[0] == 0
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:25])  # three done, one torn by a "crash"
    code, out, err = seesaw(*_base(ckpt, inp, part), *flags, "--resume", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["num_requests"] == 5
    assert stable_outputs(part) == stable_outputs(full)


def test_cli_seesaw_dead_rank_is_one_line_then_resume_equals_a_full_run(ckpt, tmp_path, seesaw, monkeypatch):
    """Rank 1 dies after 12 forward steps, mid-run of P2->T2 (after at least one re-shard):
    one line naming the failed step, exit 1, finished outputs kept; --resume completes the batch.
    "a peer closed its connection" (not a timeout) shows it did not wait for the 20 s timeout."""
    inp = write_prompts(tmp_path / "in.jsonl", n=8)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    flags = ["--layout", "P2->T2", "--host-kv-blocks", 20, "--max-num-seqs", 2]
    assert seesaw(*_base(ckpt, inp, full), *flags)[0] == 0
    monkeypatch.setenv("SEESAW_FAULT", "rank=1,after=12,action=exit")
    code, _, err = seesaw(*_base(ckpt, inp, part), *flags, "--timeout", 20)
    assert code == 1 and err.count("\n") == 1, err
    assert re.match(r"error: .*(replica 0 \(ranks 0, 1\) failed|rank 1 \(replica 0, last stage\) failed)", err), err
    assert "a peer closed its connection" in err and "--resume" in err, err
    assert 0 < len(part.read_text().splitlines()) < 8
    monkeypatch.delenv("SEESAW_FAULT")
    code, _, err = seesaw(*_base(ckpt, inp, part), *flags, "--resume")
    assert code == 0, err
    assert stable_outputs(part) == stable_outputs(full)


def test_cli_runs_a_plan_file(ckpt, tmp_path, seesaw):
    """A Seesaw plan (as ``seesaw plan`` writes it): its layouts, host pool and knobs are used;
    predicted and measured figures land side by side in OUTPUT_DIR/comparison.json."""
    from seesaw import catalog
    from seesaw.core import Plan, SeesawPolicy

    spec = load_checkpoint(ckpt).spec.model_copy(update={"name": "tiny", "dtype_bytes": 4})
    kv_block = 2 * spec.num_hidden_layers * spec.num_key_value_heads * spec.d_head * 4 * BLOCK
    pol = SeesawPolicy(prefill_layout=parse_parallel("P2"), decode_layout=parse_parallel("T2"), block_size=BLOCK,
                       max_num_seqs=4, host_kv_bytes=20 * kv_block)
    plan = Plan(model=spec, node=catalog.measured_node("cpu-2core", 2), policy=pol, workload="test",
                predicted={"throughput_tok_s": 100.0, "makespan_s": 1.0, "decode_s": 0.8})
    (tmp_path / "plan.json").write_text(plan.model_dump_json())
    inp = write_prompts(tmp_path / "in.jsonl", n=8)
    outdir = tmp_path / "out"
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--plan", tmp_path / "plan.json",
                            "--output-dir", outdir, "--no-speed-check", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["layout"] == "P2->T2" and summary["host_kv_blocks_per_replica"] == 20
    assert summary["num_transitions"] >= 3
    assert "Predicted vs measured" in out
    comp = json.loads((outdir / "comparison.json").read_text())
    assert comp["metrics"]["tokens_per_second"]["predicted"] == 100.0
    assert comp["metrics"]["tokens_per_second"]["measured"] == summary["tokens_per_second"]
    assert len(stable_outputs(outdir / "outputs.jsonl")) == 8
    assert Plan.model_validate_json((outdir / "plan.json").read_text()).policy == pol


def test_cli_auto_plans_for_this_machine_then_runs(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=6)
    outdir = tmp_path / "auto"
    code, out, err = seesaw("run", "--auto", "--model", ckpt, "--input", inp, "--output-dir", outdir, "--json")
    assert code == 0, err
    assert "Plan for " in out and "measured profile 'cpu-2core'" in out and "Chosen: " in out
    # the machine's speed checked before planning, its share of the gap in the comparison
    assert err.index("machine speed: ") < err.index("Running ") and "Machine speed: " in out
    for cand in ("vllm T2", "vllm P2", "vllm D2", "seesaw P2->T2", "seesaw T2->P2"):
        assert cand in out, out
    from seesaw.core import Plan

    plan = Plan.model_validate_json((outdir / "plan.json").read_text())
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["policy"] == plan.policy.kind and summary["comparison"]["policy"] == plan.policy.describe()
    assert (outdir / "comparison.json").is_file() and (outdir / "summary.json").is_file()
    assert json.loads((outdir / "comparison.json").read_text())["speed_check"]["profile"] == "cpu-2core"
    assert len(stable_outputs(outdir / "outputs.jsonl")) == 6


def test_cli_plan_and_layout_conflict(ckpt, tmp_path, seesaw):
    code, _, err = seesaw("run", "--model", ckpt, "--auto", "--layout", "T2", "--output-dir", tmp_path)
    assert code == 2 and "conflicts with --auto" in err
    code, _, err = seesaw("run", "--model", ckpt, "--plan", tmp_path / "nope.json", "--output-dir", tmp_path)
    assert code == 2 and "plan file not found" in err


# --------------------------------------------------------------------------------------------
# SmolLM2


@pytest.mark.slow
def test_smollm2_p3_to_t3_matches_single_process(tmp_path):
    """SmolLM2-135M (9 heads, 3 KV heads: 3 ranks) under P3->T3 through the chat template, with a
    host pool of two requests: greedy tokens equal the single-process engine's."""
    questions = ["What is the capital of France?", "Name a primary colour.", "What is 2 + 2?", "Say hi."]
    model_dir, store, items, eos, ref = smollm2_chat_batch(tmp_path, questions, max_tokens=6)
    longest = max(-(-(it.prompt_len + it.max_tokens) // 16) for it in items)
    cfg = EngineConfig(SeesawPolicy(prefill_layout=parse_parallel("P3"), decode_layout=parse_parallel("T3")),
                       model_dir=str(model_dir),
                       eos_token_ids=eos, timeout_s=300, return_token_ids=True, host_kv_blocks=2 * longest)
    res = run_batch(store, items, cfg)
    assert [res["output_token_ids"][it.custom_id] for it in items] == ref
    assert res["num_transitions"] >= 3
