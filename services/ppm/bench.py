"""The PPM's part of `thinkmesh bench ppm`: items scored/s by the HFScorer from concurrent callers (merged into
batches) and then one at a time, over the same items. The command itself is services/cli/bench.py."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from services.common.store import ModelStore
from services.common.timing import timed


async def bench_ppm(store: ModelStore, callers: int, questions: Sequence[str]) -> dict[str, Any]:
    from services.ppm.scorer import HFScorer, ScoreItem

    version = store.current("ppm")
    assert version is not None
    scorer = HFScorer(version.path, version.version, device="auto", max_batch=64)
    steps = ("# total\nx = 14 - 5 + 9\n<end_of_step>", "# show\nprint(x)\n<end_of_code>", "<output>18<end_of_output>")
    items = [ScoreItem(questions[i % len(questions)], steps[: 1 + i % 3]) for i in range(callers)]
    try:
        await scorer.score(items[:2])  # warm-up
        figures = {}
        for mode, concurrent in (("concurrent", True), ("sequential", False)):
            calls: list[Callable[[], Awaitable[Any]]] = [functools.partial(scorer.score, [item]) for item in items]
            seconds, _ = await timed(calls, concurrent)
            figures[mode] = {"seconds": round(seconds, 3), "items_per_s": round(len(items) / seconds, 1)}
    finally:
        await scorer.close()
    return {
        "model": f"ppm {version.version}",
        "callers": callers,
        **figures,
        "speedup": round(figures["concurrent"]["items_per_s"] / figures["sequential"]["items_per_s"], 2),
    }
