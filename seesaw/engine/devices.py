"""The devices a run's ranks get: whether this node has them, and what CUDA calls them.

Launching the ranks (spawned here, or this process as one rank of a ``torchrun`` job) is
``seesaw.engine.launch``'s.
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


def cuda_device_name(index: int = 0) -> str:
    """The name CUDA reports for device ``index`` (matched against the catalog's GPUs)."""
    import torch

    return torch.cuda.get_device_name(index)
