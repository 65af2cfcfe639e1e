"""One rendering of the policy's prompt, as text and as ids, in the plain and chat formats."""

from __future__ import annotations

import pytest

from services.common.errors import InvalidInput
from services.math import stepfmt
from services.math.prompting import PromptRenderer

STEP1 = "# Tom's apples\napples = 3 + 5\n<end_of_step>"
STEP2 = "# show it\nprint(apples)\n<end_of_code>"


class _ChatTokenizer:
    """Characters as ids; a chat template that wraps the user turn."""

    chat_template = "{{ messages }}"

    def apply_chat_template(
        self, messages: list[dict[str, str]], *, tokenize: bool, add_generation_prompt: bool
    ) -> str:
        assert not tokenize and add_generation_prompt
        return f"<|user|>{messages[0]['content']}<|assistant|>"

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        assert not add_special_tokens
        return [ord(c) for c in text]


class _BaseTokenizer(_ChatTokenizer):
    chat_template = None

    def apply_chat_template(self, *args: object, **kwargs: object) -> str:
        raise AssertionError("a tokenizer without a chat template must not be asked to apply one")


def test_the_chat_format_wraps_the_question_in_the_tokenizers_template() -> None:
    prompt = PromptRenderer(_ChatTokenizer(), "chat").text("What is 3 + 5?", [STEP1])
    assert prompt == "<|user|>What is 3 + 5?<|assistant|>" + stepfmt.render_solution([STEP1])


def test_the_plain_format_is_the_step_formats_prompt_whatever_the_tokenizer() -> None:
    for tokenizer in (_ChatTokenizer(), _BaseTokenizer()):
        assert PromptRenderer(tokenizer, "plain").text("Q", [STEP1]) == stepfmt.render_prompt("Q", [STEP1])


def test_ids_are_the_head_then_each_step_and_its_newline() -> None:
    renderer = PromptRenderer(_ChatTokenizer(), "chat")
    ids = renderer.ids("Q", [STEP1, STEP2])
    assert ids == renderer.head_ids("Q") + renderer.step_ids(STEP1) + [10] + renderer.step_ids(STEP2) + [10]
    assert bytes(ids).decode() == renderer.text("Q", [STEP1, STEP2])  # pieces here tokenize as the whole


def test_a_chat_format_needs_a_chat_template_and_a_format_is_one_of_two() -> None:
    with pytest.raises(InvalidInput, match="chat template"):
        PromptRenderer(_BaseTokenizer(), "chat")
    with pytest.raises(InvalidInput, match="unknown prompt format 'llama'"):
        PromptRenderer(_ChatTokenizer(), "llama")
