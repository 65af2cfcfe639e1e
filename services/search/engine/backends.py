"""What the search needs from the other services, as small protocols.

Two implementations of each: over gRPC (services/search/worker/clients.py: PolicyService, SandboxService,
PPMService, as in a cluster) and in process (services/search/eval/local.py: the same cores called directly, for
`thinkmesh eval` and the trainer's evaluations). The orchestrator only sees `Backends`, so the same search code
runs in both.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from services.search.engine.mcts import Execution


@dataclass(frozen=True)
class Prompt:
    question: str
    steps: tuple[str, ...]


@dataclass(frozen=True)
class Sampled:
    text: str
    finished: bool  # ended at a step marker
    num_tokens: int
    logprob: float = 0.0  # sum over its tokens, under the distribution they were sampled from


class Generator(Protocol):
    async def generate(
        self, prompts: Sequence[Prompt], n: int, temperature: float, max_new_tokens: int, seed: int
    ) -> tuple[list[list[Sampled]], str]: ...


class Runner(Protocol):
    async def run(self, programs: Sequence[str], timeout_ms: int) -> list[Execution]: ...


class Scorer(Protocol):
    async def score(self, items: Sequence[Prompt]) -> tuple[list[list[float]], str]: ...


class AnswerGrader(Protocol):
    async def grade(self, pairs: Sequence[tuple[str, str]]) -> list[bool]: ...


@dataclass
class Backends:
    generator: Generator
    runner: Runner
    scorer: Scorer
    grader: AnswerGrader


def execution(status: str, stdout: str, stderr: str) -> Execution:
    """A sandbox result (its status name, stdout and stderr) as the engine reads it."""
    return Execution(ok=status == "ok", stdout=stdout, error="" if status == "ok" else (stderr or status)[-500:])
