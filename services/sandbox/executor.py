"""The sandbox core: admits programs within the server's bounds and runs them in the zygote's processes.

Knows nothing of gRPC; the servicer, the CLI and tests use it alike. Bad requests raise InvalidInput, a full
queue raises Overloaded (the interceptor maps both). A zygote that dies is replaced; the programs it held get a
KILLED result that says so, and the server carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from prometheus_client import Counter, Gauge

from services.common.errors import ConfigError, DeadlineExceeded, InvalidInput, NotReady, Overloaded, ThinkmeshError
from services.sandbox.layers import IsolationReport, require_layers
from services.sandbox.model import Program, Result, Status
from services.sandbox.protocol import Job, ZygoteConfig
from services.sandbox.settings import SandboxSettings
from services.sandbox.zygote_client import ZygoteLost, ZygoteProcess

log = logging.getLogger(__name__)

EXECUTIONS = Counter("thinkmesh_sandbox_executions", "Programs run, by how they ended", ["status"])
ADMITTED = Gauge("thinkmesh_sandbox_admitted", "Programs running or queued")
ZYGOTE_STARTS = Counter("thinkmesh_sandbox_zygote_starts", "Zygote processes started (restarts included)")

# How long past a program's own timeout the zygote may take to answer before it is presumed wedged.
WATCHDOG_S = 10.0


class SandboxFailure(ThinkmeshError):
    """The sandbox could not run a program as isolated as it promised (an INTERNAL error, never a result)."""


class SandboxExecutor:
    def __init__(self, settings: SandboxSettings) -> None:
        self.settings = settings
        self.report: IsolationReport | None = None
        self._zygote: ZygoteProcess | None = None
        self._started = asyncio.Event()
        self._restart_lock = asyncio.Lock()
        self._workers = asyncio.Semaphore(settings.max_workers)
        self._admitted = 0
        self._closed = False
        self._job_ids = itertools.count(1)

    @property
    def zygote_pid(self) -> int | None:
        return self._zygote.pid if self._zygote is not None else None

    async def start(self) -> IsolationReport:
        """Start the zygote and check its isolation; ConfigError when a required layer is missing."""
        self._zygote = await self._spawn()
        self.report = self._zygote.report
        self._started.set()
        return self.report

    async def close(self) -> None:
        self._closed = True
        self._started.set()  # calls still waiting for a start that will not come now fail with NotReady
        if self._zygote is not None:
            await self._zygote.stop()

    async def execute(self, program: Program, *, deadline: float | None = None) -> Result:
        """Run one program. `deadline` (time.monotonic()) caps its time to what the caller will wait."""
        job = self._job(program)
        with self._admit(1):
            return await self._run(job, deadline)

    async def execute_batch(self, programs: Sequence[Program], *, deadline: float | None = None) -> list[Result]:
        """Run many programs concurrently; results in the order of `programs`. All are checked before any runs."""
        if len(programs) > self.settings.max_batch:
            raise InvalidInput(
                f"a batch of {len(programs)} programs is over the limit of {self.settings.max_batch} "
                "(THINKMESH_SANDBOX_MAX_BATCH); split it"
            )
        jobs = [self._job(program, index) for index, program in enumerate(programs)]
        with self._admit(len(jobs)):
            return list(await asyncio.gather(*(self._run(job, deadline) for job in jobs)))

    # --- admission and limits ---------------------------------------------------------------------------------

    def _job(self, program: Program, index: int | None = None) -> Job:
        settings = self.settings
        where = "" if index is None else f"requests[{index}]: "
        code = program.code.encode("utf-8", errors="surrogatepass")
        if len(code) > settings.max_code_bytes:
            raise InvalidInput(f"{where}code is {len(code)} bytes, over the limit of {settings.max_code_bytes} bytes")
        timeout_ms = program.timeout_ms or settings.default_timeout_ms
        if not 0 < timeout_ms <= settings.max_timeout_ms:
            raise InvalidInput(
                f"{where}timeout_ms={program.timeout_ms} is over this server's maximum of {settings.max_timeout_ms}"
            )
        memory_mb = program.memory_mb or settings.default_memory_mb
        if not 0 < memory_mb <= settings.max_memory_mb:
            raise InvalidInput(
                f"{where}memory_mb={program.memory_mb} is over this server's maximum of {settings.max_memory_mb}"
            )
        if memory_mb < 16:
            raise InvalidInput(f"{where}memory_mb={memory_mb} is too small: a program needs at least 16")
        return Job(next(self._job_ids), code, timeout_ms, memory_mb, settings.max_output_bytes)

    @contextmanager
    def _admit(self, count: int) -> Iterator[None]:
        if self._closed:
            raise NotReady("the sandbox is shutting down")
        capacity = self.settings.max_workers + self.settings.max_queue
        if self._admitted + count > capacity:
            raise Overloaded(
                f"the sandbox is full ({self._admitted} programs running or queued, room for {capacity}, "
                f"{count} more asked); retry with backoff or add replicas"
            )
        self._admitted += count
        ADMITTED.inc(count)
        try:
            yield
        finally:
            self._admitted -= count
            ADMITTED.dec(count)

    # --- running ----------------------------------------------------------------------------------------------

    async def _run(self, job: Job, deadline: float | None) -> Result:
        async with self._workers:
            if deadline is not None:
                left_ms = int((deadline - time.monotonic()) * 1000)
                if left_ms <= 0:
                    raise DeadlineExceeded("the deadline passed while the program waited for a worker")
                if left_ms < job.timeout_ms:
                    job = Job(job.job_id, job.code, left_ms, job.memory_mb, job.max_output_bytes)
            zygote = await self._live_zygote()
            try:
                raw = await zygote.run(job, wait_s=job.timeout_ms / 1000 + WATCHDOG_S)
            except ZygoteLost as exc:
                EXECUTIONS.labels(Status.KILLED.value).inc()
                return Result(Status.KILLED, "", f"sandbox: {exc}; the program's result is lost\n", 0, False)
        if raw.status is None:
            message = raw.stderr.decode(errors="replace").strip()
            log.error("program not run: isolation failed", extra={"detail": message})
            raise SandboxFailure(message or "the sandbox failed to isolate the program")
        EXECUTIONS.labels(raw.status.value).inc()
        return Result(
            raw.status,
            raw.stdout.decode("utf-8", errors="replace"),
            raw.stderr.decode("utf-8", errors="replace"),
            raw.duration_ms,
            raw.truncated,
        )

    async def _live_zygote(self) -> ZygoteProcess:
        await self._started.wait()  # a call that arrives during warm-up waits for it
        if self._zygote is not None and self._zygote.alive:
            return self._zygote
        async with self._restart_lock:
            if self._closed:
                raise NotReady("the sandbox is shutting down")
            if self._zygote is None or not self._zygote.alive:
                log.warning("restarting the sandbox zygote")
                self._zygote = await self._spawn()
            return self._zygote

    async def _spawn(self) -> ZygoteProcess:
        """A new zygote, its layers checked and logged (at start-up and again after every restart)."""
        settings = self.settings
        config = ZygoteConfig(
            slots=settings.max_workers,
            run_as_uid=settings.run_as_uid,
            work_root=str(settings.work_root),
            workdir_mb=settings.workdir_mb,
            max_processes=settings.max_processes,
            max_open_files=settings.max_open_files,
            max_file_mb=settings.max_file_mb,
            max_memory_mb=settings.max_memory_mb,
            max_timeout_ms=settings.max_timeout_ms,
            max_code_bytes=settings.max_code_bytes,
        )
        ZYGOTE_STARTS.inc()
        zygote = await ZygoteProcess.start(config, settings.startup_timeout_s)
        try:
            require_layers(zygote.report, settings.required_layers)
        except ConfigError:
            await zygote.stop()
            raise
        _log_layers(zygote, settings.max_workers)
        return zygote


def _log_layers(zygote: ZygoteProcess, workers: int) -> None:
    for layer in zygote.report.layers:
        state = "active" if layer.active else "INACTIVE"
        log.log(
            logging.INFO if layer.active else logging.WARNING,
            "isolation layer %s %s: %s",
            layer.name,
            state,
            layer.detail,
            extra={"layer": layer.name, "active": layer.active},
        )
    log.info(
        "sandbox ready",
        extra={
            "layers_active": zygote.report.active,
            "zygote_pid": zygote.pid,
            "warmup_ms": zygote.warmup_ms,
            "workers": workers,
        },
    )
