"""Recorded simulator scenarios for ``tests/test_golden_sim.py``: each case's summary and a digest
of its per-step and per-request tables, which must stay bit-identical across speed work.

Regenerate (only when a change moves the numbers on purpose, e.g. a cost-model fix, and say so
in the commit): ``.venv/bin/python tests/golden_sim_cases.py``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

GOLDEN = Path(__file__).with_name("golden") / "sim_summaries.json"

# (name, model, node, layout or (prefill, decode), workload, n, policy extras)
CASES = [
    ("70b_8xl4_T4P2", "llama2-70b", "8xl4", "T4P2", "sharegpt", 2000, {}),
    ("70b_8xl4_P8-T4P2", "llama2-70b", "8xl4", "P8->T4P2", "sharegpt", 2000, {}),
    ("13b_8xl4_D2T2P2_chunked", "llama2-13b", "8xl4", "D2T2P2", "sharegpt", 1500,
     {"enable_chunked_prefill": True}),
    ("13b_8xa10_D2P4-D2T4_small_host", "llama2-13b", "8xa10", "D2P4->D2T4", "sharegpt", 1000,
     {"host_kv_bytes": 8 * 2**30}),
]


def run_case(model: str, node: str, layout: str, workload: str, n: int, extra: dict) -> dict:
    from seesaw.catalog import load_model, load_node
    from seesaw.core import SeesawPolicy, VllmPolicy
    from seesaw.workload import load_workload
    from simulator.sim import simulate

    if "->" in layout:
        p, d = layout.split("->")
        policy = SeesawPolicy(prefill_layout=p, decode_layout=d, **extra)
    else:
        policy = VllmPolicy(layout=layout, **extra)
    reqs = load_workload(workload, num_requests=n, seed=0)
    res = simulate(load_model(model), load_node(node), policy, reqs)
    return {
        "summary": res.summary(),
        "steps_sha256": hashlib.sha256(res.steps.to_csv(index=False).encode()).hexdigest(),
        "requests_sha256": hashlib.sha256(res.requests.to_csv(index=False).encode()).hexdigest(),
    }


def record() -> dict:
    return {name: run_case(*args) for name, *args in CASES}


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
