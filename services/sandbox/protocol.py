"""The framed protocol between the server and its zygote over one Unix socket pair.

Every frame is `length (u32) | kind (u8) | payload`. The zygote sends one HELLO frame once it is warm; the server
then sends JOB frames (and CANCEL when a caller gave up) and the zygote answers each job with one RESULT frame,
in completion order (job ids pair them up).
Binary headers rather than JSON: a 1 MiB program then costs a copy, not an escape pass.
"""

from __future__ import annotations

import asyncio
import json
import struct
from dataclasses import asdict, dataclass
from typing import Any

from services.sandbox.model import Status

HELLO, JOB, RESULT, CANCEL = 1, 2, 3, 4

_FRAME = struct.Struct("!IB")
_JOB = struct.Struct("!QIII")  # job id, timeout ms, memory MB, output cap per stream
_CANCEL = struct.Struct("!Q")  # job id
_RESULT = struct.Struct("!QBBIII")  # job id, outcome, truncated, duration ms, stdout length, stderr length

# The outcome byte of a RESULT: a Status, or FAILED when the sandbox itself could not run the program
# (an isolation layer failed to apply); the reason is in stderr then.
_STATUS_CODES = {status: index for index, status in enumerate(Status, start=1)}
_CODE_STATUSES = {index: status for status, index in _STATUS_CODES.items()}
FAILED = 255

MAX_FRAME = 64 * 1024 * 1024


class ProtocolError(Exception):
    pass


@dataclass(frozen=True)
class Job:
    job_id: int
    code: bytes
    timeout_ms: int
    memory_mb: int
    max_output_bytes: int


@dataclass(frozen=True)
class JobResult:
    job_id: int
    # None when the sandbox failed to run the program (FAILED); stderr says why.
    status: Status | None
    truncated: bool
    duration_ms: int
    stdout: bytes
    stderr: bytes


@dataclass(frozen=True)
class ZygoteConfig:
    """What the zygote needs to know for every job; passed once on its command line."""

    slots: int
    run_as_uid: int
    work_root: str
    workdir_mb: int
    max_processes: int
    max_open_files: int
    max_file_mb: int
    max_memory_mb: int
    max_timeout_ms: int
    max_code_bytes: int

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ZygoteConfig:
        return cls(**json.loads(text))


def frame(kind: int, payload: bytes) -> bytes:
    return _FRAME.pack(len(payload), kind) + payload


def encode_job(job: Job) -> bytes:
    header = _JOB.pack(job.job_id, job.timeout_ms, job.memory_mb, job.max_output_bytes)
    return frame(JOB, header + job.code)


def decode_job(payload: bytes) -> Job:
    job_id, timeout_ms, memory_mb, max_output = _JOB.unpack_from(payload)
    return Job(job_id, payload[_JOB.size :], timeout_ms, memory_mb, max_output)


def encode_cancel(job_id: int) -> bytes:
    return frame(CANCEL, _CANCEL.pack(job_id))


def decode_cancel(payload: bytes) -> int:
    (job_id,) = _CANCEL.unpack(payload)
    return int(job_id)


def encode_result(result: JobResult) -> bytes:
    outcome = FAILED if result.status is None else _STATUS_CODES[result.status]
    header = _RESULT.pack(
        result.job_id, outcome, result.truncated, result.duration_ms, len(result.stdout), len(result.stderr)
    )
    return frame(RESULT, header + result.stdout + result.stderr)


def decode_result(payload: bytes) -> JobResult:
    job_id, outcome, truncated, duration_ms, out_len, err_len = _RESULT.unpack_from(payload)
    body = payload[_RESULT.size :]
    if len(body) != out_len + err_len:
        raise ProtocolError(f"result {job_id}: body is {len(body)} bytes, header says {out_len + err_len}")
    status = None if outcome == FAILED else _CODE_STATUSES[outcome]
    return JobResult(job_id, status, bool(truncated), duration_ms, body[:out_len], body[out_len:])


def encode_hello(hello: dict[str, Any]) -> bytes:
    return frame(HELLO, json.dumps(hello).encode())


class FrameBuffer:
    """Incremental decoding for the zygote's non-blocking socket: feed bytes, take whole frames."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        self._buffer += data
        frames = []
        while len(self._buffer) >= _FRAME.size:
            length, kind = _FRAME.unpack_from(self._buffer)
            if length > MAX_FRAME:
                raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
            end = _FRAME.size + length
            if len(self._buffer) < end:
                break
            frames.append((kind, bytes(self._buffer[_FRAME.size : end])))
            del self._buffer[:end]
        return frames


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One frame from the server's side of the socket; raises asyncio.IncompleteReadError at EOF."""
    length, kind = _FRAME.unpack(await reader.readexactly(_FRAME.size))
    if length > MAX_FRAME:
        raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME}")
    return kind, await reader.readexactly(length)
