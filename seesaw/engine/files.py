"""What the checkpoint readers and writers share: their error type and the model cache.

``CheckpointError`` is the one-line error of a model directory, checkpoint, GGUF file or tokenizer
that cannot be read. ``cache_dir`` is where converted and generated models live, and
``publish_dir`` moves a finished directory into it atomically (several processes may build the
same model at once; the first to finish wins). Imports nothing of the engine, so every checkpoint
module (``weights``, ``gguf``, ``tiny``, ``tokenizer``, ``checkpoint``) can import it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from seesaw.core import SpecError

__all__ = ["CheckpointError", "cache_dir", "publish_dir"]


class CheckpointError(SpecError):
    """A model directory or checkpoint that cannot be loaded. One-line message."""


def cache_dir() -> Path:
    """Where converted and generated models live: ``$SEESAW_CACHE`` or ``~/.cache/seesaw``."""
    return Path(os.environ.get("SEESAW_CACHE") or Path.home() / ".cache" / "seesaw").expanduser()


def publish_dir(tmp: Path, out_dir: Path) -> None:
    """Move a finished ``tmp`` into place; if another process won the race, keep theirs."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists() and not (out_dir / ".complete").is_file():
        shutil.rmtree(out_dir, ignore_errors=True)  # a half-written leftover
    try:
        os.rename(tmp, out_dir)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
