"""A spawned rank never outlives the launcher that started it, whatever kills the launcher.

``bind_to_launcher(launcher_pid)`` runs first thing in every spawned rank:

- Linux: ``prctl(PR_SET_PDEATHSIG, SIGKILL)``: the kernel kills the rank when its parent dies. The
  parent is the forkserver (or the launcher under ``spawn``), and the forkserver exits as soon as
  the launcher is gone (its pipe from the launcher closes), so a ``kill -9`` of the launcher takes
  its ranks with it. A parent that died before the call would never signal: right after it, the
  rank checks that the launcher is still there and exits if not.
- Everywhere: a watchdog thread polls the launcher's liveness (and a change of parent) every
  ``poll_s`` and ends the rank when it is gone (macOS and others have no parent-death signal).
- SIGINT is ignored: a terminal's Ctrl-C reaches the whole process group, and the launcher, not
  each rank, decides how the run stops (it stops the ranks and seals the output). A ``torchrun``
  rank is bound to its agent (its parent) with ``ignore_sigint=False``: torchrun starts each rank in
  a session of its own and stops it with a signal, which rank 0 handles itself (seals the output).

Rank 0 also checks the launcher before each output line (``exit_if_orphaned``): the kernel's
signal comes only once the forkserver has exited, a few hundred milliseconds on a busy machine.
A rank ended this way exits at once (``os._exit``): rank 0 has written every finished request to
the output with one ``write`` each, so nothing finished is lost, and the launcher that would have
cleaned up is gone anyway (the kernel closes the rank's files and sockets; shared-memory tensors
are unlinked when made).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

__all__ = ["bind_to_launcher", "set_parent_death_signal", "launcher_alive", "exit_if_orphaned", "ORPHAN_EXIT_CODE"]

ORPHAN_EXIT_CODE = 125  # a rank that found its launcher gone
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def set_parent_death_signal(signum: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``signum`` to this process when its parent dies (Linux
    ``PR_SET_PDEATHSIG``); False where that does not exist."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def launcher_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (a killed launcher not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True  # no /proc: kill(pid, 0) is all we know


def exit_if_orphaned(launcher_pid: int) -> None:
    """End this rank at once if ``launcher_pid`` is gone. Rank 0 calls it before each output line
    (a few microseconds): between the launcher's death and the rank's (the forkserver has to exit
    first) no line is added to an output that a new run may already hold."""
    if not launcher_alive(launcher_pid):
        os._exit(ORPHAN_EXIT_CODE)


def bind_to_launcher(launcher_pid: int, poll_s: float = 0.5, ignore_sigint: bool = True) -> None:
    """Tie this rank's life to ``launcher_pid`` (see the module docstring). Call it first thing
    in the rank."""
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    set_parent_death_signal()
    if not launcher_alive(launcher_pid):  # it died before the parent-death signal was armed
        os._exit(ORPHAN_EXIT_CODE)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent or not launcher_alive(launcher_pid):
                os._exit(ORPHAN_EXIT_CODE)

    threading.Thread(target=watch, name="seesaw-launcher-watchdog", daemon=True).start()
