"""Run folders: every command writes what it was asked and what came out, in one way.

``write_run_folder`` is the one writer: ``config.yaml`` (the fully resolved inputs, when the
command has them apart from its summary), ``summary.json`` (the metrics, JSON of
``json_text``), then the command's own files in the order given. Written explicitly at the end
of the work, never from ``atexit``; every file written is recorded in the folder's marker
(``seesaw.report.claim``: one run, one folder); ``summary.json`` goes before the slower files (plots), so a
plot that fails leaves the numbers behind.

The folders of the simple commands are here too: ``seesaw simulate`` (``write_sim_folder``:
``requests.csv``, ``steps.csv``, and ``timeline.png`` for a Seesaw run) and ``seesaw plan`` /
``seesaw compare`` (``write_plan_folder``: ``plan.json``, ``candidates.csv``, the config inside
``summary.json``). Results are duck-typed (a ``simulator.sim`` result, a
``simulator.planner.PlanResult``): this layer imports neither the simulator nor the use cases.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Mapping, Union

import yaml

from seesaw.report.claim import record_files
from seesaw.report.plots import plot_timeline

__all__ = ["write_run_folder", "json_text", "write_sim_folder", "write_plan_folder", "FileContent"]

# a file's content: text, bytes, a table (anything with ``to_csv``, a DataFrame: written without
# its index), or a function that writes the file at the path it is given (a plot)
FileContent = Union[str, bytes, Callable[[Path], object]]


def json_text(obj) -> str:
    """The JSON of every ``summary.json``: indented, one trailing newline, odd values as str."""
    return json.dumps(obj, indent=2, default=str) + "\n"


def write_run_folder(out_dir: Path, summary: dict, *, config: dict | None = None,
                     files: Mapping[str, FileContent] | None = None) -> list[Path]:
    """Write ``config.yaml`` (when ``config`` is given), ``summary.json``, then ``files`` (name ->
    content) into ``out_dir`` (created); the paths written, in that order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # the folder's marker lists this run's files (seesaw.report.claim), recorded before they are written
    record_files(out_dir, [out_dir / n for n in ("config.yaml", "summary.json", *(files or {}))
                           if n != "config.yaml" or config is not None])
    paths = []
    if config is not None:
        paths.append(out_dir / "config.yaml")
        paths[-1].write_text(yaml.safe_dump(config, sort_keys=False))
    paths.append(out_dir / "summary.json")
    paths[-1].write_text(json_text(summary))
    for name, content in (files or {}).items():
        path = out_dir / name
        if isinstance(content, str):
            path.write_text(content)
        elif isinstance(content, bytes):
            path.write_bytes(content)
        elif hasattr(content, "to_csv"):
            content.to_csv(path, index=False)
        elif callable(content):
            content(path)
        else:
            raise TypeError(f"{name}: cannot write a {type(content).__name__}")
        paths.append(path)
    return paths


def write_sim_folder(out_dir: Path, config: dict, result) -> Path:
    """``seesaw simulate -o``: config, summary, per-request and per-step CSVs, the timeline plot."""
    files = {"requests.csv": result.requests, "steps.csv": result.steps}
    if result.policy == "seesaw":
        files["timeline.png"] = lambda path: plot_timeline(result, path)
    summary = {**result.summary(), **({"dtype": config["dtype"]} if "dtype" in config else {})}
    write_run_folder(out_dir, summary, config=config, files=files)
    return Path(out_dir)


def write_plan_folder(out_dir: Path, result, config: dict) -> list[Path]:
    """``plan.json`` (the Plan, when one was found), ``candidates.csv`` (the ranked table),
    ``summary.json`` (the config and the planner's summary); their paths in that order. The config
    also goes to ``config.yaml``, as in every command's folder."""
    files = {} if result.plan is None else {"plan.json": result.plan.model_dump_json(indent=2) + "\n"}
    files["candidates.csv"] = result.table
    _, summary_path, *paths = write_run_folder(out_dir, {"config": config, **result.summary()}, config=config,
                                               files=files)
    return [*paths, summary_path]
