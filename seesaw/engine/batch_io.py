"""Input and output files of ``seesaw run``: OpenAI Batch API JSONL in, batch-output JSONL out.

Input (``prepare_requests``): anything ``seesaw.workload.load_workload`` reads, turned into token
ids with the model's tokenizer:

- Batch API lines (``custom_id``, ``url``, ``body``): ``/v1/chat/completions`` bodies have their
  ``messages`` rendered with the tokenizer's chat template (generation prompt added) and answer as
  ``chat.completion``; ``/v1/completions`` bodies tokenize ``prompt`` as is (``text_completion``).
- Plain lines ``{"id", "prompt"}`` (or ``{"id", "messages"}``): with ``prompt_format="auto"`` a
  prompt is sent as one user turn through the chat template when the model has a real one (a HF
  tokenizer, e.g. SmolLM2-Instruct), as raw text otherwise (the tiny model's byte tokenizer).
- Length workloads (``sharegpt``, ``constant``, ``uniform``, a ``.csv`` trace, ShareGPT entries
  with lengths only): prompts of seeded random token ids of the given lengths (one
  ``numpy.random.Generator`` per run), so a benchmark runs without text; such requests ignore EOS
  and generate exactly ``output_len`` tokens, as ``vllm bench throughput`` does for random data.
Malformed lines do not stop the run: they come back as ``(line, message)`` errors, written to
``OUT.errors.jsonl`` by ``write_errors``, and the rest run.

Output (``OutputWriter``): one line per request as it finishes, in the Batch API output format
(``id``, ``custom_id``, ``response`` {``status_code``, ``request_id``, ``body``}, ``error``): a chat
request's body is a ``chat.completion`` (``chatcmpl-`` id, ``choices[].message``), a prompt's a
``text_completion`` (``cmpl-`` id, ``choices[].text``), both with ``finish_reason`` and ``usage``.
With ``EngineConfig.include_timing`` (``seesaw run --include-timing``) a line also carries a
``timing`` object (seconds since the run started), an extra outside the OpenAI format. Each line is
written with one ``write`` at once and fsynced every ``fsync_every_s`` and at close, so a killed
process loses nothing finished (a power cut at most the last lines the OS had not written); a write
that fails (full disk) cuts its torn line off again. ``scan_output`` reads an existing output file
for ``--resume``: the ids done (each once) and the lines worth keeping, dropping torn lines,
fragments and repeated ids (``done_ids``: just the ids).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from seesaw.workload import CHAT_URL, SYNTHETIC_NAMES, WorkloadError, load_workload

__all__ = [
    "cut_torn_line",
    "BatchItem",
    "prepare_requests",
    "response_record",
    "OutputWriter",
    "done_ids",
    "OutputScan",
    "scan_output",
    "errors_path",
    "write_errors",
    "append_errors",
]


@dataclass(slots=True)
class BatchItem:
    """One request ready for the engine; also a request as the scheduler, the simulator and the
    planner read one (``id``, ``prompt_len``, ``output_len``, like ``seesaw.workload.Request``)."""

    custom_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    chat: bool = False          # answer as chat.completion (else text_completion)
    ignore_eos: bool = False    # length workloads: generate exactly max_tokens
    line: int | None = None     # 1-based source line (JSONL/CSV), when there is one

    @property
    def id(self) -> str:
        return self.custom_id

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)

    @property
    def output_len(self) -> int:
        """The most tokens it may generate (``max_tokens``)."""
        return self.max_tokens


def _line_kinds(path: Path) -> dict[str, tuple[int, str | None]]:
    """id -> (line number, Batch API url or None for a plain line), for the JSONL lines that
    parse. The workload loader validates; this only recovers what it does not keep."""
    out: dict[str, tuple[int, str | None]] = {}
    try:
        with path.open("rb") as f:  # bytes: a line that is not UTF-8 is skipped, not the rest
            for i, line in enumerate(f, 1):
                try:
                    obj = json.loads(line)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    continue
                if not isinstance(obj, dict):
                    continue
                if "body" in obj or "custom_id" in obj:
                    out.setdefault(str(obj.get("custom_id")), (i, obj.get("url")))
                elif "id" in obj:
                    out.setdefault(str(obj["id"]), (i, None))
    except OSError:
        pass  # load_workload reports these
    return out


def _encode_chat(tokenizer, messages) -> list[int]:
    text = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages],
                                         add_generation_prompt=True)
    # a HF chat template writes its own special tokens; the byte tokenizer's adds none
    return tokenizer.encode(text, add_bos=not hasattr(tokenizer, "chat_template"))


def _random_ids(rng: np.random.Generator, n: int, tokenizer) -> list[int]:
    vocab = int(getattr(tokenizer, "vocab_size", 256))
    special = {getattr(tokenizer, "bos_token_id", None), getattr(tokenizer, "pad_token_id", None)}
    special |= set(getattr(tokenizer, "eos_token_ids", ()))
    ids = rng.integers(0, vocab, n)
    for s in special - {None}:
        ids[ids == s] = (s + 1) % vocab  # keep special tokens out of random prompts
    return ids.tolist()


def prepare_requests(
    source: str, tokenizer, *, max_position: int | None = None, seed: int = 0,
    num_requests: int | None = None, input_len: int | None = None, output_len: int | None = None,
    max_tokens: int | None = None, temperature: float | None = None, prompt_format: str = "auto",
) -> tuple[list[BatchItem], list[tuple[int | None, str]]]:
    """Load ``source`` and tokenize it: (items in source order, [(line, message)] errors).

    max_tokens caps every request's ``max_tokens``; temperature replaces every request's;
    max_position (the model's context) rejects prompts that do not fit and caps outputs so
    prompt + output fit. Raises ``WorkloadError`` for a source that cannot be read at all.
    """
    if prompt_format not in ("auto", "chat", "raw"):
        raise WorkloadError(f"prompt format must be auto, chat or raw, got {prompt_format!r}")
    errors: list = []
    try:
        reqs = load_workload(source, num_requests=num_requests, seed=seed, input_len=input_len,
                             output_len=output_len, tokenizer=tokenizer.encode, errors=errors)
    except WorkloadError:
        if errors:  # every line was bad: report them, the caller says there is nothing to run
            return [], errors
        raise
    path = Path(source)
    kinds = _line_kinds(path) if path.suffix.lower() == ".jsonl" else {}
    length_only = source in SYNTHETIC_NAMES or path.suffix.lower() == ".csv"
    chat_plain = prompt_format == "chat" or (prompt_format == "auto" and hasattr(tokenizer, "chat_template"))
    rng = np.random.default_rng(seed)
    items: list[BatchItem] = []
    for r in reqs:
        line, url = kinds.get(r.id) or kinds.get(r.id.rsplit("#", 1)[0], (None, None))
        if r.id.startswith("req-") and path.suffix.lower() == ".csv":
            line = int(r.id[4:].split("#")[0]) + 2  # data row i is file line i + 2 (after the header)
        synthetic = False
        if r.messages is not None:
            ids, chat = _encode_chat(tokenizer, r.messages), True
        elif r.prompt is not None and kinds and url is None and chat_plain:  # a plain prompt line
            ids, chat = _encode_chat(tokenizer, (("user", r.prompt),)), True
        elif r.prompt_token_ids is not None:
            ids, chat = list(r.prompt_token_ids), url == CHAT_URL
        elif r.prompt is not None:  # an empty prompt tokenizes to nothing
            ids, chat = tokenizer.encode(r.prompt), False
        else:
            ids, chat, synthetic = _random_ids(rng, r.prompt_len, tokenizer), False, True
        out_len = r.output_len if max_tokens is None else min(r.output_len, max_tokens)
        if not ids:
            errors.append((line, f"{source} request {r.id!r}: the prompt is empty after tokenization"))
            continue
        if max_position is not None:
            if len(ids) >= max_position:
                errors.append((line, f"{source} request {r.id!r}: prompt of {len(ids)} tokens does not "
                                     f"fit the model's {max_position}-token context"))
                continue
            out_len = min(out_len, max_position - len(ids))
        temp = r.temperature if temperature is None else temperature
        items.append(BatchItem(r.id, ids, out_len, temp, chat, synthetic or length_only, line))
    return items, errors


# --------------------------------------------------------------------------------------------
# Output


def response_record(item: BatchItem, output_ids: list[int], text: str, finish_reason: str,
                    model: str, timing: dict | None = None) -> dict:
    """One batch-output line (the OpenAI Batch API's request output object) for a finished request:
    a ``chat.completion`` body for a chat request, a ``text_completion`` body otherwise. ``timing``
    (opt-in, not part of the OpenAI format) is added as a top-level ``timing`` key when given."""
    digest = hashlib.sha1(item.custom_id.encode()).hexdigest()[:24]  # stable across runs
    if item.chat:
        choice = {"index": 0, "message": {"role": "assistant", "content": text, "refusal": None},
                  "logprobs": None, "finish_reason": finish_reason}
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    usage = {"prompt_tokens": item.prompt_len, "completion_tokens": len(output_ids),
             "total_tokens": item.prompt_len + len(output_ids)}
    body = {"id": f"{'chatcmpl' if item.chat else 'cmpl'}-{digest}",
            "object": "chat.completion" if item.chat else "text_completion",
            "created": int(time.time()), "model": model, "choices": [choice], "usage": usage}
    record = {"id": f"batch_req_{digest}", "custom_id": item.custom_id,
              "response": {"status_code": 200, "request_id": f"req_{digest}", "body": body}, "error": None}
    if timing is not None:
        record["timing"] = timing
    return record


class OutputWriter:
    """Append-only JSONL writer: each line goes to the file in one ``write`` as the request finishes
    (nothing waits in a buffer: a killed process loses no finished line), fsynced at intervals and
    at close. A write that fails (a full disk, a file-size limit) cuts the file back to its last
    complete line before the ``OSError`` goes up, so no torn line is left behind."""

    def __init__(self, path: str | Path, append: bool = False, fsync_every_s: float = 1.0, guard=None):
        self.path = Path(path)
        self.guard = guard  # called before each line (a spawned rank 0: exit if the launcher is gone)
        if self.path.parent and not self.path.parent.is_dir():
            raise WorkloadError(f"output directory {self.path.parent} does not exist")
        if append:
            cut_torn_line(self.path)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
        self.fd: int | None = os.open(self.path, flags, 0o644)
        self.size = os.fstat(self.fd).st_size  # end of the last complete line
        self.fsync_every_s = fsync_every_s
        self._synced = time.monotonic()
        self.num_written = 0

    @property
    def closed(self) -> bool:
        return self.fd is None

    def write(self, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8")
        if self.guard is not None:
            self.guard()
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self.fd, view):]
        except OSError:
            os.ftruncate(self.fd, self.size)  # shrinking needs no space: the torn line goes
            raise
        self.size += len(data)
        self.num_written += 1
        if time.monotonic() - self._synced >= self.fsync_every_s:
            self.sync()

    def sync(self) -> None:
        os.fsync(self.fd)
        self._synced = time.monotonic()

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def cut_torn_line(path: Path, fsync: bool = False) -> None:
    """Drop a partial last line (no newline) left by a crash mid-write; ``fsync`` the file after."""
    if not path.is_file():
        return
    with path.open("rb+") as f:
        data = f.read()
        if data and not data.endswith(b"\n"):
            f.truncate(data.rfind(b"\n") + 1)
        if fsync:
            os.fsync(f.fileno())


@dataclass
class OutputScan:
    """What ``scan_output`` found in an output file: its ``lines`` worth keeping (complete, valid
    JSON objects with a string ``custom_id`` and no error, the first line of each id, in file
    order, with their newline), those ids (``done``), and how many lines it ``dropped``: a torn
    last line (no newline), lines that are not such objects, failed requests (run again) and
    repeated ids."""

    lines: list[bytes]
    done: set[str]
    dropped: int


def scan_output(path: str | Path) -> OutputScan:
    """Read an existing output file for ``--resume`` (an empty scan if there is none)."""
    path = Path(path)
    scan = OutputScan([], set(), 0)
    if not path.is_file():
        return scan
    with path.open("rb") as f:
        for raw in f:
            rec = None
            if raw.endswith(b"\n"):
                try:
                    rec = json.loads(raw)
                except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
                    pass
            cid = rec.get("custom_id") if isinstance(rec, dict) and rec.get("error") is None else None
            if not isinstance(cid, str) or cid in scan.done:
                scan.dropped += 1
                continue
            scan.done.add(cid)
            scan.lines.append(raw)
    return scan


def done_ids(path: str | Path) -> set[str]:
    """``custom_id`` of every complete, successful line of an existing output file."""
    return scan_output(path).done


def errors_path(output: str | Path) -> Path:
    """``out.jsonl`` -> ``out.errors.jsonl``."""
    output = Path(output)
    stem = output.name[:-len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".errors.jsonl")


def _error_line(line, message: str, custom_id: str | None = None) -> str:
    rec = {"line": line, "error": message}
    if custom_id is not None:
        rec["custom_id"] = custom_id
    return json.dumps(rec, ensure_ascii=False) + "\n"


def write_errors(path: str | Path, errors: list[tuple]) -> None:
    """(Re)write the errors file of this run: one ``{"line", "error"}`` object per bad line; an
    old errors file is removed when there are none."""
    path = Path(path)
    if not errors:
        path.unlink(missing_ok=True)
        return
    with path.open("w", encoding="utf-8") as f:
        f.writelines(_error_line(line, msg) for line, msg in errors)


def append_errors(path: str | Path, errors: list[tuple]) -> None:
    """Append ``(line, message, custom_id)`` errors found while running (e.g. a request that
    can never fit the KV cache)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.writelines(_error_line(line, msg, cid) for line, msg, cid in errors)
        f.flush()
        os.fsync(f.fileno())
