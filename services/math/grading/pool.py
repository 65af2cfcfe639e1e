"""The worker pool: a handful of `multiprocessing` workers on pipes, each item under a deadline; a worker that
misses it or dies is killed and replaced, and only its item is lost (graded not-equal with the reason)."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess

from services.math.grading.verdict import Check, GradeResult
from services.math.grading.verify import READY, worker_main

log = logging.getLogger(__name__)


@dataclass
class Worker:
    process: BaseProcess
    conn: Connection
    started: float
    ready: bool = False
    job: int | None = None
    deadline: float = 0.0


class Pool:
    """Workers on pipes; `run` grades a batch, one item per worker at a time, each under its deadline."""

    BOOT_TIMEOUT_S = 120.0
    MAX_BOOT_FAILURES = 3

    def __init__(self, size: int, check: Check, deadline_s: float, memory_limit_mb: int) -> None:
        self._ctx = multiprocessing.get_context("spawn")  # no fork: the caller may have threads
        self._size = size
        self._check = check
        self._deadline_s = deadline_s
        self._timeout_s = max(1, int(deadline_s / 3))  # math-verify's own timeouts fire before the kill
        self._memory_limit_mb = memory_limit_mb
        self._workers: list[Worker] = []
        self._boot_failures = 0
        self._boot_error = ""

    def _spawn(self) -> Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=worker_main,
            name="thinkmesh-grader",
            daemon=True,
            args=(child, self._check, self._timeout_s, self._memory_limit_mb),
        )
        process.start()
        child.close()  # so the parent sees EOF when the worker dies
        return Worker(process, parent, time.monotonic())

    def _kill(self, worker: Worker) -> None:
        with contextlib.suppress(Exception):
            worker.process.kill()
            worker.process.join(timeout=2)
        with contextlib.suppress(Exception):
            worker.conn.close()

    def _replace(self, worker: Worker) -> None:
        self._kill(worker)
        self._workers[self._workers.index(worker)] = self._spawn()

    def start(self) -> None:
        while len(self._workers) < self._size:
            self._workers.append(self._spawn())

    @property
    def broken(self) -> bool:
        return self._boot_failures >= self.MAX_BOOT_FAILURES

    def run(self, jobs: Sequence[tuple[str, str]]) -> list[GradeResult]:
        results: list[GradeResult | None] = [None] * len(jobs)
        queue = deque(range(len(jobs)))
        if not self.broken:
            self.start()
        while queue or any(w.job is not None for w in self._workers):
            if self.broken:  # e.g. math-verify is not installed: fail fast instead of respawning forever
                reason = f"grader unavailable: workers fail to start ({self._boot_error})"
                for index in queue:
                    results[index] = GradeResult(False, reason, "error")
                queue.clear()
                if not any(w.job is not None for w in self._workers):
                    break
            self._dispatch(jobs, queue)
            self._collect(results)
        return [r if r is not None else GradeResult(False, "not graded", "error") for r in results]

    def _dispatch(self, jobs: Sequence[tuple[str, str]], queue: deque[int]) -> None:
        for worker in list(self._workers):
            if not queue or not worker.ready or worker.job is not None:
                continue
            index = queue.popleft()
            try:
                worker.conn.send(jobs[index])
            except (OSError, ValueError):  # it died while idle: not this item's fault
                queue.appendleft(index)
                self._replace(worker)
                continue
            worker.job, worker.deadline = index, time.monotonic() + self._deadline_s

    def _collect(self, results: list[GradeResult | None]) -> None:
        now = time.monotonic()
        limits = [
            w.started + self.BOOT_TIMEOUT_S if not w.ready else w.deadline
            for w in self._workers
            if not w.ready or w.job is not None
        ]
        timeout = max(0.0, min(limits) - now) if limits else 0.0
        ready = set(wait([w.conn for w in self._workers], timeout=timeout))
        for worker in list(self._workers):
            if worker.conn in ready:
                self._receive(worker, results)
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.ready and worker.job is not None and now >= worker.deadline:
                results[worker.job] = GradeResult(False, f"timed out after {self._deadline_s:g} s", "timeout")
                log.warning("grading worker %s missed its deadline; replacing it", worker.process.pid)
                self._replace(worker)
            elif not worker.ready and now >= worker.started + self.BOOT_TIMEOUT_S:
                self._boot_failed(worker, "did not start in time")

    def _receive(self, worker: Worker, results: list[GradeResult | None]) -> None:
        try:
            message = worker.conn.recv()
        except (EOFError, OSError):
            worker.process.join(timeout=2)
            code = worker.process.exitcode
            if worker.job is not None:
                results[worker.job] = GradeResult(False, f"grading worker died (exit code {code})", "error")
                self._replace(worker)
            elif worker.ready:  # died while idle (the OOM killer, say): nobody's fault, start another
                self._replace(worker)
            else:
                self._boot_failed(worker, f"exit code {code}")
            return
        if message == READY:
            worker.ready = True
            self._boot_failures = 0
        elif isinstance(message, tuple) and message and message[0] == "boot failed":
            self._boot_failed(worker, str(message[1]))
        elif worker.job is not None:
            equal, reason = message
            results[worker.job] = GradeResult(bool(equal), str(reason), "math_verify")
            worker.job = None

    def _boot_failed(self, worker: Worker, why: str) -> None:
        self._boot_failures += 1
        self._boot_error = why
        log.error("grading worker failed to start: %s", why)
        if self.broken:
            self._kill(worker)
            self._workers.remove(worker)
        else:
            self._replace(worker)

    def close(self) -> None:
        for worker in self._workers:
            with contextlib.suppress(Exception):
                worker.conn.send(None)
        for worker in self._workers:
            worker.process.join(timeout=1)
            if worker.process.is_alive():
                self._kill(worker)
            with contextlib.suppress(Exception):
                worker.conn.close()
        self._workers.clear()
