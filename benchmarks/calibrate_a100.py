"""Check (and fit) the cost model's A100 predictions against Vidur's measured operator times.

Reads the reference data in ``../shared/data/vidur-a100-profiling`` (or ``$SEESAW_SHARED_DATA``),
every operator class the cost model prices, each against the catalog profile it calibrates:
- GEMMs, ``compute/<org>/<model>/mlp.csv``: median time (ms) of each projection GEMM by
  ``num_tokens`` and ``num_tensor_parallel_workers``; compared with ``CostModel.gemm_time_s`` for
  LLaMA2-70B and CodeLLaMA-34B at TP 1/2/4/8 on the ``a100-80g`` profile (Vidur's profiles were
  taken on 80 GB parts: their small-batch GEMMs stream weights at up to 1.62 TB/s, above the
  40 GB part's 1.555 TB/s peak).
- Attention, ``compute/attention/attention.csv``: FlashAttention prefill (one sequence, a chunk of
  ``prefill_chunk_size`` new tokens after ``kv_cache_size`` cached ones) and decode (``batch_size``
  sequences of ``kv_cache_size`` tokens) for the LLaMA2-70B shape at TP 2 (32 query heads, 4 KV
  heads of 128 per GPU); compared with one layer of ``Roofline.prefill_attention_s`` /
  ``decode_attention_s`` on ``a100-80g``.
- All-reduce and send/recv, ``network/a100_dgx/*.csv``: median times (ms) by message ``size`` in
  bytes over 2/4/8 GPUs of one DGX A100 (NVSwitch); compared with ``CostModel.allreduce_s`` and
  ``Roofline.send_s`` on the ``8xa100-40g-nvlink`` node.

The network rows carry each row's measured [min, max] too (Vidur timed 3 calls per size): the
script prints the error against that range (0 inside it) and, per GPU count, the least worst
error that any model non-decreasing in size could reach on these data (``monotone_worst_bound``):
the small-message medians are bimodal, so that bound is far from 0.

``--fit`` also prints the constants that fit these data best (median absolute relative error,
by iteratively reweighted least squares; the collectives' two protocols minimise the worst plus
the median error): the profile values in ``profiles/gpus/a100-*.yaml`` and
``profiles/nodes/8xa100-40g-nvlink.yaml`` are these fits, rounded.

Usage: ``python benchmarks/calibrate_a100.py [--data DIR] [--fit]``. Prints the per-operator error
tables (relative error = predicted / measured - 1); the last line is one JSON object.
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
from seesaw.core import GpuSpec, ParallelConfig
from simulator.cost import BatchShape, CostModel
from simulator.cost.roofline import ELEMENTWISE_KERNELS, elementwise_bytes_per_token

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
ATTENTION_MODEL, ATTENTION_TP = "llama2-70b", 2  # n_q_head 64, n_kv_head 8, head dim 128 at TP 2


def shared_data_dir() -> Path:
    """``$SEESAW_SHARED_DATA``, else the first ``shared/data`` beside the checkout or a folder above."""
    env = os.environ.get("SEESAW_SHARED_DATA")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for up in here.parents[1:4]:
        if (up / "shared" / "data").is_dir():
            return up / "shared" / "data"
    return here.parents[2] / "shared" / "data"


def _node(gpu: str | GpuSpec):
    return load_node(ALLREDUCE_NODE).model_copy(update={"gpu": load_gpu(gpu) if isinstance(gpu, str) else gpu})


def gemm_errors(data: Path, gpu: str | GpuSpec = GEMM_GPU) -> pd.DataFrame:
    """One row per (model, operator, tp, num_tokens): measured and predicted seconds."""
    node = _node(gpu)
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
    return _with_error(pd.DataFrame(rows))


# Vidur's small per-layer operators (``add`` runs twice per layer: after attention and after the MLP)
MISC_OPS = ("input_layernorm", "post_attention_layernorm", "attn_rope", "mlp_act", "add", "add")


def elementwise_errors(data: Path, gpu: str | GpuSpec = GEMM_GPU) -> pd.DataFrame:
    """One row per (model, tp, num_tokens): a layer's small kernels (norms, RoPE, activation, adds),
    measured (sum of Vidur's medians) and predicted seconds."""
    node = _node(gpu)
    rf = CostModel(load_model("llama2-70b"), node).roofline
    rows = []
    for name, folder in COMPUTE_MODELS.items():
        m = load_model(name)
        df = pd.read_csv(data / VIDUR / "compute" / folder / "mlp.csv")
        df = df.groupby(["num_tokens", "num_tensor_parallel_workers"], as_index=False).median(numeric_only=True)
        measured = sum(df[f"time_stats.{op}.median"] for op in MISC_OPS) * 1e-3
        for n, tp, y in zip(df.num_tokens, df.num_tensor_parallel_workers, measured):
            pred = (ELEMENTWISE_KERNELS * rf.non_gemm_kernel_s
                    + n * elementwise_bytes_per_token(m, int(tp)) / rf.elementwise_bytes_per_s)
            rows.append(dict(model=name, tp=int(tp), num_tokens=int(n), measured_s=y, predicted_s=pred))
    return _with_error(pd.DataFrame(rows))


def attention_errors(data: Path, gpu: str = GEMM_GPU) -> pd.DataFrame:
    """One row per measured attention call (``kind`` prefill or decode): measured and predicted
    seconds of one layer."""
    cm = CostModel(load_model(ATTENTION_MODEL), _node(gpu))
    c = cm.stages(ParallelConfig(tp=ATTENTION_TP))[0]
    rf = cm.roofline
    df = pd.read_csv(data / VIDUR / "compute" / "attention" / "attention.csv")
    pre, dec = df[df.is_prefill.astype(bool)], df[~df.is_prefill.astype(bool)]
    rows = []
    for n, past, ms in zip(pre.prefill_chunk_size, pre.kv_cache_size, pre["time_stats.attn_prefill.median"]):
        shape = BatchShape.prefill([int(n)], [int(past)])
        rows.append(dict(kind="prefill", seqs=1, new_tokens=int(n), context=int(past), measured_s=ms * 1e-3,
                         predicted_s=rf.prefill_attention_s(c, shape) / c.layers))
    for b, ctx, ms in zip(dec.batch_size, dec.kv_cache_size, dec["time_stats.attn_decode.median"]):
        shape = BatchShape.decode([int(ctx)] * int(b))
        rows.append(dict(kind="decode", seqs=int(b), new_tokens=int(b), context=int(ctx), measured_s=ms * 1e-3,
                         predicted_s=rf.decode_attention_s(c, shape) / c.layers))
    return _with_error(pd.DataFrame(rows))


def _network(data: Path, op: str, same_node: bool = True) -> pd.DataFrame:
    """Median, min and max (ms) of each (num_workers, size) row; Vidur timed 3 calls per row."""
    df = pd.read_csv(data / VIDUR / "network" / "a100_dgx" / f"{op}.csv")
    if same_node:  # every rank in one node: devices_per_node == num_workers
        df = df[df.devices_per_node == df.num_workers]
    col = f"time_stats.{op}"
    return df.groupby(["num_workers", "size"], as_index=False).agg(
        median=(f"{col}.median", "median"), min=(f"{col}.min", "min"), max=(f"{col}.max", "max"))


def allreduce_errors(data: Path, node: str = ALLREDUCE_NODE) -> pd.DataFrame:
    """One row per (num_workers, size) within one node: measured and predicted seconds."""
    spec = load_node(node)
    cm = CostModel(load_model("llama2-70b"), spec)
    df = _network(data, "all_reduce")
    df = df[df.num_workers <= spec.num_gpus]
    out = pd.DataFrame(dict(
        op="all_reduce", tp=df.num_workers, size_bytes=df["size"], measured_s=df["median"] * 1e-3,
        measured_min_s=df["min"] * 1e-3, measured_max_s=df["max"] * 1e-3,
        predicted_s=[cm.allreduce_s(s, t) for s, t in zip(df["size"], df.num_workers)],
    ))
    return _with_error(out)


def sendrecv_errors(data: Path, node: str = ALLREDUCE_NODE) -> pd.DataFrame:
    """One row per size of a send/recv between two GPUs of one node: measured and predicted s."""
    rf = CostModel(load_model("llama2-70b"), load_node(node)).roofline
    df = _network(data, "send_recv")
    out = pd.DataFrame(dict(
        op="send_recv", tp=df.num_workers, size_bytes=df["size"], measured_s=df["median"] * 1e-3,
        measured_min_s=df["min"] * 1e-3, measured_max_s=df["max"] * 1e-3,
        predicted_s=[rf.send_s(s) for s in df["size"]],
    ))
    return _with_error(out)


# -------------------------------------------------------------------------------------------
# fits: the constants these data suggest (median absolute relative error)


def fit_l1(x: np.ndarray, y: np.ndarray, iters: int = 40) -> np.ndarray:
    """Coefficients c of ``y ~ x @ c`` that minimise the median-like sum of |x @ c / y - 1|
    (iteratively reweighted least squares on relative error)."""
    a = x / y[:, None]
    w = np.ones_like(y)
    for _ in range(iters):
        c, *_ = np.linalg.lstsq(a * w[:, None], w, rcond=None)
        w = 1 / np.sqrt(np.maximum(np.abs(a @ c - 1), 1e-3))
    return c


def fit_attention(att: pd.DataFrame, cm_gpu: str = GEMM_GPU) -> dict[str, float]:
    """Prefill: floor + (pairs + k0 * queries) * FLOPs per pair / F, best k0 on a grid; decode:
    floor + KV bytes / bandwidth. Returned as the profile's fractions of the GPU's peaks."""
    gpu = load_gpu(cm_gpu)
    m = load_model(ATTENTION_MODEL)
    hq, kv, d, B = m.num_attention_heads / ATTENTION_TP, m.num_key_value_heads / ATTENTION_TP, m.d_head, m.dtype_bytes
    pre = att[att.kind == "prefill"]
    n, past, y = (pre[k].to_numpy(float) for k in ("new_tokens", "context", "measured_s"))
    pairs = n * (past + (n + 1) / 2)
    best = None
    for k0 in np.arange(0, 4097, 128.0):
        x = np.stack([np.ones_like(y), 4 * hq * d * (pairs + k0 * n)], axis=1)
        c = fit_l1(x, y)
        err = float(np.median(np.abs(x @ c / y - 1)))
        if best is None or err < best[0]:
            best = (err, k0, c)
    _, k0, (floor, inv_f) = best
    dec = att[att.kind == "decode"]
    y = dec.measured_s.to_numpy(float)
    nbytes = dec.seqs.to_numpy(float) * dec.context.to_numpy(float) * 2 * kv * d * B
    dfloor, inv_bw = fit_l1(np.stack([np.ones_like(y), nbytes], axis=1), y)
    return dict(attention_compute_efficiency=1 / inv_f / gpu.peak_flops, attention_saturation_keys=k0,
                prefill_floor_s=floor,
                decode_attention_memory_efficiency=1 / inv_bw / gpu.hbm_bandwidth_bytes_per_s,
                decode_attention_floor_s=dfloor)


def nelder_mead(f, x0: np.ndarray, iters: int = 2000, step: float = 0.2) -> np.ndarray:
    """Minimise ``f`` from ``x0`` (Nelder and Mead 1965: reflect, expand, contract, shrink)."""
    xs = [np.asarray(x0, float)] + [x0 + step * e for e in np.eye(len(x0))]
    fs = [f(x) for x in xs]
    for _ in range(iters):
        order = np.argsort(fs, kind="stable")
        xs, fs = [xs[i] for i in order], [fs[i] for i in order]
        mid = np.mean(xs[:-1], axis=0)
        xr = 2 * mid - xs[-1]
        fr = f(xr)
        if fr < fs[0]:
            xe = 3 * mid - 2 * xs[-1]
            fe = f(xe)
            xs[-1], fs[-1] = (xe, fe) if fe < fr else (xr, fr)
        elif fr < fs[-2]:
            xs[-1], fs[-1] = xr, fr
        else:
            xc = (mid + xs[-1]) / 2
            fc = f(xc)
            if fc < fs[-1]:
                xs[-1], fs[-1] = xc, fc
            else:
                xs = [xs[0]] + [(x + xs[0]) / 2 for x in xs[1:]]
                fs = [fs[0]] + [f(x) for x in xs[1:]]
    return xs[int(np.argmin(fs))]


def fit_two_protocols(fixed: np.ndarray, steps: np.ndarray, nbytes: np.ndarray, y: np.ndarray,
                      x0: list[float]) -> list[float]:
    """The constants of ``min(base + steps * step + nbytes / bw, small_base + steps * step + nbytes /
    small_bw)`` (NCCL's bandwidth and low-latency protocols; without ``steps``: no step term) that
    minimise the worst plus the median absolute relative error against ``y`` (a minimax fit that
    keeps the bulk right): Nelder-Mead on their logarithms from ``x0`` = [base, step, bw,
    small_base, small_bw], restarted once."""
    def predict(p: np.ndarray) -> np.ndarray:
        base, step, bw, sbase, sbw = np.exp(p)
        return fixed + steps * step + np.minimum(base + nbytes / bw, sbase + nbytes / sbw)

    def loss(p: np.ndarray) -> float:
        err = np.abs(predict(p) / y - 1)
        return float(err.max() + np.median(err))

    p = nelder_mead(loss, np.log(x0))
    return [float(v) for v in np.exp(nelder_mead(loss, p))]


def fit_collectives(ar: pd.DataFrame, sr: pd.DataFrame) -> dict[str, float]:
    """All-reduce: the faster of two protocols, each ``floor + 2(t-1) * step + 2(t-1)/t * size / bus
    bandwidth`` with a shared step; send/recv: the faster of two ``floor + size / bandwidth``. Both
    fitted minimax + median (``fit_two_protocols``)."""
    t, s, y = ar.tp.to_numpy(float), ar.size_bytes.to_numpy(float), ar.measured_s.to_numpy(float)
    base, step, bw, sbase, sbw = fit_two_protocols(
        np.zeros_like(y), 2 * (t - 1), 2 * (t - 1) / t * s, y, [50e-6, 0.6e-6, 180e9, 16e-6, 50e9])
    s, y = sr.size_bytes.to_numpy(float), sr.measured_s.to_numpy(float)
    p2p, _, p2p_bw, p2p_small, p2p_small_bw = fit_two_protocols(
        np.zeros_like(y), np.zeros_like(y), s, y, [14e-6, 1e-6, 250e9, 8e-6, 8e9])
    return dict(allreduce_base_s=base, allreduce_latency_s=step, gpu_link_bandwidth_bytes_per_s=bw,
                allreduce_small_base_s=sbase, allreduce_small_bandwidth_bytes_per_s=sbw,
                p2p_latency_s=p2p, p2p_bandwidth_bytes_per_s=p2p_bw,
                p2p_small_latency_s=p2p_small, p2p_small_bandwidth_bytes_per_s=p2p_small_bw)


def fit_elementwise(ew: pd.DataFrame, gpu: str = GEMM_GPU) -> tuple[float, float]:
    """The (fixed time per small kernel, fraction of HBM bandwidth) of the norms, RoPE, activation
    and adds: the floor fitted where it dominates (<= 64 tokens, 0.5 us grid), the bandwidth where
    the bytes do (> 512 tokens, 0.01 grid), each by median absolute relative error, alternately
    (an overall median would be all large batches, which leave the floor undetermined)."""
    g = load_gpu(gpu)
    rf = CostModel(load_model("llama2-70b"), _node(g)).roofline
    # the bytes behind each prediction, recovered from the profile's own constants
    nbytes = ((ew.predicted_s - ELEMENTWISE_KERNELS * rf.non_gemm_kernel_s) * rf.elementwise_bytes_per_s).to_numpy()
    y, n = ew.measured_s.to_numpy(), ew.num_tokens.to_numpy()

    def err(k: float, e: float, rows: np.ndarray) -> float:
        pred = ELEMENTWISE_KERNELS * k + nbytes[rows] / (g.hbm_bandwidth_bytes_per_s * e)
        return float(np.median(np.abs(pred / y[rows] - 1)))

    k, e = rf.non_gemm_kernel_s, g.elementwise_memory_efficiency
    for _ in range(3):
        k = min(np.arange(2e-6, 7.01e-6, 0.5e-6), key=lambda k_: err(k_, e, n <= 64))
        e = min(np.arange(0.30, 1.001, 0.01), key=lambda e_: err(k, e_, n > 512))
    return float(k), float(e)


def fit_gemm_kernel(data: Path, gpu: str = GEMM_GPU) -> float:
    """The fixed time per GEMM kernel that fits the GEMMs best (median absolute relative error, 0.5 us
    grid), the other constants held."""
    base = load_gpu(gpu)
    errs = {float(k): float(gemm_errors(data, base.model_copy(update={"kernel_overhead_s": float(k)})).abs_err.median())
            for k in np.arange(2e-6, 7.01e-6, 0.5e-6)}
    return min(errs, key=errs.get)


# -------------------------------------------------------------------------------------------


def _with_error(df: pd.DataFrame) -> pd.DataFrame:
    df["measured_s"] = df["measured_s"].astype(float)
    df["rel_err"] = df.predicted_s / df.measured_s - 1
    df["abs_err"] = df.rel_err.abs()
    if "measured_min_s" in df:
        # noise-aware: 0 inside the row's measured [min, max], else the distance to the nearer end
        # over that end
        lo, hi, p = df.measured_min_s, df.measured_max_s, df.predicted_s
        df["range_err"] = np.where(p > hi, p / hi - 1, np.where(p < lo, 1 - p / lo, 0.0))
    return df


def monotone_worst_bound(measured: np.ndarray, lo: np.ndarray | None = None, hi: np.ndarray | None = None,
                         tol: float = 1e-4) -> float:
    """The least worst relative error any model non-decreasing in size can reach on ``measured``
    (sorted by size): the smallest eps for which some non-decreasing p_i has
    m_i (1 - eps) <= p_i <= m_i (1 + eps) (with ``lo``/``hi``: lo_i (1 - eps) <= p_i <= hi_i (1 + eps),
    the bound of ``range_err``). Bisection on eps; each test is greedy: the lowest feasible p_i is
    max(p_{i-1}, lower_i), infeasible as soon as it exceeds upper_i."""
    lo = measured if lo is None else lo
    hi = measured if hi is None else hi

    def feasible(eps: float) -> bool:
        p = np.maximum.accumulate(lo * (1 - eps))
        return bool((p <= hi * (1 + eps)).all())

    a, b = 0.0, 1.0
    while not feasible(b):
        a, b = b, 2 * b
    while b - a > tol:
        mid = (a + b) / 2
        a, b = (a, mid) if feasible(mid) else (mid, b)
    return b


def monotone_bounds(df: pd.DataFrame, ranged: bool = False) -> dict[int, float]:
    """``monotone_worst_bound`` per GPU count of a network table (rows sorted by size)."""
    out = {}
    for tp, g in df.sort_values("size_bytes").groupby("tp"):
        args = (g.measured_min_s.to_numpy(), g.measured_max_s.to_numpy()) if ranged else ()
        out[int(tp)] = monotone_worst_bound(g.measured_s.to_numpy(), *args)
    return out


def error_table(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """Median, 95th percentile and worst absolute relative error, and the median signed error."""
    g = df.groupby(by, observed=True)
    return pd.DataFrame(dict(
        n=g.size(), median_abs_err=g.abs_err.median(), p95_abs_err=g.abs_err.quantile(0.95),
        worst_abs_err=g.abs_err.max(), median_signed_err=g.rel_err.median(),
    ))


def _r(x) -> float:
    return round(float(x), 4)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=shared_data_dir(), help="the shared data folder")
    ap.add_argument("--fit", action="store_true", help="also print the constants that fit these data best")
    args = ap.parse_args(argv)
    if not (args.data / VIDUR).is_dir():
        print(f"no Vidur profiling data under {args.data}", file=sys.stderr)
        return 2
    gemm, att, ew = gemm_errors(args.data), attention_errors(args.data), elementwise_errors(args.data)
    ar, sr = allreduce_errors(args.data), sendrecv_errors(args.data)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", None)
    regime = pd.cut(gemm.num_tokens, [0, 64, 512, 1 << 20], labels=["1-64", "65-512", ">512"])
    print(f"GEMMs on {GEMM_GPU} vs Vidur A100 medians\n")
    print(error_table(gemm, ["op"]).round(3), "\n")
    print(error_table(gemm.assign(tokens=regime), ["tokens", "tp"]).round(3), "\n")
    print(f"small kernels of one layer (norms, RoPE, activation, adds) on {GEMM_GPU} vs Vidur A100 medians\n")
    print(error_table(ew.assign(tokens=pd.cut(ew.num_tokens, [0, 64, 512, 1 << 20], labels=["1-64", "65-512", ">512"])),
                      ["tokens"]).round(3), "\n")
    print(f"attention (one layer, {ATTENTION_MODEL} shape at TP {ATTENTION_TP}) on {GEMM_GPU} vs Vidur A100 medians\n")
    size = pd.cut(att.new_tokens * (att.context + 1), [0, 1 << 14, 1 << 18, 1 << 30], labels=["small", "mid", "large"])
    print(error_table(att.assign(size=size), ["kind", "size"]).round(3), "\n")
    print(f"all-reduce and send/recv on {ALLREDUCE_NODE} vs Vidur DGX A100 medians\n")
    msg = pd.cut(ar.size_bytes, [0, 1 << 20, 1 << 24, 1 << 40], labels=["<1MiB", "1-16MiB", ">16MiB"])
    print(error_table(ar.assign(size=msg), ["tp", "size"]).round(3), "\n")
    print(error_table(sr, ["op"]).round(3), "\n")
    bound, bound_range = monotone_bounds(ar), monotone_bounds(ar, ranged=True)
    sr_bound, sr_bound_range = monotone_bounds(sr)[2], monotone_bounds(sr, ranged=True)[2]
    print("least worst error any size-monotone model can reach (vs the medians / vs each row's [min, max]):")
    for tp in bound:
        print(f"  all-reduce tp {tp}: {bound[tp]:.3f} / {bound_range[tp]:.3f}")
    print(f"  send/recv: {sr_bound:.3f} / {sr_bound_range:.3f}")
    print("error against each row's measured [min, max] (0 inside):")
    print(pd.concat([ar.groupby("tp").range_err.agg(["median", "max"]),
                     sr.groupby("op").range_err.agg(["median", "max"])]).round(3), "\n")
    summary = {
        "gemm_median_abs_err": _r(gemm.abs_err.median()),
        "gemm_worst_abs_err": _r(gemm.abs_err.max()),
        "allreduce_median_abs_err": _r(ar.abs_err.median()),
        "allreduce_p95_abs_err": _r(ar.abs_err.quantile(0.95)),
        "allreduce_worst_abs_err": _r(ar.abs_err.max()),
        "allreduce_worst_abs_err_bound_monotone": _r(max(bound.values())),
        **{f"allreduce_worst_abs_err_tp{tp}": _r(ar[ar.tp == tp].abs_err.max()) for tp in bound},
        **{f"allreduce_worst_abs_err_bound_monotone_tp{tp}": _r(b) for tp, b in bound.items()},
        "allreduce_median_outside_range": _r(ar.range_err.median()),
        "allreduce_worst_outside_range": _r(ar.range_err.max()),
        "allreduce_worst_outside_range_bound_monotone": _r(max(bound_range.values())),
        "sendrecv_median_abs_err": _r(sr.abs_err.median()),
        "sendrecv_worst_abs_err": _r(sr.abs_err.max()),
        "sendrecv_worst_abs_err_bound_monotone": _r(sr_bound),
        "sendrecv_median_outside_range": _r(sr.range_err.median()),
        "sendrecv_worst_outside_range": _r(sr.range_err.max()),
        "sendrecv_worst_outside_range_bound_monotone": _r(sr_bound_range),
        "elementwise_median_abs_err": _r(ew.abs_err.median()),
        "elementwise_worst_abs_err": _r(ew.abs_err.max()),
        "attention_prefill_median_abs_err": _r(att[att.kind == "prefill"].abs_err.median()),
        "attention_prefill_worst_abs_err": _r(att[att.kind == "prefill"].abs_err.max()),
        "attention_decode_median_abs_err": _r(att[att.kind == "decode"].abs_err.median()),
        "attention_decode_worst_abs_err": _r(att[att.kind == "decode"].abs_err.max()),
        **{f"{op}_median_abs_err": _r(v) for op, v in gemm.groupby("op").abs_err.median().items()},
    }
    if args.fit:
        ew_kernel, ew_eff = fit_elementwise(ew)
        fits = {**fit_attention(att), **fit_collectives(ar, sr), "kernel_overhead_s": fit_gemm_kernel(args.data),
                "non_gemm_kernel_s": ew_kernel, "elementwise_memory_efficiency": ew_eff}
        print("best fits to these data (profile fields):")
        for k, v in fits.items():
            print(f"  {k}: {v:.4g}")
        summary["fit"] = {k: float(f"{v:.4g}") for k, v in fits.items()}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
