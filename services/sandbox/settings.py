"""Settings of the sandbox service, read from THINKMESH_SANDBOX_* variables."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from services.common.server import ServerSettings
from services.common.settings import require
from services.sandbox.layers import LAYER_NAMES

_MIB = 1024 * 1024


def _cores() -> int:
    # The CPUs this process may run on (a pod's cpuset), not every CPU of the node.
    return len(os.sched_getaffinity(0))


def _default_work_root() -> Path:
    return Path(tempfile.gettempdir()) / "thinkmesh-sandbox"


@dataclass(frozen=True)
class SandboxSettings(ServerSettings):
    SERVICE: ClassVar[str] = "sandbox"

    port: int = 50051
    # Programs running at once; each is a process burning one CPU, so ≈ cores.
    max_workers: int = field(default_factory=_cores)
    # Programs admitted beyond the running ones; past it a call gets RESOURCE_EXHAUSTED.
    max_queue: int = 512
    # Programs in one ExecuteBatch call.
    max_batch: int = 256
    # rStar-Math allows 30 s per execution; a reasoning step that needs more than 10 s is almost always stuck.
    default_timeout_ms: int = 10_000
    max_timeout_ms: int = 60_000
    # Address space a program may add on top of the pre-warmed interpreter it is forked from.
    default_memory_mb: int = 1024
    max_memory_mb: int = 4096
    # Cap per stream (stdout, stderr); past it the program is stopped and the result says output_limit.
    max_output_bytes: int = 64 * 1024
    max_code_bytes: int = _MIB
    # Processes and threads one program may have (RLIMIT_NPROC, counted in its own uid or user namespace; shared
    # by the whole uid where it has neither: docs/sandbox.md, "Process budget"). Each may use the program's memory
    # limit, so this also bounds what one program can hold in all: keep it small.
    max_processes: int = 16
    max_open_files: int = 64
    # Largest file a program may write, and the size of its private tmpfs working directory.
    max_file_mb: int = 16
    workdir_mb: int = 64
    # Worker slot i runs its programs as uid/gid run_as_uid + i (when the server runs as root), so concurrent
    # programs cannot signal or count against each other.
    run_as_uid: int = 60_000
    # Where private working directories live when a tmpfs cannot be mounted.
    work_root: Path = field(default_factory=_default_work_root)
    # Layers that must be active, or the server refuses to start (see docs/sandbox.md for the names).
    required_layers: tuple[str, ...] = ()
    # How long the zygote may take to import and warm up sympy/numpy.
    startup_timeout_s: float = 120.0

    def validate(self) -> None:
        super().validate()
        require(self.max_workers >= 1, self, "max_workers", "must be at least 1")
        require(self.max_queue >= 0, self, "max_queue", "must not be negative")
        require(
            1 <= self.max_batch <= self.max_workers + self.max_queue,
            self,
            "max_batch",
            f"must be between 1 and max_workers + max_queue ({self.max_workers + self.max_queue}), or a full "
            "batch could never be admitted",
        )
        require(self.max_timeout_ms >= 1, self, "max_timeout_ms", "must be positive")
        require(
            1 <= self.default_timeout_ms <= self.max_timeout_ms,
            self,
            "default_timeout_ms",
            f"must be between 1 and max_timeout_ms ({self.max_timeout_ms})",
        )
        require(self.max_memory_mb >= 16, self, "max_memory_mb", "must be at least 16")
        require(
            16 <= self.default_memory_mb <= self.max_memory_mb,
            self,
            "default_memory_mb",
            f"must be between 16 and max_memory_mb ({self.max_memory_mb})",
        )
        require(self.max_output_bytes >= 1024, self, "max_output_bytes", "must be at least 1024")
        require(self.max_code_bytes >= 1, self, "max_code_bytes", "must be positive")
        require(self.max_processes >= 1, self, "max_processes", "must be at least 1")
        require(self.max_open_files >= 16, self, "max_open_files", "must be at least 16")
        require(self.max_file_mb >= 1, self, "max_file_mb", "must be at least 1")
        require(self.workdir_mb >= 1, self, "workdir_mb", "must be at least 1")
        require(
            self.run_as_uid >= 1 and self.run_as_uid + self.max_workers < 2**31,
            self,
            "run_as_uid",
            "must leave room for one uid per worker below 2^31",
        )
        unknown = sorted(set(self.required_layers) - set(LAYER_NAMES))
        require(not unknown, self, "required_layers", f"unknown layers {unknown}; known: {list(LAYER_NAMES)}")
        require(self.startup_timeout_s > 0, self, "startup_timeout_s", "must be positive")
