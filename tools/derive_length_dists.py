"""Derive the built-in ``sharegpt`` and ``arxiv`` length distributions from the real traces.

Reads the LLaMA-2-tokenised length traces (``num_prefill_tokens,num_decode_tokens``) and writes
``seesaw/data/length_dists.json``: quantiles only, never rows.

Per trace:
- ``input_probs``/``input_quantiles``: the prompt length's quantile function on a grid (every
  0.5 %, plus 0.1/0.2/99.8/99.9 % for the tails);
- ``bin_edges``: prompt-length rank bins (fractions of rows, finer at the tails where the
  dependence lives, at least ``MIN_ROWS_PER_BIN`` rows each);
- ``output_probs``/``output_quantiles``: per bin, the output length's quantile function;
- ``max_total_tokens``: the largest prompt + output in the trace (LLaMA-2's 4096 context);
- ``reference``: the trace's own mean/p50/p90 and correlations, for tests without the traces.

Usage: python tools/derive_length_dists.py [--traces DIR] [--out PATH]
(DIR defaults to $SEESAW_SHARED_DATA/traces or ../shared/data/traces beside the repo). It prints
trace vs synthetic (1M samples) statistics.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd

from seesaw.workload import LENGTH_DISTS_PATH, sample_lengths

REPO = Path(__file__).resolve().parents[1]
TRACES = {
    "sharegpt": ("sharegpt_val_10k_llama2.csv",
                 "ShareGPT conversations, LLaMA-2 tokenizer; AKafakA/vidur_opt_scheduler (MIT)"),
    "arxiv": ("arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv",
              "arxiv-summarization, LLaMA-2 tokenizer, prompt+output <= 4096; microsoft/vidur (MIT)"),
}
INPUT_PROBS = np.unique(np.round(np.r_[np.linspace(0, 1, 201), 0.001, 0.002, 0.998, 0.999], 6))
OUTPUT_PROBS = np.unique(np.round(np.r_[np.linspace(0, 1, 41), 0.005, 0.01, 0.99, 0.995], 6))
CANDIDATE_EDGES = [0, .0025, .005, .01, .015, .02, .03, .04, .05, .075, .1, .15, .2, .3, .4, .5,
                   .6, .7, .8, .85, .9, .95, .975, .99, 1]
MIN_ROWS_PER_BIN = 100


def _stats(inp: np.ndarray, out: np.ndarray) -> dict:
    def rank(x):
        return np.argsort(np.argsort(x, kind="stable"), kind="stable")

    s = {}
    for key, x in (("input", inp), ("output", out)):
        s[f"{key}_mean"] = round(float(x.mean()), 1)
        s[f"{key}_p50"] = round(float(np.percentile(x, 50)), 1)
        s[f"{key}_p90"] = round(float(np.percentile(x, 90)), 1)
    s["log_corr"] = round(float(np.corrcoef(np.log(inp), np.log(out))[0, 1]), 3)
    s["rank_corr"] = round(float(np.corrcoef(rank(inp), rank(out))[0, 1]), 3)
    return s


def _edges(n_rows: int) -> list[float]:
    edges = [0.0]
    for e in CANDIDATE_EDGES[1:-1]:
        if (e - edges[-1]) * n_rows >= MIN_ROWS_PER_BIN and (1 - e) * n_rows >= MIN_ROWS_PER_BIN:
            edges.append(e)
    return edges + [1.0]


def derive(inp: np.ndarray, out: np.ndarray, source: str) -> dict:
    n = len(inp)
    order = np.argsort(inp, kind="stable")  # ties in prompt length keep file order
    edges = _edges(n)
    cuts = np.rint(np.asarray(edges) * n).astype(int)
    out_q = [np.quantile(out[order[a:b]], OUTPUT_PROBS) for a, b in zip(cuts[:-1], cuts[1:])]
    return {
        "source": source,
        "num_rows": n,
        "max_total_tokens": int((inp + out).max()),
        "input_probs": INPUT_PROBS.tolist(),
        "input_quantiles": np.round(np.quantile(inp, INPUT_PROBS), 1).tolist(),
        "bin_edges": edges,
        "output_probs": OUTPUT_PROBS.tolist(),
        "output_quantiles": [np.round(q, 1).tolist() for q in out_q],
        "reference": _stats(inp, out),
    }


def _dump(obj: dict) -> str:
    text = json.dumps(obj, indent=1)
    # one line per number list keeps the file short and diffable
    return re.sub(r"\[([-0-9.e,\s]+)\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]",
                  text)


def main() -> None:
    shared = os.environ.get("SEESAW_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--traces", type=Path, default=Path(shared) / "traces")
    ap.add_argument("--out", type=Path, default=LENGTH_DISTS_PATH)
    args = ap.parse_args()

    dists = {"about": "Derived by tools/derive_length_dists.py from public length traces; quantiles "
                      "only (no rows). See seesaw.workload.sample_lengths for how they are sampled."}
    for name, (fname, source) in TRACES.items():
        df = pd.read_csv(args.traces / fname, usecols=["num_prefill_tokens", "num_decode_tokens"])
        inp, out = df["num_prefill_tokens"].to_numpy(), df["num_decode_tokens"].to_numpy()
        dists[name] = derive(inp, out, f"{fname}: {source}")
        s_inp, s_out = sample_lengths(name, 1_000_000, np.random.default_rng(0), dists[name])
        real, syn = dists[name]["reference"], _stats(s_inp, s_out)
        print(f"{name}: {len(dists[name]['bin_edges']) - 1} bins")
        for k in real:
            err = f"{100 * (syn[k] / real[k] - 1):+.1f}%" if "corr" not in k else ""
            print(f"  {k:12s} trace {real[k]:9.3f}  synthetic {syn[k]:9.3f}  {err}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(_dump(dists) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
