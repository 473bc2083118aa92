"""A plan's prediction has one set of keys whoever made it (``seesaw plan`` or ``seesaw run --auto``),
so ``run --plan`` compares output tokens/s with a plan from ``seesaw plan`` too."""

import pytest

import seesaw
from seesaw.app.autotune import comparison


def test_a_searched_plan_predicts_output_throughput_and_run_compares_it():
    reqs = seesaw.load_workload("sharegpt", 40, seed=1)
    plan = seesaw.plan(model="llama2-13b", gpu="a100-40g", num_gpus=4, requests=reqs, workers=1).plan
    out_frac = sum(r.output_len for r in reqs) / sum(r.prompt_len + r.output_len for r in reqs)
    pred = plan.predicted
    assert pred.output_throughput_tok_s == pytest.approx(pred.throughput_tok_s * out_frac, rel=1e-12)
    assert pred.requests_per_s == pytest.approx(len(reqs) / pred.makespan_s, rel=1e-12)
    measured = {"tokens_per_second": 10.0, "output_tokens_per_second": 4.0, "elapsed_time": 2.0, "layout": "T4",
                "time_by_phase": {"prefill": 0.5, "decode": 1.5}}
    comp = comparison(plan, measured)
    row = comp["metrics"]["output_tokens_per_second"]
    assert row["predicted"] == pred.output_throughput_tok_s and row["ratio"] == pytest.approx(4.0 / row["predicted"])


def test_predicted_json_leaves_out_what_does_not_apply():
    pred = seesaw.Plan.model_fields["predicted"].annotation(throughput_tok_s=2.0, makespan_s=1.0, decode_s=1.0)
    assert pred.model_dump() == {"throughput_tok_s": 2.0, "makespan_s": 1.0, "decode_s": 1.0}
    assert pred.phase_s("decode") == 1.0 and pred.phase_s("prefill") is None
