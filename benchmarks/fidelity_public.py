"""End-to-end fidelity: simulate published offline vLLM throughput measurements and print the error.

Each case is a public, citable measurement of vLLM's offline throughput benchmark
(``benchmarks/benchmark_throughput.py``): model, GPUs, dataset, engine version and where it was
published. We simulate the same model on the catalog node that matches the GPUs, with vLLM's
layout and batch limits, on our ShareGPT length trace (``seesaw.load_workload("sharegpt")``: the
same conversations, lengths counted with the LLaMA-2 tokenizer), and compare requests/s and, where
published, total tokens/s. Relative error = predicted / published - 1.

What is *not* here, and why: the Seesaw paper's own vLLM baselines (vLLM 0.5.4 on 8xA10 / 8xL4 /
8xA100) are reported in its figures as throughput normalised to the best vLLM configuration; the
paper summary we work from (``shared/reference/seesaw-paper.md``) has no absolute tokens/s figure
for them, so there is nothing absolute to compare with. The vLLM blog's v0.6.0 performance post
(2024-09-05) gives its ShareGPT throughputs only as bar charts. Only figures printed as numbers in
a public source are used; none is read off a plot.

Usage: ``python benchmarks/fidelity_public.py``. The last line is one JSON object.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import seesaw
from seesaw import CostModel, VllmPolicy
from seesaw.catalog import load_gpu, load_node


@dataclass(frozen=True)
class Case:
    label: str
    model: str  # catalog name
    gpu: str  # catalog GPU
    num_gpus: int
    layout: str
    num_requests: int
    max_num_seqs: int
    published_req_s: float
    published_tok_s: float | None  # total (input + output) tokens/s, where published
    published_out_tok_s: float | None
    source: str
    # the published run's mean input / output tokens per request, from its own totals (to rescale
    # our trace's lengths to the published tokenizer and filter), where its totals are published
    mean_lengths: tuple[float, float] | None = None


CASES = (
    Case(
        label="llama3.3-70b 4xA100 TP4 ShareGPT 200 (measured)",
        model="llama3-70b", gpu="a100-80g", num_gpus=4, layout="T4", num_requests=200, max_num_seqs=256,
        published_req_s=3.28, published_tok_s=1414.42, published_out_tok_s=714.48,
        mean_lengths=((1414.42 - 714.48) / 3.28, 714.48 / 3.28),  # 213.4 in, 217.8 out
        source="vllm-project/vllm#12315 (2025-01-22): vLLM 0.6.6, 4 x A100, meta-llama/Llama-3.3-70B-Instruct, "
               "ShareGPT_V3_unfiltered_cleaned_split, benchmark_throughput.py --num-prompts 200 --seed 0 "
               "--max-num-seqs 256 --num-scheduler-steps 1: 'Throughput: 3.28 requests/s, 1414.42 total "
               "tokens/s, 714.48 output tokens/s'",
    ),
    Case(
        label="llama3.3-70b 4xA100 TP4 ShareGPT 200 (vLLM dashboard v0)",
        model="llama3-70b", gpu="a100-80g", num_gpus=4, layout="T4", num_requests=200, max_num_seqs=256,
        published_req_s=5.13, published_tok_s=None, published_out_tok_s=None,
        mean_lengths=((1414.42 - 714.48) / 3.28, 714.48 / 3.28),  # the same command and dataset as above
        source="vllm-project/vllm#12315 quoting the vLLM performance dashboard v0: 5.13 requests/s for the same "
               "command with --num-scheduler-steps 10 (which the reporter could not reproduce: 3.47 req/s)",
    ),
)
# Llama-3.3-70B has Llama-3-70B's shapes (80 layers, 8192 hidden, 64/8 heads, 28672 intermediate,
# 128256 vocab). 4 x A100 must be the 80 GB part: 141 GB of fp16 weights leave no KV room on 4 x 40 GB.
# The issue does not say SXM or PCIe: we assume SXM (NVLink), the common 4-8 GPU A100 server.


def node_for(case: Case):
    gpu = load_gpu(case.gpu)
    return load_node("8xa100-40g-nvlink").model_copy(
        update={"gpu": gpu, "num_gpus": case.num_gpus, "name": f"{case.num_gpus}x{gpu.name}-nvlink"})


def scaled(requests: list, mean_lengths: tuple[float, float]) -> list:
    """Our trace with every prompt and output length scaled so that their means are ``mean_lengths``
    (the published run counted tokens with another tokenizer and dropped long conversations)."""
    a = mean_lengths[0] * len(requests) / sum(r.prompt_len for r in requests)
    b = mean_lengths[1] * len(requests) / sum(r.output_len for r in requests)
    return [replace(r, prompt_len=max(1, round(r.prompt_len * a)), output_len=max(1, round(r.output_len * b)))
            for r in requests]


def simulate_case(case: Case, rescale: bool) -> dict:
    model = seesaw.load_model(case.model)
    node = node_for(case)
    requests = seesaw.load_workload("sharegpt", case.num_requests, seed=0)
    if rescale:
        requests = scaled(requests, case.mean_lengths)
    cost = CostModel(model, node)
    policy = VllmPolicy(layout=seesaw.parse_layout(case.layout)[0], max_num_seqs=case.max_num_seqs)
    res = seesaw.simulate(model, node=node, policy=policy, requests=requests, cost=cost)
    req_s = res.requests_per_second
    return dict(case=case.label + (", lengths rescaled" if rescale else ""), node=node.name, layout=case.layout,
                mean_input=sum(r.prompt_len for r in requests) / len(requests),
                mean_output=sum(r.output_len for r in requests) / len(requests),
                predicted_req_s=req_s, published_req_s=case.published_req_s,
                req_s_err=req_s / case.published_req_s - 1,
                predicted_tok_s=res.tokens_per_second, published_tok_s=case.published_tok_s,
                tok_s_err=(res.tokens_per_second / case.published_tok_s - 1) if case.published_tok_s else None,
                predicted_out_tok_s=res.output_tokens_per_second, published_out_tok_s=case.published_out_tok_s,
                source=case.source)


def main() -> int:
    rows = [simulate_case(c, rescale) for c in CASES for rescale in ((False, True) if c.mean_lengths else (False,))]
    print(f"{'case':76s} {'in/out mean':>12s} {'req/s pred':>10s} {'pub':>6s} {'err':>7s} "
          f"{'tok/s pred':>10s} {'pub':>8s} {'err':>7s}")
    for r in rows:
        tok_pub = f"{r['published_tok_s']:.0f}" if r["published_tok_s"] else "-"
        tok_err = f"{r['tok_s_err']:+.1%}" if r["tok_s_err"] is not None else "-"
        print(f"{r['case']:76s} {r['mean_input']:5.0f}/{r['mean_output']:<6.0f} {r['predicted_req_s']:10.2f} "
              f"{r['published_req_s']:6.2f} {r['req_s_err']:+7.1%} {r['predicted_tok_s']:10.0f} {tok_pub:>8s} "
              f"{tok_err:>7s}")
    print("\nsources:")
    for c in CASES:
        print(f"- {c.label}: {c.source}")
    print("published run: mean 213 input / 218 output tokens per request (from its totals: (1414.42 - 714.48) "
          "/ 3.28 and 714.48 / 3.28; Llama 3 tokenizer, vLLM's ShareGPT filter); ours: the columns above")
    print(json.dumps({r["case"]: {k: (round(v, 4) if isinstance(v, float) else v)
                                  for k, v in r.items() if k not in ("case", "source")} for r in rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
