"""Where a run's ranks go: the devices this machine has, and joining a ``torchrun`` job.

Without ``torchrun`` the launcher spawns one process per rank on this machine; under ``torchrun``
(``RANK`` and ``WORLD_SIZE`` set) this process is one rank, joins through ``env://`` and runs that
rank's part (rank 0 drives and returns the result).
"""

from __future__ import annotations

import os

from seesaw.core import SpecError


def check_device(device: str, world: int, torchrun: bool) -> None:
    """SpecError (one line) unless ``world`` ranks of this node can run on ``device``."""
    if device not in ("cpu", "cuda"):
        raise SpecError(f"--device {device!r}: expected cpu or cuda")
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise SpecError("--device cuda: no CUDA device is available")
    n = torch.cuda.device_count()
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world)) if torchrun else world
    if local > n:
        raise SpecError(f"--device cuda: {local} ranks on this node but only {n} CUDA device(s)")


def run_torchrun_rank(store, items, config):
    """This process is one rank of a torchrun job: join it, run the rank, leave it."""
    import torch.distributed as dist

    from seesaw.engine.dist import init_process
    from seesaw.engine.launch import rank_main

    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    backend = "nccl" if config.device == "cuda" else "gloo"
    device = init_process(rank, world, "env://", backend, config.timeout_s)
    try:
        return rank_main(rank, world, device, store, config, items)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def cuda_device_name(index: int = 0) -> str:
    """The name CUDA reports for device ``index`` (matched against the catalog's GPUs)."""
    import torch

    return torch.cuda.get_device_name(index)
