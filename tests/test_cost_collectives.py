"""Collectives with two NCCL protocols (a low-latency one for small messages, a bandwidth one for
large), hand-computed; and the calibration's bound on what any size-monotone model can reach."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from seesaw.core import parse_parallel
from simulator.cost import BatchShape, CostModel
from tests.test_cost import LLAMA2_70B, NODE

# NODE's bandwidth protocol: 20 us + 2(t-1) x 5 us + ring bytes at 10 GB/s; the low-latency one:
# 4 us + the same ring steps + ring bytes at 1 GB/s. Send/recv: 10 us at 20 GB/s, or 2 us at 2 GB/s.
TWO = NODE.model_copy(update=dict(
    allreduce_small_base_s=4e-6, allreduce_small_bandwidth_bytes_per_s=1e9,
    p2p_small_latency_s=2e-6, p2p_small_bandwidth_bytes_per_s=2e9,
))


@pytest.fixture(scope="module")
def cm():
    return CostModel(LLAMA2_70B, TWO)


def test_allreduce_takes_the_faster_protocol(cm):
    # tp 4: ring bytes 1.5 x size; small: 4 + 30 + 1.5 s / 1e9 us, large: 20 + 30 + 1.5 s / 10e9
    assert cm.allreduce_s(1000, 4) == pytest.approx(34e-6 + 1.5e3 / 1e9)
    assert cm.allreduce_s(1e6, 4) == pytest.approx(50e-6 + 1.5e6 / 10e9)
    # they cross where 16 us = 1.5 s (1/1e9 - 1/10e9): s = 11852 bytes
    cross = 16e-6 / (1.5 * (1 / 1e9 - 1 / 10e9))
    assert cm.allreduce_s(cross * 0.99, 4) < 50e-6 + 1.5 * cross * 0.99 / 10e9
    assert cm.allreduce_s(cross, 4) == pytest.approx(50e-6 + 1.5 * cross / 10e9)
    # a node without the low-latency protocol keeps the one formula
    assert CostModel(LLAMA2_70B, NODE).allreduce_s(1000, 4) == pytest.approx(50e-6 + 1.5e3 / 10e9)


def test_send_takes_the_faster_protocol(cm):
    assert cm.roofline.send_s(1000) == pytest.approx(2e-6 + 1000 / 2e9)
    assert cm.roofline.send_s(1e6) == pytest.approx(10e-6 + 1e6 / 20e9)


@pytest.mark.parametrize("tokens", [1, 8, 64, 4096])
def test_stage_allreduces_are_the_one_allreduce(cm, tokens):
    """The hot path's per-stage terms price each all-reduce exactly as ``allreduce_s`` does: stage 0
    of T4P2 runs 2 x 40 layers + 1 (after the embedding) all-reduces of [tokens, 8192] fp16."""
    layout = parse_parallel("T4P2")
    shape = BatchShape.decode([100] * tokens)
    comm = cm.stage_breakdown(layout, 0, shape)["comm_s"]
    one = cm.allreduce_s(tokens * 8192 * 2, 4)
    assert comm == pytest.approx(81 * one, rel=1e-12)
    assert cm.roofline.stage_allreduce_s(cm.stages(layout)[0], tokens) == pytest.approx(81 * one, rel=1e-12)


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 10**7), st.integers(0, 10**7), st.sampled_from([2, 4, 8]))
def test_two_protocols_stay_monotone(a, b, tp):
    cm = CostModel(LLAMA2_70B, TWO)
    lo, hi = sorted((a, b))
    assert cm.allreduce_s(lo, tp) <= cm.allreduce_s(hi, tp)
    assert cm.roofline.send_s(lo) <= cm.roofline.send_s(hi)


@pytest.mark.parametrize("field", ["allreduce_small_base_s", "p2p_small_bandwidth_bytes_per_s"])
def test_a_protocol_needs_both_constants(field):
    value = 1e-6 if field.endswith("_s") else 1e9
    with pytest.raises(ValidationError, match="go together"):
        type(NODE).model_validate({**NODE.model_dump(), field: value})


@pytest.fixture(scope="module")
def calib():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "calibrate_a100.py"
    spec = importlib.util.spec_from_file_location("calibrate_a100", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_monotone_bound_by_hand(calib):
    bound = calib.monotone_worst_bound
    assert bound(np.array([1.0, 2.0, 3.0])) == pytest.approx(0, abs=1e-3)
    # 3 then 1: one value p must serve both, best p = 1.5: |1.5/3 - 1| = |1.5/1 - 1| = 0.5
    assert bound(np.array([1.0, 3.0, 1.0, 4.0])) == pytest.approx(0.5, abs=1e-3)
    # against ranges: [2, 3] then [1, 1.2]: p = 1.5 is 25% under 2 and 25% over 1.2
    lo, hi = np.array([2.0, 1.0]), np.array([3.0, 1.2])
    assert bound(np.array([2.5, 1.1]), lo, hi) == pytest.approx(0.25, abs=1e-3)
    # a greater error than the bound never needs to be allowed: a model reaching it exists
    m = np.array([10.0, 46, 60, 44, 17, 16, 32, 24])
    eps = bound(m)
    p = np.maximum.accumulate(m * (1 - eps))
    assert (np.abs(p / m - 1) <= eps + 1e-3).all()
