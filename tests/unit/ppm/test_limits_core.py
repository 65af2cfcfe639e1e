"""The PPM's bounds on a request, checked on the raw request before any scorer (or tokenizer) sees it."""

from __future__ import annotations

import time
from collections.abc import Sequence

import pytest

from services.common.errors import ConfigError, InvalidInput
from services.common.settings import load_settings
from services.ppm.core import PPMCore
from services.ppm.scorer import ScoreItem
from services.ppm.settings import PPMSettings


class RecordingScorer:
    """A real, tiny scorer that only remembers what reached it."""

    version = "v1"

    def __init__(self) -> None:
        self.calls: list[Sequence[ScoreItem]] = []

    async def score(self, items: Sequence[ScoreItem]) -> list[list[float]]:
        self.calls.append(items)
        return [[0.0] * len(item.steps) for item in items]

    async def close(self) -> None:
        return None


@pytest.mark.parametrize(
    ("items", "message"),
    [
        ([ScoreItem("q" * 90, ("s" * 11,))], r"items\[0\] is 101 characters \(question and steps\); .*maximum is 100"),
        ([ScoreItem("q", ("s",)), ScoreItem("q" * 50, ("s" * 50, "s"))], r"items\[1\] is 101 characters"),
        ([ScoreItem("q" * 80, ("s" * 10,))] * 3, "the items are 270 characters in all; .*maximum for a request is 250"),
    ],
)
async def test_oversized_items_are_refused_before_the_scorer_sees_them(items: list[ScoreItem], message: str) -> None:
    core = PPMCore(8, 8, max_item_chars=100, max_request_chars=250)
    scorer = RecordingScorer()
    await core.slot.install(scorer)
    with pytest.raises(InvalidInput, match=message):
        await core.score(items)
    assert scorer.calls == []
    await core.score([ScoreItem("q" * 90, ("s" * 10,))])  # the bound itself is allowed
    assert len(scorer.calls) == 1


async def test_a_ten_megabyte_item_is_refused_in_milliseconds() -> None:
    core = PPMCore(8, 8)
    await core.slot.install(RecordingScorer())
    started = time.perf_counter()
    with pytest.raises(InvalidInput, match="this server's maximum is 32768 characters"):
        await core.score([ScoreItem("q", ("7" * 10 * 1024 * 1024,))])
    assert time.perf_counter() - started < 0.1


def test_the_bounds_are_settings() -> None:
    environ = {"THINKMESH_PPM_MAX_ITEM_CHARS": "1000", "THINKMESH_PPM_MAX_REQUEST_CHARS": "5000"}
    settings = load_settings(PPMSettings, environ)
    assert (settings.max_item_chars, settings.max_request_chars) == (1000, 5000)
    assert (PPMSettings().max_item_chars, PPMSettings().max_request_chars) == (32768, 4194304)
    with pytest.raises(ConfigError, match="THINKMESH_PPM_MAX_ITEM_CHARS"):
        load_settings(PPMSettings, {"THINKMESH_PPM_MAX_ITEM_CHARS": "0"})
    with pytest.raises(ConfigError, match="THINKMESH_PPM_MAX_REQUEST_CHARS"):
        load_settings(PPMSettings, {"THINKMESH_PPM_MAX_REQUEST_CHARS": "10"})
