"""The torch dtype of each dtype name the engine and the profiler take.

The names are ``seesaw.core.DTYPE_BYTES``'s (``float32``, ``bfloat16``, ``float16``), so a dtype
the planner costs is one the engine runs. (A checkpoint's safetensors dtypes, ``F32``/``BF16``/...,
are a file format's names: ``weights`` reads them.)
"""

from __future__ import annotations

import torch

from seesaw.core import DTYPE_BYTES

__all__ = ["TORCH_DTYPES", "dtype_name"]

TORCH_DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_BYTES}


def dtype_name(dtype: torch.dtype) -> str:
    """The name of a torch dtype in ``TORCH_DTYPES`` (KeyError for any other)."""
    return {v: k for k, v in TORCH_DTYPES.items()}[dtype]
