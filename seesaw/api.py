"""The public Python API: what the ``seesaw`` command does, callable from a script or a notebook.

Keyword names follow the CLI's options (``model``, ``gpu``, ``num_gpus``, ``workload``,
``num_requests``, ``layout``, ...) and the defaults are the CLI's. Every function returns a typed
result and prints nothing; bad input raises ``seesaw.SpecError`` with a one-line message. Heavy
modules (the simulator, pandas, torch) load on first use, so ``import seesaw`` stays cheap.

    import seesaw
    sim = seesaw.simulate(model="llama2-70b", gpu="l4", num_gpus=8, layout="P8->T4P2", num_requests=500)
    print(sim.to_run_result().throughput_line())
    best = seesaw.plan(model="llama2-13b", gpu="a100-40g", num_gpus=4, num_requests=500).plan
    run = seesaw.run_batch(model="tiny", input="constant", num_requests=8, layout="P2->T2")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from seesaw.core import SIMULATE_SAMPLE_SIZE, WHATIF_GPUS, WHATIF_MODEL, WHATIF_NUM_GPUS

__all__ = ["simulate", "compare", "plan", "whatif", "run_batch", "calibrate", "load_workload", "describe_workload",
           "load_model", "load_gpu", "load_node", "load_measured", "make_node", "list_catalog", "default_host_kv_bytes"]


def simulate(model: str = "llama2-70b", gpu: str = "l4", num_gpus: int | None = None, *,
             num_nodes: int | None = None, interconnect: str | None = None, workload: str = "sharegpt", num_requests: int | None = None,
             input_len: int | None = None, output_len: int | None = None, seed: int = 0, layout: str | None = None,
             chunked_prefill: bool = False, chunk_size: int | None = None, max_num_seqs: int | None = None,
             host_kv_gib: float | None = None, output_dir: str | Path | None = None,
             progress: Callable | None = None, node=None, policy=None, requests=None, cost=None, measured=None,
             overwrite: bool = False, sample_size: int | None = SIMULATE_SAMPLE_SIZE, dtype: str | None = None,
             kv_cache_dtype: str | None = None):
    """Simulate a workload on a node under one layout (``T4P2``) or Seesaw pair (``P8->T4P2``).

    ``dtype``: ``bf16`` (default), ``fp16`` or ``fp8`` (FP8 weights and GEMMs); ``kv_cache_dtype``:
    ``auto`` (16-bit) or ``fp8``. FP8 weights on a GPU without FP8 tensor cores raise ``SpecError``.

    Returns the ``SimResult`` (``to_run_result().throughput_line()``, ``summary()``,
    ``tokens_per_second``, ``time_by_phase``, the step timeline); with ``output_dir`` also writes
    the run folder as ``seesaw simulate -o`` (a folder that holds a run only with ``overwrite``).
    ``num_nodes``: that many nodes (a cluster; the node needs a ``network`` section), one DP
    replica per node by default. For research, any input may be given as an object instead of a name: ``model`` a ``ModelSpec``,
    ``node`` a ``NodeSpec``, ``policy`` a ``VllmPolicy``/``SeesawPolicy``, ``requests`` a list,
    ``cost`` a ``CostModel`` (or ``measured`` a ``MeasuredProfile`` of ``node``). More than
    ``sample_size`` requests (None: no limit) are simulated on a seeded sample and the result
    extrapolated to all of them, as ``plan`` does (``summary()["extrapolated_from"]`` is then the
    sample size)."""
    from seesaw.app.simulate import simulate as run
    from seesaw.report.claim import check_folder, start_folder

    if output_dir is not None:
        check_folder(output_dir, overwrite=overwrite)
    done = run(model=model, gpu=gpu, num_gpus=num_gpus, interconnect=interconnect, workload=workload,
               num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed, layout=layout,
               chunked_prefill=chunked_prefill, chunk_size=chunk_size, max_num_seqs=max_num_seqs,
               host_kv_gib=host_kv_gib, progress=progress, node=node, policy=policy, requests=requests,
               cost=cost, measured=measured, sample_size=sample_size, num_nodes=num_nodes, dtype=dtype,
               kv_cache_dtype=kv_cache_dtype)
    if output_dir is not None:
        from seesaw.report import write_sim_folder

        write_sim_folder(start_folder(output_dir, "simulate", overwrite=overwrite), done.config, done.result)
    return done.result


def compare(model: str = "llama2-70b", gpu: str = "l4", num_gpus: int | None = None, *,
            num_nodes: int | None = None, interconnect: str | None = None, workload: str = "sharegpt", num_requests: int | None = None,
            input_len: int | None = None, output_len: int | None = None, seed: int = 0, sample_size: int = 2000,
            workers: int | None = None, progress: Callable | None = None, node=None, requests=None, measured=None,
            dtype: str | None = None, kv_cache_dtype: str | None = None, **search_options):
    """Every feasible static layout and Seesaw pair, simulated and ranked: a ``PlanResult``
    (``table``, ``winner``, ``best_vllm``, ``rejected``, ``summary()``). ``node``, ``requests``,
    ``measured``, ``dtype``, ``kv_cache_dtype`` as in ``simulate`` (``dtype="auto"``: every precision
    the GPU runs); other keywords go to the planner (``space``, ...)."""
    from seesaw.app.simulate import compare as run

    return run(model=model, gpu=gpu, num_gpus=num_gpus, interconnect=interconnect, workload=workload,
               num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
               sample_size=sample_size, workers=workers, progress=progress, node=node, requests=requests,
               measured=measured, num_nodes=num_nodes, dtype=dtype, kv_cache_dtype=kv_cache_dtype,
               **search_options).result


def plan(model: str = "llama2-70b", gpu: str = "l4", num_gpus: int | None = None, *,
         num_nodes: int | None = None, interconnect: str | None = None, workload: str = "sharegpt", num_requests: int | None = None,
         input_len: int | None = None, output_len: int | None = None, seed: int = 0, objective: str = "throughput",
         price_per_gpu_hour: float | None = None, sample_size: int = 2000, exhaustive: bool = False,
         workers: int | None = None, progress: Callable | None = None, node=None, requests=None, measured=None,
         dtype: str | None = None, kv_cache_dtype: str | None = None, executor=None, dask: str | None = None,
         **search_options):
    """The searched best plan: a ``PlanResult`` whose ``plan`` is the winning ``Plan`` (None when
    nothing fits; ``rejected`` says why) and whose ``table`` ranks every candidate. ``gpu`` may
    name a measured machine (``cpu-2core``). ``node``, ``requests``, ``measured``, ``dtype``,
    ``kv_cache_dtype`` as in ``simulate``: the precision given is kept, ``dtype="auto"`` searches
    the ones the GPU runs; other keywords go to the planner (``space``, ``screen``, ``refine``, ...).
    Simulations run in ``workers`` local processes (None: one per core), on ``executor`` (any
    ``concurrent.futures.Executor``) or on the Dask scheduler at ``dask`` (``seesaw[dask]``)."""
    from seesaw.app.simulate import plan as run

    return run(model=model, gpu=gpu, num_gpus=num_gpus, interconnect=interconnect, workload=workload,
               num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
               objective=objective, price_per_gpu_hour=price_per_gpu_hour, sample_size=sample_size,
               exhaustive=exhaustive, workers=workers, progress=progress, node=node, requests=requests,
               measured=measured, num_nodes=num_nodes, dtype=dtype, kv_cache_dtype=kv_cache_dtype,
               executor=executor, dask=dask, **search_options).result


def whatif(model: str = WHATIF_MODEL, gpu: str | Sequence[str] = WHATIF_GPUS,
           num_gpus: str | Sequence[int] = WHATIF_NUM_GPUS, *, num_nodes: str | Sequence[int] | None = None,
           interconnect: str | None = None, workload: str = "sharegpt",
           num_requests: int | None = 1_000_000, input_len: int | None = None, output_len: int | None = None,
           seed: int = 0, objective: str = "throughput", price_per_gpu_hour: str | float | None = None,
           sample_size: int = 1000, workers: int | None = None, output_dir: str | Path | None = None,
           progress: Callable | None = None, overwrite: bool = False, dtype: str | None = None,
           kv_cache_dtype: str | None = None, executor=None, dask: str | None = None):
    """Hardware options for one model and workload, each planned: a ``WhatIfResult`` (``table()``,
    ``options``, ``summary()``); with ``output_dir`` also the report folder (md, html, csv, png).
    ``num_nodes`` (counts, like ``num_gpus``) makes clusters of each option; an entry of ``gpu``
    may carry its own counts (``8xa100-80g``, ``2x8xl4``). ``dtype``/``kv_cache_dtype`` as in
    ``plan`` (an option whose GPU lacks FP8 is infeasible). ``workers``, ``executor``, ``dask``:
    where the simulations run, as in ``plan``."""
    from seesaw.app.whatif import whatif as run

    return run(model=model, gpu=gpu, num_gpus=num_gpus, num_nodes=num_nodes, interconnect=interconnect,
               workload=workload, num_requests=num_requests, input_len=input_len, output_len=output_len, seed=seed,
               objective=objective, price_per_gpu_hour=price_per_gpu_hour, sample_size=sample_size,
               workers=workers, output_dir=output_dir, overwrite=overwrite, progress=progress, dtype=dtype,
               kv_cache_dtype=kv_cache_dtype, executor=executor, dask=dask).result


def run_batch(model: str | None = None, input: str | None = None, output: str | Path | None = None, *,
              layout: str | None = None, plan: str | Path | None = None, auto: bool = False,
              events: Any = None, **options):
    """The real engine: spawn the ranks as ``seesaw run`` does, run the batch, return a ``BatchRun``
    (``result`` with the vLLM-style figures, ``output`` file, ``plan`` and ``comparison`` when
    planned). Other keywords are ``seesaw run``'s options (``num_requests``, ``input_len``,
    ``output_len``, ``max_tokens``, ``host_kv_gib``, ``device``, ``output_dir``, ...). Raises
    ``SpecError`` for bad input, ``RunFailed`` when the run fails once started, and
    ``RunInterrupted`` on Ctrl-C or SIGTERM (the ranks stopped; ``saved`` of ``total`` requests in
    ``output``; ``resume=True`` continues)."""
    from seesaw.app.run import RunOptions, run

    for key in ("output_dir", "step_trace"):
        if options.get(key) is not None:
            options[key] = Path(options[key])
    opts = RunOptions(model=model, input=input, output=None if output is None else Path(output), layout=layout,
                      plan_file=None if plan is None else Path(plan), auto=auto, **options)
    return run(opts, events)


def calibrate(model: str = "tiny", layouts: str | Sequence[str] = "T2,P2,P2->T2",
              workload: str = "constant:256/8,constant:16/128", *, profile: str = "cpu-2core",
              output_dir: str | Path | None = None, **options):
    """Engine against simulator for each (layout, workload) pair: a list of ``Row`` (measured and
    predicted tokens/s, ``rel_error``). Other keywords are ``seesaw calibrate``'s options."""
    from seesaw.app.calibrate import calibrate as run
    from seesaw.app.calibrate import parse_workloads

    if isinstance(layouts, str):
        layouts = layouts.split(",")
    return run(model, list(layouts), parse_workloads(workload), profile=profile,
               output_dir=None if output_dir is None else Path(output_dir), **options)


def load_workload(workload: str = "sharegpt", num_requests: int | None = None, *, seed: int = 0,
                  input_len: int | None = None, output_len: int | None = None):
    """Requests from a file or a built-in generator (``sharegpt``, ``arxiv``, ``constant``, ``uniform``)."""
    from seesaw.workload import load_workload as load

    return load(workload, num_requests=num_requests, seed=seed, input_len=input_len, output_len=output_len)


def describe_workload(requests) -> dict:
    """Count, length percentiles and prefill:decode ratio of a list of requests."""
    from seesaw.workload import describe

    return describe(requests)


def load_model(name: str | Path):
    """A ``ModelSpec``: a catalog name, a YAML file or a HF model directory."""
    from seesaw.catalog import load_model as load

    return load(name)


def load_gpu(name: str | Path):
    """A ``GpuSpec`` from the catalog (or a YAML file)."""
    from seesaw.catalog import load_gpu as load

    return load(name)


def load_node(name: str | Path):
    """A ``NodeSpec`` from the catalog (``8xl4``) or a YAML file."""
    from seesaw.catalog import load_node as load

    return load(name)


def make_node(gpu: str, num_gpus: int = 8, interconnect: str | None = None):
    """A node of ``num_gpus`` catalog GPUs on the GPU's usual (or the given) interconnect."""
    from seesaw.catalog import make_node as make

    return make(gpu, num_gpus, interconnect)


def load_measured(name: str | Path):
    """A ``MeasuredProfile`` (``profiles/measured/NAME.yaml`` or a file) written by ``seesaw profile``."""
    from seesaw.catalog import load_measured as load

    return load(name)


def list_catalog() -> dict[str, list[str]]:
    """The built-in names by kind (gpus, nodes, models, measured)."""
    from seesaw.catalog import list_catalog as names

    return names()


def default_host_kv_bytes(model, node, fraction: float = 0.8) -> float:
    """The host KV pool a ``SeesawPolicy`` gets when ``host_kv_bytes`` is None: ``fraction`` of the
    node's host memory minus the host copy of the weights (bytes, whole node, never negative)."""
    from simulator.sim import default_host_kv_bytes as default

    return default(model, node, fraction)
