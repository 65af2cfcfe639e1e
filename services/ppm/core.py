"""The PPM's core: validates requests and scores them with the scorer in its slot (see hot_reload)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from services.common.deadlines import within_deadline
from services.common.errors import InvalidInput
from services.common.hot_reload import Slot
from services.ppm.scorer import ScoreItem, StepScorer
from services.ppm.settings import MAX_ITEM_CHARS, MAX_REQUEST_CHARS


@dataclass(frozen=True)
class Scores:
    results: list[list[float]]
    model_version: str


class PPMCore:
    def __init__(
        self,
        max_items: int,
        max_steps_per_item: int,
        *,
        max_item_chars: int = MAX_ITEM_CHARS,
        max_request_chars: int = MAX_REQUEST_CHARS,
    ) -> None:
        self.max_items = max_items
        self.max_steps_per_item = max_steps_per_item
        self.max_item_chars = max_item_chars
        self.max_request_chars = max_request_chars
        self.slot: Slot[StepScorer] = Slot("ppm")

    def check(self, items: Sequence[ScoreItem]) -> None:
        """The request's shape and size, on the raw text: nothing has been tokenized yet."""
        if not items:
            raise InvalidInput("items is empty: send at least one ScoreItem")
        if len(items) > self.max_items:
            raise InvalidInput(f"{len(items)} items is above this server's maximum of {self.max_items}")
        total = 0
        for index, item in enumerate(items):
            chars = len(item.question) + sum(len(step) for step in item.steps)
            if chars > self.max_item_chars:
                raise InvalidInput(
                    f"items[{index}] is {chars} characters (question and steps); this server's maximum is "
                    f"{self.max_item_chars} characters"
                )
            total += chars
            if not item.question.strip():
                raise InvalidInput(f"items[{index}].question is empty")
            if not item.steps:
                raise InvalidInput(f"items[{index}].steps is empty: there is nothing to score")
            if len(item.steps) > self.max_steps_per_item:
                raise InvalidInput(
                    f"items[{index}] has {len(item.steps)} steps; the maximum is {self.max_steps_per_item}"
                )
        if total > self.max_request_chars:
            raise InvalidInput(
                f"the items are {total} characters in all; this server's maximum for a request is "
                f"{self.max_request_chars} characters"
            )

    async def score(self, items: Sequence[ScoreItem], *, timeout_s: float | None = None) -> Scores:
        """Each item's step scores, within `timeout_s` (the caller's deadline; None: none). Past it, or when the
        caller is cancelled, the items not yet scored are dropped and DeadlineExceeded is raised."""
        self.check(items)
        async with within_deadline(timeout_s, f"ScoreSteps of {len(items)} items"), self.slot.lease() as scorer:
            return Scores(await scorer.score(items), scorer.version)
