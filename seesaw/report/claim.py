"""One run, one folder: a command's results folder holds one run and is never reused by accident.

A folder is *used* when a command wrote results into it: it holds the marker ``.seesaw-run.json``
(the command and every file the run wrote there, kept by ``record_files``; ``write_run_folder``
records each file it writes) or, for folders written before the marker, ``config.yaml`` or
``summary.json``. A batch run's explicit output file counts too when it is not empty.

- ``check_folder`` (before any work): a used folder is refused with one line
  (``FolderInUse``, exit 2) unless ``overwrite`` or ``resume`` (``seesaw run --resume`` continues
  the same folder).
- ``start_folder`` (just before the first file is written): with ``overwrite``, removes the
  earlier run's files (those its marker lists; without a marker the four that describe a run:
  ``config.yaml``, ``summary.json``, ``plan.json``, ``comparison.json``), never anything else,
  and starts a new marker. So a folder never mixes two runs' files (a plan of one beside the
  summary of another).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from seesaw.core import SpecError

__all__ = ["MARKER", "FolderInUse", "used_files", "check_folder", "start_folder", "record_files"]

MARKER = ".seesaw-run.json"
_LEGACY = ("config.yaml", "summary.json", "plan.json", "comparison.json")


class FolderInUse(SpecError):
    """A results folder that holds an earlier run (one line, exit 2). ``again`` (set by the CLI)
    is the exact command line that replaces it."""

    def __init__(self, folder: Path, names: list[str], resumable: bool = False):
        self.folder, self.names, self.resumable = Path(folder), names, resumable
        self.again: str | None = None
        super().__init__()

    def __str__(self) -> str:
        shown = ", ".join(self.names[:3]) + (", ..." if len(self.names) > 3 else "")
        where, other = f"{self.folder}/ already holds a run ({shown})", "--output-dir"
        if all("/" in n for n in self.names):  # only an output file outside the folder
            where, other = f"{shown} already holds a run's outputs", "--output"
        fix = f"type `{self.again}` to replace it" if self.again else "add --overwrite to replace it"
        rest = ", --resume to finish it," if self.resumable else ""
        return f"{where}: {fix}{rest} or give another {other if self.resumable else '-o/--output-dir'}"

def _marker(folder: Path) -> dict | None:
    try:
        data = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def used_files(folder: Path, also: Iterable[Path] = ()) -> list[str]:
    """The names of an earlier run's files in ``folder`` (empty: the folder is free); ``also``:
    files outside it that count when they exist and are not empty."""
    folder = Path(folder)
    names = []
    if folder.is_dir():
        mark = _marker(folder)
        listed = mark.get("files", []) if mark else [n for n in _LEGACY if (folder / n).is_file()]
        names = [n for n in listed if (folder / n).exists()]
    for path in map(Path, also):
        if path.is_file() and path.stat().st_size > 0:
            name = path.name if path.resolve().parent == folder.resolve() else str(path)
            if name not in names:
                names.append(name)
    return names


def check_folder(folder: Path, *, overwrite: bool = False, resume: bool = False,
                 also: Iterable[Path] = (), resumable: bool = False) -> None:
    """``FolderInUse`` when ``folder`` (or a file in ``also``) holds an earlier run and neither
    ``overwrite`` nor ``resume`` is given."""
    if overwrite or resume:
        return
    names = used_files(folder, also)
    if names:
        raise FolderInUse(Path(folder), names, resumable)


def start_folder(folder: Path, command: str, *, overwrite: bool = False, keep: Iterable[Path] = ()) -> Path:
    """Create ``folder``; with ``overwrite`` remove the earlier run's files but those in ``keep``
    (a batch run's output file, which its lock holds and the engine truncates); start the marker."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    mark = _marker(folder)
    if overwrite:
        kept = {Path(p).resolve() for p in keep}
        listed = mark.get("files", []) if mark else list(_LEGACY)
        for name in listed:
            path = folder / name
            if "/" not in name and path.is_file() and path.resolve() not in kept:
                path.unlink()
    elif mark is not None and mark.get("command") == command:
        return folder  # resume: the same run goes on
    (folder / MARKER).write_text(json.dumps({"command": command, "files": []}) + "\n")
    return folder


def record_files(folder: Path, paths: Iterable[Path]) -> None:
    """Add ``paths`` (files inside ``folder``) to its marker, creating it when missing."""
    folder = Path(folder)
    mark = _marker(folder) or {"command": "", "files": []}
    files = list(mark.get("files", []))
    for p in map(Path, paths):
        try:
            name = str(p.resolve().relative_to(folder.resolve()))
        except ValueError:
            continue  # outside the folder (an explicit --output elsewhere)
        if name not in files:
            files.append(name)
    mark["files"] = files
    (folder / MARKER).write_text(json.dumps(mark) + "\n")
