"""Launchers: where the ranks of a training stage run."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from services.common import die_with_parent
from services.common.errors import InvalidInput
from services.trainer.training.spec import (
    CHECKPOINTS_DIR,
    LOGS_DIR,
    PROGRESS_FILE,
    RANKS_DIR,
    RESULT_FILE,
    Progress,
    TrainingFailed,
    TrainingResult,
    TrainingSpec,
)

log = logging.getLogger(__name__)

OnProgress = Callable[[Progress], None]


class Launcher(Protocol):
    def run(self, spec: TrainingSpec, *, name: str, on_progress: OnProgress | None = None) -> TrainingResult:
        """Writes `spec` to `<out>/spec.json`, runs the stage's ranks to the end and returns rank 0's result; raises
        TrainingFailed when they end without one. `name` identifies this stage of this round (e.g. "r3-sft"): a
        launcher that finds the stage already running under that name (a restarted trainer) follows it instead of
        starting it twice."""
        ...


FINGERPRINT = "fingerprint"


def fingerprint(spec: TrainingSpec) -> str:
    """What a stage's checkpoints were made from: the spec and its data's content."""
    digest = hashlib.sha256(spec.to_json().encode())
    with Path(spec.data).open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def clear_outcome(spec: TrainingSpec) -> None:
    """Before a (re)start: no result or progress of an earlier run may be mistaken for this one's. Checkpoints stay
    when they were made from this very spec and data — they are what a restarted stage resumes from — and go when
    not (another recipe or other data in the same directory would resume at the wrong place, or not at all)."""
    for name in (RESULT_FILE, PROGRESS_FILE):
        spec.path(name).unlink(missing_ok=True)
    shutil.rmtree(spec.path(RANKS_DIR), ignore_errors=True)
    checkpoints = spec.path(CHECKPOINTS_DIR)
    current = fingerprint(spec)
    recorded = checkpoints / FINGERPRINT
    if checkpoints.is_dir() and (not recorded.is_file() or recorded.read_text().strip() != current):
        log.warning("%s holds checkpoints of another spec or other data: starting the stage afresh", checkpoints)
        shutil.rmtree(checkpoints)
    checkpoints.mkdir(parents=True, exist_ok=True)
    recorded.write_text(current + "\n")


def finished(spec: TrainingSpec, how: str) -> TrainingResult:
    """The stage's result, or TrainingFailed saying `how` it ended without one."""
    result = TrainingResult.read(spec.out)
    if result is None:
        raise TrainingFailed(f"the {spec.stage} stage at {spec.out} {how} without writing {RESULT_FILE}")
    return result


class LocalLauncher:
    """The stage's ranks on this machine: in this very process when `nproc_per_node` is 1 (a laptop, the embedded
    default, a one-GPU trainer pod), else `torchrun --standalone` with that many processes (one per GPU; gloo on a
    CPU) — and for FSDP asked for by name, even on one GPU. torchrun's output goes to `<out>/logs/torchrun.log`."""

    def __init__(self, nproc_per_node: int = 1, *, poll_s: float = 0.5) -> None:
        if nproc_per_node < 1:
            raise InvalidInput("nproc_per_node must be at least 1")
        self.nproc_per_node = nproc_per_node
        self.poll_s = poll_s

    def run(self, spec: TrainingSpec, *, name: str, on_progress: OnProgress | None = None) -> TrainingResult:
        clear_outcome(spec)
        spec_path = spec.write()
        if self.nproc_per_node == 1 and spec.strategy.fsdp != "on":  # FSDP needs a process group, even of one
            from services.trainer.training.worker import run_stage

            run_stage(spec, on_progress)
            return finished(spec, "ended")
        return self._torchrun(spec, spec_path, name, on_progress)

    def command(self, spec_path: Path) -> list[str]:
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",  # a rendezvous on a free local port: several stages may train side by side
            f"--nproc-per-node={self.nproc_per_node}",
            "-m",
            "services.trainer.training.worker",
            str(spec_path),
        ]

    def _torchrun(
        self, spec: TrainingSpec, spec_path: Path, name: str, on_progress: OnProgress | None
    ) -> TrainingResult:
        logs = spec.path(LOGS_DIR)
        logs.mkdir(parents=True, exist_ok=True)
        log_file = logs / "torchrun.log"
        seen: Progress | None = None
        with log_file.open("ab") as sink:
            # Its own session: stopping the stage ends torchrun and every rank it started, nothing else. And it
            # dies with this process however that ends (torchrun passes the SIGTERM on to its ranks).
            process = subprocess.Popen(
                die_with_parent.command(self.command(spec_path)),
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            log.info(
                "training %s: torchrun pid %d, %d processes, log %s", name, process.pid, self.nproc_per_node, log_file
            )
            try:
                while process.poll() is None:
                    time.sleep(self.poll_s)
                    progress = Progress.read(spec.out)
                    if on_progress is not None and progress is not None and progress != seen:
                        seen = progress
                        on_progress(progress)
            finally:
                if process.poll() is None:  # the trainer is stopping (or failed): take the ranks down with it
                    os.killpg(process.pid, signal.SIGTERM)
                    try:
                        process.wait(timeout=30)
                    except subprocess.TimeoutExpired:
                        os.killpg(process.pid, signal.SIGKILL)
                        process.wait()
        if process.returncode != 0:
            tail = log_file.read_text(errors="replace").splitlines()[-20:]
            raise TrainingFailed(
                f"training {name}: torchrun exited with {process.returncode}; last lines of {log_file}:\n"
                + "\n".join(tail)
            )
        return finished(spec, "exited cleanly")
