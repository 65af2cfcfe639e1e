"""The server's handle on one zygote process: start it, send it jobs, get results, notice when it dies."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import services
from services.sandbox.layers import IsolationReport
from services.sandbox.protocol import (
    HELLO,
    RESULT,
    Job,
    JobResult,
    ProtocolError,
    ZygoteConfig,
    decode_result,
    encode_cancel,
    encode_job,
    read_frame,
)

log = logging.getLogger(__name__)

# numpy's BLAS would otherwise start a thread per core at import, and a zygote must be single-threaded to fork.
_ZYGOTE_ENV = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "OPENBLAS_NUM_THREADS": "1",
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "PYTHONDONTWRITEBYTECODE": "1",
    # Not the server's working directory on sys.path (`-m` would put it there): programs may read every directory
    # on the zygote's sys.path (services/sandbox/landlock.py), and the server may be started from anywhere.
    "PYTHONSAFEPATH": "1",
}


def _zygote_env() -> dict[str, str]:
    # The server's own import path, so the zygote finds the same code; nothing else of the server's environment.
    paths = [str(Path(services.__file__).resolve().parents[1]), os.environ.get("PYTHONPATH", "")]
    return {**_ZYGOTE_ENV, "PYTHONPATH": os.pathsep.join(path for path in paths if path)}


class ZygoteLost(Exception):
    """The zygote died or stopped answering; the jobs it held are lost (a new one is started)."""


class ZygoteStartFailed(Exception):
    pass


class ZygoteProcess:
    def __init__(
        self,
        process: asyncio.subprocess.Process,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        hello: dict[str, Any],
    ) -> None:
        self._process = process
        self._reader = reader
        self._writer = writer
        self.pid = int(hello["pid"])
        self.report = IsolationReport.from_json(hello["report"])
        self.warmup_ms = int(hello["warmup_ms"])
        self._waiting: dict[int, asyncio.Future[JobResult]] = {}
        self._lost: str | None = None
        self._reading = asyncio.ensure_future(self._read_results())

    @classmethod
    async def start(cls, config: ZygoteConfig, timeout_s: float) -> ZygoteProcess:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A new session: a terminal's Ctrl-C reaches the server, which then drains; the zygote must not die
            # first. (Spawning is fork+exec, which is safe with gRPC's threads running.)
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "services.sandbox.zygote",
                str(theirs.fileno()),
                config.to_json(),
                str(os.getpid()),
                pass_fds=(theirs.fileno(),),
                env=_zygote_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        reader, writer = await asyncio.open_unix_connection(sock=ours, limit=2**26)
        try:
            kind, payload = await asyncio.wait_for(read_frame(reader), timeout_s)
        except (asyncio.IncompleteReadError, TimeoutError, ProtocolError) as exc:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            code = await process.wait()
            raise ZygoteStartFailed(f"the zygote did not start (exit code {code}): {type(exc).__name__}") from exc
        hello = json.loads(payload) if kind == HELLO else {"error": f"unexpected frame kind {kind}"}
        if "error" in hello:
            writer.close()
            await process.wait()
            raise ZygoteStartFailed(f"the zygote could not isolate programs: {hello['error']}")
        return cls(process, reader, writer, hello)

    @property
    def alive(self) -> bool:
        return self._lost is None

    async def run(self, job: Job, wait_s: float) -> JobResult:
        """The job's result; ZygoteLost when the zygote dies or gives no answer within `wait_s`."""
        if self._lost is not None:
            raise ZygoteLost(self._lost)
        future: asyncio.Future[JobResult] = asyncio.get_running_loop().create_future()
        self._waiting[job.job_id] = future
        try:
            self._writer.write(encode_job(job))
            await self._writer.drain()
            return await asyncio.wait_for(asyncio.shield(future), wait_s)
        except TimeoutError:
            self._fail(f"the zygote gave no answer within {wait_s:.0f} s")
            raise ZygoteLost(self._lost) from None
        except (ConnectionError, OSError) as exc:
            self._fail(f"the zygote's channel broke: {exc}")
            raise ZygoteLost(self._lost) from exc
        except asyncio.CancelledError:
            # The caller gave up (a deadline, a cancelled RPC): stop the program instead of letting it run on.
            if self._lost is None:
                with contextlib.suppress(ConnectionError, OSError):
                    self._writer.write(encode_cancel(job.job_id))
            raise
        finally:
            self._waiting.pop(job.job_id, None)

    async def _read_results(self) -> None:
        try:
            while True:
                kind, payload = await read_frame(self._reader)
                if kind != RESULT:
                    raise ProtocolError(f"unexpected frame kind {kind}")
                result = decode_result(payload)
                future = self._waiting.get(result.job_id)
                if future is not None and not future.done():
                    future.set_result(result)
        except asyncio.CancelledError:
            raise
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            code = await self._exit_code()
            self._fail(f"the zygote process exited (code {code})")
        except ProtocolError as exc:
            self._fail(f"the zygote broke protocol: {exc}")

    async def _exit_code(self) -> int | None:
        try:
            return await asyncio.wait_for(self._process.wait(), 2)
        except TimeoutError:
            return None

    def _fail(self, reason: str) -> None:
        if self._lost is not None:
            return
        self._lost = reason
        log.error("sandbox zygote lost", extra={"reason": reason, "zygote_pid": self.pid})
        with contextlib.suppress(ProcessLookupError):
            self._process.kill()
        self._writer.close()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ZygoteLost(reason))

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Close the channel: the zygote kills what still runs and exits."""
        self._lost = self._lost or "stopped"
        self._writer.close()
        try:
            await asyncio.wait_for(self._process.wait(), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self._process.kill()
            await self._process.wait()
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
