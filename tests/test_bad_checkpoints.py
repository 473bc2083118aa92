"""Bad checkpoints end in one line naming the file and the problem (exit 2), never a traceback.

Every case writes the bad file for real (a tiny safetensors checkpoint from
``engine_helpers.make_checkpoint``, a tiny GGUF from the ``gguf`` package's writer), then goes
through the CLI (``seesaw run --model``) and the API (``load_checkpoint`` / ``resolve_model``).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from seesaw.core import SpecError
from seesaw.engine.tiny import tiny_config
from tests.engine_helpers import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _copy(good: Path, dst: Path) -> Path:
    shutil.copytree(good, dst)
    return dst


def _truncated(d: Path) -> None:
    f = d / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _garbage(d: Path) -> None:
    (d / "model.safetensors").write_bytes(b"not a safetensors file " * 8)


def _int_tensor(d: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    state["model.norm.weight"] = state["model.norm.weight"].to(torch.int32)
    save_file(state, d / "model.safetensors")


def _wrong_shape(d: Path) -> None:
    import torch
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    state["model.layers.0.mlp.up_proj.weight"] = torch.zeros(3, 5)
    save_file(state, d / "model.safetensors")


def _missing(d: Path) -> None:
    from safetensors.torch import load_file, save_file

    state = load_file(d / "model.safetensors")
    del state["model.layers.1.self_attn.k_proj.weight"]
    save_file(state, d / "model.safetensors")


def _config(text: bytes):
    return lambda d: (d / "config.json").write_bytes(text)


def _bad_index(d: Path) -> None:
    (d / "model.safetensors.index.json").write_text("{bad")


def _bad_tokenizer(d: Path) -> None:
    (d / "seesaw_tokenizer.json").write_text("garbage")


CASES = {  # name: (corrupt the copy, the file the line names, words it holds)
    "truncated": (_truncated, "model.safetensors", "truncated or corrupt"),
    "garbage": (_garbage, "model.safetensors", "truncated or corrupt"),
    "int-dtype": (_int_tensor, "model.safetensors", "model.norm.weight has dtype I32"),
    "wrong-shape": (_wrong_shape, "model.safetensors", "has shape [3, 5], expected"),
    "missing-tensor": (_missing, "", "missing 1 tensor(s): model.layers.1.self_attn.k_proj.weight"),
    "config-not-json": (_config(b"{not json"), "config.json", "invalid JSON"),
    "config-a-list": (_config(b"[1, 2]"), "config.json", "expected a JSON object"),
    "config-not-utf8": (_config(b'{"a": "\xff"}'), "config.json", "not UTF-8"),
    "config-bad-value": (_config(json.dumps(tiny_config(hidden_size=-4)).encode()), "config.json",
                         "hidden_size: Input should be greater than 0"),
    "index-not-json": (_bad_index, "model.safetensors.index.json", "not a safetensors index"),
    "tokenizer-not-json": (_bad_tokenizer, "seesaw_tokenizer.json", "not valid JSON"),
}


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("good") / "ckpt")


def _one_error_line(res) -> str:
    assert res.returncode == 2, (res.stdout, res.stderr)
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    return lines[0]


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_bad_safetensors_checkpoint_is_one_line_naming_the_file(good, tmp_path, seesaw, case):
    corrupt, file, words = CASES[case]
    bad = _copy(good, tmp_path / case)
    corrupt(bad)
    res = seesaw("run", "--model", bad, "-i", "constant", "-n", "2", "--input-len", "4", "--output-len", "2",
                 "-d", tmp_path / "out")
    line = _one_error_line(res)
    assert str(bad / file).rstrip("/") in line and words in line, line
    assert not (tmp_path / "out" / "outputs.jsonl").exists()


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if not c.startswith("tokenizer")])
def test_the_api_raises_one_line_spec_errors_for_bad_checkpoints(good, tmp_path, case):
    from seesaw.engine.weights import load_checkpoint

    corrupt, _, words = CASES[case]
    bad = _copy(good, tmp_path / case)
    corrupt(bad)
    with pytest.raises(SpecError) as e:
        load_checkpoint(bad, share_memory=False)
    assert words in str(e.value) and "\n" not in str(e.value)


# --------------------------------------------------------------------------------------------
# GGUF


def _write_gguf(path: Path, q_rows: int = 8) -> Path:
    """A tiny LLaMA GGUF (1 layer, hidden 8, 2 heads, vocab 4, F32) written with the gguf package."""
    gguf = pytest.importorskip("gguf")
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_embedding_length(8)
    w.add_feed_forward_length(16)
    w.add_head_count(2)
    w.add_head_count_kv(2)
    w.add_context_length(64)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_tokenizer_model("gpt2")
    w.add_token_list(["a", "b", "c", "d"])
    rng = np.random.default_rng(0)
    shapes = {"token_embd.weight": (4, 8), "output_norm.weight": (8,), "blk.0.attn_norm.weight": (8,),
              "blk.0.ffn_norm.weight": (8,), "blk.0.attn_q.weight": (q_rows, 8), "blk.0.attn_k.weight": (8, 8),
              "blk.0.attn_v.weight": (8, 8), "blk.0.attn_output.weight": (8, 8), "blk.0.ffn_gate.weight": (16, 8),
              "blk.0.ffn_up.weight": (16, 8), "blk.0.ffn_down.weight": (8, 16)}
    for name, shape in shapes.items():
        w.add_tensor(name, rng.standard_normal(shape).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_a_tiny_gguf_converts(tmp_path, monkeypatch):
    from seesaw.engine.checkpoint import resolve_model

    monkeypatch.setenv("SEESAW_CACHE", str(tmp_path / "cache"))
    out = resolve_model(_write_gguf(tmp_path / "ok.gguf"))
    assert json.loads((out / "config.json").read_text())["hidden_size"] == 8


def _gguf_truncated(p: Path) -> None:
    p.write_bytes(p.read_bytes()[: p.stat().st_size - 100])


def _gguf_header_only(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:200])


GGUF_CASES = {
    "truncated": (_gguf_truncated, "truncated"),
    "header-only": (_gguf_header_only, "truncated or corrupt"),
    "garbage": (lambda p: p.write_bytes(b"not a gguf file " * 16), "not a readable GGUF file"),
    "empty": (lambda p: p.write_bytes(b""), "not a readable GGUF file"),
    "wrong-shape": (lambda p: _write_gguf(p, q_rows=12), "q_proj.weight has shape [12, 8], expected [8, 8]"),
}


@pytest.mark.parametrize("case", sorted(GGUF_CASES))
def test_a_bad_gguf_is_one_line_naming_the_file(tmp_path, seesaw, monkeypatch, case):
    monkeypatch.setenv("SEESAW_CACHE", str(tmp_path / "cache"))
    corrupt, words = GGUF_CASES[case]
    path = _write_gguf(tmp_path / f"{case}.gguf")
    corrupt(path)
    res = seesaw("run", "--model", path, "-i", "constant", "-n", "2", "-d", tmp_path / "out")
    line = _one_error_line(res)
    assert str(path) in line and words in line, line
    assert not list((tmp_path / "cache").glob("models/*")), "a failed conversion leaves nothing cached"

    from seesaw.engine.checkpoint import resolve_model

    with pytest.raises(SpecError, match=re.escape(words)):
        resolve_model(path)
