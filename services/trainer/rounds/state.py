"""A round's saved state: `rounds/<n>/state.json` (a RoundState) in the store, and the readers over all rounds."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from services.common.jsonfiles import read_jsonl, write_json
from services.common.store import ModelStore


@dataclass
class RoundState:
    round: int
    state: str = "running"  # running | succeeded | failed | rejected
    stage: str = "search"
    finished: list[str] = field(default_factory=list)
    problems_done: int = 0
    problems_total: int = 0
    metrics: dict[str, Any] = field(default_factory=dict)
    policy_version: str = ""
    ppm_version: str = ""
    message: str = ""
    started_at: float = field(default_factory=time.time)
    seconds: dict[str, float] = field(default_factory=dict)


def _rows(path: Path) -> list[dict[str, Any]]:
    """A round's JSON-lines file; none when the round wrote none (e.g. it solved nothing)."""
    return read_jsonl(path) if path.is_file() else []


class Rounds:
    """The rounds of one store: which exist, their state, and which to run next (a new one or the unfinished)."""

    def __init__(self, store: ModelStore) -> None:
        self.store = store

    def directory(self, number: int) -> Path:
        return self.store.root / "rounds" / f"{number:04d}"

    def numbers(self) -> list[int]:
        root = self.store.root / "rounds"
        return sorted(int(p.name) for p in root.iterdir() if p.name.isdigit()) if root.is_dir() else []

    def state(self, number: int) -> RoundState | None:
        path = self.directory(number) / "state.json"
        return RoundState(**json.loads(path.read_text())) if path.is_file() else None

    def states(self) -> list[RoundState]:
        """Every round that has finished one way or another (succeeded, rejected or failed), oldest first."""
        return [s for n in self.numbers() if (s := self.state(n)) is not None and s.state != "running"]

    def save(self, state: RoundState) -> None:
        write_json(self.directory(state.round) / "state.json", asdict(state))

    def next_number(self) -> int:
        """The latest round when it is unfinished — killed or failed — (resume it), else a new one."""
        numbers = [n for n in self.numbers() if n > 0]
        if numbers:
            latest = self.state(numbers[-1])
            if latest is not None and latest.state in ("running", "failed"):
                return numbers[-1]
            return numbers[-1] + 1
        return 1

    def latest_published(self, number: int) -> RoundState | None:
        """The latest round before `number` whose candidates were published (round 0: the bootstrap's)."""
        for n in range(number - 1, -1, -1):
            earlier = self.state(n)
            if earlier is not None and earlier.state == "succeeded":
                return earlier
        return None

    def accumulated(self, number: int, name: str) -> list[dict[str, Any]]:
        """The rows of the file `name` (e.g. `sft.jsonl`) of every round from 1 to `number`."""
        return [row for n in range(1, number + 1) for row in _rows(self.directory(n) / name)]
