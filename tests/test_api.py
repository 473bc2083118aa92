"""The public Python API: a script that uses only ``import seesaw`` simulates, plans and runs a
tiny batch through the real engine (spawned ranks), with the CLI's option names."""

import json
import subprocess
import sys

SCRIPT = '''
import json, sys
import seesaw

if __name__ == "__main__":
    sim = seesaw.simulate(model="llama2-13b", gpu="a100-40g", num_gpus=4, layout="P4->T4", num_requests=50)
    best = seesaw.plan(model="llama2-13b", gpu="a100-40g", num_gpus=4, num_requests=50, workers=1)
    run = seesaw.run_batch(model="tiny", input="constant", num_requests=6, input_len=24, output_len=4,
                           layout="P2->T2", output=sys.argv[1], host_kv_gib=0.01)
    print(json.dumps({"sim_tok_s": sim.tokens_per_second, "sim_layout": sim.to_run_result().layout,
                      "plan": best.plan.policy.describe(), "run_requests": run.result["num_requests"],
                      "run_layout": run.result["layout"], "output": str(run.output)}))
'''


def test_a_script_with_only_import_seesaw_simulates_plans_and_runs(tmp_path):
    script = tmp_path / "use_seesaw.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out.jsonl"
    proc = subprocess.run([sys.executable, str(script), str(out)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["sim_layout"] == "P4->T4" and got["sim_tok_s"] > 0
    assert got["plan"].startswith(("vllm ", "seesaw "))
    assert got["run_requests"] == 6 and got["run_layout"] == "P2->T2"
    lines = out.read_text().splitlines()
    assert len(lines) == 6 and {json.loads(line)["custom_id"] for line in lines} == {f"req-{i}" for i in range(6)}


def test_bad_input_is_one_spec_error():
    import pytest

    import seesaw

    with pytest.raises(seesaw.SpecError, match="invalid layout"):
        seesaw.simulate(layout="X9", num_requests=5)
    with pytest.raises(seesaw.SpecError):
        seesaw.load_gpu("no-such-gpu")


def test_default_host_kv_bytes_is_the_simulators_default_pool():
    import seesaw

    model, node = seesaw.load_model("llama2-70b"), seesaw.load_node("8xl4")
    expected = 0.8 * node.host_memory_bytes - model.weight_bytes
    assert seesaw.default_host_kv_bytes(model, node) == max(0.0, expected)
    assert seesaw.default_host_kv_bytes(model, node, fraction=0.0) == 0.0
