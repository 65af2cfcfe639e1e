"""The framed protocol between the server and its zygote."""

from __future__ import annotations

import struct

import pytest

from services.sandbox.model import Status
from services.sandbox.protocol import (
    CANCEL,
    JOB,
    RESULT,
    FrameBuffer,
    Job,
    JobResult,
    ProtocolError,
    ZygoteConfig,
    decode_cancel,
    decode_job,
    decode_result,
    encode_cancel,
    encode_job,
    encode_result,
)


def test_a_job_survives_the_round_trip_even_fed_byte_by_byte() -> None:
    job = Job(7, "print('héllo')\n".encode() * 100, 1500, 256, 4096)
    buffer = FrameBuffer()
    frames = []
    for byte in encode_job(job):
        frames += buffer.feed(bytes([byte]))
    assert [kind for kind, _ in frames] == [JOB]
    assert decode_job(frames[0][1]) == job


@pytest.mark.parametrize("status", [*Status, None])
def test_every_outcome_survives_the_round_trip(status: Status | None) -> None:
    result = JobResult(9, status, True, 1234, b"out\x00put", "€rr".encode())
    ((kind, payload),) = FrameBuffer().feed(encode_result(result))
    assert kind == RESULT
    assert decode_result(payload) == result


def test_several_frames_in_one_read_are_all_taken() -> None:
    data = encode_cancel(1) + encode_cancel(2) + encode_cancel(3)[:-2]
    buffer = FrameBuffer()
    frames = buffer.feed(data)
    assert [(kind, decode_cancel(payload)) for kind, payload in frames] == [(CANCEL, 1), (CANCEL, 2)]
    assert [decode_cancel(p) for _, p in buffer.feed(encode_cancel(3)[-2:])] == [3]


def test_an_oversized_frame_is_refused() -> None:
    with pytest.raises(ProtocolError):
        FrameBuffer().feed(struct.pack("!IB", 2**31, JOB))


def test_a_result_whose_lengths_disagree_is_refused() -> None:
    payload = encode_result(JobResult(1, Status.OK, False, 1, b"abc", b""))[5:]
    with pytest.raises(ProtocolError):
        decode_result(payload + b"extra")


def test_zygote_config_round_trips_through_json() -> None:
    config = ZygoteConfig(2, 60000, "/tmp/x", 64, 16, 64, 16, 4096, 60000, 1 << 20)
    assert ZygoteConfig.from_json(config.to_json()) == config
