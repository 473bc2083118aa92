"""Hardware and model profiles by name: ``load_gpu("l4")``, ``load_node("8xa10")``, ``load_model("tiny")``.

Profiles are YAML files shipped as package data (``profiles/`` in the repository, the package
``seesaw.profiles`` once installed): ``gpus/``, ``nodes/``, ``models/`` and ``measured/``. A profile's
name is its file stem; look-ups are case-insensitive. A node profile names its GPU (``gpu: l4``) and
the loader resolves it to the GPU profile. ``load_measured("cpu-2core")`` reads a measured profile
(``MeasuredProfile``) and ``measured_node(profile)`` builds the node it was measured on. ``load_model`` also takes a path to a HF model directory
(its ``config.json``) or to a YAML file. Every failure is a one-line :class:`CatalogError` naming the
file and the field. Catalog loads are cached; specs are frozen, so sharing them is safe.
"""

from __future__ import annotations

import functools
import json
import operator
import re
import textwrap
from importlib.resources import files
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from seesaw.core import GiB, GpuSpec, MeasuredProfile, ModelSpec, NetworkSpec, NodeSpec, SpecError

__all__ = ["CatalogError", "load_gpu", "load_node", "load_model", "load_measured", "make_node",
           "measured_node", "scale_node", "is_node", "template", "list_catalog", "catalog_table", "profile_path", "clear_cache"]

KINDS = ("gpus", "nodes", "models", "measured")
_LABEL = {"gpus": "GPU", "nodes": "node", "models": "model", "measured": "measured profile"}
_SPEC: dict[str, type[BaseModel]] = {"gpus": GpuSpec, "nodes": NodeSpec, "models": ModelSpec,
                                     "measured": MeasuredProfile}
_HF_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8}
_LLAMA_LIKE = {"llama", "mistral", "qwen2"}  # LLaMA 2/3, CodeLlama, SmolLM2 say "llama"; Mistral; Qwen2/2.5
_HINT = {"models": " (or a path to a HF model directory or a YAML file)"}


class CatalogError(SpecError):
    """Unknown profile name, or a profile file that does not parse or validate. One line."""


def _root():
    return files("seesaw.profiles")


def _index(kind: str) -> dict[str, Any]:
    """Lower-cased stem -> file (a Traversable) for one profile folder; empty if the folder is absent."""
    folder = _root() / kind
    if not folder.is_dir():
        return {}
    entries = [f for f in folder.iterdir() if f.name.endswith((".yaml", ".yml"))]
    return {f.name.rsplit(".", 1)[0].lower(): f for f in sorted(entries, key=lambda f: f.name)}


def list_catalog() -> dict[str, list[str]]:
    """Profile names by kind: ``{"gpus": [...], "nodes": [...], "models": [...], "measured": [...]}``."""
    return {kind: sorted(_index(kind)) for kind in KINDS}


def profile_path(kind: str, name: str):
    """The file behind a catalog name (a Traversable), for readers of other schemas (``measured``)."""
    if kind not in KINDS:
        raise CatalogError(f"unknown profile kind {kind!r}; known: {', '.join(KINDS)}")
    index = _index(kind)
    key = str(name).strip().lower()
    if key not in index:
        known = ", ".join(sorted(index)) or "(none)"
        raise CatalogError(f"unknown {_LABEL[kind]} {name!r}; known: {known}{_HINT.get(kind, '')}")
    return index[key]


def _read_yaml(file) -> dict:
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise CatalogError(f"{file}: cannot read ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise CatalogError(f"{file}: invalid YAML{where}: {problem}") from None
    if not isinstance(data, dict):
        raise CatalogError(f"{file}: expected a mapping of fields, got {type(data).__name__}")
    return data


def _one_line(e: ValidationError, file) -> CatalogError:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "(top level)"
    more = f" (+{e.error_count() - 1} more)" if e.error_count() > 1 else ""
    shown = "" if err["type"] == "missing" or isinstance(err["input"], dict) else repr(err["input"])[:40]
    got = f" (got {shown})" if shown else ""
    return CatalogError(f"{file}: field '{field}': {err['msg']}{got}{more}")


def _validate(spec: type[BaseModel], data: dict, file) -> Any:
    try:
        return spec.model_validate(data)
    except ValidationError as e:
        raise _one_line(e, file) from None


def _build(kind: str, data: dict, file) -> Any:
    data = dict(data)
    data.setdefault("name", Path(str(file)).stem.lower())
    if kind == "nodes" and isinstance(data.get("gpu"), str):
        try:
            data["gpu"] = load_gpu(_beside(data["gpu"], file))
        except CatalogError as e:
            raise CatalogError(f"{file}: field 'gpu': {e}") from None
    return _validate(_SPEC[kind], data, file)


def _is_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or "\\" in text


def _beside(name: str, file) -> str:
    """A node file's ``gpu:`` as given, or, when it is a relative path, relative to the node file."""
    if _is_path(name) and isinstance(file, Path) and not Path(name).expanduser().is_absolute():
        return str(file.parent / name)
    return name


@functools.lru_cache(maxsize=None)
def _load_named(kind: str, key: str) -> Any:
    file = profile_path(kind, key)
    return _build(kind, _read_yaml(file), file)


def _load(kind: str, name: str | Path) -> Any:
    text = str(name)
    if _is_path(text):
        path = Path(text).expanduser()
        if not path.is_file():
            raise CatalogError(f"{_LABEL[kind]} file {text!r} not found")
        return _build(kind, _read_yaml(path), path)
    profile_path(kind, text)  # unknown names fail here, quoting the name as given
    return _load_named(kind, text.strip().lower())


def load_gpu(name: str | Path) -> GpuSpec:
    """A GPU profile by catalog name (``a10``, ``l4``, ``a100-40g``, ...) or YAML path."""
    return _load("gpus", name)


def load_node(name: str | Path) -> NodeSpec:
    """A node profile by catalog name (``8xl4``, ``8xa100-40g-nvlink``, ...) or YAML path."""
    return _load("nodes", name)


def load_measured(name: str | Path) -> MeasuredProfile:
    """A measured profile (written by ``seesaw profile``) by catalog name or YAML path."""
    return _load("measured", name)


def load_model(name: str | Path) -> ModelSpec:
    """A model by catalog name, by path to a YAML profile, or by path to a HF model directory.

    A catalog name wins over a same-named folder in the working directory.
    """
    text = str(name)
    if text.strip().lower() not in _index("models"):
        path = Path(text).expanduser()
        if path.is_dir():
            return _from_hf_dir(path)
        if path.name == "config.json" and path.is_file():
            return _from_hf_dir(path.parent)
    return _load("models", text)


def _from_hf_dir(folder: Path) -> ModelSpec:
    file = folder / "config.json"
    if not file.is_file():
        raise CatalogError(f"{folder}: not a HF model directory (no config.json)")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CatalogError(f"{file}: cannot read JSON ({e})") from None
    if not isinstance(config, dict):
        raise CatalogError(f"{file}: expected a JSON object")
    config.setdefault("model_type", "llama")
    model_type = config["model_type"]
    if model_type not in _LLAMA_LIKE:
        raise CatalogError(f"{file}: field 'model_type': {model_type!r} is not a LLaMA-family model "
                           f"(supported: {', '.join(sorted(_LLAMA_LIKE))})")
    config = dict(config)
    rope = config.pop("rope_parameters", None)  # transformers >= 5 nests RoPE settings here
    if isinstance(rope, dict):
        config.setdefault("rope_theta", rope.get("rope_theta"))
        if rope.get("rope_type", "default") != "default":
            config.setdefault("rope_scaling", {k: v for k, v in rope.items() if k != "rope_theta"})
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16").removeprefix("torch.")
    try:
        spec = ModelSpec.from_hf_config(config, folder.name.lower(), _HF_DTYPE_BYTES.get(dtype, 2))
    except ValidationError as e:
        raise _one_line(e, file) from None
    return spec.model_copy(update={"source": str(file)})


_NODE_COUNT = re.compile(r"^\d+x")
INTERCONNECTS = ("nvlink", "xgmi", "pcie")  # what make_node accepts, fastest first: the default order


def _positive_count(value, what: str) -> int:
    """``value`` as a positive integer (not a bool), else a one-line ``CatalogError`` naming ``what``."""
    try:
        count = operator.index(value)
    except TypeError:
        count = 0
    if count < 1 or isinstance(value, bool):
        raise CatalogError(f"{what} must be a positive integer, got {value!r}")
    return count


def make_node(gpu: str, num_gpus: int, interconnect: str | None = None) -> NodeSpec:
    """A node of ``num_gpus`` GPUs built from the catalog node template of that GPU and interconnect.

    Per-GPU figures (links, host memory, latencies) are the template's. ``interconnect`` defaults to
    the GPU's own fabric: ``nvlink`` (or AMD's ``xgmi``) when such a template exists for it, else ``pcie``.
    ``make_node("a10", 4)`` is the paper's 4xA10.
    """
    gpu_spec = load_gpu(gpu)
    count = _positive_count(num_gpus, "num_gpus")
    if interconnect is not None and str(interconnect).lower() not in INTERCONNECTS:
        raise CatalogError(f"unknown interconnect {interconnect!r}; known: {', '.join(INTERCONNECTS)}")
    nodes = [load_node(n) for n in list_catalog()["nodes"]]
    templates: dict[str, NodeSpec] = {}
    for node in nodes:  # sorted by name: the first template per interconnect wins
        if node.gpu.name == gpu_spec.name:
            templates.setdefault(node.interconnect, node)
    fastest = [k for k in INTERCONNECTS if k in templates]  # a GPU's own fabric before PCIe
    link = str(interconnect).lower() if interconnect else (fastest[0] if fastest else "pcie")
    if link not in templates:
        wanted = f" with {link}" if interconnect else ""
        have = ", ".join(sorted(f"{n.gpu.name} ({n.interconnect})" for n in nodes))
        own = (" (for your own GPU, write a node YAML: `seesaw catalog --template node`)"
               if _is_path(str(gpu)) else "")
        raise CatalogError(f"no node template for GPU '{gpu_spec.name}'{wanted}; templates: {have}{own}")
    return scale_node(templates[link], count, gpu=gpu_spec)


def scale_node(template: NodeSpec, num_gpus: int, gpu: GpuSpec | None = None) -> NodeSpec:
    """``template`` with ``num_gpus`` GPUs (and ``gpu``, e.g. a user's edited copy of its GPU),
    keeping its per-GPU figures; the same node when nothing changes."""
    if num_gpus == template.num_gpus and (gpu is None or gpu == template.gpu):
        return template
    data = template.model_dump()
    if gpu is not None:
        data["gpu"] = gpu
    if num_gpus == template.num_gpus:
        return NodeSpec.model_validate({**data, "source": f"{template.source}; GPU {gpu.source or gpu.name}"})
    data.update(
        name=_NODE_COUNT.sub(f"{num_gpus}x", template.name) if _NODE_COUNT.match(template.name)
        else f"{num_gpus}x{template.name}",
        num_gpus=num_gpus,
        source=f"{template.source}; scaled from {template.name} to {num_gpus} GPUs",
    )
    return NodeSpec.model_validate(data)


def make_cluster(node: NodeSpec, num_nodes: int) -> NodeSpec:
    """``num_nodes`` identical copies of ``node`` joined by its ``network`` (``node`` itself when its
    count is already that): named ``<num_nodes>x<node>`` (``2x8xl4``). A node without a network
    section cannot be repeated: one line says so."""
    count = _positive_count(num_nodes, "num_nodes")
    if count == node.num_nodes:
        return node
    base = node.name.removeprefix(f"{node.num_nodes}x") if node.num_nodes > 1 else node.name
    if count > 1 and node.network is None:
        raise CatalogError(f"{count} nodes of {base}: the node has no inter-node link (no 'network' section); "
                           "give one in a node YAML (`seesaw catalog --template node`)")
    return NodeSpec.model_validate({**node.model_dump(), "num_nodes": count,
                                    "name": f"{count}x{base}" if count > 1 else base})


def is_node(name: str | Path) -> bool:
    """Whether ``name`` names a node (a catalog node, or a YAML file with a ``gpu:`` field) rather
    than a GPU. A file that cannot be read says so when it is loaded."""
    text = str(name).strip()
    if not _is_path(text):
        return text.lower() in _index("nodes")
    path = Path(text).expanduser()
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "gpu" in data


_TEMPLATE_FROM = {"gpu": ("gpus", "l4"), "node": ("nodes", "8xl4")}
_TEMPLATE_NOTES = {
    "name": "the name shown in reports (default: the file's stem)",
    "gpu": "a catalog GPU name (seesaw catalog), or a GPU YAML file, relative to this file",
    "num_gpus": "GPUs in the node (--num-gpus rescales it, keeping the per-GPU figures)",
    "network": "each GPU's link to other nodes (needed for --num-nodes > 1 or num_nodes > 1)",
    "source": "where the figures come from",
}


def template(kind: str) -> str:
    """A commented YAML ``GpuSpec`` (``kind="gpu"``) or ``NodeSpec`` (``"node"``) to start one's own
    hardware file from: every field with its meaning and unit, filled with the catalog's L4 figures
    (``8xl4`` for a node); optional fields are commented out at their defaults. It loads as is."""
    if kind not in _TEMPLATE_FROM:
        raise CatalogError(f"unknown template {kind!r}; known: {', '.join(_TEMPLATE_FROM)}")
    folder, example = _TEMPLATE_FROM[kind]
    data = _read_yaml(profile_path(folder, example))
    data.update(name=f"my-{kind}", source=f"my own {kind}: say where each figure comes from")
    lines = [f"# A {_LABEL[folder]} profile for seesaw (--gpu FILE): the {example} figures as an",
             "# example. Units are SI (bytes, B/s, FLOP/s, s, decimal 1e9); cite each figure's source.",
             "# Unknown fields are errors. See profiles/README.md for the schema."]
    for field, info in _SPEC[folder].model_fields.items():
        note = _TEMPLATE_NOTES.get(field) or info.description or field
        optional = not info.is_required() and field not in data
        default = info.get_default(call_default_factory=True)
        note += f" (optional; default {_yaml_value(default)})" if optional else ""
        lines += textwrap.wrap(note, 98, initial_indent="# ", subsequent_indent="# ")
        value = default if optional else data.get(field, default)
        if isinstance(value, dict) and field == "network":  # a section: each key with its meaning
            lines.append(f"{field}:")
            for key, sub in NetworkSpec.model_fields.items():
                lines += textwrap.wrap(sub.description or key, 96, initial_indent="  # ", subsequent_indent="  # ")
                lines.append(f"  {key}: {_yaml_value(value.get(key, sub.get_default()))}")
            continue
        lines.append(("# " if optional else "") + f"{field}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def _yaml_value(value: Any) -> str:
    """One YAML scalar as the profiles write it: floats as ``300.0e+9``-style numbers PyYAML reads."""
    if isinstance(value, float) and value and not 1e-3 <= abs(value) < 1e4:
        mantissa, exp = f"{value:.6e}".split("e")
        mantissa = mantissa.rstrip("0")
        return f"{mantissa}0e{exp}" if mantissa.endswith(".") else f"{mantissa}e{exp}"
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("\n...").strip()


def clear_cache() -> None:
    """Forget cached loads (after editing or adding profile files in a running process)."""
    _load_named.cache_clear()


def catalog_table() -> list[dict[str, str]]:
    """Rows ``{"kind", "name", "figures", "source"}`` for a CLI listing of every profile."""
    rows = []
    for kind in ("gpus", "nodes", "models"):
        for name in list_catalog()[kind]:
            spec = _load_named(kind, name)
            rows.append({"kind": kind, "name": name, "figures": _figures(spec), "source": spec.source})
    for name in list_catalog()["measured"]:
        try:
            spec = _load_named("measured", name)
        except CatalogError as e:  # one bad measured file should not hide the catalog
            rows.append({"kind": "measured", "name": name, "figures": "", "source": str(e)})
            continue
        rows.append({"kind": "measured", "name": name, "figures": _figures(spec),
                     "source": str(profile_path("measured", name))})
    return rows


def _figures(spec: Any) -> str:
    if isinstance(spec, MeasuredProfile):
        return (f"{spec.device_name}, {spec.dtype}, {spec.num_ranks} ranks x {spec.threads_per_rank} "
                f"threads, {spec.date[:10]}")
    if isinstance(spec, GpuSpec):
        price = f", ${spec.price_per_hour_usd:.2f}/h" if spec.price_per_hour_usd else ""
        fp8 = f" (fp8 {spec.peak_flops_fp8 / 1e12:.0f})" if spec.peak_flops_fp8 else ""
        return (f"{spec.memory_bytes / GiB:.1f} GiB, {spec.hbm_bandwidth_bytes_per_s / 1e9:.0f} GB/s, "
                f"{spec.peak_flops / 1e12:.0f} TFLOP/s{fp8}{price}")
    if isinstance(spec, NodeSpec):
        net = spec.network
        between = (f", {net.kind} {net.bandwidth_bytes_per_s * 8 / 1e9:.0f} Gb/s per GPU to other nodes"
                   if net is not None else "")
        nodes = f"{spec.num_nodes} nodes of " if spec.num_nodes > 1 else ""
        return (f"{nodes}{spec.num_gpus}x {spec.gpu.name}, {spec.interconnect} "
                f"{spec.gpu_link_bandwidth_bytes_per_s / 1e9:.1f} GB/s, host link "
                f"{spec.host_link_bandwidth_bytes_per_s / 1e9:.1f} GB/s, host "
                f"{spec.host_memory_bytes / GiB:.0f} GiB{between}")
    n = spec.num_parameters
    size = f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"
    arch = "" if spec.model_type == "llama" else f"{spec.model_type}, "
    return (f"{arch}{size} params, L={spec.num_hidden_layers} h={spec.hidden_size} "
            f"heads={spec.num_attention_heads}/{spec.num_key_value_heads}, "
            f"KV {spec.kv_bytes_per_token / 1024:g} KiB/token")


# --------------------------------------------------------------------------------------------
# The node a measured profile was taken on


def measured_node(
    profile: MeasuredProfile | str | Path, num_ranks: int | None = None, *,
    device_memory_fraction: float = 0.5, interconnect: str | None = None,
) -> NodeSpec:
    """A ``NodeSpec`` of the machine behind ``profile``, one "GPU" per rank (default: the profile's
    ``num_ranks``), for ``CostModel(model, node, measured=profile)`` and ``simulate``.

    Memory: on CPU a rank's device memory is ``device_memory_fraction`` of the RAM over the ranks
    and its host memory the rest (both live in the same RAM); on CUDA device memory is the
    measured device's and host memory ``1 - device_memory_fraction`` of the RAM over the ranks.
    Interconnect: ``loopback`` on CPU (gloo through the OS), ``pcie`` on CUDA unless given.
    The roofline figures, used only where no table applies, are read off the tables: peak FLOP/s
    = the fastest measured GEMM; memory bandwidth = the fastest weight stream of a one-row GEMM;
    efficiencies 1 (achieved figures); kernel overhead = the fastest GEMM call; GPU link = bus
    bandwidth of the largest all-reduce of the most ranks; latencies and the step overhead = the
    smallest measured sizes; host link = the largest host<->device (CPU: host->host) copy.
    """
    if not isinstance(profile, MeasuredProfile):
        profile = load_measured(profile)
    ranks = profile.num_ranks if num_ranks is None else num_ranks
    if not isinstance(ranks, int) or isinstance(ranks, bool) or ranks < 1:
        raise CatalogError(f"num_ranks must be a positive integer, got {num_ranks!r}")
    if not 0 < device_memory_fraction < 1:
        raise CatalogError(f"device_memory_fraction must be in (0, 1), got {device_memory_fraction}")
    p, B = profile, profile.dtype_bytes
    name = p.name or "measured"
    linear = [t for t in p.ops if t.op == "linear"]
    peak = max((2.0 * t.dims[0] * t.dims[1] * n / s for t in linear for n, s in zip(t.tokens, t.time_s)),
               default=1e9)
    stream = max((t.dims[0] * t.dims[1] * B / t.time_s[0] for t in linear if t.tokens[0] == 1), default=0.0)
    copies = {c.kind: c for c in p.copies}
    host = copies.get("h2d") or copies.get("d2h") or copies.get("h2h")
    host_bw = host.size_bytes[-1] / host.time_s[-1] if host else 1e9
    if not stream:  # no one-row GEMM: a host copy reads and writes each byte
        stream = 2 * copies["h2h"].size_bytes[-1] / copies["h2h"].time_s[-1] if "h2h" in copies else 1e10
    kernel_s = min((t.time_s[0] for t in linear), default=0.0)
    comm = {(c.op, c.ranks): c for c in p.collectives}
    ars = sorted((c for c in p.collectives if c.op == "all_reduce" and c.ranks > 1), key=lambda c: c.ranks)
    p2p = comm.get(("send_recv", 2))
    if ars:
        ar = ars[-1]
        t = ar.ranks
        link_bw = 2 * (t - 1) / t * ar.size_bytes[-1] / ar.time_s[-1]
        ar_latency = ars[0].time_s[0] / (2 * (ars[0].ranks - 1))
    else:
        link_bw = p2p.size_bytes[-1] / p2p.time_s[-1] if p2p else 1e9
        ar_latency = p2p.time_s[0] if p2p else 10e-6
    steps = min((s.time_s[0] for s in p.step_overhead), default=0.0)
    if p.device == "cpu":
        device_mem = p.memory_bytes * device_memory_fraction / ranks
    else:
        device_mem = p.device_memory_bytes or p.memory_bytes * device_memory_fraction / ranks
    gpu = GpuSpec(
        name=name, memory_bytes=device_mem, hbm_bandwidth_bytes_per_s=stream, peak_flops=peak,
        compute_efficiency=1.0, memory_efficiency=1.0, compute_saturation_tokens=0.0,
        kernel_overhead_s=kernel_s,
        # attention outside the measured tables: the measured rates, no fitted GPU curve
        attention_compute_efficiency=1.0, attention_saturation_keys=0.0,
        decode_attention_memory_efficiency=1.0, decode_attention_floor_s=kernel_s,
        elementwise_memory_efficiency=1.0, source=f"measured profile {name}: {p.device_name}, {p.date}",
    )
    return NodeSpec(
        name=f"{ranks}x{name}", gpu=gpu, num_gpus=ranks,
        interconnect=interconnect or ("loopback" if p.device == "cpu" else "pcie"),
        gpu_link_bandwidth_bytes_per_s=link_bw, host_link_bandwidth_bytes_per_s=host_bw,
        host_memory_bytes_per_gpu=p.memory_bytes * (1 - device_memory_fraction) / ranks,
        allreduce_latency_s=ar_latency, p2p_latency_s=p2p.time_s[0] if p2p else ar_latency,
        step_overhead_s=steps, source=gpu.source,
    )
