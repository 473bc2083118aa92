"""``seesaw run`` output lines follow the OpenAI Batch API output format exactly.

The schemas below are the required fields of OpenAI's API reference (the ``openai-openapi`` spec):
the batch output line (``BatchRequestOutput``: ``id``, ``custom_id``, ``response`` {``status_code``,
``request_id``, ``body``}, ``error``), a chat completion (``CreateChatCompletionResponse``: ``id``,
``object`` = ``chat.completion``, ``created``, ``model``, ``choices`` of {``index``, ``message``
{``role``, ``content``, ``refusal``}, ``logprobs``, ``finish_reason``}, plus ``usage``
(``CompletionUsage``)) and a text completion (``CreateCompletionResponse``: ``object`` =
``text_completion``, ``choices`` of {``index``, ``text``, ``logprobs``, ``finish_reason``}). Extra
keys are refused at the top level of a line, so the opt-in ``timing`` object shows up only with
``--include-timing``.
"""

from __future__ import annotations

import json

import pytest

from seesaw.engine.batch_io import BatchItem, response_record

jsonschema = pytest.importorskip("jsonschema")

FINISH_REASONS = ["stop", "length", "tool_calls", "content_filter", "function_call"]
USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
         "properties": {k: {"type": "integer", "minimum": 0}
                        for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}


def _body(obj: str, id_prefix: str, choice: dict) -> dict:
    return {"type": "object", "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {"id": {"type": "string", "pattern": f"^{id_prefix}-"},
                           "object": {"const": obj}, "created": {"type": "integer"}, "model": {"type": "string"},
                           "choices": {"type": "array", "minItems": 1, "items": choice}, "usage": USAGE}}


CHAT_BODY = _body("chat.completion", "chatcmpl", {
    "type": "object", "required": ["index", "message", "logprobs", "finish_reason"],
    "properties": {"index": {"type": "integer"}, "finish_reason": {"enum": FINISH_REASONS},
                   "message": {"type": "object", "required": ["role", "content", "refusal"],
                               "properties": {"role": {"const": "assistant"}, "content": {"type": ["string", "null"]},
                                              "refusal": {"type": ["string", "null"]}}}},
    "not": {"required": ["text"]}})
TEXT_BODY = _body("text_completion", "cmpl", {
    "type": "object", "required": ["index", "text", "logprobs", "finish_reason"],
    "properties": {"index": {"type": "integer"}, "text": {"type": "string"},
                   "finish_reason": {"enum": ["stop", "length", "content_filter"]}},
    "not": {"required": ["message"]}})


def line_schema(body: dict, timing: bool = False) -> dict:
    props = {"id": {"type": "string"}, "custom_id": {"type": "string"},
             "response": {"type": ["object", "null"], "required": ["status_code", "request_id", "body"],
                          "properties": {"status_code": {"type": "integer"}, "request_id": {"type": "string"},
                                         "body": body}},
             "error": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["code", "message"]}]}}
    if timing:
        props["timing"] = {"type": "object", "required": ["first_token_s", "finished_s"]}
    return {"type": "object", "required": list(props), "properties": props, "additionalProperties": False}


def _check(rec: dict, chat: bool, timing: bool = False) -> None:
    jsonschema.validate(rec, line_schema(CHAT_BODY if chat else TEXT_BODY, timing))


def test_response_record_shapes():
    chat, text = BatchItem("c", [1, 2, 3], 4, chat=True), BatchItem("t", [1, 2], 4)
    _check(response_record(chat, [5, 6], "hi", "stop", "m"), chat=True)
    _check(response_record(text, [5], "x", "length", "m"), chat=False)
    with pytest.raises(jsonschema.ValidationError):  # the schema tells the two kinds apart
        _check(response_record(chat, [5], "x", "stop", "m"), chat=False)
    with pytest.raises(jsonschema.ValidationError):  # timing is refused unless asked for
        _check(response_record(text, [5], "x", "stop", "m", timing={"first_token_s": 0.1, "finished_s": 0.2}),
               chat=False)


@pytest.mark.parametrize("timing", [False, True])
def test_run_output_lines_match_the_openai_batch_output_schema(ckpt, tmp_path, seesaw, timing):
    inp = tmp_path / "batch.jsonl"
    inp.write_text("\n".join(json.dumps(x) for x in [
        {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}},
        {"custom_id": "t1", "method": "POST", "url": "/v1/completions", "body": {"prompt": "hello", "max_tokens": 3}},
        {"id": "p1", "prompt": "plain", "max_tokens": 2},  # a plain prompt line: raw text on the byte tokenizer
    ]) + "\n")
    out = tmp_path / "o.jsonl"
    code, _, err = seesaw("run", "--model", ckpt, "--input", inp, "--output", out,
                          *(["--include-timing"] if timing else []))
    assert code == 0, err
    recs = {r["custom_id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(recs) == {"c1", "t1", "p1"}
    _check(recs["c1"], chat=True, timing=timing)
    _check(recs["t1"], chat=False, timing=timing)
    _check(recs["p1"], chat=False, timing=timing)
    if timing:
        t = recs["t1"]["timing"]
        assert 0 <= t["first_token_s"] <= t["finished_s"]


def test_tiny_model_says_its_weights_are_random(tmp_path, seesaw, monkeypatch):
    monkeypatch.setenv("SEESAW_CACHE", str(tmp_path / "cache"))
    code, _, err = seesaw("run", "--model", "tiny", "--input", "constant", "-n", 2, "--input-len", 8,
                          "--output-len", 2, "--output", tmp_path / "o.jsonl", "--no-warmup")
    assert code == 0, err
    notes = [line for line in err.splitlines() if "random weights" in line]
    assert len(notes) == 1 and "noise" in notes[0] and err.splitlines().index(notes[0]) == 0
