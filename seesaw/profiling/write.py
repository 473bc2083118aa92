"""Writing a measured profile (YAML, times to 4 significant digits, a comment header) and its
headline figures for the command's output. Pure Python on ``MeasuredProfile``: no torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from seesaw.core import MeasuredProfile

__all__ = ["round_times", "write_profile", "summary"]


def round_times(obj, digits: int = 4):
    """Times to ``digits`` significant digits (the noise is larger), everything else as is."""
    if isinstance(obj, float):
        return float(f"{obj:.{digits}g}")
    if isinstance(obj, (list, tuple)):
        return [round_times(x, digits) for x in obj]
    if isinstance(obj, dict):
        return {k: round_times(v, digits) for k, v in obj.items()}
    return obj


def write_profile(prof: MeasuredProfile, path: str | Path, header: str = "") -> Path:
    """Write ``prof`` as YAML with ``header`` lines as a leading comment; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = round_times(prof.model_dump(mode="json"))
    raw = prof.model_dump()
    for key in ("memory_bytes", "device_memory_bytes", "wall_time_s"):
        data[key] = raw[key]
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    text = yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(comment + text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def summary(prof: MeasuredProfile) -> dict[str, float]:
    """Headline figures: best GEMM FLOP/s, all-reduce latency and bus bandwidth, copy bandwidth,
    per-step overhead, Seesaw swap steps and re-shards."""
    out: dict[str, float] = {}
    lin = [t for t in prof.ops if t.op == "linear"]
    if lin:
        out["gemm_gflops_best"] = max(2 * t.dims[0] * t.dims[1] * n / s / 1e9
                                      for t in lin for n, s in zip(t.tokens, t.time_s))
    for c in prof.collectives:
        key = f"{c.op}_{c.ranks}"
        out[f"{key}_latency_us"] = c.time_s[0] * 1e6
        if c.op == "all_reduce":
            out[f"{key}_busbw_gbps"] = 2 * (c.ranks - 1) / c.ranks * c.size_bytes[-1] / c.time_s[-1] / 1e9
        elif c.op == "send_recv":
            out[f"{key}_gbps"] = c.size_bytes[-1] / c.time_s[-1] / 1e9
    for c in prof.copies:
        out[f"copy_{c.kind}_gbps"] = c.size_bytes[-1] / c.time_s[-1] / 1e9
    for s in prof.step_overhead:
        busy = "" if s.ranks == 1 else f"_{s.ranks}busy"
        out[f"step_v{s.vocab_size}{busy}_1seq_ms"] = s.time_s[0] * 1e3
        out[f"step_v{s.vocab_size}{busy}_{s.seqs[-1]}seq_ms"] = s.time_s[-1] * 1e3
    for w in prof.swaps:  # the largest step of each box: layers x KV heads x head_dim per rank
        out[f"swap_{w.kind}_{w.num_layers}x{w.num_kv_heads}x{w.head_dim}_{w.ranks}r_{w.tokens[-1]}tok_ms"] = \
            w.time_s[-1] * 1e3
    for t in prof.reshards:
        for b, sec in zip(t.size_bytes, t.time_s):
            out[f"reshard_{t.ranks}r_{b / 1e6:.3g}MB_ms"] = sec * 1e3
    return out
