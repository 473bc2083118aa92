"""What-if reports and the planner's commands: files, embedded plots, cost ranking, CLI errors, --json."""

import json
import re

import pytest

from seesaw.app.whatif import WhatIfOption, WhatIfResult, parse_prices, run_whatif
from seesaw.catalog import load_model, make_node
from seesaw.report.whatif import PLOTS, write_report
from seesaw.workload import describe, load_workload
from simulator.planner import SearchSpace, plan

TINY = SearchSpace(chunk_sizes=(2048,), max_num_seqs=(256,), seesaw_max_num_seqs=(256,),
                   host_pool_fractions=(1.0,), host_full_watermarks=(1.0,),
                   decode_low_watermarks=(0.5,))


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """CodeLLaMA-34B on 2 and 4 A10s / L4s: two feasible options, two that do not fit."""
    out = tmp_path_factory.mktemp("whatif")
    model = load_model("codellama-34b")
    reqs = load_workload("sharegpt", num_requests=400, seed=0)
    res = run_whatif(model, ["a10", "l4"], [2, 4], reqs, workload_name="sharegpt", sample_size=60,
                     space=TINY, screen={"vllm": 2, "seesaw": 2}, refine={"vllm": 1, "seesaw": 1}, workers=2)
    paths = write_report(res, out, {"test": True})
    return res, out, paths


def test_report_files_exist_and_html_embeds_every_plot(report):
    res, out, paths = report
    for name in ("report.md", "report.html", "options.csv", "summary.json", *PLOTS):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    html = (out / "report.html").read_text()
    embedded = re.findall(r"<img alt='([^']+)' src='data:image/png;base64,([A-Za-z0-9+/=]+)'", html)
    assert sorted(a for a, _ in embedded) == sorted(PLOTS)
    assert all(len(data) > 1000 for _, data in embedded)
    assert "src='" + "http" not in html and "<script" not in html          # self-contained
    md = (out / "report.md").read_text()
    assert all(f"]({p})" in md for p in PLOTS)
    assert "screened on a seeded sample of 60" in md and "nested samples" in md and "nested samples" in html


def test_report_lists_infeasible_options_with_reasons(report):
    res, out, _ = report
    df = res.table()
    bad = df[~df["feasible"]]
    assert set(bad["option"]) == {"2xa10", "2xl4"}
    assert all("does not fit" in r and "GiB" in r for r in bad["reason"])
    ok = df[df["feasible"]]
    assert set(ok["option"]) == {"4xa10", "4xl4"}
    assert (ok["throughput_tok_s"] > 0).all() and (ok["vllm_throughput_tok_s"] > 0).all()
    assert ok["throughput_tok_s"].is_monotonic_decreasing                   # ranked by throughput
    summary = json.loads((out / "summary.json").read_text())
    assert summary["best"]["option"] == ok.iloc[0]["option"]
    assert "2xa10" in (out / "report.md").read_text()


def _option(name: str, result, price: float) -> WhatIfOption:
    node = result.plan.node.model_copy(update={"name": name})
    return WhatIfOption(node.gpu.name, node.num_gpus, node, result=result, price_per_gpu_hour=price)


@pytest.fixture(scope="module")
def tie():
    """The same node planned twice at two prices: equal throughput, cost 2:1."""
    model, node = load_model("llama2-13b"), make_node("a10", 2)
    reqs = load_workload("sharegpt", num_requests=40, seed=0)
    dear = plan(model, node, reqs, space=TINY, objective="cost", price_per_gpu_hour=3.0, workers=1)
    cheap = plan(model, node, reqs, space=TINY, objective="cost", price_per_gpu_hour=1.5, workers=1)
    return model, reqs, dear, cheap


@pytest.mark.parametrize("objective", ["cost", "throughput"])
def test_cost_objective_prefers_cheaper_hardware_on_a_throughput_tie(tie, objective):
    model, reqs, dear, cheap = tie
    assert dear.winner["throughput_tok_s"] == cheap.winner["throughput_tok_s"]        # the tie
    res = WhatIfResult(model, "sharegpt", describe(reqs), len(reqs), objective,
                       [_option("2xa10-dear", dear, 3.0), _option("2xa10-cheap", cheap, 1.5)])
    assert res.best()["option"] == "2xa10-cheap"
    assert res.best()["cost_per_mtok_usd"] == pytest.approx(dear.winner["cost_per_mtok_usd"] / 2)


def test_parse_prices():
    assert parse_prices("1.5", ["l4", "a10"]) == {"l4": 1.5, "a10": 1.5}
    assert parse_prices("L4=1.2, a10=2", ["l4"]) == {"l4": 1.2, "a10": 2.0}
    with pytest.raises(ValueError, match="price"):
        parse_prices("l4=cheap", ["l4"])
    with pytest.raises(ValueError, match="> 0"):
        parse_prices("0", ["l4"])


def test_run_folder_writes_config_summary_then_files_in_order(tmp_path):
    """The one run-folder writer: config.yaml only when given, summary.json, then each file
    (text, bytes, a table without its index, a function given the path), in the order given."""
    import pandas as pd
    import yaml

    from seesaw.report import json_text, write_run_folder

    paths = write_run_folder(tmp_path / "a", {"x": 1.5, "p": tmp_path}, config={"b": 1, "a": [2]}, files={
        "t.md": "# hi\n", "b.bin": b"\x00\x01", "t.csv": pd.DataFrame({"k": [1, 2]}),
        "f.txt": lambda path: path.write_text("by a function")})
    assert [p.name for p in paths] == ["config.yaml", "summary.json", "t.md", "b.bin", "t.csv", "f.txt"]
    out = tmp_path / "a"
    assert (out / "config.yaml").read_text() == "b: 1\na:\n- 2\n"  # key order kept
    assert yaml.safe_load((out / "config.yaml").read_text()) == {"b": 1, "a": [2]}
    assert (out / "summary.json").read_text() == json_text({"x": 1.5, "p": str(tmp_path)})
    assert json.loads((out / "summary.json").read_text()) == {"x": 1.5, "p": str(tmp_path)}
    assert (out / "b.bin").read_bytes() == b"\x00\x01" and (out / "t.csv").read_text() == "k\n1\n2\n"
    assert (out / "f.txt").read_text() == "by a function"
    assert [p.name for p in write_run_folder(tmp_path / "b", {})] == ["summary.json"]
    with pytest.raises(TypeError, match="x.bin"):
        write_run_folder(tmp_path / "c", {}, files={"x.bin": 3})


@pytest.mark.parametrize("args,fragment", [
    (["plan", "--gpu", "v100", "-n", "5"], "v100"),
    (["plan", "--workload", "nosuchgen", "-n", "5"], "sharegpt"),
    (["plan", "--objective", "speed", "-n", "5"], "objective"),
    (["compare", "--gpu", "h800", "-n", "5"], "h800"),
    (["compare", "--workload", "missing.jsonl"], "missing.jsonl"),
    (["whatif", "--gpu", "l4,v100", "-n", "5"], "v100"),
    (["whatif", "--num-gpus", "4,x", "-n", "5"], "num-gpus"),
    (["whatif", "--workload", "nosuchgen", "-n", "5"], "sharegpt"),
    (["whatif", "--price-per-gpu-hour", "l4=free", "-n", "5"], "price"),
    (["plan", "--model", "llama2-70b", "--gpu", "l4", "-N", "4", "-n", "5"], "no feasible plan"),
])
def test_bad_input_is_one_line_and_exit_2(seesaw, tmp_path, monkeypatch, args, fragment):
    monkeypatch.chdir(tmp_path)
    r = seesaw(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("error:") and fragment.lower() in lines[-1].lower(), r.stderr


def test_plan_json_last_line_and_files(seesaw, tmp_path):
    r = seesaw("plan", "--model", "llama2-13b", "--gpu", "a10", "-N", "4", "-n", "40", "--json",
               "-o", str(tmp_path / "p"))
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["plan"]["policy"]["kind"] in ("vllm", "seesaw") and obj["winner"]["throughput_tok_s"] > 0
    assert "wins" in r.stdout
    plan_json = json.loads((tmp_path / "p" / "plan.json").read_text())
    assert plan_json["model"]["name"] == "llama2-13b" and plan_json["explanation"]
    assert (tmp_path / "p" / "candidates.csv").read_text().startswith("rank,")


def test_compare_json_last_line(seesaw):
    r = seesaw("compare", "--model", "llama2-13b", "--gpu", "a10", "-N", "2", "-n", "30", "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["num_estimated"] == 0 and obj["num_simulated"] + obj["num_shared"] == obj["num_candidates"]
    assert obj["best_vllm"]["speedup_vs_best_vllm"] == pytest.approx(1.0)
    assert "Best:" in r.stdout and "best vLLM:" in r.stdout


def test_whatif_cli_writes_the_report(seesaw, tmp_path):
    out = tmp_path / "rep"
    r = seesaw("whatif", "--model", "llama2-13b", "--gpu", "a10", "--num-gpus", "1,2", "-n", "2000",
               "--sample-size", "40", "-o", str(out), "--json")
    assert r.returncode == 0, r.stderr
    obj = json.loads(r.stdout.strip().splitlines()[-1])
    assert obj["report"] == str(out) and {o["option"] for o in obj["options"]} == {"1xa10", "2xa10"}
    assert (out / "report.html").is_file() and (out / "options.csv").is_file()
    assert "1xa10" in r.stdout or "1xa10" in (out / "report.md").read_text()


def test_no_argument_whatif_compares_current_servers():
    """Issue 22 item 6: the no-argument report is LLaMA-3.1-70B on 8-GPU servers sold now; every
    entry point shares the one default, and each GPU has its 8-GPU catalog node."""
    import inspect

    import typer

    from seesaw import api, catalog
    from seesaw.app import whatif as app_whatif
    from seesaw.cli.whatif import whatif as cli_whatif
    from seesaw.core import WHATIF_GPUS, WHATIF_MODEL, WHATIF_NUM_GPUS

    assert (WHATIF_MODEL, WHATIF_GPUS, WHATIF_NUM_GPUS) == ("llama3.1-70b", "h100,h200,l40s,a100-80g", "8")
    for fn in (api.whatif, app_whatif.whatif):
        params = inspect.signature(fn).parameters
        assert (params["model"].default, params["gpu"].default, params["num_gpus"].default) == (
            WHATIF_MODEL, WHATIF_GPUS, WHATIF_NUM_GPUS)
    cli = {name: p.default.default for name, p in inspect.signature(cli_whatif).parameters.items()
           if isinstance(p.default, typer.models.OptionInfo)}
    assert (cli["model"], cli["gpu"], cli["num_gpus"]) == (WHATIF_MODEL, WHATIF_GPUS, WHATIF_NUM_GPUS)
    nodes = [catalog.make_node(g, 8) for g in WHATIF_GPUS.split(",")]
    assert [n.name for n in nodes] == ["8xh100", "8xh200", "8xl40s", "8xa100-80g-nvlink"]
    assert all(n.gpu.price_per_hour_usd for n in nodes)


def test_options_side_by_side_plan_as_one_after_the_other_even_from_a_script_without_main_guard(tmp_path):
    """The what-if plans its options side by side on one shared pool (``seesaw.app.executors``):
    the plans are those of one option after the other in-process, and a plain script (no
    ``if __name__ == "__main__"``) is not re-run by the pool's workers."""
    import subprocess
    import sys

    from seesaw.app.whatif import whatif

    kw = dict(model="llama2-7b", gpu="a100-40g,l4", num_gpus="1,2", num_requests=1500, sample_size=300)
    alone = whatif(workers=1, **kw).result
    script = tmp_path / "job.py"
    script.write_text("import json\nfrom seesaw.app.whatif import whatif\n"
                      f"done = whatif(workers=2, **{kw!r})\n"
                      "print(json.dumps([[o.name, o.result.winner['candidate'], o.result.winner['makespan_s']]\n"
                      "                  for o in done.result.options]))\n")
    res = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    side = json.loads(res.stdout.strip().splitlines()[-1])
    assert side == [[o.name, o.result.winner["candidate"], o.result.winner["makespan_s"]] for o in alone.options]
    assert len(side) == 4


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM"])
def test_a_signal_stops_the_side_by_side_whatif_at_once_in_one_line(tmp_path, sig):
    """The options' threads wait on the shared pool's simulations: a signal ends the pool's workers
    so that every wait wakes (a pool shut down with its queue cancelled left them waiting: a hang)."""
    import os
    import signal
    import subprocess
    import sys

    env = dict(os.environ, SEESAW_PROGRESS_EVERY_S="0")
    proc = subprocess.Popen([sys.executable, "-m", "seesaw.cli", "whatif", "-o", str(tmp_path / "r"), "--workers", "2"],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
    for line in proc.stderr:        # simulations under way on every option
        if "whatif:" in line and "/" in line:
            break
    proc.send_signal(getattr(signal, sig))
    code = proc.wait(timeout=60)
    rest = proc.stderr.read().strip().splitlines()
    assert code == 128 + getattr(signal, sig), rest[-5:]
    assert rest[-1] == f"error: interrupted by {sig}"
