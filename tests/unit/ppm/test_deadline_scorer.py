"""The PPM stops scoring for callers who stopped waiting: between micro-batches, and between encoding a micro-batch
and its forward pass."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.common.errors import DeadlineExceeded
from services.common.store import ModelStore
from services.math import stepfmt
from services.ppm.core import PPMCore
from services.ppm.scorer import HFScorer, ScoreItem
from support.tiny_models import QUESTION, STEPS, publish_micro_models

# About 500 tokens each: a micro-batch of 8 is a fraction of a second of CPU, the 512 items of a call many seconds.
HUGE = [
    ScoreItem(
        QUESTION.replace("3", str(i)),
        tuple(stepfmt.render_step(f"part {j}", f"x{j} = {j} * {i % 10}") for j in range(18)),
    )
    for i in range(512)
]
NORMAL = [ScoreItem(QUESTION, STEPS[:2])]
NEXT_CALL_BOUND_S = 3.0


@pytest.fixture(scope="module")
def ppm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _, ppm = publish_micro_models(ModelStore(tmp_path_factory.mktemp("store")))
    return ppm.path


@pytest.fixture
async def scorer(ppm_dir: Path) -> AsyncIterator[HFScorer]:
    scorer = HFScorer(ppm_dir, "v1", device="cpu", max_batch=8)
    yield scorer
    await scorer.close()


def _count_forwards(scorer: HFScorer) -> list[float]:
    passes: list[float] = []
    scorer.model.register_forward_hook(lambda *_: passes.append(time.monotonic()))
    return passes


async def _timed_normal_call(core: PPMCore) -> float:
    started = time.monotonic()
    scores = await core.score(NORMAL)
    assert [len(s) for s in scores.results] == [2]
    return time.monotonic() - started


async def test_a_call_past_its_deadline_stops_within_a_micro_batch(scorer: HFScorer) -> None:
    core = PPMCore(512, 64)
    await core.slot.install(scorer)
    passes = _count_forwards(scorer)
    started = time.monotonic()
    with pytest.raises(DeadlineExceeded, match="ScoreSteps of 512 items did not finish within the caller's deadline"):
        await core.score(HUGE, timeout_s=0.5)
    assert time.monotonic() - started < 1.0
    deadline = started + 0.5
    assert await _timed_normal_call(core) < NEXT_CALL_BOUND_S
    assert len([t for t in passes if t > deadline]) <= 2  # the micro-batch in progress, then the normal call's
    assert len(passes) < len(HUGE) / 8


async def test_a_cancelled_call_stops_within_a_micro_batch(scorer: HFScorer) -> None:
    core = PPMCore(512, 64)
    await core.slot.install(scorer)
    passes = _count_forwards(scorer)
    call = asyncio.create_task(core.score(HUGE))
    await asyncio.sleep(0.5)
    call.cancel()
    cancelled_at = time.monotonic()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert await _timed_normal_call(core) < NEXT_CALL_BOUND_S
    assert len([t for t in passes if t > cancelled_at]) <= 2
    assert len(passes) < len(HUGE) / 8


def test_items_whose_caller_stopped_waiting_are_neither_encoded_nor_scored(scorer: HFScorer) -> None:
    passes = _count_forwards(scorer)
    items = [*NORMAL, ScoreItem(QUESTION, ("",)), *NORMAL]  # the middle one cannot be encoded: an empty step
    assert scorer._score_batch(items, alive=lambda index: index != 1)[1] == []  # not encoded, so no error either
    assert len(passes) == 1
    asked: list[int] = []

    def alive_until_encoded(index: int) -> bool:
        asked.append(index)
        return len(asked) <= len(NORMAL)  # the caller goes away once its item is encoded

    assert scorer._score_batch(list(NORMAL), alive=alive_until_encoded) == [[]]
    assert len(passes) == 1  # no forward pass for it
