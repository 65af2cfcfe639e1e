"""Run a command that gets SIGTERM when the process that started it dies, however it dies (SIGKILL included).

`python -m services.common.die_with_parent PARENT_PID COMMAND...` asks Linux for a parent-death signal
(prctl(PR_SET_PDEATHSIG)) and then becomes COMMAND (exec: same pid, and the request survives the exec). The local
stack starts every child this way, so that killing `thinkmesh up` or `evolve` outright leaves no service behind,
and the trainer its torchrun, so that a killed trainer leaves no training ranks behind.
A step of its own rather than a `preexec_fn`: that runs between fork and exec, which is not safe in a process that
has threads (the supervisor restarts children from one). Linux counts the *thread* that started the child as its
parent: the stack starts children from its main thread and from the supervisor's, which lives as long as the stack.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1


def command(argv: Sequence[str], parent: int | None = None) -> list[str]:
    """`argv` wrapped so that it dies with `parent` (default: this process); unchanged off Linux."""
    if not sys.platform.startswith("linux"):
        return list(argv)
    return [sys.executable, "-m", __name__, str(os.getpid() if parent is None else parent), *argv]


def main(args: Sequence[str]) -> None:
    parent, argv = int(args[0]), list(args[1:])
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG)")
    if os.getppid() != parent:  # the parent died before the request was in place: nothing left to serve
        raise SystemExit(f"die_with_parent: parent {parent} is gone; not starting {argv[0]}")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
