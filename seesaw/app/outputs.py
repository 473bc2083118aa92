"""The output files of a batch run, guarded before any rank starts and for the whole run.

- ``check_output``: the output (and its errors file) can be written: its directory exists and
  takes a new file (tried for real, so a read-only mount fails even for root), it is not a
  directory, and it is not the input file.
- ``OutputLock``: an exclusive ``flock`` on the output file, held by the launcher from before the
  ranks start until the run ends, so two runs never append to one file; a second run fails at once
  with the holder's pid (kept in ``OUT.lock`` while the lock is held). The lock is the kernel's:
  it goes with the process, whatever kills it.
Errors are one-line ``SpecError``s (exit 2).
"""

from __future__ import annotations

import fcntl
import os
import tempfile
from pathlib import Path

from seesaw.core import SpecError

__all__ = ["OutputError", "check_output", "OutputLock"]


class OutputError(SpecError):
    """An output file that cannot be written, or is in use (one line, exit 2)."""


def _check_writable(path: Path, what: str) -> None:
    if path.is_dir():
        raise OutputError(f"{what} {path} is a directory; give a file name")
    folder = path.parent
    if not folder.is_dir():
        raise OutputError(f"{what} {path}: directory {folder} does not exist")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".seesaw-write-check-"):
            pass
    except OSError as e:
        raise OutputError(f"{what} {path}: cannot write in {folder} ({e.strerror or type(e).__name__})") from None
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} is not writable")


def check_output(output: Path, errors_file: Path, source: str | None = None) -> None:
    """``SpecError`` unless the run can write ``output`` and ``errors_file`` and neither is the input."""
    output, errors_file = Path(output), Path(errors_file)
    if source is not None and Path(source).is_file():
        for path, what in ((output, "--output"), (errors_file, "the errors file")):
            if path.exists() and os.path.samefile(path, source):
                raise OutputError(f"{what} {path} is the input file; give another --output")
    _check_writable(output, "--output")
    _check_writable(errors_file, "the errors file")


class OutputLock:
    """``with OutputLock(path):`` holds an exclusive lock on ``path`` (created if missing)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.pid_file = self.path.with_name(self.path.name + ".lock")
        self.fd: int | None = None

    def __enter__(self) -> "OutputLock":
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncates: --resume reads it
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputError(f"--output {self.path} is in use by another seesaw run{self._holder()}; "
                              "wait for it to finish or give another --output") from None
        self.fd = fd
        self.pid_file.write_text(f"{os.getpid()}\n")
        return self

    def _holder(self) -> str:
        try:
            pid = int(self.pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return ""
        return f" (pid {pid})"

    def __exit__(self, *exc) -> bool:
        if self.fd is not None:
            self.pid_file.unlink(missing_ok=True)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
        return False
