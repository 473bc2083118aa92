"""The simulator's use cases: simulate one layout and policy, compare every candidate, plan.

Each function takes the CLI's option names (``model``, ``gpu``, ``num_gpus``, ``workload``,
``num_requests``, ``layout``, ...), resolves them against the catalog and the workload loaders, runs
the simulator or the planner and returns a ``Simulated`` / ``Planned`` with the resolved config
(what ``config.yaml`` / ``summary.json`` record). Nothing is printed; ``progress`` callbacks are
passed through to the simulator and the planner.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from seesaw.core import (
    SIMULATE_SAMPLE_SIZE, GiB, ModelSpec, NodeSpec, Precision, SeesawPolicy, SpecError, VllmPolicy, parse_layout,
)

__all__ = ["Simulated", "Planned", "default_layout", "resolve_node", "resolve_hardware", "measured_profile", "build_policy", "load_inputs", "simulate", "compare", "plan",
           "OBJECTIVES", "check_counts", "hardware_option", "resolve_precision", "search_precisions"]

OBJECTIVES = ("throughput", "cost")


@dataclass
class Simulated:
    """One simulation: its result (``simulator.sim.SimResult``) and the resolved config."""

    result: Any
    config: dict
    model: ModelSpec
    node: NodeSpec
    policy: VllmPolicy | SeesawPolicy
    num_requests: int
    sampled: Any = None  # simulator.extrapolate.Sampled: what was simulated of the whole
    convergence: Any = None  # simulator.extrapolate.Convergence: the growing samples and the estimated error
    notes: list[str] = field(default_factory=list)  # one-line warnings (sampled, requests over the context)


@dataclass
class Planned:
    """A compare or plan search: the planner's result (``simulator.planner.PlanResult``) and config."""

    result: Any
    config: dict
    model: ModelSpec
    node: NodeSpec
    num_requests: int


def measured_profile(gpu: str):
    """The measured profile ``gpu`` names (a catalog name such as ``cpu-2core``, or a profile
    YAML written by ``seesaw profile``), or None when it names a GPU or a node."""
    from seesaw import catalog as cat

    if gpu in cat.list_catalog()["measured"]:
        return cat.load_measured(gpu)
    path = Path(gpu)
    if path.suffix in (".yaml", ".yml") and path.is_file() and "device_name:" in path.read_text():
        return cat.load_measured(path)
    return None


def resolve_hardware(gpu: str, num_gpus: int | None = None, interconnect: str | None = None,
                     model: ModelSpec | None = None, num_nodes: int | None = None):
    """(node, measured profile or None, model): a GPU or node name, or a measured machine.

    A measured profile (``--gpu cpu-2core``) is planned like a GPU node: its node has one "GPU" per
    rank (``num_gpus``, default the profile's ranks), the cost model reads its tables, and the
    model is costed in the profile's dtype."""
    from seesaw import catalog as cat

    prof = measured_profile(gpu)
    if prof is None:
        return resolve_node(gpu, num_gpus, interconnect, num_nodes), None, model
    node = cat.measured_node(prof, num_gpus, interconnect=interconnect)
    if num_nodes is not None:
        node = cat.make_cluster(node, num_nodes)
    if model is not None:
        model = model.model_copy(update={"dtype_bytes": prof.dtype_bytes})
    return node, prof, model


def hardware_option(gpu: str | None = None, node: str | None = None, default: str | None = "l4",
                    many: bool = False) -> str | None:
    """The one hardware name of ``--gpu`` (a GPU, node or measured profile: name or YAML) and
    ``--node`` (a node template name or node YAML; ``many``: comma-separated); both given, or a
    ``--node`` that names no node, is a one-line error."""
    if gpu is not None and node is not None:
        raise SpecError(f"--gpu {gpu} and --node {node}: give one of them (--node names a whole node)")
    if node is None:
        return default if gpu is None else gpu
    from seesaw import catalog as cat

    for name in (node.split(",") if many else [node]):
        if not cat.is_node(name.strip()):
            known = ", ".join(cat.list_catalog()["nodes"])
            raise SpecError(f"--node {name.strip()!r}: not a node template or node YAML (a file with a gpu: "
                            f"field); known: {known}; a GPU name goes to --gpu")
    return node


def resolve_precision(model: ModelSpec, node: NodeSpec, measured=None, dtype: str | None = None,
                      kv_cache_dtype: str | None = None) -> tuple[ModelSpec, str]:
    """(``model`` costed in the precision asked for, its label). ``dtype`` bf16 | fp16 | fp8;
    ``kv_cache_dtype`` auto (the activations' 16-bit type) | fp8; neither given: the model's own
    bytes (a catalog model's are bf16). FP8 weights on a GPU without FP8 tensor cores: one line
    naming the GPU and what it supports. A measured profile is costed in the dtype it was
    measured in: giving either there is an error."""
    if measured is not None and (dtype is not None or kv_cache_dtype is not None):
        raise SpecError(f"--dtype/--kv-cache-dtype: the measured profile {measured.name or measured.device_name!r} "
                        f"is costed in the dtype it was measured in ({measured.dtype}); leave them out")
    if dtype is None and kv_cache_dtype is None:
        return model, model.dtype_label
    if str(dtype).lower() == "auto":
        raise SpecError("--dtype auto searches precisions: it applies to plan, compare and whatif")
    p = Precision.parse(dtype, kv_cache_dtype)
    node.gpu.gemm_peak_flops(p.dtype == "fp8")
    return p.apply(model), p.label


def search_precisions(model: ModelSpec, node: NodeSpec, requests, measured=None, dtype: str | None = None,
                      kv_cache_dtype: str | None = None, **options):
    """(``simulator.planner`` result, precision label): the planner over the precision given (none:
    the model's own), or over every one the GPU runs with ``dtype="auto"``
    (``simulator.planner.precision``)."""
    from simulator.planner import plan_precisions, precisions_to_search

    if measured is not None or (dtype is None and kv_cache_dtype is None):
        model, label = resolve_precision(model, node, measured, dtype, kv_cache_dtype)
        return plan_precisions(model, node, requests, [None], measured=measured, **options), label
    precisions = precisions_to_search(node.gpu, dtype, kv_cache_dtype)
    label = precisions[0].label if len(precisions) == 1 else "auto: " + ", ".join(p.label for p in precisions)
    return plan_precisions(model, node, requests, precisions, **options), label


_COUNT_X = re.compile(r"^(\d+)x(.+)$")


def resolve_node(gpu: str, num_gpus: int | None = None, interconnect: str | None = None,
                 num_nodes: int | None = None) -> NodeSpec:
    """A node (catalog name ``8xl4`` or node/cluster YAML file; ``num_gpus`` rescales it), a GPU
    (catalog name or GPU YAML file) plus a count (default 8) on its catalog node template, or an
    entry with its counts: ``8xa100-80g`` (8 GPUs of a catalog GPU; ``num_gpus`` still wins) or
    ``2x8xl4`` (2 nodes). ``num_nodes`` makes a cluster of that many nodes (``num_gpus`` per node;
    the node needs a ``network`` section)."""
    from seesaw import catalog as cat

    node = _node(str(gpu), num_gpus, interconnect)
    return node if num_nodes is None else cat.make_cluster(node, num_nodes)


def _node(gpu: str, num_gpus: int | None, interconnect: str | None) -> NodeSpec:
    from seesaw import catalog as cat

    entry = _COUNT_X.match(gpu.strip().lower())
    if entry and not cat.is_node(gpu) and not Path(gpu).suffix and gpu.strip().lower() not in cat.list_catalog()["gpus"]:
        count, rest = int(entry[1]), entry[2]
        if cat.is_node(rest) or (_COUNT_X.match(rest) and rest not in cat.list_catalog()["gpus"]):
            return cat.make_cluster(_node(rest, num_gpus, interconnect), count)  # 2x8xl4: nodes
        return _node(rest, num_gpus or count, interconnect)  # 8xa100-80g: GPUs
    if cat.is_node(gpu):
        node = cat.load_node(gpu)
        if interconnect is not None and interconnect.lower() != node.interconnect:
            raise SpecError(f"--interconnect {interconnect}: node {node.name} is {node.interconnect}; "
                            "give a GPU name to choose the interconnect")
        return node if num_gpus is None else cat.scale_node(node, num_gpus)
    return cat.make_node(gpu, num_gpus or 8, interconnect)


def default_layout(num_gpus: int, num_nodes: int = 1) -> str:
    """The layout ``simulate`` uses when none is given: TP over up to 4 GPUs, PP over the rest of a
    node (``T4P2`` on 8 GPUs, ``T4`` on 4, ``T2P3`` on 6), one DP replica per node (``D2T4P2`` on 2
    nodes of 8)."""
    tp = next(t for t in (4, 2, 1) if num_gpus % t == 0)
    pp = num_gpus // tp
    return (f"D{num_nodes}" if num_nodes > 1 else "") + f"T{tp}" + (f"P{pp}" if pp > 1 else "")


def build_policy(layout: str, *, chunked_prefill: bool = False, chunk_size: int | None = None,
                 max_num_seqs: int | None = None, host_kv_gib: float | None = None, watermark: float = 1.0,
                 max_num_batched_tokens: int | None = None) -> VllmPolicy | SeesawPolicy:
    """The policy a layout string names: static -> vllm, ``P8->T4P2`` -> seesaw."""
    from pydantic import ValidationError

    try:
        return _policy(parse_layout(layout), chunked_prefill, chunk_size, max_num_seqs, host_kv_gib, watermark,
                       max_num_batched_tokens)
    except ValidationError as e:  # an out-of-range knob given through the API: one line
        err = e.errors()[0]
        raise SpecError(f"{e.title}: {'.'.join(map(str, err['loc'])) or 'value'}: {err['msg']}") from None


def _policy(configs, chunked_prefill, chunk_size, max_num_seqs, host_kv_gib, watermark, max_num_batched_tokens):
    budget = chunk_size or max_num_batched_tokens
    common: dict = {} if max_num_seqs is None else {"max_num_seqs": max_num_seqs}
    if budget:
        common["max_num_batched_tokens"] = budget
    if len(configs) == 1:
        if host_kv_gib is not None:
            raise SpecError("--host-kv-gib applies only to a Seesaw layout such as P8->T4P2")
        return VllmPolicy(layout=configs[0], enable_chunked_prefill=chunked_prefill, **common)
    if chunked_prefill:
        raise SpecError("--chunked-prefill applies only to a static layout")
    host = None if host_kv_gib is None else host_kv_gib * GiB
    return SeesawPolicy(prefill_layout=configs[0], decode_layout=configs[1], host_kv_bytes=host,
                        host_full_watermark=watermark, **common)


def resolve_model(model) -> ModelSpec:
    """A ``ModelSpec`` as given, or the catalog model (or YAML file, or HF directory) it names."""
    from seesaw import catalog as cat

    return model if isinstance(model, ModelSpec) else cat.load_model(model)


def resolve_requests(workload: str, num_requests: int | None = None, seed: int = 0, input_len: int | None = None,
                     output_len: int | None = None, requests=None, sample_size: int | None = None):
    """The requests given, or the workload (a file or a built-in generator); one too large to
    build is loaded as a ``sample_size`` sample that ``represents`` it (``load_workload``)."""
    from seesaw.workload import load_workload

    if requests is not None:
        return requests
    return load_workload(workload, num_requests=num_requests, seed=seed, input_len=input_len, output_len=output_len,
                         sample_size=sample_size)


def load_inputs(model, workload: str, num_requests: int | None = None, seed: int = 0,
                input_len: int | None = None, output_len: int | None = None, requests=None,
                sample_size: int | None = None):
    """(model spec, requests): a catalog model (or a spec) and a workload sample (or the requests given)."""
    return resolve_model(model), resolve_requests(workload, num_requests, seed, input_len, output_len, requests,
                                                  sample_size)


def check_counts(**counts) -> None:
    """Each given count (``num_gpus``, ``sample_size``, ``workers``, ...) is None or an integer >= 1."""
    for name, value in counts.items():
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise SpecError(f"{name} must be a positive integer, got {value!r}")


def _hardware(gpu: str, num_gpus, interconnect, model_spec: ModelSpec, node: NodeSpec | None, measured,
              num_nodes: int | None = None):
    """``resolve_hardware``, unless a node (and optionally its measured profile) is given."""
    check_counts(num_nodes=num_nodes)
    if node is None:
        return resolve_hardware(gpu, num_gpus, interconnect, model_spec, num_nodes)
    if num_nodes is not None:
        from seesaw import catalog as cat

        node = cat.make_cluster(node, num_nodes)
    return node, measured, model_spec


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise SpecError(f"unknown objective {objective!r}; known: throughput, cost")


def simulate(model: str = "llama2-70b", gpu: str = "l4", num_gpus: int | None = None, interconnect: str | None = None,
             workload: str = "sharegpt", num_requests: int | None = None, input_len: int | None = None,
             output_len: int | None = None, seed: int = 0, layout: str | None = None, chunked_prefill: bool = False,
             chunk_size: int | None = None, max_num_seqs: int | None = None, host_kv_gib: float | None = None,
             progress: Callable | None = None, *, sample_size: int | None = SIMULATE_SAMPLE_SIZE,
             node: NodeSpec | None = None, policy=None, requests=None, cost=None, measured=None,
             num_nodes: int | None = None, dtype: str | None = None, kv_cache_dtype: str | None = None) -> Simulated:
    """Simulate ``workload`` on a node under one layout and policy.

    Research use: ``model`` may be a ``ModelSpec``, ``node`` a ``NodeSpec`` (instead of ``gpu``,
    ``num_gpus``, ``interconnect``), ``policy`` a ``VllmPolicy``/``SeesawPolicy`` (instead of
    ``layout`` and its knobs; None: ``default_layout`` of the node), ``requests`` a list (instead
    of ``workload``), ``cost`` a
    ``CostModel`` or ``measured`` a profile of ``node``. ``dtype``/``kv_cache_dtype``: the precision
    (``resolve_precision``; default bf16 weights and KV).
    A workload of more than ``sample_size`` requests (None: no limit) is simulated on growing
    nested samples of a seeded sample of that size until the throughput estimate converges, and
    the result extrapolated to the whole with its estimated error (``simulator.extrapolate.converge``:
    ``result.summary()["sampling"]``, ``Simulated.convergence``).
    ``progress(done, total)`` is called as requests finish."""
    from simulator.extrapolate import converge, growing_sizes, sample_workload
    from simulator.sim import over_context_note
    from simulator.sim import simulate as run_sim

    check_counts(num_gpus=num_gpus, sample_size=sample_size)
    model_spec = resolve_model(model)  # checked in the CLI's order: model, node, policy, workload
    node, measured, model_spec = _hardware(gpu, num_gpus, interconnect, model_spec, node, measured, num_nodes)
    model_spec, precision = resolve_precision(model_spec, node, measured, dtype, kv_cache_dtype)
    if policy is None:
        policy = build_policy(layout or default_layout(node.num_gpus, node.num_nodes), chunked_prefill=chunked_prefill,
                              chunk_size=chunk_size, max_num_seqs=max_num_seqs, host_kv_gib=host_kv_gib)
    reqs = resolve_requests(workload, num_requests, seed, input_len, output_len, requests, sample_size)
    sampled = sample_workload(reqs, sample_size, seed)
    if cost is None and measured is not None:
        from simulator.cost import CostModel

        cost = CostModel(model_spec, node, measured=measured)
    sizes = growing_sizes(len(sampled.requests)) if sampled.extrapolated else [len(sampled.requests)]
    ticks = _Ticks(progress, sum(sizes))
    result, conv = converge(lambda reqs: ticks.run(run_sim, model_spec, node, policy, reqs, cost=cost), sampled, seed)
    config = {
        "command": "simulate", "model": model_spec.model_dump(), "node": node.model_dump(),
        "policy": policy.model_dump(), "workload": workload, "num_requests": sampled.num_requests, "seed": seed,
        "input_len": input_len, "output_len": output_len, "dtype": precision,
    }
    if sampled.extrapolated:
        config["simulated_requests"] = conv.sizes[-1]
    notes = [] if not sampled.extrapolated else [sampled.note()] if len(conv.sizes) == 1 else [
        conv.note(sampled.num_requests)]
    notes += [n for n in (over_context_note(model_spec, sampled.requests),) if n]
    return Simulated(result=result, config=config, model=model_spec, node=node, policy=policy,
                     num_requests=sampled.num_requests, sampled=sampled, convergence=conv, notes=notes)


class _Ticks:
    """One progress bar over the growing samples: ``progress(done, total)`` summed over the runs
    (``total``: every size; the bar ends early when the estimate converges early)."""

    def __init__(self, progress: Callable | None, total: int):
        self.progress, self.total, self.base = progress, total, 0

    def run(self, run_sim, *args, **kw):
        tick = None if self.progress is None else (lambda done, _t: self.progress(self.base + done, self.total))
        result = run_sim(*args, progress=tick, **kw)
        self.base += result.num_requests
        return result


def compare(model: str = "llama2-70b", gpu: str = "l4", num_gpus: int | None = None, interconnect: str | None = None,
            workload: str = "sharegpt", num_requests: int | None = None, input_len: int | None = None,
            output_len: int | None = None, seed: int = 0, sample_size: int = 2000, workers: int | None = None,
            progress: Callable | None = None, *, node: NodeSpec | None = None, requests=None, measured=None,
            num_nodes: int | None = None, dtype: str | None = None, kv_cache_dtype: str | None = None,
            **search_options) -> Planned:
    """Simulate every feasible static layout (chunked prefill on and off) and every Seesaw pair.

    ``node``, ``requests``, ``measured``, ``dtype`` and ``kv_cache_dtype`` as in ``simulate``
    (``dtype="auto"``: every precision the GPU runs, ``search_precisions``); other keywords go to
    ``simulator.planner.plan`` (``space``, ...)."""
    from simulator.planner import COMPARE_SPACE

    check_counts(num_gpus=num_gpus, sample_size=sample_size, workers=workers)
    model_spec, reqs = load_inputs(model, workload, num_requests, seed, input_len, output_len, requests, sample_size)
    node, measured, model_spec = _hardware(gpu, num_gpus, interconnect, model_spec, node, measured, num_nodes)
    search_options.setdefault("space", COMPARE_SPACE)
    result, precision = search_precisions(
        model_spec, node, reqs, measured, dtype, kv_cache_dtype, exhaustive=True, sample_size=sample_size, seed=seed,
        workers=workers, workload_name=getattr(reqs, "name", workload), progress=progress, **search_options)
    config = {"command": "compare", "model": model_spec.name, "node": node.name, "workload": workload,
              "num_requests": result.num_requests, "seed": seed, "sample_size": sample_size, "dtype": precision}
    return Planned(result=result, config=config, model=model_spec, node=node, num_requests=result.num_requests)


def plan(model: str = "llama2-70b", gpu: str = "l4", num_gpus: int | None = None, interconnect: str | None = None,
         workload: str = "sharegpt", num_requests: int | None = None, input_len: int | None = None,
         output_len: int | None = None, seed: int = 0, objective: str = "throughput",
         price_per_gpu_hour: float | None = None, sample_size: int = 2000, exhaustive: bool = False,
         workers: int | None = None, progress: Callable | None = None, *, node: NodeSpec | None = None,
         requests=None, measured=None, num_nodes: int | None = None, dtype: str | None = None,
         kv_cache_dtype: str | None = None, executor=None, dask: str | None = None, **search_options) -> Planned:
    """Search layouts, policies and host-pool settings for the best plan (``result.plan``).

    ``node``, ``requests``, ``measured``, ``dtype`` and ``kv_cache_dtype`` as in ``compare`` (the
    given precision is kept; ``dtype="auto"`` searches); other keywords go to
    ``simulator.planner.plan`` (``space``, ``screen``, ``refine``, ...). Simulations run on
    ``executor`` or the Dask scheduler at ``dask`` (``seesaw.app.executors``), else in ``workers``
    local processes (None: one per core)."""
    from seesaw.app.executors import simulation_executor

    check_objective(objective)
    check_counts(num_gpus=num_gpus, sample_size=sample_size, workers=workers)
    from simulator.extrapolate import converge_pool_size

    model_spec, reqs = load_inputs(model, workload, num_requests, seed, input_len, output_len, requests,
                                   converge_pool_size(sample_size))   # the contenders converge on this many
    node, measured, model_spec = _hardware(gpu, num_gpus, interconnect, model_spec, node, measured, num_nodes)
    with simulation_executor(executor, dask) as ex:
        result, precision = search_precisions(
            model_spec, node, reqs, measured, dtype, kv_cache_dtype, objective=objective,
            price_per_gpu_hour=price_per_gpu_hour, exhaustive=exhaustive, sample_size=sample_size, seed=seed,
            workers=workers, workload_name=getattr(reqs, "name", workload), progress=progress, executor=ex,
            **search_options)
    config = {"command": "plan", "model": model_spec.name, "node": node.name, "workload": workload,
              "num_requests": result.num_requests, "seed": seed, "objective": objective,
              "price_per_gpu_hour": price_per_gpu_hour, "sample_size": sample_size, "exhaustive": exhaustive,
              "dtype": precision}
    return Planned(result=result, config=config, model=model_spec, node=node, num_requests=result.num_requests)
