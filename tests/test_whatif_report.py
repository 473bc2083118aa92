"""The what-if report answers the planner's questions: the fastest option, the cheapest, the best
under a deadline (``--deadline``), and a glossary of every layout string and knob it prints."""

import json
import re

import pytest

from seesaw.app.whatif import parse_duration, run_whatif
from seesaw.catalog import load_model
from seesaw.report.whatif import GLOSSARY, headline, write_report
from seesaw.workload import load_workload
from simulator.planner import SearchSpace

SMALL = SearchSpace(chunk_sizes=(2048,), max_num_seqs=(256, 512), seesaw_max_num_seqs=(256,),
                    host_pool_fractions=(1.0,), host_full_watermarks=(1.0,), decode_low_watermarks=(0.5,))


@pytest.fixture(scope="module")
def study():
    """LLaMA2-13B on 2 and 4 A10s / A100s, the A100 priced at $20/GPU-hour: the A100s are the
    fastest, an A10 option the cheapest."""
    reqs = load_workload("sharegpt", num_requests=200, seed=0)
    res = run_whatif(load_model("llama2-13b"), ["a10", "a100-40g"], [2, 4], reqs, workload_name="sharegpt",
                     prices={"a100-40g": 20.0}, sample_size=60, space=SMALL, screen={"vllm": 2, "seesaw": 2},
                     refine={"vllm": 1, "seesaw": 1}, workers=1)
    df = res.table()
    ok = df[df["feasible"]]
    assert len(ok) >= 3
    return res, ok


def _by(ok, key: str) -> str:
    return ok.sort_values(key, kind="stable").iloc[0]["option"]


def test_headline_names_the_fastest_and_the_cheapest(study):
    res, ok = study
    fastest, cheapest = _by(ok, "makespan_s"), _by(ok, "cost_per_mtok_usd")
    assert fastest != cheapest                                   # the study tells them apart
    assert res.fastest()["option"] == fastest and res.cheapest()["option"] == cheapest
    assert ok.set_index("option").loc[fastest, "throughput_tok_s"] == ok["throughput_tok_s"].max()
    lines = headline(res)
    assert len(lines) == 2
    assert lines[0].startswith(f"Fastest: **{fastest}**") and lines[1].startswith(f"Cheapest: **{cheapest}**")
    assert "tokens/s" in lines[0] and "per million tokens" in lines[1] and "GPU-hours" in lines[1]


def test_headline_names_the_cheapest_option_that_meets_the_deadline(study):
    res, ok = study
    cheapest = ok.set_index("option").loc[_by(ok, "cost_per_mtok_usd")]
    res.deadline_s = float(cheapest["makespan_s"]) * 0.999       # the cheapest overall just misses it
    try:
        in_time = ok[ok["makespan_s"] <= res.deadline_s]
        expected = _by(in_time, "cost_per_mtok_usd")
        assert res.within_deadline()["option"] == expected != cheapest.name
        assert headline(res)[-1].startswith("Best within the ") and f"**{expected}**" in headline(res)[-1]
        assert res.table()["meets_deadline"].tolist() == (res.table()["makespan_s"] <= res.deadline_s).tolist()
        res.deadline_s = float(ok["makespan_s"].min()) / 2      # nothing finishes in time
        assert res.within_deadline() is None
        assert "no option finishes in time" in headline(res)[-1]
    finally:
        res.deadline_s = None


def test_report_has_the_headline_and_a_glossary_of_what_it_prints(study, tmp_path):
    res, ok = study
    res.deadline_s = 24 * 3600.0
    try:
        write_report(res, tmp_path, {"test": True})
    finally:
        res.deadline_s = None
    md, html = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fastest"]["option"] == res.fastest()["option"]
    assert summary["cheapest"]["option"] == res.cheapest()["option"]
    assert summary["best_within_deadline"]["option"] == res.cheapest()["option"] and summary["deadline_s"] == 86400
    for line in headline(res):
        assert f"- {line}" in md
    assert "Fastest: <b>" in html and "Cheapest: <b>" in html
    assert "## Glossary" in md and "<h2>Glossary</h2>" in html
    terms = [t for t, _ in GLOSSARY]
    for term in ("T4P2", "P8->T4P2", "D2", "chunk=8192", "seqs=512", "tokens/s", "$/M tokens", "GPU-hours"):
        assert term in terms and f"`{term}`" in md and term.replace(">", "&gt;") in html
    # every knob printed in a plan name (chunk=, seqs=, pool=, wm=, dl=) is explained
    printed = set(re.findall(r"\b([a-z]+)=[\d.]+x?\b", md))
    assert printed and printed <= {t.split("=")[0] for t in terms if "=" in t}
    table = md.split("## Options")[1].split("\n\n")[1].splitlines()
    header = [c.strip() for c in table[0].strip("|").split("|")]
    makespans = [[c.strip() for c in row.strip("|").split("|")][header.index("makespan")] for row in table[2:]]
    assert len(makespans) == len(ok) and all(re.fullmatch(r"[\d,]+(\.\d)? (s|min|h)", m) for m in makespans)


def test_every_number_in_the_headline_has_a_unit(study):
    res, _ = study
    res.deadline_s = 3600.0
    try:
        text = " ".join(headline(res))
    finally:
        res.deadline_s = None
    text = re.sub(r"\*\*[^*]+\*\*", "", text)                   # option and plan names (4xa10, T4, 8192)
    numbers = re.findall(r"\$?\d[\d,]*(?:\.\d+)?x?(?: [A-Za-z/$-]+)?", text)
    assert numbers
    for n in numbers:
        assert n.startswith("$") or n.endswith("x") or " " in n, n


@pytest.mark.parametrize("text,seconds", [("24h", 86400), ("90m", 5400), ("90min", 5400), ("1h30m", 5400),
                                          ("3600", 3600), ("45s", 45), ("2d", 172800), ("1.5h", 5400)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["soon", "0", "-3h", "24x", "h"])
def test_bad_deadline_is_one_line_and_exit_2(seesaw, tmp_path, bad):
    r = seesaw("whatif", "--deadline", bad, "-n", "5", "-o", tmp_path / "w")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr and lines[-1].startswith("error:") and "--deadline" in lines[-1]
