"""The driver loop and ``seesaw run`` on CPU ranks (gloo): greedy outputs under T2, P2 and D2
equal the single-process engine's token for token (with preemption and chunked prefill too),
the output file is batch-output JSONL, ``--resume`` completes a partial file, malformed lines go
to the errors file, and bad input is one line with exit code 2."""

from __future__ import annotations

import json

import pytest

from seesaw.engine.batch_io import BatchItem, done_ids, errors_path
from seesaw.engine.config import EngineConfig
from seesaw.engine.launch import run_batch
from seesaw.engine.runner import generate
from seesaw.engine.tiny import EOS_ID
from seesaw.engine.weights import build_shard
from seesaw.core import VllmPolicy, parse_parallel
from tests.engine_helpers import (
    RANK_TIMEOUT_S, make_checkpoint, random_prompts, smollm2_chat_batch, stable_outputs, write_prompts,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)

LENGTHS = [13, 5, 20, 9, 17, 3, 11, 26]
MAX_TOKENS = 10
# the tiny model's own EOS is rare in 10 tokens; two frequent tokens also stop, so some requests
# end early (one right after its prefill) and others run to the length limit
EOS = (EOS_ID, 22, 254)


@pytest.fixture(scope="module")
def reference(store):
    """Single-process greedy outputs (EOS stops a sequence), the yardstick for every layout."""
    import torch

    torch.set_num_threads(1)
    prompts = random_prompts(LENGTHS, seed=7)
    outs = generate(build_shard(store), prompts, MAX_TOKENS, eos_token_id=list(EOS))
    assert 1 in map(len, outs) and MAX_TOKENS in map(len, outs)
    return prompts, {f"r{i}": o for i, o in enumerate(outs)}


def _items(prompts) -> list[BatchItem]:
    return [BatchItem(f"r{i}", list(p), MAX_TOKENS, line=i + 1) for i, p in enumerate(prompts)]


def _run(store, ckpt, prompts, layout, tmp_path=None, **kw):
    policy = VllmPolicy(layout=parse_parallel(layout),
                        **{k: kw.pop(k) for k in list(kw) if k in VllmPolicy.model_fields})
    cfg = EngineConfig(policy, model_dir=str(ckpt), eos_token_ids=EOS,
                       timeout_s=RANK_TIMEOUT_S, return_token_ids=True,
                       output=str(tmp_path / "out.jsonl") if tmp_path else "", **kw)
    return run_batch(store, _items(prompts), cfg, launch_timeout_s=2 * RANK_TIMEOUT_S)


@pytest.mark.parametrize("layout,kw", [
    ("T2", {}),
    ("P2", {}),
    ("P2", {"max_num_seqs": 2}),        # 2 in flight of 2 sequences each, the rest wait
    ("D2", {}),
])
def test_driver_greedy_matches_single_process(store, ckpt, reference, layout, kw):
    prompts, ref = reference
    res = _run(store, ckpt, prompts, layout, **kw)
    assert res["output_token_ids"] == ref
    assert res["num_requests"] == len(prompts)
    assert res["total_output_tokens"] == sum(map(len, ref.values()))
    assert res["total_num_tokens"] == res["total_output_tokens"] + sum(LENGTHS)
    assert res["layout"] == layout and res["policy"] == "vllm"
    assert res["time_by_phase"]["prefill"] > 0 and res["time_by_phase"]["decode"] > 0


def test_warmup_is_reported_and_can_be_skipped(store, ckpt, reference):
    """Every rank runs a dummy prefill of the workload's largest step before the clock (the runs
    above all did); the result says how long it took, and ``warmup=False`` skips it."""
    prompts, ref = reference
    on, off = _run(store, ckpt, prompts, "P2"), _run(store, ckpt, prompts, "P2", warmup=False)
    assert on["warmup_s"] > 0 and off["warmup_s"] == 0
    assert on["output_token_ids"] == off["output_token_ids"] == ref


@pytest.mark.parametrize("layout", ["T1", "P2"])
def test_preemption_recomputes_and_matches(store, ckpt, reference, layout):
    """12 blocks of 4 tokens cannot hold 8 sequences of up to 36 tokens: sequences are preempted
    and later re-prefill prompt + generated tokens; the engine's blocks follow the scheduler's."""
    prompts, ref = reference
    res = _run(store, ckpt, prompts, layout, num_blocks=12, block_size=4)
    assert res["num_preemptions"] > 0
    assert res["output_token_ids"] == ref


@pytest.mark.parametrize("layout", ["T2", "P2"])
def test_chunked_prefill_matches(store, ckpt, reference, layout):
    prompts, ref = reference
    res = _run(store, ckpt, prompts, layout, enable_chunked_prefill=True, max_num_batched_tokens=8,
               block_size=4)
    assert res["output_token_ids"] == ref
    assert res["time_by_phase"]["mixed"] > 0


def test_sampling_follows_the_request_not_the_layout(store, ckpt, reference):
    """Each sample is drawn with a generator seeded by the run seed, the request's custom_id and the
    token's position, so a temperature run gives the same tokens under any layout and batching,
    and another seed differs."""
    from dataclasses import replace

    prompts, _ = reference
    items = [replace(it, temperature=1.0) for it in _items(prompts)]

    def run(layout, seed, **kw):
        cfg = EngineConfig(VllmPolicy(layout=parse_parallel(layout), **kw), model_dir=str(ckpt), eos_token_ids=EOS,
                           seed=seed, timeout_s=RANK_TIMEOUT_S, return_token_ids=True)
        return run_batch(store, items, cfg, launch_timeout_s=2 * RANK_TIMEOUT_S)["output_token_ids"]

    a = run("T1", 1)
    assert run("P2", 1, max_num_seqs=3) == a
    assert run("T1", 2) != a


def test_output_file_is_batch_output_jsonl(store, ckpt, reference, tmp_path):
    prompts, ref = reference
    _run(store, ckpt, prompts, "P2", tmp_path, include_timing=True)
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == len(prompts)
    recs = [json.loads(x) for x in lines]
    assert sorted(r["custom_id"] for r in recs) == sorted(ref)
    for r in recs:
        assert r["error"] is None and r["id"].startswith("batch_req_") and r["response"]["body"]["id"].startswith("cmpl-")
        assert r["response"]["status_code"] == 200
        body = r["response"]["body"]
        assert body["object"] == "text_completion"
        choice = body["choices"][0]
        assert "text" in choice and choice["finish_reason"] in ("stop", "length")
        n = len(ref[r["custom_id"]])
        assert choice["finish_reason"] == ("stop" if ref[r["custom_id"]][-1] in EOS else "length")
        assert body["usage"] == {"prompt_tokens": LENGTHS[int(r["custom_id"][1:])], "completion_tokens": n,
                                 "total_tokens": LENGTHS[int(r["custom_id"][1:])] + n}
        assert 0 <= r["timing"]["first_token_s"] <= r["timing"]["finished_s"]


# --------------------------------------------------------------------------------------------
# the command


def test_cli_run_json_and_throughput_line(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl")
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", tmp_path / "o.jsonl",
                            "--layout", "T2", "--num-ranks", 2, "--json")
    assert code == 0, err
    lines = out.strip().splitlines()
    assert lines[0].startswith("Throughput: ") and "requests/s" in lines[0] and "output tokens/s" in lines[0]
    summary = json.loads(lines[-1])
    for key in ("elapsed_time", "num_requests", "total_num_tokens", "total_output_tokens", "requests_per_second",
                "tokens_per_second", "output_tokens_per_second", "layout", "policy", "time_by_phase"):
        assert key in summary
    assert summary["num_requests"] == 6 and summary["total_output_tokens"] == 36
    assert set(summary["time_by_phase"]) >= {"prefill", "decode", "mixed", "idle"}
    assert len(stable_outputs(tmp_path / "o.jsonl")) == 6
    assert summary["warmup_s"] > 0 and "s warm-up)" in lines[1]


def test_cli_no_warmup(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl")
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", tmp_path / "o.jsonl",
                            "--layout", "P2", "--num-ranks", 2, "--no-warmup", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["warmup_s"] == 0 and "warm-up" not in out


def test_cli_resume_completes_a_partial_file(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=8)
    full, part = tmp_path / "full.jsonl", tmp_path / "part.jsonl"
    assert seesaw("run", "--model", ckpt, "--input", inp, "--output", full, "--layout", "P2")[0] == 0
    lines = full.read_text().splitlines(keepends=True)
    part.write_text("".join(lines[:3]) + lines[3][:25])  # three done, one torn by a "crash"
    assert done_ids(part) == {json.loads(x)["custom_id"] for x in lines[:3]}
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", part, "--layout", "P2",
                            "--resume", "--json")
    assert code == 0, err
    assert json.loads(out.strip().splitlines()[-1])["num_requests"] == 5
    assert stable_outputs(part) == stable_outputs(full)
    assert len(part.read_text().splitlines()) == 8
    # nothing left: a resumed run with everything done runs nothing
    code, out, _ = seesaw("run", "--model", ckpt, "--input", inp, "--output", part, "--layout", "P2",
                          "--resume", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["num_requests"] == 0


def test_cli_malformed_lines_go_to_the_errors_file(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=4, bad=[(1, "{not json"), (3, json.dumps({"id": "x", "max_tokens": 5}))])
    out_path = tmp_path / "o.jsonl"
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", out_path, "--layout", "T1")
    assert code == 0, err
    assert "2 bad input line(s)" in err
    errs = [json.loads(x) for x in errors_path(out_path).read_text().splitlines()]
    assert [e["line"] for e in errs] == [2, 4]
    assert "malformed JSON" in errs[0]["error"] and "prompt" in errs[1]["error"]
    assert sorted(stable_outputs(out_path)) == ["q0", "q1", "q2", "q3"]


def test_cli_a_line_that_is_not_utf8_is_that_lines_error_only(ckpt, tmp_path, seesaw):
    inp = write_prompts(tmp_path / "in.jsonl", n=3)
    lines = inp.read_bytes().splitlines(keepends=True)
    inp.write_bytes(lines[0] + b'{"id": "bad", "prompt": "caf\xe9"}\n' + b"".join(lines[1:]))
    out_path = tmp_path / "o.jsonl"
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", out_path, "--layout", "T1")
    assert code == 0, err
    assert "1 bad input line(s)" in err
    (e,) = [json.loads(x) for x in errors_path(out_path).read_text().splitlines()]
    assert e["line"] == 2 and "not UTF-8" in e["error"]
    assert sorted(stable_outputs(out_path)) == ["q0", "q1", "q2"]


def test_cli_request_that_never_fits_goes_to_the_errors_file(ckpt, tmp_path, seesaw):
    inp = tmp_path / "in.jsonl"
    inp.write_text(json.dumps({"id": "short", "prompt": "hi", "max_tokens": 4}) + "\n"
                   + json.dumps({"id": "long", "prompt": "x" * 40, "max_tokens": 4}) + "\n")
    out_path = tmp_path / "o.jsonl"
    code, out, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", out_path,
                            "--kv-blocks", 4, "--block-size", 4, "--json")
    assert code == 0, err
    assert "1 request(s) can never fit" in err
    assert json.loads(out.strip().splitlines()[-1])["num_rejected"] == 1
    (e,) = [json.loads(x) for x in errors_path(out_path).read_text().splitlines()]
    assert e["custom_id"] == "long" and e["line"] == 2 and "the device pool has 4" in e["error"]
    assert list(stable_outputs(out_path)) == ["short"]


def test_cli_chat_batch_lines_use_the_chat_template(ckpt, tmp_path, seesaw):
    inp = tmp_path / "batch.jsonl"
    inp.write_text("\n".join(json.dumps(x) for x in [
        {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}},
        {"custom_id": "c2", "method": "POST", "url": "/v1/completions", "body": {"prompt": "hello", "max_tokens": 4}},
    ]) + "\n")
    code, _, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", tmp_path / "o.jsonl")
    assert code == 0, err
    recs = stable_outputs(tmp_path / "o.jsonl")
    assert recs["c1"]["response"]["body"]["object"] == "chat.completion"
    assert recs["c1"]["response"]["body"]["id"].startswith("chatcmpl-")
    assert "content" in recs["c1"]["response"]["body"]["choices"][0]["message"]
    assert recs["c1"]["response"]["body"]["usage"]["prompt_tokens"] == len(b"user: hi\nassistant: ") + 1  # + BOS
    assert recs["c2"]["response"]["body"]["object"] == "text_completion"


def test_cli_length_workload_runs_synthetic_prompts(ckpt, tmp_path, seesaw):
    code, out, err = seesaw("run", "--model", ckpt, "--input", "constant", "--num-requests", 4,
                            "--input-len", 12, "--output-len", 5, "--output", tmp_path / "o.jsonl", "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["total_output_tokens"] == 20 and summary["total_num_tokens"] == 4 * 17  # EOS ignored


def test_cli_step_trace_records_every_step(ckpt, tmp_path, seesaw):
    trace = tmp_path / "steps.jsonl"
    code, out, err = seesaw("run", "--model", ckpt, "--input", "constant", "--num-requests", 4,
                            "--input-len", 12, "--output-len", 5, "--output", tmp_path / "o.jsonl", "--layout", "P2",
                            "--num-ranks", 2, "--max-num-seqs", 2, "--step-trace", trace, "--json")
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    recs = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(recs) == summary["num_steps"]
    assert {r["kind"] for r in recs} == {"prefill", "decode"}
    assert all(0 <= r["launch_s"] < r["done_s"] <= summary["elapsed_time"] for r in recs)
    # every sequence's new tokens: 12 prompt tokens, then 4 decode steps of one token each
    assert sum(n for r in recs for _, n, _ in r["seqs"]) == 4 * 12 + 4 * 4
    assert sum(sampled for r in recs for _, _, sampled in r["seqs"]) == 4 * 5
    assert max(r["in_flight"] for r in recs) == 2  # two micro-batches in flight under P2


def _bad(tmp_path, **kw):
    return make_checkpoint(tmp_path / "bad", **kw)


@pytest.mark.parametrize("case,args,message", [
    ("unknown model", ["--model", "/nonexistent/model"], "unknown model"),
    ("T3 on 4 heads", ["--layout", "T3"], "does not divide the 4 attention heads"),
    ("ranks disagree", ["--layout", "T2", "--num-ranks", "4"], "--num-ranks 4 does not match layout T2"),
    ("three layouts", ["--layout", "P2->T2->P2"], "at most one '->'"),
    ("seesaw ranks differ", ["--layout", "P2->T2P2"], "prefill uses 2 GPUs, decode 4"),
    ("seesaw dp differs", ["--layout", "P2->D2"], "same DP degree"),
    ("no cuda", ["--device", "cuda"], "--device cuda"),
    ("missing input", ["--input", "/nonexistent.jsonl"], "workload file not found"),
])
def test_cli_bad_input_is_one_line_exit_2(ckpt, tmp_path, seesaw, case, args, message):
    import torch

    if case == "no cuda" and torch.cuda.device_count() >= 1:
        args = ["--device", "cuda", "--layout", f"D{torch.cuda.device_count() + 1}"]
        message = "CUDA device"
    inp = write_prompts(tmp_path / "in.jsonl")
    base = {"--model": ckpt, "--input": inp, "--output": tmp_path / "o.jsonl"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    code, out, err = seesaw("run", *[x for kv in base.items() for x in kv])
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err, err
    assert not (tmp_path / "o.jsonl").exists()


@pytest.mark.parametrize("corrupt,message", [
    ({"drop": ("model.layers.1.mlp.up_proj.weight",)}, "missing 1 tensor(s): model.layers.1.mlp.up_proj.weight"),
    ({"reshape": {"model.layers.0.self_attn.k_proj.weight": (8, 64)}}, "has shape [8, 64], expected [32, 64]"),
])
def test_cli_bad_checkpoint_is_one_line_exit_2(tmp_path, seesaw, corrupt, message):
    from seesaw.engine.tiny import tiny_config, write_random_checkpoint

    bad = write_random_checkpoint(tmp_path / "bad", tiny_config(), **corrupt)
    inp = write_prompts(tmp_path / "in.jsonl")
    code, _, err = seesaw("run", "--model", bad, "--input", inp, "--output", tmp_path / "o.jsonl")
    assert code == 2 and err.count("\n") == 1 and message in err, err


def test_cli_no_valid_lines_is_exit_2(ckpt, tmp_path, seesaw):
    inp = tmp_path / "in.jsonl"
    inp.write_text("{oops\n[1, 2]\n")
    code, _, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", tmp_path / "o.jsonl")
    assert code == 2 and "no valid requests" in err and err.count("\n") == 2  # a warning, then the error
    assert len(errors_path(tmp_path / "o.jsonl").read_text().splitlines()) == 2


@pytest.mark.slow
def test_smollm2_pipeline_matches_single_process(tmp_path):
    """SmolLM2-135M-Instruct under P2 through the chat template: greedy tokens equal the
    single-process engine's, and the answers decode to text."""
    model_dir, store, items, eos, ref = smollm2_chat_batch(
        tmp_path, ["What is the capital of France?", "Name a primary colour."], max_tokens=8)
    cfg = EngineConfig(VllmPolicy(layout=parse_parallel("P2")), model_dir=str(model_dir), eos_token_ids=eos,
                       timeout_s=300, return_token_ids=True, output=str(tmp_path / "out.jsonl"))
    res = run_batch(store, items, cfg)
    assert [res["output_token_ids"][it.custom_id] for it in items] == ref
    texts = [json.loads(x)["response"]["body"]["choices"][0]["message"]["content"]
             for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert all(t.strip() for t in texts)
