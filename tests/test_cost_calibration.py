"""Cost model vs measured A100 operator times (Vidur's profiles in the shared reference data).

Skipped when the data folder is absent (a fresh clone has no ``../shared``). The bounds are loose
on purpose: they catch a broken model or profile, not noise. ``benchmarks/calibrate_a100.py``
prints the full error table.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

DATA = Path(os.environ.get("SEESAW_SHARED_DATA")
            or Path(__file__).resolve().parents[2] / "shared" / "data")
pytestmark = pytest.mark.skipif(
    not (DATA / "vidur-a100-profiling").is_dir(), reason=f"no reference data under {DATA}"
)


@pytest.fixture(scope="module")
def calib():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate_a100.py"
    spec = importlib.util.spec_from_file_location("calibrate_a100", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gemm(calib):
    return calib.gemm_errors(DATA)


def test_gemm_grid_is_covered(gemm):
    assert set(gemm.model) == {"llama2-70b", "codellama-34b"}
    assert set(gemm.tp) == {1, 2, 4, 8}
    assert gemm.num_tokens.min() == 1 and gemm.num_tokens.max() >= 4096


def test_gemm_errors_per_operator(calib, gemm):
    table = calib.error_table(gemm, ["op"])
    assert set(table.index) == {"attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj"}
    assert (table.median_abs_err <= 0.15).all(), table
    assert (table.worst_abs_err <= 0.75).all(), table
    # no systematic bias either way
    assert (table.median_signed_err.abs() <= 0.10).all(), table


def test_gemm_errors_per_regime(calib, gemm):
    # memory-bound (few tokens), transition, and compute-bound GEMMs are each fitted, per TP degree
    regime = gemm.num_tokens.map(lambda n: "memory" if n <= 64 else "knee" if n <= 512 else "compute")
    table = calib.error_table(gemm.assign(regime=regime), ["regime", "tp"])
    assert (table.median_abs_err <= 0.25).all(), table


def test_allreduce_against_dgx_a100(calib):
    ar = calib.allreduce_errors(DATA)
    assert set(ar.tp) == {2, 4, 8}
    # the shipped 8xa100-40g-nvlink profile (fitted to this data) is within 25% of the medians ...
    assert ar.abs_err.median() <= 0.25
    # ... and the ring model itself fits the data well with its best bandwidth and latency
    bw, lat = calib.fit_ring(ar)
    t, s = ar.tp.to_numpy(float), ar.size_bytes.to_numpy(float)
    fitted = 2 * (t - 1) / t * s / bw + 2 * (t - 1) * lat
    rel = abs(fitted / ar.measured_s.to_numpy() - 1)
    assert float(sorted(rel)[len(rel) // 2]) <= 0.25
    assert 50e9 <= bw <= 300e9  # below NVLink 3's 300 GB/s per direction
