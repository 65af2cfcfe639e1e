"""The batcher drops the work no caller waits for: requests past their deadline, and those whose caller went away."""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

import pytest

from services.common.batching import MicroBatcher
from services.common.deadlines import Liveness, call_deadline, within_deadline
from services.common.errors import DeadlineExceeded


@dataclass(frozen=True)
class Job:
    name: str
    liveness: Liveness = field(default_factory=Liveness)


def _batcher(run: object, window_s: float = 0.0) -> MicroBatcher[Job, str]:
    return MicroBatcher(
        run,  # type: ignore[arg-type]
        size=lambda _: 1,
        liveness=lambda job: job.liveness,
        window_s=window_s,
    )


async def test_a_request_whose_deadline_passes_in_the_queue_is_never_run() -> None:
    release = threading.Event()
    seen: list[list[str]] = []

    def run(batch: list[Job]) -> list[str]:
        seen.append([job.name for job in batch])
        release.wait(10)
        return [job.name for job in batch]

    batcher = _batcher(run)
    first = asyncio.create_task(batcher.submit(Job("first")))
    await asyncio.sleep(0.05)  # `first` runs and holds the thread
    late = asyncio.create_task(batcher.submit(Job("late", Liveness(time.monotonic() + 0.05))))
    await asyncio.sleep(0.2)
    release.set()
    assert await first == "first"
    with pytest.raises(DeadlineExceeded):
        await late
    assert seen == [["first"]]
    await batcher.close()


async def test_cancelling_the_caller_tells_the_running_batch_at_once() -> None:
    stopped_after: list[float] = []

    def run(batch: list[Job]) -> list[str]:
        started = time.monotonic()
        while batch[0].liveness.alive() and time.monotonic() - started < 10:  # one "token" per millisecond
            time.sleep(0.001)
        stopped_after.append(time.monotonic() - started)
        return ["partial"]

    batcher = _batcher(run)
    caller = asyncio.create_task(batcher.submit(Job("abandoned")))
    await asyncio.sleep(0.1)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    await batcher.close()  # waits for the thread: it must have stopped
    assert stopped_after and stopped_after[0] < 1.0


async def test_a_request_that_dies_while_its_batch_runs_fails_alone_and_never_gets_the_partial_result() -> None:
    def run(batch: list[Job]) -> list[str]:
        time.sleep(0.3)
        return [f"{job.name} (done)" for job in batch]

    batcher = _batcher(run, window_s=0.05)
    short = Job("short", Liveness(time.monotonic() + 0.15))
    results = await asyncio.gather(batcher.submit(short), batcher.submit(Job("patient")), return_exceptions=True)
    assert isinstance(results[0], DeadlineExceeded)
    assert results[1] == "patient (done)"
    assert batcher.batches_run == 1  # they did share the batch
    await batcher.close()


async def test_within_deadline_cancels_the_body_at_the_deadline_and_says_what_it_was() -> None:
    assert call_deadline() is None
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match=r"scoring 3 items did not finish within the caller's deadline of 0.2s"):
        async with within_deadline(0.2, "scoring 3 items"):
            deadline = call_deadline()
            assert deadline is not None and deadline == pytest.approx(started + 0.2, abs=0.05)
            await asyncio.sleep(10)
    assert time.monotonic() - started < 1.0
    assert call_deadline() is None


async def test_within_deadline_starts_nothing_without_time_left_and_lets_other_timeouts_through() -> None:
    ran = False
    with pytest.raises(DeadlineExceeded, match="had passed before the work could start"):
        async with within_deadline(0.0, "a call"):
            ran = True
    assert not ran
    with pytest.raises(TimeoutError):  # a timeout of the body's own is not the caller's deadline
        async with within_deadline(5.0, "a call"):
            raise TimeoutError("the body's own")
    async with within_deadline(None, "a call"):
        assert call_deadline() is None


def test_liveness_is_dead_once_cancelled_or_past_its_deadline() -> None:
    assert Liveness().alive()
    assert not Liveness(time.monotonic() - 1).alive()
    assert Liveness(time.monotonic() + 60).alive()
    cancelled = Liveness()
    cancelled.cancel()
    assert cancelled.cancelled and not cancelled.alive()
