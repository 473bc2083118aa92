"""Simulator outputs stay bit-identical for a seed (issue 23: speed work must not move a number).

Four recorded scenarios (``tests/golden_sim_cases.py``: static vLLM, Seesaw, chunked prefill with
DP and preemptions, Seesaw with a small host pool and many transitions) compare the whole summary
and a digest of the per-step and per-request tables.
"""

import json

import pytest

from tests.golden_sim_cases import CASES, GOLDEN, run_case

RECORDED = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_simulation_is_bit_identical(case):
    name, *args = case
    assert run_case(*args) == RECORDED[name]
