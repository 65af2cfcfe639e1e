"""The policy's prompt as token ids: the one rendering that serving, SFT, PPM training and PPM scoring share.

A model's prompt format is decided once, when the model enters the store, and recorded in its version's
manifest (services/common/store.py `prompt_format_of`):

    plain   "Question: …\\n" + the assistant's opening line + "<code>\\n" (the embedded models, base models)
    chat    the tokenizer's chat template with the question as the user turn, the generation prompt, then the
            same opening line and "<code>\\n" (chat models such as Qwen2.5-Math-Instruct)

followed in both by the steps so far, each with the newline that ends it. Ids are built piece by piece — the
head, then each step, then its newline — never by tokenizing the whole text at once: a BPE tokenizer may merge
across a step's end ("…>\\n") differently from how the pieces were learnt, and the PPM reads each step's score at
its last token. So a policy is trained on, served and scored on exactly the same ids.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from services.common.errors import InvalidInput
from services.common.store import PromptFormat, check_prompt_format
from services.math import stepfmt

__all__ = ["PromptFormat", "PromptRenderer"]


class PromptRenderer:
    """Renders (question, steps) for one tokenizer in one prompt format, as text or as token ids."""

    def __init__(self, tokenizer: Any, prompt_format: str = "plain") -> None:
        self.tokenizer = tokenizer
        self.format: PromptFormat = check_prompt_format(prompt_format)
        if self.format == "chat" and not getattr(tokenizer, "chat_template", None):
            raise InvalidInput("the chat prompt format needs a tokenizer with a chat template")
        # Steps repeat across a search's prompts (every child shares its parent's path): encode each once.
        self._step_ids = functools.lru_cache(maxsize=65_536)(self._encode)

    def _encode(self, text: str) -> tuple[int, ...]:
        return tuple(self.tokenizer.encode(text, add_special_tokens=False))

    def head(self, question: str) -> str:
        """The prompt before the first step."""
        if self.format == "plain":
            return stepfmt.render_prompt(question, ())
        turn = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": question.strip()}], tokenize=False, add_generation_prompt=True
        )
        return str(turn) + stepfmt.render_solution(())

    def text(self, question: str, steps: Sequence[str] = ()) -> str:
        """The prompt as text (for a backend that takes text); its ids are `ids`, not this text re-tokenized."""
        return self.head(question) + "".join(step + "\n" for step in steps)

    def head_ids(self, question: str) -> list[int]:
        return list(self._encode(self.head(question)))

    def step_ids(self, step: str) -> list[int]:
        """A step's ids as they follow the prompt and the steps before it (without its newline)."""
        return list(self._step_ids(step))

    @property
    def newline_ids(self) -> list[int]:
        return list(self._step_ids("\n"))

    def ids(self, question: str, steps: Sequence[str] = ()) -> list[int]:
        """The prompt's token ids: the head, then each step followed by its newline."""
        ids = self.head_ids(question)
        newline = self.newline_ids
        for step in steps:
            ids.extend(self.step_ids(step))
            ids.extend(newline)
        return ids


FEW_SHOT_SEED = 2_024  # the worked examples a teacher is shown: fixed, so every teacher prompt is the same


def few_shot_prefix(examples: int) -> str:
    """`examples` solved problems in the step format, each a whole plain prompt and solution, for a teacher model
    that has never seen the format (the authors' round 1 shows two)."""
    if examples <= 0:
        return ""
    from services.math.curriculum import generate

    solved = generate(2, examples, seed=FEW_SHOT_SEED)
    return "".join(stepfmt.render_prompt(p.question, p.solution) + "\n" for p in solved)
