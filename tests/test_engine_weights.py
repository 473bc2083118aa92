"""Checkpoint loading, one-line errors, per-rank shards, named models and tokenizers."""

import json

import pytest
import torch

from seesaw.engine.checkpoint import resolve_model
from seesaw.engine.files import CheckpointError
from seesaw.engine.model import Shard, stage_layers
from seesaw.engine.tiny import tiny_config, write_random_checkpoint
from seesaw.engine.tokenizer import ByteTokenizer, load_tokenizer
from seesaw.engine.weights import load_checkpoint, materialize
from seesaw.core import SpecError, parse_parallel
from tests.engine_helpers import make_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # one intra-op thread (conftest)


def _one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_loads_single_and_sharded_checkpoints_identically(tmp_path):
    one = load_checkpoint(make_checkpoint(tmp_path / "one"))
    cfg = tiny_config()
    many = load_checkpoint(write_random_checkpoint(tmp_path / "many", cfg, num_shards=3))
    assert (tmp_path / "many" / "model.safetensors.index.json").is_file()
    assert one.tensors.keys() == many.tensors.keys()
    for name, t in one.tensors.items():
        assert torch.equal(t, many[name]), name
    assert one.spec.num_hidden_layers == 4 and one.spec.vocab_size == cfg["vocab_size"]
    assert one.nbytes == 4 * one.spec.num_parameters


def test_store_is_in_shared_memory(tmp_path):
    store = load_checkpoint(make_checkpoint(tmp_path / "m"))
    assert all(t.is_shared() for t in store.tensors.values())
    assert len(store.buffers) == 1  # one flat fp32 buffer, every tensor a view into it
    assert load_checkpoint(tmp_path / "m", dtype=torch.bfloat16).dtype == torch.bfloat16


def test_missing_directory_and_config(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "nope")
    assert "does not exist" in _one_line(err)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "empty")
    assert "config.json" in _one_line(err)
    (tmp_path / "empty" / "config.json").write_text(json.dumps(tiny_config()))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "empty")
    assert "model.safetensors" in _one_line(err)


def test_missing_tensors_are_named(tmp_path):
    path = write_random_checkpoint(tmp_path / "m", drop=("model.layers.2.mlp.up_proj.weight", "lm_head.weight"))
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = _one_line(err)
    assert "missing 2 tensor(s)" in msg
    assert "model.layers.2.mlp.up_proj.weight" in msg and "lm_head.weight" in msg


def test_wrong_shape_names_tensor_expected_and_got(tmp_path):
    path = write_random_checkpoint(tmp_path / "m", reshape={"model.layers.1.self_attn.k_proj.weight": (16, 64)})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    msg = _one_line(err)
    assert "model.layers.1.self_attn.k_proj.weight" in msg
    assert "[16, 64]" in msg and "expected [32, 64]" in msg


def test_unsupported_configs(tmp_path):
    cfg = tiny_config(model_type="gemma")
    path = write_random_checkpoint(tmp_path / "m", cfg)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "gemma" in _one_line(err) and "llama, mistral, qwen2" in _one_line(err)
    path = write_random_checkpoint(tmp_path / "q", tiny_config(model_type="qwen2"))  # no Q/K/V biases
    with pytest.raises(CheckpointError, match=r"missing 12 tensor\(s\): model.layers.0.self_attn.q_proj.bias"):
        load_checkpoint(path)
    path = write_random_checkpoint(tmp_path / "b", tiny_config(attention_bias=True))
    with pytest.raises(CheckpointError, match="attention_bias"):
        load_checkpoint(path)
    bad = tiny_config(num_attention_heads=3)
    path = write_random_checkpoint(tmp_path / "h", {**bad, "head_dim": 16})
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    assert "num_attention_heads" in _one_line(err)


def test_layout_that_does_not_divide_is_an_error(tmp_path):
    store = load_checkpoint(make_checkpoint(tmp_path / "m"))
    for layout, words in [("T8", "attention heads"), ("T3", "heads"), ("P5", "layers")]:
        with pytest.raises(SpecError) as err:
            materialize(store, parse_parallel(layout), 0)
        assert words in _one_line(err), layout
    store3 = load_checkpoint(make_checkpoint(tmp_path / "i", intermediate_size=130))
    with pytest.raises(SpecError, match="intermediate_size"):
        materialize(store3, parse_parallel("T4"), 0)


def test_stage_layers_split_evenly_first_stages_longer():
    assert stage_layers(4, 2) == [(0, 2), (2, 4)]
    assert stage_layers(30, 4) == [(0, 8), (8, 16), (16, 23), (23, 30)]


def test_materialize_shapes_and_slices(tmp_path):
    store = load_checkpoint(make_checkpoint(tmp_path / "m"))
    t = store.tensors
    layout = parse_parallel("T2P2")
    # rank 3 = stage 1, TP slice 1: layers 2-3, Q heads 2-3, KV head 1, vocab rows 130..259
    sd = materialize(store, layout, 3)
    assert set(sd) == {f"layers.{i}.{n}" for i in (2, 3) for n in (
        "input_layernorm.weight", "post_attention_layernorm.weight", "attn.qkv_proj.weight",
        "attn.o_proj.weight", "mlp.gate_up_proj.weight", "mlp.down_proj.weight")} | {"norm.weight", "lm_head.weight"}
    qkv = sd["layers.2.attn.qkv_proj.weight"]
    assert qkv.shape == (2 * 16 + 2 * 16, 64)
    assert torch.equal(qkv[:32], t["model.layers.2.self_attn.q_proj.weight"][32:64])
    assert torch.equal(qkv[32:48], t["model.layers.2.self_attn.k_proj.weight"][16:32])
    assert torch.equal(sd["layers.2.attn.o_proj.weight"], t["model.layers.2.self_attn.o_proj.weight"][:, 32:64])
    assert torch.equal(sd["layers.3.mlp.down_proj.weight"], t["model.layers.3.mlp.down_proj.weight"][:, 64:])
    assert torch.equal(sd["layers.3.mlp.gate_up_proj.weight"][64:], t["model.layers.3.mlp.up_proj.weight"][64:])
    assert torch.equal(sd["lm_head.weight"], t["lm_head.weight"][130:])
    first = materialize(store, layout, 0)
    assert "embed_tokens.weight" in first and "lm_head.weight" not in first


def test_materialize_replicates_kv_heads_and_pads_vocab(tmp_path):
    store = load_checkpoint(make_checkpoint(tmp_path / "m", vocab_size=258))
    k = store["model.layers.0.self_attn.k_proj.weight"]
    for rank in range(4):  # T4 over 2 KV heads: ranks 0,1 share head 0, ranks 2,3 head 1
        qkv = materialize(store, parse_parallel("T4"), rank)["layers.0.attn.qkv_proj.weight"]
        head = rank // 2
        assert torch.equal(qkv[16:32], k[head * 16:(head + 1) * 16])
        emb = materialize(store, parse_parallel("T4"), rank)["embed_tokens.weight"]
        assert emb.shape == (65, 64)  # ceil(258 / 4)
    last = materialize(store, parse_parallel("T4"), 3)["lm_head.weight"]
    assert torch.equal(last[:63], store["lm_head.weight"][195:]) and last[63:].abs().sum() == 0


def test_tied_single_stage_shares_one_tensor(tmp_path):
    store = load_checkpoint(make_checkpoint(tmp_path / "m", tie_word_embeddings=True))
    assert "lm_head.weight" not in store.tensors
    sd = materialize(store)
    assert sd["lm_head.weight"] is sd["embed_tokens.weight"]
    last = materialize(store, parse_parallel("P2"), 1)  # the last stage gets its own copy
    assert torch.equal(last["lm_head.weight"], store["model.embed_tokens.weight"])


def test_shard_heads():
    from seesaw.engine.hf_config import spec_from_config

    spec = spec_from_config(tiny_config())
    s = Shard.of(spec, parse_parallel("T2"), 1)
    assert s.q_heads(spec) == range(2, 4) and s.kv_heads(spec) == range(1, 2)
    assert s.mlp_cols(spec) == range(64, 128) and s.vocab_rows(spec) == range(130, 260)


def test_resolve_tiny_writes_once_into_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEESAW_CACHE", str(tmp_path / "cache"))
    path = resolve_model("tiny")
    assert path == tmp_path / "cache" / "models" / "tiny"
    mtime = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model("TINY") == path
    assert (path / "model.safetensors").stat().st_mtime_ns == mtime
    store = load_checkpoint(path)
    assert store.spec.num_key_value_heads == 2
    assert isinstance(load_tokenizer(path), ByteTokenizer)
    assert resolve_model(str(path)) == path
    with pytest.raises(CheckpointError) as err:
        resolve_model("no-such-model")
    assert "tiny" in _one_line(err)


def test_byte_tokenizer_roundtrip():
    tok = ByteTokenizer()
    ids = tok.encode("héllo")
    assert ids[0] == tok.bos_token_id and max(ids[1:]) < 256
    assert tok.decode(ids + [tok.eos_token_id]) == "héllo"
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}]).endswith("assistant: ")


def test_store_pickles_as_shared_buffers(tmp_path):
    """Spawned ranks receive the buffers (one shared fd each), not a copy per tensor."""
    import pickle
    from multiprocessing.reduction import ForkingPickler

    store = load_checkpoint(make_checkpoint(tmp_path / "m"))
    state = store.__getstate__()
    assert not state["loose"] and len(state["buffers"]) == 1
    clone = pickle.loads(ForkingPickler.dumps(store))
    for name, t in store.tensors.items():
        assert torch.equal(clone[name], t)
    clone["model.norm.weight"][0] = 42.0  # same pages
    assert store["model.norm.weight"][0] == 42.0


_SHAPE_FIELDS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "d_head",
                 "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_theta", "rms_norm_eps")


def test_tiny_checkpoint_matches_catalog():
    catalog = pytest.importorskip("seesaw.catalog")
    from seesaw.engine.hf_config import spec_from_config

    ours, theirs = spec_from_config(tiny_config()), catalog.load_model("tiny")
    for f in _SHAPE_FIELDS:
        assert getattr(ours, f) == getattr(theirs, f), f
