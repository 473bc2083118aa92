"""The profiling use case: time the engine's own pieces on this machine over a grid of shapes and
write a measured profile (``profiles/measured/NAME.yaml``) that the cost model reads.

``profile(output, ...)`` validates the request (device, output path, CUDA present), picks the grid
(``--quick``: seconds, for CI; default: the full grid), runs ``seesaw.profiling`` on ``ranks``
ranks, writes the YAML with a header saying how and where it was measured, and returns a
``Profiled``. It prints nothing; ``progress(done, total)`` is passed through.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from seesaw.core import MeasuredProfile, SpecError

__all__ = ["Profiled", "profile", "profile_header"]


@dataclass
class Profiled:
    """A written profile: the profile, where it went and its summary figures."""

    profile: MeasuredProfile
    path: Path
    figures: dict


def profile_header(prof: MeasuredProfile, command: str, merged_as: str) -> str:
    """The YAML header: machine, command, wall time, how the figures were taken."""
    return (
        f"Measured by `seesaw profile` on {prof.device_name} ({prof.cpu_count} CPUs, "
        f"{prof.memory_bytes / 2**30:.1f} GiB RAM), {prof.date}.\n"
        f"command: {command}\n"
        f"wall time: {prof.wall_time_s:.0f} s; {prof.num_ranks} ranks x {prof.threads_per_rank} torch threads, "
        f"{prof.dtype}, torch {prof.torch_version}\n"
        f"{prof.repeats} timed repeats per point, taken in {prof.passes} pass(es) over all the tables; every time "
        f"is {merged_as} (seconds per call; see docs/profiling.md);\n"
        f"Layer tables: timed inside {max(3, prof.repeats // 5)} forward passes per point, one sample per layer; "
        f"step_overhead: the difference of two whole driver runs, mean of {max(3, prof.repeats // 5)} each; "
        "swaps and reshards: Seesaw's whole steps on the replica's ranks.\n"
        f"Mean 1-minute load average while measuring: {prof.load_average} on {prof.cpu_count} CPUs "
        "(shared machine; this run's ranks included).\n"
        "Schema: seesaw.core.MeasuredProfile; used by simulator.cost.CostModel(model, node, measured=...)."
    )


def profile(output: Path, *, device: str = "cpu", ranks: int | None = None, models: Sequence[str] | None = None,
            tp: Sequence[int] | None = None, quick: bool = False, threads: int = 1, dtype: str = "float32",
            repeats: int | None = None, passes: int | None = None, command: str = "seesaw profile",
            progress: Callable[[int, int], None] | None = None) -> Profiled:
    """Measure this machine and write the profile to ``output`` (see the module docstring)."""
    output = Path(output)
    if device not in ("cpu", "cuda"):
        raise SpecError(f"--device {device!r}: use cpu or cuda")
    if output.exists() and output.is_dir():
        raise SpecError(f"--output {output} is a directory; give a .yaml file")
    from seesaw import profiling as profiler
    from seesaw.catalog import load_model

    if device == "cuda" and not profiler.cuda_available():
        raise SpecError("--device cuda: no CUDA device is available (torch.cuda.is_available() is False)")
    kw = {}
    if tp:
        kw["tp"] = tuple(tp)
    if repeats:
        kw["repeats"] = repeats
    if passes:
        kw["passes"] = passes
    grid = profiler.Grid.quick(**kw) if quick else profiler.Grid.default(**kw)
    if ranks is None and device == "cpu":
        ranks = 2 if quick else max([3, *(tp or [])])
    specs = [load_model(m) for m in (models or grid.models)]
    name = output.name.rsplit(".", 1)[0].lower()
    prof = profiler.profile(grid, device=device, ranks=ranks, models=specs, threads=threads,
                            dtype=dtype, name=name, command=command, progress=progress)
    path = profiler.write_profile(prof, output, profile_header(prof, command, profiler.merged_as(prof.passes)))
    return Profiled(profile=prof, path=path, figures=profiler.summary(prof))
