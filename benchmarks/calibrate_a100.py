"""Check the cost model's A100 predictions against Vidur's measured operator times.

Reads the reference data in ``../shared/data/vidur-a100-profiling`` (or ``$SEESAW_SHARED_DATA``):
- ``compute/<org>/<model>/mlp.csv``: median GPU time (ms) of each projection GEMM by ``num_tokens``
  and ``num_tensor_parallel_workers``; compared with ``CostModel.gemm_time_s`` for LLaMA2-70B and
  CodeLLaMA-34B at TP 1/2/4/8 on the ``a100-80g`` profile. The profile was taken on 80 GB parts:
  its small-batch GEMMs stream weights at up to 1.62 TB/s, above the 40 GB part's 1.555 TB/s peak.
- ``network/a100_dgx/all_reduce.csv``: median all-reduce time (ms) by message ``size`` in bytes
  (Vidur reads it as ``size / hidden / 2`` fp16 tokens) over 2/4/8 GPUs of one DGX A100 (NVSwitch);
  compared with ``CostModel.allreduce_s`` on the ``8xa100-40g-nvlink`` node.

Usage: ``python benchmarks/calibrate_a100.py [--data DIR]``. Prints the per-operator error table
(relative error = predicted / measured - 1); the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from seesaw.catalog import load_gpu, load_model, load_node
from simulator.cost import CostModel

VIDUR = "vidur-a100-profiling"
# our catalog name -> Vidur's model folder
COMPUTE_MODELS = {
    "llama2-70b": "meta-llama/Llama-2-70b-hf",
    "codellama-34b": "codellama/CodeLlama-34b-Instruct-hf",
}
# Vidur operator -> our GEMM (CostModel.gemm_shapes); Vidur's mlp_up_proj is the fused gate/up
OPS = {
    "attn_pre_proj": "qkv_proj",
    "attn_post_proj": "o_proj",
    "mlp_up_proj": "gate_up_proj",
    "mlp_down_proj": "down_proj",
}
GEMM_GPU = "a100-80g"
ALLREDUCE_NODE = "8xa100-40g-nvlink"


def shared_data_dir() -> Path:
    """``$SEESAW_SHARED_DATA``, else ``shared/data`` beside the repository."""
    env = os.environ.get("SEESAW_SHARED_DATA")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def gemm_errors(data: Path, gpu: str = GEMM_GPU) -> pd.DataFrame:
    """One row per (model, operator, tp, num_tokens): measured and predicted seconds."""
    node = load_node(ALLREDUCE_NODE).model_copy(update={"gpu": load_gpu(gpu)})
    rows = []
    for name, folder in COMPUTE_MODELS.items():
        cm = CostModel(load_model(name), node)
        df = pd.read_csv(data / VIDUR / "compute" / folder / "mlp.csv")
        df = df.groupby(["num_tokens", "num_tensor_parallel_workers"], as_index=False).median(numeric_only=True)
        for op, ours in OPS.items():
            for n, tp, measured_ms in zip(df.num_tokens, df.num_tensor_parallel_workers,
                                          df[f"time_stats.{op}.median"]):
                k, m = cm.gemm_shapes(int(tp))[ours]
                rows.append(dict(model=name, op=op, tp=int(tp), num_tokens=int(n),
                                 measured_s=measured_ms * 1e-3, predicted_s=cm.gemm_time_s(int(n), k, m)))
    out = pd.DataFrame(rows)
    return _with_error(out)


def allreduce_errors(data: Path, node: str = ALLREDUCE_NODE) -> pd.DataFrame:
    """One row per (num_workers, size) within one node: measured and predicted seconds."""
    spec = load_node(node)
    cm = CostModel(load_model("llama2-70b"), spec)
    df = pd.read_csv(data / VIDUR / "network" / "a100_dgx" / "all_reduce.csv")
    df = df[(df.devices_per_node == df.num_workers) & (df.num_workers <= spec.num_gpus)]
    df = df.groupby(["num_workers", "size"], as_index=False)["time_stats.all_reduce.median"].median()
    out = pd.DataFrame(dict(
        op="all_reduce", tp=df.num_workers, size_bytes=df["size"],
        measured_s=df["time_stats.all_reduce.median"] * 1e-3,
        predicted_s=[cm.allreduce_s(s, t) for s, t in zip(df["size"], df.num_workers)],
    ))
    return _with_error(out)


def fit_ring(ar: pd.DataFrame) -> tuple[float, float]:
    """Bus bandwidth (B/s) and per-step latency (s) of the ring model that best fit the measured
    all-reduces (least squares on relative error): the node values these data suggest."""
    t, s, y = ar.tp.to_numpy(float), ar.size_bytes.to_numpy(float), ar.measured_s.to_numpy(float)
    a = np.stack([2 * (t - 1) / t * s / y, 2 * (t - 1) / y], axis=1)
    (inv_bw, lat), *_ = np.linalg.lstsq(a, np.ones_like(y), rcond=None)
    return 1 / inv_bw, lat


def _with_error(df: pd.DataFrame) -> pd.DataFrame:
    df["measured_s"] = df["measured_s"].astype(float)
    df["rel_err"] = df.predicted_s / df.measured_s - 1
    df["abs_err"] = df.rel_err.abs()
    return df


def error_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median and worst absolute relative error, and the median signed error, per group."""
    g = df.groupby(by)
    return pd.DataFrame(dict(
        n=g.size(), median_abs_err=g.abs_err.median(), worst_abs_err=g.abs_err.max(),
        median_signed_err=g.rel_err.median(),
    ))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data folder")
    args = ap.parse_args(argv)
    if not (args.data / VIDUR).is_dir():
        print(f"no Vidur profiling data under {args.data}", file=sys.stderr)
        return 2
    gemm, ar = gemm_errors(args.data), allreduce_errors(args.data)
    pd.set_option("display.width", 160)
    regime = pd.cut(gemm.num_tokens, [0, 64, 512, 1 << 20], labels=["1-64", "65-512", ">512"])
    print(f"GEMMs on {GEMM_GPU} vs Vidur A100 medians\n")
    print(error_table(gemm, ["op"]).round(3), "\n")
    print(error_table(gemm.assign(tokens=regime), ["tokens", "tp"]).round(3), "\n")
    print(f"all-reduce on {ALLREDUCE_NODE} vs Vidur DGX A100 medians\n")
    print(error_table(ar, ["tp"]).round(3), "\n")
    bw, lat = fit_ring(ar)
    print(f"best ring fit to these data: bus bandwidth {bw / 1e9:.0f} GB/s, {lat * 1e6:.1f} us per step\n")
    summary = {
        "gemm_median_abs_err": round(float(gemm.abs_err.median()), 4),
        "gemm_worst_abs_err": round(float(gemm.abs_err.max()), 4),
        "allreduce_median_abs_err": round(float(ar.abs_err.median()), 4),
        "allreduce_worst_abs_err": round(float(ar.abs_err.max()), 4),
        "allreduce_fit_bus_bandwidth_bytes_per_s": float(f"{bw:.3g}"),
        "allreduce_fit_latency_s": float(f"{lat:.3g}"),
        **{f"{op}_median_abs_err": round(float(v), 4) for op, v in gemm.groupby("op").abs_err.median().items()},
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
