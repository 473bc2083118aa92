"""Workload loaders, synthetic distributions and describe()."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from seesaw.core import SpecError
from seesaw.workload import (
    DEFAULT_MAX_TOKENS,
    LENGTH_DISTS_PATH,
    SYNTHETIC_NAMES,
    Request,
    Workload,
    WorkloadError,
    approx_token_count,
    describe,
    load_workload,
    sample_lengths,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
SHARED = Path(os.environ.get("SEESAW_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
TRACES = SHARED / "traces"
SHAREGPT_CSV = TRACES / "sharegpt_val_10k_llama2.csv"
ARXIV_CSV = TRACES / "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv"
needs_traces = pytest.mark.skipif(not SHAREGPT_CSV.is_file(), reason=f"no reference traces at {TRACES}")


def write(tmp_path: Path, name: str, text: str) -> str:
    p = tmp_path / name
    p.write_text(text)
    return str(p)


def jsonl(*objs) -> str:
    return "".join((o if isinstance(o, str) else json.dumps(o)) + "\n" for o in objs)


def fake_tokenizer(text: str) -> list[int]:
    return [len(w) for w in text.split()]


# --------------------------------------------------------------------------------------------
# Request


def test_request_validates_lengths():
    assert Request("a", np.int64(3), 2).prompt_len == 3
    assert type(Request("a", np.int64(3), 2).prompt_len) is int
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(WorkloadError, match="prompt_len must be a positive integer"):
            Request("a", bad, 1)
    with pytest.raises(WorkloadError, match="output_len"):
        Request("a", 1, 0)
    with pytest.raises(WorkloadError, match="prompt_token_ids"):
        Request("a", 3, 1, prompt_token_ids=(1, 2))
    with pytest.raises(WorkloadError, match="temperature"):
        Request("a", 3, 1, temperature=-1.0)
    assert issubclass(WorkloadError, SpecError)


def test_approx_token_count():
    assert [approx_token_count(s) for s in ("", "abcd", "abcde", "é", "x" * 400)] == [1, 1, 2, 1, 100]


# --------------------------------------------------------------------------------------------
# CSV


def test_csv_lengths_arrivals_and_extra_columns(tmp_path):
    src = write(tmp_path, "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens,note\n"
                                   "0.5,10,3,a\n1.25,20.0,4,b\n")
    w = load_workload(src)
    assert [(r.id, r.prompt_len, r.output_len, r.arrival_time_s) for r in w] == [
        ("req-0", 10, 3, 0.5), ("req-1", 20, 4, 1.25)]
    assert not w.approximate_lengths
    alias = write(tmp_path, "a.csv", "input_len,output_len\n7,8\n")
    assert load_workload(alias)[0].prompt_len == 7


@pytest.mark.parametrize("row, fragment", [
    ("5,-3", "line 3: num_decode_tokens must be a positive integer, got '-3'"),
    ("5,1.5", "line 3: num_decode_tokens must be a positive integer, got '1.5'"),
    ("x,3", "line 3: num_prefill_tokens must be a positive integer, got 'x'"),
    ("5", "line 3: expected 2 columns"),
    ("5,3,9", "line 3: expected 2 columns"),
])
def test_csv_bad_rows(tmp_path, row, fragment):
    src = write(tmp_path, "workload.csv", f"num_prefill_tokens,num_decode_tokens\n4,4\n{row}\n6,6\n")
    with pytest.raises(WorkloadError, match=fragment.replace(".", r"\.")):
        load_workload(src)
    errors = []
    w = load_workload(src, errors=errors)
    assert [r.id for r in w] == ["req-0", "req-2"]  # ids follow data rows, bad row skipped
    assert errors[0][0] == 3 and fragment in errors[0][1]


def test_csv_missing_column_and_bad_arrival(tmp_path):
    with pytest.raises(WorkloadError, match="need columns num_prefill_tokens,num_decode_tokens; found a,b"):
        load_workload(write(tmp_path, "x.csv", "a,b\n1,2\n"))
    with pytest.raises(WorkloadError, match="line 2: arrived_at must be a number >= 0"):
        load_workload(write(tmp_path, "y.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n-1,2,3\n"))


# --------------------------------------------------------------------------------------------
# ShareGPT JSON

SHAREGPT = [
    {"id": "a", "conversations": [{"from": "human", "value": "one two three"},
                                  {"from": "gpt", "value": "four five"}, {"from": "human", "value": "x"}]},
    {"id": "b", "conversations": [{"from": "human", "value": "lonely"}]},  # < 2 turns: skipped
    {"id": "c", "conversations": [{"from": "system", "value": "be nice"}, {"from": "human", "value": "hi"},
                                  {"from": "gpt", "value": "hello there friend"}]},
    {"id": "a", "conversations": [{"from": "human", "value": "again"}, {"from": "gpt", "value": "yes"}]},
]


def test_sharegpt_json_with_tokenizer(tmp_path):
    w = load_workload(write(tmp_path, "s.json", json.dumps(SHAREGPT)), tokenizer=fake_tokenizer)
    assert [(r.id, r.prompt_len, r.output_len) for r in w] == [("a", 3, 2), ("c", 1, 3), ("a#1", 1, 1)]
    assert w[0].prompt == "one two three" and w[0].prompt_token_ids == (3, 3, 5)
    assert not w.approximate_lengths


def test_sharegpt_json_approximate(tmp_path):
    w = load_workload(write(tmp_path, "s.json", json.dumps(SHAREGPT)))
    assert (w[0].prompt_len, w[0].output_len) == (4, 3)  # ceil(13/4), ceil(9/4)
    assert w.approximate_lengths and describe(w)["approximate_lengths"]


def test_json_precomputed_lengths(tmp_path):
    data = [{"num_prefill_tokens": 5, "num_decode_tokens": 6}, {"id": "z", "input_len": 7, "output_len": 8}]
    w = load_workload(write(tmp_path, "p.json", json.dumps(data)))
    assert [(r.id, r.prompt_len, r.output_len) for r in w] == [("req-0", 5, 6), ("z", 7, 8)]
    assert not w.approximate_lengths


@pytest.mark.parametrize("text, fragment", [
    ('[{"id": 1,\n "conversations": [}]', "b.json line 2: malformed JSON"),
    ('{"conversations": []}', "expected a JSON list"),
    ('[{"id": "q", "conversations": "hi"}]', "entry 0: conversations must be a list"),
    ('[3]', "entry 0: expected an object"),
    ('[{"num_prefill_tokens": 5, "num_decode_tokens": -1}]', "entry 0: num_decode_tokens must be a positive integer"),
    ('[{"id": "q", "conversations": [{"from": "human", "value": "hi"}]}]', "no requests"),
    ('[]', "no requests"),
])
def test_json_bad_input(tmp_path, text, fragment):
    with pytest.raises(WorkloadError, match=fragment):
        load_workload(write(tmp_path, "b.json", text))


# --------------------------------------------------------------------------------------------
# JSONL

CHAT = {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": "hello there"}],
                 "max_tokens": 12, "temperature": 0.5}}
COMPLETION = {"custom_id": "c2", "method": "POST", "url": "/v1/completions",
              "body": {"model": "m", "prompt": "abcdefgh"}}
TOKENS = {"custom_id": "c3", "url": "/v1/completions", "body": {"prompt": [5, 6, 7], "max_tokens": 2}}


def test_jsonl_batch_lines(tmp_path):
    w = load_workload(write(tmp_path, "b.jsonl", jsonl(CHAT, "", COMPLETION, TOKENS)))
    chat, comp, toks = w
    assert (chat.id, chat.messages, chat.output_len, chat.temperature) == (
        "c1", (("user", "hello there"),), 12, 0.5)
    assert chat.prompt_len == approx_token_count("user: hello there")
    assert (comp.prompt, comp.prompt_len, comp.output_len) == ("abcdefgh", 2, DEFAULT_MAX_TOKENS)
    assert (toks.prompt_token_ids, toks.prompt_len, toks.output_len) == ((5, 6, 7), 3, 2)
    assert w.approximate_lengths
    w2 = load_workload(write(tmp_path, "b.jsonl", jsonl(COMPLETION)), tokenizer=fake_tokenizer)
    assert w2[0].prompt_token_ids == (8,) and not w2.approximate_lengths


def test_jsonl_plain_lines(tmp_path):
    w = load_workload(write(tmp_path, "p.jsonl", jsonl({"id": "x", "prompt": "a b c", "max_tokens": 4},
                                                       {"prompt": "hi"})), tokenizer=fake_tokenizer)
    assert [(r.id, r.prompt_len, r.output_len) for r in w] == [("x", 3, 4), ("req-1", 1, DEFAULT_MAX_TOKENS)]


@pytest.mark.parametrize("line, fragment", [
    ('{"id": "x", "prompt": "hi"', "line 2: malformed JSON"),
    ({"id": "a", "prompt": "dup"}, "line 2: duplicate id 'a'"),
    ({"id": "y", "prompt": "hi", "max_tokens": -3}, "line 2: max_tokens must be a positive integer, got -3"),
    ({"id": "y", "prompt": "hi", "max_tokens": 2.5}, "line 2: max_tokens must be a positive integer"),
    ({"id": "y", "prompt": "hi", "temperature": "hot"}, "line 2: temperature must be a number"),
    ({"id": "y"}, "line 2: needs a prompt"),
    ({"id": "y", "prompt": 7}, "line 2: prompt must be a string"),
    ([1, 2], "line 2: expected a JSON object"),
    ({**CHAT, "custom_id": ""}, "line 2: custom_id must be a non-empty string"),
    ({**CHAT, "method": "GET"}, "line 2: method must be POST"),
    ({**CHAT, "url": "/v1/embeddings"}, "line 2: url must be /v1/chat/completions or /v1/completions"),
    ({**CHAT, "body": {"prompt": "x"}}, "line 2: body.messages is required"),
    ({**COMPLETION, "body": {"messages": []}}, "line 2: body.prompt is required"),
    ({**CHAT, "body": {"messages": [{"role": "user"}]}}, "line 2: each message needs a string role and content"),
])
def test_jsonl_bad_lines(tmp_path, line, fragment):
    src = write(tmp_path, "bad.jsonl", jsonl({"id": "a", "prompt": "ok"}, line, {"id": "b", "prompt": "ok"}))
    with pytest.raises(WorkloadError, match=fragment):
        load_workload(src)
    errors = []
    assert [r.id for r in load_workload(src, errors=errors)] == ["a", "b"]
    assert len(errors) == 1 and errors[0][0] == 2 and fragment in errors[0][1]


def test_jsonl_a_line_that_is_not_utf8_is_that_lines_error(tmp_path, seesaw):
    src = tmp_path / "bad.jsonl"
    src.write_bytes(b'\xef\xbb\xbf{"id": "a", "prompt": "ok"}\n{"id": "x", "prompt": "caf\xe9"}\n{"id": "b", "prompt": "ok"}\n')
    errors = []
    assert [r.id for r in load_workload(str(src), errors=errors)] == ["a", "b"]  # the BOM still goes
    assert errors == [(2, f"{src} line 2: not UTF-8 text (invalid continuation byte at byte 27 of the line)")]
    with pytest.raises(WorkloadError, match="line 2: not UTF-8"):
        load_workload(str(src))
    code, _, err = seesaw("workload", "describe", src)
    assert code == 2 and err.count("\n") == 1 and "line 2: not UTF-8 text" in err, err


# --------------------------------------------------------------------------------------------
# Sources, names and arguments


def test_bad_sources(tmp_path):
    with pytest.raises(WorkloadError, match="workload file not found: .*nope.csv"):
        load_workload(str(tmp_path / "nope.csv"))
    with pytest.raises(WorkloadError, match="unknown workload 'sharegtp': .*sharegpt, arxiv, constant, uniform"):
        load_workload("sharegtp")
    with pytest.raises(WorkloadError, match="unsupported workload file type"):
        load_workload(write(tmp_path, "w.txt", "hi"))
    with pytest.raises(WorkloadError, match="no requests"):
        load_workload(write(tmp_path, "e.csv", "num_prefill_tokens,num_decode_tokens\n"))
    with pytest.raises(WorkloadError, match="no requests"):
        load_workload(write(tmp_path, "e.jsonl", "\n\n"))
    with pytest.raises(WorkloadError, match="input_len applies to constant and uniform"):
        load_workload(str(EXAMPLES / "lengths.csv"), input_len=5)
    with pytest.raises(WorkloadError, match="input_len applies to constant and uniform"):
        load_workload("sharegpt", input_len=5)
    with pytest.raises(WorkloadError, match="num_requests must be a positive integer, got 0"):
        load_workload("constant", num_requests=0)


def test_constant_and_uniform():
    w = load_workload("constant")
    assert len(w) == 1000 and {(r.prompt_len, r.output_len) for r in w} == {(512, 128)}
    assert [r.id for r in w[:2]] == ["req-0", "req-1"] and isinstance(w[:2], Workload)
    w = load_workload("uniform", num_requests=5000, input_len=100, output_len=9)
    p = np.array([r.prompt_len for r in w])
    o = np.array([r.output_len for r in w])
    assert (p.min(), p.max(), o.min(), o.max()) == (50, 150, 4, 13)
    assert load_workload("uniform", num_requests=20, input_len=1, output_len=1)[0].prompt_len in (1,)


@pytest.mark.parametrize("name", SYNTHETIC_NAMES)
def test_synthetic_deterministic_by_seed(name):
    a, b = load_workload(name, seed=3), load_workload(name, seed=3)
    assert a == b and len(a) == 1000
    if name not in ("constant",):
        assert a != load_workload(name, seed=4)


def test_output_len_override():
    assert {r.output_len for r in load_workload("sharegpt", num_requests=50, output_len=7)} == {7}
    assert {r.output_len for r in load_workload(str(EXAMPLES / "prompts.jsonl"), output_len=9)} == {9}


def test_sampling_from_file(tmp_path):
    src = write(tmp_path, "t.csv", "arrived_at,num_prefill_tokens,num_decode_tokens\n"
                + "".join(f"{i},{i + 1},1\n" for i in range(10)))
    few = load_workload(src, num_requests=4, seed=1)
    assert len({r.id for r in few}) == 4 and few == load_workload(src, num_requests=4, seed=1)
    assert [r.arrival_time_s for r in few] == sorted(r.arrival_time_s for r in few)
    assert few != load_workload(src, num_requests=4, seed=2)
    many = load_workload(src, num_requests=25, seed=1)
    ids = [r.id for r in many]
    assert len(ids) == len(set(ids)) == 25
    assert ids[:10] == [f"req-{i}" for i in range(10)] and ids[10:20] == [f"req-{i}#1" for i in range(10)]
    assert sum(i.endswith("#2") for i in ids) == 5
    # copy k replays the trace k spans (9 s + one 1 s gap) later
    assert [r.arrival_time_s for r in many[10:12]] == [10.0, 11.0]
    assert load_workload(src) == load_workload(src, num_requests=10)


# --------------------------------------------------------------------------------------------
# Shipped examples


@pytest.mark.parametrize("name, count", [("prompts.jsonl", 16), ("batch_requests.jsonl", 8),
                                         ("lengths.csv", 50), ("sharegpt_small.json", 9)])
def test_examples_load(name, count):
    w = load_workload(str(EXAMPLES / name))
    assert len(w) == count and len({r.id for r in w}) == count
    assert w.approximate_lengths == (name != "lengths.csv")
    assert load_workload(str(EXAMPLES / name), tokenizer=fake_tokenizer).approximate_lengths is False


# --------------------------------------------------------------------------------------------
# Synthetic distributions against the trace figures


def _stats(p, o) -> dict:
    s = {}
    for key, x in (("input", p), ("output", o)):
        s[f"{key}_mean"], s[f"{key}_p50"], s[f"{key}_p90"] = x.mean(), np.percentile(x, 50), np.percentile(x, 90)
    s["log_corr"] = np.corrcoef(np.log(p), np.log(o))[0, 1]
    return s


def _assert_close(syn: dict, real: dict, rel: float = 0.05, corr_abs: float = 0.05):
    for k, v in real.items():
        if k == "log_corr":
            assert abs(syn[k] - v) < corr_abs, (k, syn[k], v)
        elif k in syn:
            assert abs(syn[k] / v - 1) < rel, (k, syn[k], v)


@pytest.mark.parametrize("name", ["sharegpt", "arxiv"])
def test_synthetic_matches_stored_reference(name):
    table = json.loads(LENGTH_DISTS_PATH.read_text())[name]  # the shipped table
    p, o = sample_lengths(name, 200_000, np.random.default_rng(0))
    _assert_close(_stats(p, o), table["reference"])
    assert (p + o).max() <= table["max_total_tokens"] and p.min() >= 1 and o.min() >= 1


@needs_traces
@pytest.mark.parametrize("name, trace", [("sharegpt", SHAREGPT_CSV), ("arxiv", ARXIV_CSV)])
def test_synthetic_matches_real_trace(name, trace):
    real = load_workload(str(trace))
    syn = load_workload(name, num_requests=100_000, seed=7)

    def arrays(w):
        return np.array([r.prompt_len for r in w]), np.array([r.output_len for r in w])

    _assert_close(_stats(*arrays(syn)), _stats(*arrays(real)))


@needs_traces
@pytest.mark.parametrize("fname, rows, arrivals", [
    ("sharegpt_val_10k_llama2.csv", 10_000, False),
    ("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", 28_257, False),
    ("splitwise_conv.csv", 19_366, True),
    ("splitwise_code.csv", 8_819, True),
])
def test_real_traces_load_through_csv_loader(fname, rows, arrivals):
    w = load_workload(str(TRACES / fname))
    assert len(w) == rows and not w.approximate_lengths
    assert any(r.arrival_time_s > 0 for r in w) == arrivals


# --------------------------------------------------------------------------------------------
# describe


def test_describe_by_hand():
    reqs = [Request("a", 10, 1), Request("b", 20, 2), Request("c", 60, 7)]
    d = describe(reqs)
    assert d["num_requests"] == 3
    assert d["input_len_mean"] == 30.0 and d["input_len_p50"] == 20.0
    assert d["input_len_p90"] == pytest.approx(52.0)  # 20 + 0.8 * (60 - 20)
    assert d["input_len_p99"] == pytest.approx(59.2)  # 20 + 0.98 * 40
    assert d["input_len_max"] == 60
    assert d["output_len_mean"] == pytest.approx(10 / 3) and d["output_len_p90"] == pytest.approx(6.0)
    assert (d["total_prompt_tokens"], d["total_output_tokens"], d["total_tokens"]) == (90, 10, 100)
    assert d["pd_ratio"] == 9.0 and d["approximate_lengths"] is False
    assert describe(Workload(reqs, "x", approximate_lengths=True))["approximate_lengths"] is True
    with pytest.raises(WorkloadError, match="empty"):
        describe([])
