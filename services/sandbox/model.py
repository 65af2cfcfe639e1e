"""The sandbox's domain objects: a program to run and what came of it. No gRPC here."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    OK = "ok"
    # The program raised (or exited non-zero): the traceback is in stderr.
    ERROR = "error"
    # Wall-clock or CPU time ran out.
    TIMEOUT = "timeout"
    MEMORY_LIMIT = "memory_limit"
    # stdout or stderr went past the cap; truncated is set too.
    OUTPUT_LIMIT = "output_limit"
    # Ended by a signal that is none of the limits above (a segfault, a kill of its own process group).
    KILLED = "killed"


@dataclass(frozen=True)
class Program:
    code: str
    # 0 = the server's default.
    timeout_ms: int = 0
    memory_mb: int = 0


@dataclass(frozen=True)
class Result:
    status: Status
    stdout: str
    stderr: str
    duration_ms: int
    truncated: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status.value,
            "stdout": self.stdout,
            "stderr": self.stderr,
            "duration_ms": self.duration_ms,
            "truncated": self.truncated,
        }
