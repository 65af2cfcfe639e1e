"""The PPM's core: validates requests and scores them with the scorer in its slot (see hot_reload)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.errors import InvalidInput
from services.common.hot_reload import Slot
from services.ppm.scorer import ScoreItem, StepScorer


@dataclass(frozen=True)
class Scores:
    results: list[list[float]]
    model_version: str


class PPMCore:
    def __init__(self, max_items: int, max_steps_per_item: int) -> None:
        self.max_items = max_items
        self.max_steps_per_item = max_steps_per_item
        self.slot: Slot[StepScorer] = Slot("ppm")

    def check(self, items: Sequence[ScoreItem]) -> None:
        if not items:
            raise InvalidInput("items is empty: send at least one ScoreItem")
        if len(items) > self.max_items:
            raise InvalidInput(f"{len(items)} items is above this server's maximum of {self.max_items}")
        for index, item in enumerate(items):
            if not item.question.strip():
                raise InvalidInput(f"items[{index}].question is empty")
            if not item.steps:
                raise InvalidInput(f"items[{index}].steps is empty: there is nothing to score")
            if len(item.steps) > self.max_steps_per_item:
                raise InvalidInput(
                    f"items[{index}] has {len(item.steps)} steps; the maximum is {self.max_steps_per_item}"
                )

    async def score(self, items: Sequence[ScoreItem]) -> Scores:
        self.check(items)
        async with self.slot.lease() as scorer:
            return Scores(await scorer.score(items), scorer.version)
