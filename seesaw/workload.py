"""Requests and the workloads they come from.

A workload is a list of :class:`Request`: prompt length, output length (max new tokens; the real
output length for a length trace), arrival time (0 offline) and, when the source has them, the
prompt text, chat messages or token ids. ``load_workload(source)`` accepts:

- built-in names: ``sharegpt`` and ``arxiv`` sample (prompt, output) length pairs from a joint
  quantile table derived from real LLaMA-2-tokenised traces (``seesaw/data/length_dists.json``,
  written by ``tools/derive_length_dists.py``; the traces themselves are not shipped);
  ``constant`` (every request ``input_len``/``output_len``, default 512/128) and ``uniform``
  (integers uniform in ``[x // 2, x + x // 2]``, i.e. x/2 to 3x/2, for each of the two);
- ``*.csv``: Vidur's length trace ``num_prefill_tokens,num_decode_tokens`` (extra columns
  allowed, ``arrived_at`` read as arrival time);
- ``*.json``: vLLM's ShareGPT JSON (first human turn = prompt, first gpt turn after it = output
  length, conversations without both are skipped), or entries with precomputed lengths;
- ``*.jsonl``: OpenAI Batch API input lines or plain ``{"id", "prompt", "max_tokens"}`` lines.

Text is measured with ``tokenizer`` (a callable ``str -> list[int]``) when given; otherwise with
:func:`approx_token_count`, ``ceil(utf-8 bytes / 4)``, the common rule of thumb that a BPE or
SentencePiece token of English (LLaMA's 32k vocabulary included) averages about four characters.
It is a rough estimate (LLaMA-2's small vocabulary likely needs somewhat more tokens; indented
code and non-Latin text need many more): the returned :class:`Workload` says whether any length
is approximate, and :func:`describe` reports it.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import numbers
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from seesaw.core import SpecError
from seesaw.sampling import draw_requests, sample_positions

# a generator's workload of more requests than this (and than the sample) is drawn as its sample, not
# built: its requests are independent draws, so the sample is as good, and 1,000,000 built requests
# cost ~2.5 CPU-s (the no-argument what-if, which simulates at most 16,000 of them)
GENERATED_MAX_BUILT = 100_000

__all__ = ["Request", "Workload", "WorkloadError", "load_workload", "describe", "approx_token_count",
           "sample_lengths", "SYNTHETIC_NAMES", "DEFAULT_MAX_TOKENS"]

DEFAULT_MAX_TOKENS = 256  # output_len of a JSONL request without max_tokens
DEFAULT_NUM_SYNTHETIC = 1000  # requests drawn from a synthetic source when num_requests is None
DEFAULT_INPUT_LEN = 512  # constant / uniform
DEFAULT_OUTPUT_LEN = 128
APPROX_BYTES_PER_TOKEN = 4
TRACE_NAMES = ("sharegpt", "arxiv")
SYNTHETIC_NAMES = TRACE_NAMES + ("constant", "uniform")
LENGTH_DISTS_PATH = Path(__file__).with_name("data") / "length_dists.json"
CHAT_URL, COMPLETIONS_URL = "/v1/chat/completions", "/v1/completions"
_HUMAN_ROLES = ("human", "user")
_GPT_ROLES = ("gpt", "assistant", "chatgpt", "bard", "model")
_LENGTH_KEYS = (("num_prefill_tokens", "num_decode_tokens"), ("input_len", "output_len"))

Tokenizer = Callable[[str], "list[int]"]


class WorkloadError(SpecError):
    """Bad workload input: one line naming the file, the line or entry, and the field."""


@dataclass(frozen=True, slots=True)
class Request:
    """One inference request. Lengths in tokens; ``output_len`` is the max new tokens."""

    id: str
    prompt_len: int
    output_len: int
    arrival_time_s: float = 0.0
    prompt: str | None = None
    messages: tuple | None = None  # ((role, content), ...)
    prompt_token_ids: tuple[int, ...] | None = None
    temperature: float = 0.0

    def __post_init__(self) -> None:
        for field in ("prompt_len", "output_len"):
            v = getattr(self, field)
            if type(v) is not int and not isinstance(v, bool) and isinstance(v, numbers.Integral):
                object.__setattr__(self, field, v := int(v))  # numpy integers
            if type(v) is not int or v < 1:
                raise WorkloadError(f"request {self.id!r}: {field} must be a positive integer, got {v!r}")
        if not (math.isfinite(self.arrival_time_s) and self.arrival_time_s >= 0):
            raise WorkloadError(f"request {self.id!r}: arrival_time_s must be >= 0, got {self.arrival_time_s!r}")
        if not (math.isfinite(self.temperature) and self.temperature >= 0):
            raise WorkloadError(f"request {self.id!r}: temperature must be >= 0, got {self.temperature!r}")
        if self.prompt_token_ids is not None and len(self.prompt_token_ids) != self.prompt_len:
            raise WorkloadError(
                f"request {self.id!r}: prompt_len={self.prompt_len} but {len(self.prompt_token_ids)} prompt_token_ids"
            )
        if self.messages is not None and not isinstance(self.messages, tuple):
            raise WorkloadError(f"request {self.id!r}: messages must be a tuple of (role, content) pairs")


class Workload(list):
    """A ``list[Request]`` that remembers where it came from and whether lengths are estimates.

    A sample of a workload too large to build (``load_workload(sample_size=...)``) ``represents``
    more requests than it holds; ``totals`` are the (prompt, output) tokens of all of them."""

    def __init__(self, requests=(), name: str = "", approximate_lengths: bool = False,
                 represents: int | None = None, totals: tuple[int, int] | None = None):
        super().__init__(requests)
        self.name = name
        self.approximate_lengths = approximate_lengths
        self.sample_of = (represents, totals) if represents is not None else None

    @property
    def represents(self) -> int:
        """How many requests this list stands for: its length, or the whole a sample was drawn from."""
        return len(self) if self.sample_of is None else self.sample_of[0]

    @property
    def totals(self) -> tuple[int, int]:
        """(prompt, output) tokens of the requests it ``represents`` (a generator's: the sample's mean x N)."""
        if self.sample_of is None:
            return sum(r.prompt_len for r in self), sum(r.output_len for r in self)
        return self.sample_of[1]

    def __getitem__(self, i):
        out = super().__getitem__(i)
        return Workload(out, self.name, self.approximate_lengths) if isinstance(i, slice) else out


def approx_token_count(text: str) -> int:
    """``ceil(utf-8 bytes / 4)``, at least 1 (a prompt has a BOS token, an answer an EOS)."""
    return max(1, -(-len(text.encode("utf-8")) // APPROX_BYTES_PER_TOKEN))


class _Bad(Exception):
    """A problem with one line or entry; the loader adds where it is."""


def _report(errors: list | None, index: int, message: str) -> None:
    if errors is None:
        raise WorkloadError(message)
    errors.append((index, message))


def _pos_int(value, field: str) -> int:
    """A positive integer from an int, an integral float or a numeric string."""
    try:
        x = float(value) if isinstance(value, str) else value
        if not isinstance(x, bool) and isinstance(x, numbers.Real) and x >= 1 and float(x).is_integer():
            return int(x)
    except (ValueError, OverflowError):
        pass
    raise _Bad(f"{field} must be a positive integer, got {value!r}")


def _nonneg_float(value, field: str) -> float:
    try:
        if not isinstance(value, bool) and math.isfinite(x := float(value)) and x >= 0:
            return x
    except (TypeError, ValueError):
        pass
    raise _Bad(f"{field} must be a number >= 0, got {value!r}")


# --------------------------------------------------------------------------------------------
# Synthetic sources


@functools.lru_cache(maxsize=1)
def _length_dists() -> dict:
    return json.loads(LENGTH_DISTS_PATH.read_text())  # shipped with the package


def sample_lengths(name: str, n: int, rng: np.random.Generator, table: dict | None = None):
    """Draw ``n`` (prompt_len, output_len) pairs from a built-in joint quantile table.

    The table holds quantiles of the prompt length and, for bins of prompt-length rank, quantiles
    of the output length (so the pair keeps the trace's dependence). A uniform ``u1`` gives the
    prompt length and its bin, a second ``u2`` the output length in that bin, both by linear
    interpolation between stored quantiles; pairs are clipped to the trace's max total length.
    Returns two int64 arrays.
    """
    if table is None and name not in TRACE_NAMES:
        raise WorkloadError(f"no built-in length distribution {name!r}; known: {', '.join(TRACE_NAMES)}")
    d = table if table is not None else _length_dists()[name]
    u1, u2 = rng.random(n), rng.random(n)
    inp = np.maximum(1, np.rint(np.interp(u1, d["input_probs"], d["input_quantiles"]))).astype(np.int64)
    edges = np.asarray(d["bin_edges"])
    bins = np.clip(np.searchsorted(edges, u1, side="right") - 1, 0, len(edges) - 2)
    out = np.empty(n, dtype=np.int64)
    for b, q in enumerate(d["output_quantiles"]):
        m = bins == b
        out[m] = np.rint(np.interp(u2[m], d["output_probs"], q))
    out = np.clip(out, 1, np.maximum(1, d["max_total_tokens"] - inp))
    return inp, out


def _synthetic(name, n, seed, input_len, output_len, sample_size=None) -> Workload:
    """``n`` requests; or, when ``n`` is too large to build, ``sample_size`` of them drawn directly."""
    k = n if sample_size is None or n <= max(sample_size, GENERATED_MAX_BUILT) else sample_size
    rng = np.random.default_rng(seed)
    if name in TRACE_NAMES:
        if input_len is not None:
            raise WorkloadError(f"input_len applies to constant and uniform workloads, not {name!r}")
        inp, out = sample_lengths(name, k, rng)
        if output_len is not None:
            out = np.full(k, output_len)
        label = f"{name} (lengths drawn from the {name} trace's distribution, {n} requests, seed {seed})"
    else:
        i_len = DEFAULT_INPUT_LEN if input_len is None else input_len
        o_len = DEFAULT_OUTPUT_LEN if output_len is None else output_len
        if name == "constant":
            inp, out = np.full(k, i_len), np.full(k, o_len)
        else:  # uniform: integers in [x // 2, x + x // 2], at least 1
            inp, out = (rng.integers(max(1, x // 2), x + x // 2 + 1, size=k) for x in (i_len, o_len))
        label = f"{name} (input {i_len}, output {o_len}, {n} requests, seed {seed})"
    ids = range(n) if k == n else sample_positions(n, k, seed).tolist()
    reqs = [Request(f"req-{i}", p, o) for i, p, o in zip(ids, inp.tolist(), out.tolist())]
    if k == n:
        return Workload(reqs, label, approximate_lengths=False)
    totals = (round(n * int(inp.sum()) / k), round(n * int(out.sum()) / k))  # the sample's mean x n
    return Workload(reqs, label.replace(f"{n} requests", f"a seeded sample of {k} of {n} requests"),
                    represents=n, totals=totals)


# --------------------------------------------------------------------------------------------
# Files


def _load_csv(path: Path, name: str, errors) -> tuple[list[Request], bool]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            cols = reader.fieldnames or []
            keys = next((k for k in _LENGTH_KEYS if set(k) <= set(cols)), None)
            if keys is None:
                raise WorkloadError(
                    f"{name}: need columns num_prefill_tokens,num_decode_tokens; found {','.join(cols) or 'none'}"
                )
            reqs = []
            for row, rec in enumerate(reader):
                try:
                    if None in rec or any(rec[c] is None for c in keys):
                        raise _Bad(f"expected {len(cols)} columns")
                    arrival = _nonneg_float(rec["arrived_at"], "arrived_at") if "arrived_at" in rec else 0.0
                    reqs.append(Request(f"req-{row}", _pos_int(rec[keys[0]], keys[0]),
                                        _pos_int(rec[keys[1]], keys[1]), arrival))
                except _Bad as e:
                    _report(errors, reader.line_num, f"{name} line {reader.line_num}: {e}")
    except (UnicodeDecodeError, csv.Error) as e:
        raise WorkloadError(f"{name}: malformed CSV: {e}") from None
    return reqs, False


def _count(text: str, tokenizer) -> tuple[int, tuple[int, ...] | None]:
    if tokenizer is None:
        return approx_token_count(text), None
    ids = tuple(int(t) for t in tokenizer(text))
    return max(1, len(ids)), ids or None


def _render(messages: tuple) -> str:
    """Chat messages as counted without a model's chat template: ``role: content`` lines."""
    return "\n".join(f"{role}: {content}" for role, content in messages)


def _sharegpt_entry(entry, i: int, tokenizer) -> tuple[Request | None, bool]:
    if not isinstance(entry, dict):
        raise _Bad(f"expected an object, got {type(entry).__name__}")
    rid = str(entry.get("id", f"req-{i}"))
    keys = next((k for k in _LENGTH_KEYS if k[0] in entry or k[1] in entry), None)
    if keys is not None:
        return Request(rid, _pos_int(entry.get(keys[0]), keys[0]), _pos_int(entry.get(keys[1]), keys[1])), False
    conv = entry.get("conversations")
    if not isinstance(conv, list) or not all(isinstance(t, dict) for t in conv):
        raise _Bad("conversations must be a list of {from, value} objects")
    if len(conv) < 2:
        return None, False
    human = next((j for j, t in enumerate(conv) if t.get("from") in _HUMAN_ROLES), None)
    gpt = None if human is None else next(
        (j for j in range(human + 1, len(conv)) if conv[j].get("from") in _GPT_ROLES), None)
    if gpt is None:
        return None, False
    prompt, answer = conv[human].get("value"), conv[gpt].get("value")
    if not isinstance(prompt, str) or not isinstance(answer, str):
        raise _Bad("conversation values must be strings")
    p_len, ids = _count(prompt, tokenizer)
    o_len, _ = _count(answer, tokenizer)
    return Request(rid, p_len, o_len, prompt=prompt, prompt_token_ids=ids), tokenizer is None


def _load_json(path: Path, name: str, tokenizer, errors) -> tuple[list[Request], bool]:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except json.JSONDecodeError as e:
        raise WorkloadError(f"{name} line {e.lineno}: malformed JSON: {e.msg}") from None
    except UnicodeDecodeError as e:
        raise WorkloadError(f"{name}: not UTF-8 text: {e.reason}") from None
    if not isinstance(data, list):
        raise WorkloadError(f"{name}: expected a JSON list of conversations, got {type(data).__name__}")
    reqs, approx, seen = [], False, {}
    for i, entry in enumerate(data):
        try:
            r, a = _sharegpt_entry(entry, i, tokenizer)
        except _Bad as e:
            _report(errors, i, f"{name} entry {i}: {e}")
            continue
        if r is not None:  # datasets, unlike request files, may repeat ids: suffix #1, #2...
            seen[r.id] = k = seen.get(r.id, -1) + 1
            reqs.append(r if k == 0 else replace(r, id=f"{r.id}#{k}"))
            approx |= a
    return reqs, approx


def _messages(value) -> tuple:
    if not isinstance(value, list) or not value:
        raise _Bad("messages must be a non-empty list")
    out = []
    for m in value:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):  # content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str) or not isinstance(m.get("role"), str):
            raise _Bad("each message needs a string role and content")
        out.append((m["role"], content))
    return tuple(out)


def _jsonl_record(obj, i: int, tokenizer) -> Request:
    if not isinstance(obj, dict):
        raise _Bad(f"expected a JSON object, got {type(obj).__name__}")
    if "body" in obj or "custom_id" in obj:  # OpenAI Batch API
        rid, body, url = obj.get("custom_id"), obj.get("body"), obj.get("url")
        if not isinstance(rid, str) or not rid:
            raise _Bad("custom_id must be a non-empty string")
        if obj.get("method", "POST") != "POST":
            raise _Bad(f"method must be POST, got {obj.get('method')!r}")
        if url not in (CHAT_URL, COMPLETIONS_URL):
            raise _Bad(f"url must be {CHAT_URL} or {COMPLETIONS_URL}, got {url!r}")
        if not isinstance(body, dict):
            raise _Bad("body must be an object")
        use_messages = url == CHAT_URL
        if ("messages" if use_messages else "prompt") not in body:
            raise _Bad(f"body.{'messages' if use_messages else 'prompt'} is required for {url}")
    else:  # plain prompt line
        rid, body, use_messages = obj.get("id", f"req-{i}"), obj, "prompt" not in obj
        if not isinstance(rid, (str, int)) or isinstance(rid, bool) or rid == "":
            raise _Bad(f"id must be a non-empty string, got {rid!r}")
        rid = str(rid)
        if use_messages and "messages" not in obj:
            raise _Bad("needs a prompt (or messages)")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    out_len = DEFAULT_MAX_TOKENS if max_tokens is None else _pos_int(max_tokens, "max_tokens")
    temp = _nonneg_float(body.get("temperature", 0.0), "temperature")
    if use_messages:
        msgs = _messages(body["messages"])
        p_len, _ = _count(_render(msgs), tokenizer)
        return Request(rid, p_len, out_len, messages=msgs, temperature=temp)
    prompt = body["prompt"]
    if isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return Request(rid, len(prompt), out_len, prompt_token_ids=tuple(prompt), temperature=temp)
    if not isinstance(prompt, str):
        raise _Bad("prompt must be a string or a list of token ids")
    p_len, ids = _count(prompt, tokenizer)
    return Request(rid, p_len, out_len, prompt=prompt, prompt_token_ids=ids, temperature=temp)


def _load_jsonl(path: Path, name: str, tokenizer, errors) -> tuple[list[Request], bool]:
    reqs, seen, approx, i = [], set(), False, 0
    with path.open("rb") as f:  # decoded line by line: one bad line is that line's error only
        for line_no, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                try:
                    line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
                except UnicodeDecodeError as e:
                    raise _Bad(f"not UTF-8 text ({e.reason} at byte {e.start + 1} of the line)") from None
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as e:
                    raise _Bad(f"malformed JSON: {e.msg}") from None
                r = _jsonl_record(obj, i, tokenizer)
                if r.id in seen:
                    raise _Bad(f"duplicate id {r.id!r}")
            except _Bad as e:
                _report(errors, line_no, f"{name} line {line_no}: {e}")
            else:
                seen.add(r.id)
                reqs.append(r)
                approx |= tokenizer is None and r.prompt_token_ids is None
            i += 1
    return reqs, approx


# --------------------------------------------------------------------------------------------
# Entry points


def load_workload(
    source: str,
    num_requests: int | None = None,
    seed: int = 0,
    input_len: int | None = None,
    output_len: int | None = None,
    tokenizer: Tokenizer | None = None,
    errors: list | None = None,
    sample_size: int | None = None,
) -> Workload:
    """Load a workload from a built-in name (``SYNTHETIC_NAMES``) or a ``.csv``/``.json``/``.jsonl`` file.

    num_requests: how many requests; default 1000 for a built-in name, the whole file otherwise.
        From a file, drawn without replacement when it holds enough; else with replacement, as
        whole copies of the file plus a draw without replacement for the rest (copy k's ids end in
        ``#k``). Seeded by ``numpy.random.default_rng(seed)``: a seed fixes the result.
    input_len / output_len: lengths for ``constant`` and ``uniform``. ``output_len`` given for any
        other source replaces every request's output length (vLLM's ``--output-len``).
    tokenizer: ``str -> list[int]``; without it text lengths are estimated (``approx_token_count``)
        and the result's ``approximate_lengths`` is True.
    errors: a list to collect ``(where, message)`` for bad lines (1-based line number in CSV and
        JSONL) or entries (0-based index in JSON), which are then skipped; without it the first
        bad one raises ``WorkloadError``.
    sample_size: for a simulation. A workload of more than ``max(sample_size, MAX_BUILT)`` requests
        (``seesaw.sampling.MAX_BUILT``; from a generator, ``GENERATED_MAX_BUILT``) is then never
        built: the result holds ``sample_size`` of them (``Workload.represents`` the whole,
        ``totals`` its tokens). From a file, the very requests the planner would sample from the
        built list (``seesaw.sampling.draw_requests``), with exact totals; from a generator, lengths
        drawn directly (seeded), with the sample's mean as the totals' estimate.
    Ids: ``req-{i}`` for synthetic and CSV (i = data row), ``custom_id``/``id`` for JSON(L).
    """
    for arg, val in (("num_requests", num_requests), ("input_len", input_len), ("output_len", output_len),
                     ("sample_size", sample_size)):
        if val is not None and (isinstance(val, bool) or not isinstance(val, numbers.Integral) or val < 1):
            raise WorkloadError(f"{arg} must be a positive integer, got {val!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise WorkloadError(f"seed must be a non-negative integer, got {seed!r}")
    source = os.fspath(source)
    if source in SYNTHETIC_NAMES:
        return _synthetic(source, num_requests or DEFAULT_NUM_SYNTHETIC, seed, input_len, output_len, sample_size)
    path = Path(source)
    loaders = {".csv": lambda: _load_csv(path, source, errors),
               ".json": lambda: _load_json(path, source, tokenizer, errors),
               ".jsonl": lambda: _load_jsonl(path, source, tokenizer, errors)}
    if path.suffix.lower() not in loaders:
        if path.is_file():
            raise WorkloadError(f"{source}: unsupported workload file type (use .csv, .json or .jsonl)")
        raise WorkloadError(f"unknown workload {source!r}: not a file and not one of {', '.join(SYNTHETIC_NAMES)}")
    if not path.is_file():
        raise WorkloadError(f"workload file not found: {source}")
    if input_len is not None:
        raise WorkloadError(f"input_len applies to constant and uniform workloads, not to file {source}")
    try:
        reqs, approx = loaders[path.suffix.lower()]()
    except OSError as e:
        raise WorkloadError(f"cannot read workload file {source}: {e.strerror}") from None
    if not reqs:
        raise WorkloadError(f"{source}: no requests in the workload")
    if output_len is not None:
        reqs = [replace(r, output_len=output_len) for r in reqs]
    reqs, whole = draw_requests(reqs, num_requests, sample_size, seed)
    seeded = "" if num_requests is None else f", seed {seed}"
    if whole is not None:
        return Workload(reqs, f"{source} (a seeded sample of {len(reqs)} of {whole[0]} requests{seeded})",
                        approx, whole[0], whole[1])
    return Workload(reqs, f"{source} ({len(reqs)} requests{seeded})", approximate_lengths=approx)


def describe(requests: list[Request]) -> dict:
    """Length statistics of a workload (percentiles by linear interpolation, numpy's default).

    ``approximate_lengths`` is taken from a :class:`Workload`; a plain list counts as exact.
    """
    if not requests:
        raise WorkloadError("cannot describe an empty workload")
    p = np.array([r.prompt_len for r in requests], dtype=np.int64)
    o = np.array([r.output_len for r in requests], dtype=np.int64)
    sample_of = getattr(requests, "sample_of", None)  # a sample: percentiles are the sample's
    out: dict = {"num_requests": len(requests) if sample_of is None else sample_of[0]}
    if sample_of is not None:
        out["sample_size"] = len(requests)
    for key, x in (("input_len", p), ("output_len", o)):
        out[f"{key}_mean"] = float(x.mean())
        out.update({f"{key}_p{q}": float(np.percentile(x, q)) for q in (50, 90, 99)})
        out[f"{key}_max"] = int(x.max())
    tp, to = (int(p.sum()), int(o.sum())) if sample_of is None else sample_of[1]
    out.update(total_prompt_tokens=tp, total_output_tokens=to, total_tokens=tp + to, pd_ratio=tp / to,
               approximate_lengths=bool(getattr(requests, "approximate_lengths", False)))
    return out
