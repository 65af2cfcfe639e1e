"""The step format: rendering, parsing (never raising), programs and final answers."""

from __future__ import annotations

import time

import pytest

from services.math import stepfmt
from services.math.stepfmt import StepKind, parse_step

STEP1 = stepfmt.render_step("apples after buying", "apples = 3 + 5")
STEP2 = stepfmt.render_step("two baskets", "apples = apples * 2")
LAST = stepfmt.render_step("print the answer", "print(apples)", last=True)
OUTPUT = stepfmt.render_output("16\n")
ANSWER = stepfmt.render_answer("16")
TRAJECTORY = [STEP1, STEP2, LAST, OUTPUT, ANSWER]


def test_a_step_is_comment_code_and_marker() -> None:
    assert STEP1 == "# apples after buying\napples = 3 + 5\n<end_of_step>"
    assert LAST.endswith("print(apples)\n<end_of_code>")
    assert OUTPUT == "<output>16\n<end_of_output>"
    assert ANSWER == "<answer>The answer is \\boxed{16} <end_of_answer>"


def test_prompt_is_question_opening_line_code_marker_and_steps() -> None:
    prompt = stepfmt.render_prompt("  What is 3 + 5?  ", [STEP1])
    assert prompt == (
        "Question: What is 3 + 5?\nLet's think step by step and solve the problem with code.\n<code>\n" + STEP1 + "\n"
    )
    assert stepfmt.render_prompt("Q", []).endswith("<code>\n")  # the model starts its first step here
    assert prompt == stepfmt.PROMPT_TEMPLATE.format(question="What is 3 + 5?") + STEP1 + "\n"


def test_stop_strings_end_one_step_each() -> None:
    assert stepfmt.STOP_STRINGS == ("<end_of_step>", "<end_of_code>", "<end_of_answer>")


@pytest.mark.parametrize(
    ("text", "kind", "code", "answer", "output"),
    [
        (STEP1, StepKind.STEP, "# apples after buying\napples = 3 + 5", None, None),
        (LAST, StepKind.CODE_END, "# print the answer\nprint(apples)", None, None),
        (OUTPUT, StepKind.OUTPUT, "", None, "16\n"),
        (ANSWER, StepKind.ANSWER, "", "16", None),
        ("<answer>so \\boxed{\\frac{1}{2}} <end_of_answer>", StepKind.ANSWER, "", "\\frac{1}{2}", None),
        ("<code>\nx = 1\n<end_of_step>", StepKind.STEP, "\nx = 1", None, None),  # a repeated <code> is tolerated
        ("x = 1\n<end_of_step>\n\n", StepKind.STEP, "x = 1", None, None),  # trailing whitespace ignored
    ],
)
def test_well_formed_steps(text: str, kind: StepKind, code: str, answer: str | None, output: str | None) -> None:
    parsed = parse_step(text)
    assert (parsed.kind, parsed.code, parsed.answer, parsed.output, parsed.error) == (kind, code, answer, output, None)
    assert parsed.ok


def test_comments_are_collected_without_the_hash() -> None:
    assert parse_step("# first\n#second\nx = 1  # not a comment line\n<end_of_step>").comments == ("first", "second")


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", StepKind.MALFORMED),
        ("   \n", StepKind.MALFORMED),
        ("x = 1\n", StepKind.INCOMPLETE),  # the token limit cut it off
        ("# thinking about", StepKind.INCOMPLETE),
        ("<end_of_step>", StepKind.MALFORMED),  # no code
        ("x = 1\n<end_of_step>\ny = 2\n<end_of_step>", StepKind.MALFORMED),  # two steps in one
        ("x = 1\n<end_of_step>\ny = 2", StepKind.MALFORMED),  # text after the marker
        ("print(x)\n<end_of_code>\n<output>5<end_of_output>", StepKind.MALFORMED),  # the model invents output
        ("x = 1\n<output>", StepKind.MALFORMED),
        ("print(x)<end_of_step><end_of_code>", StepKind.MALFORMED),
        ("<answer>The answer is \\boxed{5", StepKind.INCOMPLETE),  # unclosed answer
        ("<answer>5 <end_of_step>", StepKind.MALFORMED),
        ("<answer><answer>\\boxed{5}<end_of_answer>", StepKind.MALFORMED),
        ("<output>5", StepKind.MALFORMED),
        ("<output>5<end_of_output><end_of_output>", StepKind.MALFORMED),
        ("\x00\x01 garbage <<<>>> {{{", StepKind.INCOMPLETE),
    ],
)
def test_malformed_output_is_reported_not_raised(text: str, kind: StepKind) -> None:
    parsed = parse_step(text)
    assert parsed.kind is kind
    assert not parsed.ok and parsed.error


def test_an_answer_without_a_box_is_final_but_says_what_it_lacks() -> None:
    parsed = parse_step("<answer>The answer is 5 <end_of_answer>")
    assert parsed.kind is StepKind.ANSWER and parsed.answer is None and parsed.error == "no \\boxed{} answer"


def test_unbalanced_box_in_an_answer_gives_no_answer() -> None:
    assert parse_step("<answer>\\boxed{\\frac{1}{2} <end_of_answer>").answer is None


@pytest.mark.parametrize(
    ("text", "boxed"),
    [
        ("\\boxed{5}", "5"),
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{2}", "2"),  # the last one
        ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),  # escaped braces do not count
        ("\\fbox{7}", "7"),
        ("\\boxed{ 3 }", "3"),
        ("\\boxed{\\frac{1}{2}", None),  # unclosed
        ("\\boxed{3} and \\boxed{4", "3"),  # an unclosed last box falls back to the closed one
        ("no box here", None),
        ("\\boxed", None),
    ],
)
def test_extract_boxed(text: str, boxed: str | None) -> None:
    assert stepfmt.extract_boxed(text) == boxed


def test_extract_boxed_is_linear_in_garbage() -> None:
    started = time.perf_counter()
    assert stepfmt.extract_boxed("\\boxed{" * 20_000) is None
    assert stepfmt.extract_boxed("\\boxed{" * 20_000 + "\\boxed{7}") == "7"
    assert time.perf_counter() - started < 1.0


def test_program_of_joins_the_code_of_code_steps_only() -> None:
    program = stepfmt.program_of(TRAJECTORY)
    assert program == (
        "# apples after buying\napples = 3 + 5\n# two baskets\napples = apples * 2\n# print the answer\nprint(apples)\n"
    )
    assert "<" not in program
    namespace: dict[str, object] = {}
    exec(compile(program, "<program>", "exec"), namespace)
    assert namespace["apples"] == 16
    assert stepfmt.program_of([]) == ""
    assert stepfmt.program_of(["x = (\n", STEP1]) == "# apples after buying\napples = 3 + 5\n"  # unfinished: left out


def test_final_and_code_end() -> None:
    assert [stepfmt.is_final(s) for s in TRAJECTORY] == [False, False, False, False, True]
    assert [stepfmt.ends_code(s) for s in TRAJECTORY] == [False, False, True, False, False]
    assert not stepfmt.is_final("<answer>\\boxed{5}")  # unfinished


def test_final_answer_prefers_the_box_then_the_printed_output() -> None:
    assert stepfmt.final_answer(TRAJECTORY) == "16"
    assert stepfmt.final_answer([STEP1, LAST, stepfmt.render_output("8\n")]) == "8"  # no answer step yet
    assert stepfmt.final_answer([STEP1, LAST], stdout="debug\n 42 \n\n") == "42"  # last non-empty line
    assert stepfmt.final_answer([STEP1, LAST, OUTPUT, "<answer>none<end_of_answer>"]) == "16"
    assert stepfmt.final_answer([STEP1]) is None
    assert stepfmt.final_answer([STEP1], stdout="") is None


def test_solution_round_trips() -> None:
    text = stepfmt.render_solution(TRAJECTORY)
    assert text.startswith(stepfmt.ASSISTANT_PREFIX + "\n<code>\n")
    assert stepfmt.parse_solution(text) == TRAJECTORY
    assert stepfmt.parse_solution(stepfmt.render_prompt("What?", TRAJECTORY)) == TRAJECTORY
    assert stepfmt.parse_solution("<code>\n" + STEP1 + "\nx = (") == [STEP1, "x = ("]
    assert stepfmt.parse_solution("") == []


def test_output_is_truncated_to_what_the_authors_keep() -> None:
    block = stepfmt.render_output("9" * 5000)
    assert parse_step(block).output == "9" * stepfmt.MAX_OUTPUT_CHARS


@pytest.mark.parametrize(
    ("generated", "stop", "step"),
    [
        ("x = 1\n", "<end_of_step>", "x = 1\n<end_of_step>"),  # the engine dropped the stop string
        ("x = 1\n<end_of_step>", "<end_of_step>", "x = 1\n<end_of_step>"),  # the engine kept it
        ("x = 1\n<end_of_step>\n", "<end_of_step>", "x = 1\n<end_of_step>"),
        ("print(x)\n", "<end_of_code>", "print(x)\n<end_of_code>"),
        ("<answer>\\boxed{2} ", "<end_of_answer>", "<answer>\\boxed{2} <end_of_answer>"),  # as rendered
        ("x = (1 +", None, "x = (1 +"),  # the token limit: stays incomplete
        ("", "<end_of_step>", "<end_of_step>"),
    ],
)
def test_close_step(generated: str, stop: str | None, step: str) -> None:
    assert stepfmt.close_step(generated, stop) == step


def test_closing_then_parsing_agree_on_the_kind() -> None:
    assert parse_step(stepfmt.close_step("x = 1", "<end_of_step>")).kind is StepKind.STEP
    assert parse_step(stepfmt.close_step("<answer>\\boxed{2}", "<end_of_answer>")).answer == "2"
    assert parse_step(stepfmt.close_step("x = 1", None)).kind is StepKind.INCOMPLETE
