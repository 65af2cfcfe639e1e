"""What the trainers read, as plain data (no torch): the trajectories the policy's SFT learns, the step pairs the
PPM learns from, and the recipe of each training run. The round's rules and the extraction from trees use these
without loading any training code."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.common.errors import InvalidInput, NotFound
from services.math import stepfmt


@dataclass(frozen=True)
class Trajectory:
    question: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class StepPair:
    question: str
    prefix: tuple[str, ...]
    chosen: str
    rejected: str


def step_pairs(rows: Sequence[dict[str, Any]]) -> list[StepPair]:
    """Pairs from the rows of a round's pair files (`pairs.jsonl`, `pairs_heldout.jsonl`: a StepPair's fields)."""
    return [StepPair(r["question"], tuple(r["prefix"]), r["chosen"], r["rejected"]) for r in rows]


@dataclass(frozen=True)
class SFTConfig:
    # Optimizer steps, not tokens, decide how fast a tiny model learns to copy numbers (measured): hence a
    # fixed step budget and a small batch.
    max_steps: int = 1500
    batch_size: int = 16
    learning_rate: float = 2e-3
    warmup_steps: int = 60
    weight_decay: float = 0.01
    adam_beta2: float = 0.999  # transformers' default; the bootstrap's short schedules use 0.95
    max_length: int = 768
    seed: int = 0


@dataclass(frozen=True)
class PPMConfig:
    max_steps: int = 400
    batch_size: int = 16  # groups (a prefix and its candidate steps) per optimizer step
    learning_rate: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    adam_beta2: float = 0.999  # transformers' default; the bootstrap's short schedules use 0.95
    # Adds c·(r_better + r_worse)² to the loss (TRL's `center_rewards_coefficient`). Without it the tanh scores
    # drift to ±1 for both steps of a pair, where no gradient can separate them: the bootstrap PPM then ranked
    # pairs of unseen problems below chance (0.29–0.40); with 0.1, 0.78 (docs/results.md).
    center_coefficient: float = 0.1
    max_length: int = 768
    seed: int = 0
    # Read the policy's likelihood of the path next to the value head (services.ppm.model): a round's PPM ranked
    # held-out tree pairs at 0.52-0.56 without it (docs/results.md).
    likelihood: bool = True


def _rows(path: Path, what: str) -> Iterator[tuple[int, Any]]:
    """The JSON value of each non-blank line of the JSONL file `path`, with its line number; `what` names the file
    in errors ("trajectory file")."""
    if not Path(path).is_file():
        raise NotFound(f"{what} {path} does not exist")
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except ValueError as exc:
            raise InvalidInput(f"{what} {path}, line {number} is not JSON: {exc}") from exc


def read_trajectories(path: Path) -> list[Trajectory]:
    """Supplied solutions in the step format: JSONL with `question` and `steps` (a list of steps) or `solution`
    (the steps as one text, or as a list). Every step must parse, and the last must be the answer; a bad row is
    refused with its number."""
    trajectories = []
    for number, row in _rows(path, "trajectory file"):
        if not isinstance(row, dict) or not isinstance(row.get("question"), str) or not row["question"].strip():
            raise InvalidInput(f"trajectory file {path}, line {number}: no question")
        steps = row.get("steps")
        if steps is None:
            # `solution`: the steps as one text, or as the list `thinkmesh curriculum sample` prints.
            solution = row.get("solution")
            steps = stepfmt.parse_solution(solution) if isinstance(solution, str) else solution
        if not isinstance(steps, list) or not steps or not all(isinstance(s, str) for s in steps):
            raise InvalidInput(f"trajectory file {path}, line {number}: no steps (a 'steps' list or a 'solution')")
        broken = next((s for s in steps if not stepfmt.parse_step(s).ok), None)
        if broken is not None:
            raise InvalidInput(
                f"trajectory file {path}, line {number}: a step is not in the step format: {broken[:80]!r}"
            )
        if not stepfmt.is_final(steps[-1]):
            raise InvalidInput(f"trajectory file {path}, line {number}: the last step is not the answer")
        trajectories.append(Trajectory(row["question"], tuple(steps)))
    if not trajectories:
        raise InvalidInput(f"trajectory file {path} holds no trajectories")
    return trajectories


PAIR_FIELDS = ("question", "prefix", "chosen", "rejected")


def read_pairs(path: Path) -> list[StepPair]:
    """Step pairs in a round's pair format (`pairs.jsonl`: JSONL with a StepPair's fields, `prefix` a list of
    steps); a bad row is refused with its number."""
    pairs = []
    for number, row in _rows(path, "pair file"):
        if not isinstance(row, dict) or any(name not in row for name in PAIR_FIELDS):
            raise InvalidInput(f"pair file {path}, line {number}: a pair needs {', '.join(PAIR_FIELDS)}")
        texts = [
            row["question"],
            row["chosen"],
            row["rejected"],
            *(row["prefix"] if isinstance(row["prefix"], list) else [0]),
        ]
        if not all(isinstance(text, str) for text in texts) or row["chosen"] == row["rejected"]:
            raise InvalidInput(
                f"pair file {path}, line {number}: question, chosen and rejected are texts (chosen differs from "
                "rejected), prefix a list of steps"
            )
        pairs.append(StepPair(row["question"], tuple(row["prefix"]), row["chosen"], row["rejected"]))
    if not pairs:
        raise InvalidInput(f"pair file {path} holds no pairs")
    return pairs
