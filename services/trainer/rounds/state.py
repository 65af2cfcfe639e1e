"""A round's saved state: `rounds/<n>/state.json` (a RoundState) in the store, and the readers over all rounds."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar

from services.common.errors import InvalidInput
from services.common.jsonfiles import read_jsonl, write_json
from services.common.store import ModelStore

# A round is unfinished in these states: the next start (StartRound, `thinkmesh evolve`, a restarted trainer)
# resumes it. "queued": StartRound accepted it and nothing has run yet; "running": a stage was running when the
# trainer stopped, or runs now; "failed": a stage raised (resumed by the next StartRound, not by a restart).
UNFINISHED = ("queued", "running", "failed")


@dataclass(frozen=True)
class RoundRequest:
    """What StartRound asked of a round (0 or "" = the trainer's configured value), saved in the round's state so
    a round resumed after a restart runs as it was asked. The files are as the client named them (relative to
    the store's root, or a dataset name) and are checked again when the round resumes."""

    pool_size: int = 0
    rollouts: int = 0
    candidates: int = 0
    pool_file: str = ""
    eval_dataset: str = ""

    # A typo's guard, far above any budget a round can spend (the paper's largest: 128 rollouts, 16 candidates).
    LIMIT: ClassVar[int] = 10_000

    def __post_init__(self) -> None:
        for name in ("pool_size", "rollouts", "candidates"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= self.LIMIT:
                raise InvalidInput(f"{name}={value!r} is out of range: 0 (the trainer's default) to {self.LIMIT}")
        for name in ("pool_file", "eval_dataset"):
            if not isinstance(getattr(self, name), str):
                raise InvalidInput(f"{name} must be a string")

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundRequest:
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})


@dataclass
class RoundState:
    round: int
    state: str = "running"  # queued | running | succeeded | failed | rejected
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
    # StartRound's request; None for a round started otherwise (`thinkmesh evolve`) or saved before it was kept.
    request: RoundRequest | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> RoundState:
        request = data.get("request")
        return cls(**{**data, "request": RoundRequest.from_json(request) if request else None})

    @property
    def unfinished(self) -> bool:
        return self.state in UNFINISHED


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
        return RoundState.from_json(json.loads(path.read_text())) if path.is_file() else None

    def states(self) -> list[RoundState]:
        """Every round that has finished one way or another (succeeded, rejected or failed), oldest first."""
        return [s for n in self.numbers() if (s := self.state(n)) is not None and s.state not in ("queued", "running")]

    def save(self, state: RoundState) -> None:
        write_json(self.directory(state.round) / "state.json", state.to_json())

    def latest(self) -> RoundState | None:
        """The latest round after round 0 (the bootstrap's baseline), whatever its state."""
        numbers = [n for n in self.numbers() if n > 0]
        return self.state(numbers[-1]) if numbers else None

    def next_number(self) -> int:
        """The latest round when it is unfinished — queued, killed or failed — (resume it), else a new one."""
        numbers = [n for n in self.numbers() if n > 0]
        if numbers:
            latest = self.state(numbers[-1])
            if latest is not None and latest.unfinished:
                return numbers[-1]
            return numbers[-1] + 1
        return 1

    def to_run(self, last: int) -> int:
        """How many rounds are still to run, up to round `last`: an unfinished one counts, a finished one not."""
        return max(0, last - self.next_number() + 1)

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
