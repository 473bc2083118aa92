"""Your own hardware (issue 22 item 2): ``--gpu``/``--node`` take a YAML file wherever they take a
name, ``seesaw catalog --template gpu|node`` prints a file to start from, a bad file is one line."""

from __future__ import annotations

import json

import pytest
import yaml

from seesaw import catalog
from seesaw.app.simulate import resolve_node
from seesaw.catalog import CatalogError
from seesaw.core import SpecError


def _write(path, text: str):
    path.write_text(text)
    return path


def _edit(text: str, **fields) -> str:
    """The template with some fields' values replaced (comments kept)."""
    lines = text.splitlines()
    for key, value in fields.items():
        lines = [f"{key}: {value}" if line.startswith(f"{key}:") else line for line in lines]
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("kind,spec", [("gpu", catalog.GpuSpec), ("node", catalog.NodeSpec)])
def test_template_is_commented_and_loads_as_is(seesaw, tmp_path, kind, spec):
    res = seesaw("catalog", "--template", kind)
    assert res.returncode == 0, res.stderr
    data = yaml.safe_load(res.stdout)
    assert data["name"] == f"my-{kind}"
    for field in spec.model_fields:  # every field is in the file, set or commented out at its default
        assert f"{field}:" in res.stdout
    comments = [line for line in res.stdout.splitlines() if line.startswith("#")]
    assert len(comments) >= len(data), "every field has a comment saying what it is"
    loaded = (catalog.load_gpu if kind == "gpu" else catalog.load_node)(_write(tmp_path / f"{kind}.yaml", res.stdout))
    assert loaded.name == f"my-{kind}"


def test_unknown_template_kind_is_one_line(seesaw):
    res = seesaw("catalog", "--template", "cluster")
    assert res.returncode == 2 and res.stderr.strip() == "error: unknown template 'cluster'; known: gpu, node"


def test_node_file_with_its_own_gpu_file_simulates(seesaw, tmp_path):
    gpu = _edit(catalog.template("gpu"), name="my-gpu", peak_flops="242.0e+12", price_per_hour_usd="0.5")
    (tmp_path / "hw").mkdir()
    _write(tmp_path / "hw" / "gpu.yaml", gpu)
    node = _edit(catalog.template("node"), name="my-box", gpu="gpu.yaml", num_gpus="4")  # relative to the node file
    node_file = _write(tmp_path / "hw" / "box.yaml", node)
    spec = resolve_node(str(node_file))
    assert (spec.name, spec.num_gpus, spec.gpu.name, spec.gpu.peak_flops) == ("my-box", 4, "my-gpu", 242e12)
    assert resolve_node(str(node_file), 2).num_gpus == 2  # --num-gpus rescales a node file
    res = seesaw("simulate", "-m", "llama2-7b", "--gpu", node_file, "-n", "20", "--json")
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("Simulated llama2-7b on my-box (4 x MY-GPU, pcie), vllm T4")
    res = seesaw("plan", "-m", "llama2-7b", "--gpu", node_file, "-n", "20", "--workers", "1", "--json",
                 "-o", tmp_path / "plan")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["plan"]["node"]["name"] == "my-box"


def test_edited_copy_of_a_catalog_gpu_keeps_its_node_template(seesaw, tmp_path):
    """A copy of l4 with another price is a GPU file named l4: it uses the 8xl4 links, its own figures."""
    gpu_file = _write(tmp_path / "l4-cheap.yaml", _edit(catalog.template("gpu"), name="l4", price_per_hour_usd="0.25"))
    node = resolve_node(str(gpu_file), 4)
    assert node.name == "4xl4" and node.gpu.price_per_hour_usd == 0.25
    assert node.gpu_link_bandwidth_bytes_per_s == catalog.load_node("8xl4").gpu_link_bandwidth_bytes_per_s
    res = seesaw("whatif", "-m", "llama2-7b", "--gpu", f"l4,{gpu_file}", "-N", "4", "-n", "200",
                 "--sample-size", "50", "--workers", "1", "--objective", "cost", "-o", tmp_path / "wi")
    assert res.returncode == 0, res.stderr
    import pandas as pd

    options = pd.read_csv(tmp_path / "wi" / "options.csv").set_index("gpu")
    assert options.loc[str(gpu_file), "price_per_gpu_hour_usd"] == 0.25
    assert options.loc["l4", "price_per_gpu_hour_usd"] == catalog.load_gpu("l4").price_per_hour_usd
    assert options.loc[str(gpu_file), "cost_per_mtok_usd"] < options.loc["l4", "cost_per_mtok_usd"]


def test_gpu_file_without_a_node_template_says_to_write_a_node_file(seesaw, tmp_path):
    gpu_file = _write(tmp_path / "mine.yaml", catalog.template("gpu"))
    res = seesaw("simulate", "--gpu", gpu_file, "-n", "10")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1
    assert "no node template for GPU 'my-gpu'" in res.stderr and "seesaw catalog --template node" in res.stderr


@pytest.mark.parametrize("edit,field", [
    ({"peak_flops": "-1.0"}, "peak_flops"),
    ({"memory_bytes": "lots"}, "memory_bytes"),
    ({"compute_efficiency": "1.5"}, "compute_efficiency"),
])
def test_bad_gpu_file_is_one_line_naming_the_field(seesaw, tmp_path, edit, field):
    bad = _write(tmp_path / "bad.yaml", _edit(catalog.template("gpu"), name="l4", **edit))
    for cmd in (("simulate",), ("compare",), ("plan",), ("whatif", "-N", "4")):
        res = seesaw(*cmd, "-m", "llama2-7b", "--gpu", bad, "-n", "10")
        lines = res.stderr.strip().splitlines()
        assert res.returncode == 2 and len(lines) == 1, (cmd, res.stderr)
        assert str(bad) in lines[0] and f"field '{field}'" in lines[0], (cmd, lines[0])


def test_misspelt_or_missing_node_field_and_missing_file_are_one_line(seesaw, tmp_path):
    node = catalog.template("node")
    typo = _write(tmp_path / "typo.yaml", node.replace("host_memory_bytes_per_gpu:", "host_memory_per_gpu:"))
    res = seesaw("simulate", "--gpu", typo, "-n", "10")
    assert res.returncode == 2 and "field 'host_memory_bytes_per_gpu'" in res.stderr
    bad_gpu = _write(tmp_path / "badgpu.yaml", _edit(node, gpu="nope.yaml"))
    res = seesaw("simulate", "--gpu", bad_gpu, "-n", "10")
    assert res.returncode == 2 and "field 'gpu'" in res.stderr and "not found" in res.stderr
    res = seesaw("simulate", "--gpu", tmp_path / "absent.yaml", "-n", "10")
    assert res.returncode == 2 and "not found" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_interconnect_cannot_change_a_node_file(tmp_path):
    node_file = _write(tmp_path / "n.yaml", catalog.template("node"))
    with pytest.raises(SpecError, match="is pcie"):
        resolve_node(str(node_file), None, "nvlink")
    with pytest.raises(CatalogError):
        catalog.template("cluster")
