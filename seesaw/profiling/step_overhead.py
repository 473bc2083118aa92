"""Step overhead: the engine's driver loop (``vllm_driver.Driver`` over a ``StepWorker``: scheduler,
block tables, step messages, attention metadata, sampling) for decoding sequences, its model
replaced by a stub that returns logits: an engine step minus the model's forward pass.

Assumes the difference of two whole runs (few and many output tokens) cancels the prefill step
and the set-up; one rank, or several running it at once (busy ranks sharing the machine).
"""

from __future__ import annotations

import functools

import torch
from torch import nn

from seesaw.engine.model import LocalComm, Shard
from seesaw.engine.runner import ModelRunner
from seesaw.profiling.grid import BLOCK_SIZE, Task
from seesaw.profiling.records import Table
from seesaw.profiling.timing import Rank
from seesaw.core import ModelSpec, ParallelConfig, VllmPolicy

__all__ = ["step_table"]

_STEP_PROMPT = 127  # prompt tokens of the requests that time the engine's step overhead
_STEP_FEW = 2  # output tokens of the shorter of its two runs


class _LogitsStub(nn.Module):
    """Stands in for ``LlamaShard`` inside ``ModelRunner``: no layers, forward returns logits."""

    def __init__(self, spec: ModelSpec, max_rows: int, r: Rank):
        super().__init__()
        self.spec = spec
        self.shard = Shard(spec.num_hidden_layers, 0, 0)  # first and last stage, no layers
        self.comm = LocalComm()
        self.dtype = r.dtype
        self.hidden_size = spec.hidden_size
        self.anchor = nn.Parameter(torch.zeros(1, device=r.device), requires_grad=False)
        self.logits = torch.randn(max_rows, spec.vocab_size, device=r.device)

    @property
    def device(self) -> torch.device:
        return self.anchor.device

    def forward(self, x, positions, meta, kv_cache=None, logits_indices=None):
        return self.logits[: len(x) if logits_indices is None else len(logits_indices)]


class _DriverComm(LocalComm):
    dp_rank = 0


def _driver_run(spec: ModelSpec, r: Rank, seqs: int, new_tokens: int) -> None:
    """One whole run of the engine's driver (``seesaw.engine.vllm_driver``: scheduler, block tables,
    step messages, the worker's metadata and sampling) for ``seqs`` requests of
    ``_STEP_PROMPT`` prompt and ``new_tokens`` output tokens, on one rank, the model stubbed."""
    from seesaw.engine.batch_io import BatchItem
    from seesaw.engine.config import EngineConfig
    from seesaw.engine.control import ControlPlane
    from seesaw.engine.vllm_driver import Driver
    from seesaw.engine.worker import StepWorker

    layout = ParallelConfig()
    policy = VllmPolicy(layout=layout, max_num_seqs=seqs, max_num_batched_tokens=max(8192, seqs * _STEP_PROMPT),
                        block_size=BLOCK_SIZE)
    cfg = EngineConfig(policy=policy)
    num_blocks = seqs * -(-(_STEP_PROMPT + new_tokens + 1) // BLOCK_SIZE)
    runner = ModelRunner(_LogitsStub(spec, seqs, r), num_blocks, BLOCK_SIZE)
    worker = StepWorker(runner, _DriverComm(), ControlPlane(layout, 0, cfg.timeout_s), cfg, 0)
    items = [BatchItem(str(i), [1] * _STEP_PROMPT, new_tokens, ignore_eos=True) for i in range(seqs)]
    Driver(worker, items, cfg, num_blocks).run()


def step_table(r: Rank, task: Task) -> Table:
    """Seconds per decode step of the engine's driver loop outside the model: two whole runs,
    of ``_STEP_FEW`` output tokens per request and of that many more steps, their difference over
    the steps in between (the prefill step and the set-up cancel); fewer steps for big batches."""
    spec, seqs = task.args["model"], r.grid.step_seqs
    fns, extra = {}, {}
    for b in seqs:
        k = max(8, min(128, 4096 // b))
        extra[b] = k
        fns[(b, "few")] = functools.partial(_driver_run, spec, r, b, _STEP_FEW)
        fns[(b, "many")] = functools.partial(_driver_run, spec, r, b, _STEP_FEW + k)
    with torch.inference_mode():
        runs = r.measure(fns, task.ranks, repeats=r.grid.per_pass(r.grid.forward_repeats), warmup=1)
    times = {b: max(1e-7, (runs[(b, "many")] - runs[(b, "few")]) / extra[b]) for b in seqs}
    times = r.slowest(times, task.ranks)
    return Table("step_overhead", dict(vocab_size=spec.vocab_size, ranks=task.ranks, seqs=list(seqs),
                                       time_s=[times[b] for b in seqs]))
