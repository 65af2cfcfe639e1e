"""Progress bars for a round: one bar per stage, fed by `RoundRunner`'s progress callback."""

from __future__ import annotations

from typing import Any


class StageBars:
    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self.bars: dict[str, Any] = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=f"{self.prefix}{stage}", leave=False)
        bar.total = total
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()
        self.bars.clear()
