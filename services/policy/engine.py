"""What a generation backend must do, in domain terms (no protobuf, no gRPC).

Backends: `hf` (transformers, CPU or GPU), `vllm` (GPU in production), `openai` (any OpenAI-compatible
endpoint, e.g. a large model for the bootstrap round). The servicer and the search only see this protocol.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable


class StepEnd(enum.Enum):
    STEP = "step"  # <end_of_step>: more steps follow
    CODE = "code"  # <end_of_code>: the program's output follows
    ANSWER = "answer"  # <end_of_answer>: the boxed answer was written
    LENGTH = "length"  # the token budget ran out first


@dataclass(frozen=True)
class StepPrompt:
    question: str
    steps: tuple[str, ...] = ()


@dataclass(frozen=True)
class SamplingParams:
    n: int = 1
    temperature: float = 0.7
    top_p: float = 1.0
    max_new_tokens: int = 256
    seed: int | None = None


@dataclass(frozen=True)
class GeneratedStep:
    text: str  # including its closing marker
    end: StepEnd
    num_tokens: int
    logprob: float


# The candidate of a prompt that leaves no room in the model's context: empty, ended by the length limit. The
# search counts such a node as unfinished (−1); the other prompts of a batch are not failed for it.
NO_ROOM = GeneratedStep(text="", end=StepEnd.LENGTH, num_tokens=0, logprob=0.0)


class GenerationEngine(Protocol):
    """n candidate next steps per prompt; one list of candidates per prompt, in order."""

    @property
    def version(self) -> str: ...

    async def generate(self, prompts: Sequence[StepPrompt], params: SamplingParams) -> list[list[GeneratedStep]]: ...

    async def close(self) -> None: ...


@runtime_checkable
class ReloadsInPlace(Protocol):
    """An engine that takes a new version's weights while it runs (the `inplace` reload: hot_reload.py)."""

    def in_place_obstacle(self, model_dir: Path) -> str | None:
        """Why `model_dir` cannot replace the served weights in place (None: it can)."""
        ...

    async def reload_in_place(self, model_dir: Path, version: str) -> None:
        """Serve `model_dir`'s weights as `version` from now on; called while no request runs."""
        ...


def classify_end(text: str, finished_by_marker: bool) -> StepEnd:
    """How a generated step ended, from its last marker."""
    from services.math import stepfmt

    if finished_by_marker:
        if text.endswith(stepfmt.END_OF_ANSWER):
            return StepEnd.ANSWER
        if text.endswith(stepfmt.END_OF_CODE):
            return StepEnd.CODE
        if text.endswith(stepfmt.END_OF_STEP):
            return StepEnd.STEP
    return StepEnd.LENGTH


def cut_at_stop(text: str) -> tuple[str, bool]:
    """Text up to and including the first stop marker, and whether one was found."""
    from services.math import stepfmt

    cut = None
    for marker in stepfmt.STOP_STRINGS:
        index = text.find(marker)
        if index >= 0 and (cut is None or index + len(marker) < cut):
            cut = index + len(marker)
    return (text, False) if cut is None else (text[:cut], True)
