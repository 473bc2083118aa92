"""The output files of a batch run, guarded before any rank starts and for the whole run.

- ``check_output``: the output (and its errors file) can be written: its directory exists and
  takes a new file (tried for real, so a read-only mount fails even for root), it is not a
  directory, and it is not the input file.
- ``OutputLock``: an exclusive ``flock`` on the output file, held by the launcher from before the
  ranks start until the run ends, so two runs never append to one file; a second run fails at once
  with the holder's pid (kept in ``OUT.lock`` while the lock is held). The lock is the kernel's:
  it goes with the process, whatever kills it. ``OutputLock.rewrite`` replaces the file atomically
  without letting go of the lock.
- ``resume_output``: ``--resume`` reads what is done and rewrites a file with torn lines,
  fragments or repeated ids clean (temp file, fsync, ``os.replace``), so each id is there once.
- ``RunWatch``: around a run, turns how it stops into one line once the ranks are gone: a signal
  (``Interrupted``) becomes ``RunInterrupted`` (saved of total, where; exit 130 / 143), a full
  disk a ``RunFailed`` (exit 1), and a failure that does not say what is saved (the driver rank
  itself killed) gains the count, after the launcher sealed the output (torn last line cut, fsync).
Errors are one-line ``SpecError``s (exit 2).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import tempfile
from pathlib import Path

from seesaw.core import Interrupted, RunFailed, RunInterrupted, SpecError

__all__ = ["OutputError", "check_output", "OutputLock", "resume_output", "seal_output", "RunWatch", "DISK_FULL"]

DISK_FULL = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)  # no space, over a file-size limit, over quota


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

    def rewrite(self, lines: list[bytes]) -> None:
        """Replace the locked file by ``lines`` atomically, holding the lock throughout: a temp file
        in the same folder is written, fsynced and locked, then ``os.replace``d over the output
        (the folder fsynced), and only then is the old file's lock let go. Whoever opens the path
        meanwhile finds a locked file, old or new. On any error the output is left as it was."""
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody else knows the file yet
            os.fchmod(fd, os.fstat(self.fd).st_mode & 0o7777)
            with os.fdopen(os.dup(fd), "wb") as f:
                f.writelines(lines)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.path.parent)
        old, self.fd = self.fd, fd
        fcntl.flock(old, fcntl.LOCK_UN)
        os.close(old)

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


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # a platform without directory fds: the rename is still atomic
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def resume_output(output: Path, lock: OutputLock | None) -> tuple[set[str], int]:
    """``--resume``: (ids already done in ``output``, lines dropped). With ``lock`` (the launcher
    holds the output), a file with lines to drop (a torn last line, invalid JSON, failed requests,
    repeated ids; ``batch_io.scan_output``) is rewritten with only the good ones first, so the
    run appends to a clean file and the final file holds each id once."""
    from seesaw.engine.batch_io import scan_output

    scan = scan_output(output)
    if scan.dropped and lock is not None:
        lock.rewrite(scan.lines)
    return scan.done, scan.dropped


def seal_output(output: Path) -> set[str]:
    """After the ranks have stopped (the launcher holds the lock): cut a torn last line, fsync, and
    return the ids the file holds."""
    from seesaw.engine.batch_io import cut_torn_line, scan_output

    if not output.is_file():
        return set()
    cut_torn_line(output, fsync=True)
    return scan_output(output).done


class RunWatch:
    """``with RunWatch() as watch:`` around a batch run (inside its ``OutputLock``). The run tells it
    the ``output`` and the ``ids`` of every valid request once known and sets ``locked`` once the
    launcher holds the output; a signal or a full disk that ends the run then becomes one line
    with what is saved (``RunInterrupted``, ``RunFailed``) after the output is sealed. A
    ``KeyboardInterrupt`` (no ``interrupt_on_signals`` in force) counts as SIGINT."""

    def __init__(self):
        self.output: Path | None = None
        self.ids: set[str] = set()
        self.locked = False

    def __enter__(self) -> "RunWatch":
        return self

    def _saved(self) -> int:
        return len(seal_output(self.output) & self.ids)

    def __exit__(self, kind, exc, tb) -> bool:
        if exc is None or self.output is None or not self.locked:
            return False
        if isinstance(exc, (Interrupted, KeyboardInterrupt)):
            signum = exc.signum if isinstance(exc, Interrupted) else signal.SIGINT
            raise RunInterrupted(signum, self._saved(), len(self.ids), str(self.output)) from None
        if isinstance(exc, RunFailed) and " saved" not in str(exc):  # e.g. the driver itself was killed
            raise RunFailed(f"{exc}; {self._saved()} of {len(self.ids)} requests saved in {self.output} "
                            "(rerun with --resume)") from None
        if isinstance(exc, OSError) and exc.errno in DISK_FULL:
            where = f" writing {exc.filename}" if exc.filename else ""
            raise RunFailed(f"{exc.strerror or exc}{where}: {self._saved()} of {len(self.ids)} requests saved "
                            f"in {self.output} (free space, then rerun with --resume)") from None
        return False
