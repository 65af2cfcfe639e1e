"""The code-augmented chain-of-thought step format of rStar-Math; the only module that knows the markers.

Grammar of the text a policy model reads and writes (``"\\n"`` is one newline)::

    prompt      := "Question: " question "\\n" ASSISTANT_PREFIX "\\n" CODE_START "\\n" (step "\\n")*
    trajectory  := (code_step "\\n")* code_end "\\n" output "\\n" answer "\\n"
    code_step   := code END_OF_STEP        # '#' comments + Python: one small reasoning move
    code_end    := code END_OF_CODE        # the last code step; its program prints the answer
    output      := OUTPUT_START stdout END_OF_OUTPUT      # appended by the search, never by the model
    answer      := ANSWER_START text "\\boxed{" X "}" text END_OF_ANSWER

A *step* is one element of that sequence, stored with its end marker and without the newline that
separates it from the next one, e.g. ``"# total apples\\napples = 3 + 5\\n<end_of_step>"``.

How a trajectory ends: the model writes code steps until one ends with END_OF_CODE; the search then runs the
program of the trajectory (``program_of``), appends ``render_output(stdout)`` as the next step (stdout cut to
MAX_OUTPUT_CHARS, as the authors' code does), and the model writes the ANSWER step, which is terminal.

Generation stops at STOP_STRINGS; engines that drop the stop string get it back from ``close_step``.
Nothing here raises on model output: malformed text becomes a ``ParsedStep`` whose kind says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

CODE_START = "<code>"
END_OF_STEP = "<end_of_step>"
END_OF_CODE = "<end_of_code>"
OUTPUT_START = "<output>"
END_OF_OUTPUT = "<end_of_output>"
ANSWER_START = "<answer>"
END_OF_ANSWER = "<end_of_answer>"
MARKERS = (CODE_START, END_OF_STEP, END_OF_CODE, OUTPUT_START, END_OF_OUTPUT, ANSWER_START, END_OF_ANSWER)

# One generation call produces one step: it stops at the first of these.
STOP_STRINGS = (END_OF_STEP, END_OF_CODE, END_OF_ANSWER)

ASSISTANT_PREFIX = "Let's think step by step and solve the problem with code."
PROMPT_TEMPLATE = "Question: {question}\n" + ASSISTANT_PREFIX + "\n" + CODE_START + "\n"

# The authors' code keeps the first 1,024 characters of a program's stdout.
MAX_OUTPUT_CHARS = 1024

_BOX_COMMANDS = ("\\boxed", "\\fbox")


class StepKind(StrEnum):
    STEP = "step"  # a code step ending in END_OF_STEP
    CODE_END = "code_end"  # the last code step, ending in END_OF_CODE
    OUTPUT = "output"  # the <output> block the search appends
    ANSWER = "answer"  # the terminal <answer> step
    INCOMPLETE = "incomplete"  # no end marker yet (generation hit its token limit)
    MALFORMED = "malformed"  # markers misplaced, duplicated or empty content


@dataclass(frozen=True)
class ParsedStep:
    kind: StepKind
    text: str
    code: str = ""  # Python source of a code step (comments included), markers removed
    comments: tuple[str, ...] = ()  # the '#' comment lines, without the '#'
    answer: str | None = None  # content of the last \boxed{} of an ANSWER step
    output: str | None = None  # stdout inside an OUTPUT block
    error: str | None = None  # why the step is malformed, or what an ANSWER step lacks

    @property
    def ok(self) -> bool:
        return self.error is None and self.kind not in (StepKind.INCOMPLETE, StepKind.MALFORMED)

    @property
    def is_code(self) -> bool:
        return self.kind in (StepKind.STEP, StepKind.CODE_END)


# ----------------------------------------------------------------------------------------------- rendering


def render_prompt(question: str, steps: Sequence[str] = ()) -> str:
    """The exact text the policy sees: the question, the assistant's opening line, `<code>`, the steps so far."""
    return PROMPT_TEMPLATE.format(question=question.strip()) + _render_steps(steps)


def render_solution(steps: Sequence[str]) -> str:
    """What follows the question: the assistant's opening line, `<code>` and the steps, one per line."""
    return ASSISTANT_PREFIX + "\n" + CODE_START + "\n" + _render_steps(steps)


def _render_steps(steps: Sequence[str]) -> str:
    return "".join(step + "\n" for step in steps)


def render_step(comment: str, code: str, *, last: bool = False) -> str:
    """A code step: each comment line as `# ...`, then the code, then END_OF_STEP (END_OF_CODE if `last`)."""
    lines = [f"# {line.strip()}" for line in comment.strip().splitlines() if line.strip()]
    body = "\n".join([*lines, code.strip("\n")])
    return f"{body}\n{END_OF_CODE if last else END_OF_STEP}"


def truncate_output(stdout: str) -> str:
    return stdout[:MAX_OUTPUT_CHARS]


def render_output(stdout: str) -> str:
    """The block the search appends after an END_OF_CODE step: the program's stdout, truncated."""
    return f"{OUTPUT_START}{truncate_output(stdout)}{END_OF_OUTPUT}"


def written_by_policy(step: str) -> bool:
    """Whether the model wrote this step: every step but the `<output>` blocks the search appends."""
    return not step.startswith(OUTPUT_START)


def render_answer(answer: str) -> str:
    """The terminal step, written by the model after the output block."""
    return f"{ANSWER_START}The answer is \\boxed{{{answer}}} {END_OF_ANSWER}"


def close_step(text: str, stop: str | None) -> str:
    """A generated step with its stop string restored (most engines leave it out of the text).

    `stop` is the stop string that ended generation, or None when the token limit did (the step stays
    INCOMPLETE). The marker goes right after the generated text, so the step reads exactly as the model
    wrote it, whether or not its engine kept the stop string.
    """
    if stop is not None and stop in STOP_STRINGS and not text.rstrip().endswith(stop):
        text += stop
    return text.rstrip()


# ------------------------------------------------------------------------------------------------- parsing


def parse_step(text: str) -> ParsedStep:
    """Classify one step; never raises. See the module docstring for the grammar."""
    body = text.rstrip()
    if not body.strip():
        return ParsedStep(StepKind.MALFORMED, text, error="empty step")
    stripped = body.lstrip()
    if stripped.startswith(CODE_START):  # tolerate a model that repeats the opening marker
        body = stripped[len(CODE_START) :]
    if body.lstrip().startswith(OUTPUT_START):
        return _parse_output(text, body.lstrip())
    if body.lstrip().startswith(ANSWER_START) or body.endswith(END_OF_ANSWER):
        return _parse_answer(text, body.lstrip())
    return _parse_code(text, body)


def _counts(body: str) -> dict[str, int]:
    return {marker: body.count(marker) for marker in MARKERS if marker in body}


def _parse_output(text: str, body: str) -> ParsedStep:
    counts = _counts(body)
    if not body.endswith(END_OF_OUTPUT) or counts != {OUTPUT_START: 1, END_OF_OUTPUT: 1}:
        return ParsedStep(StepKind.MALFORMED, text, error="an output block must be <output>...<end_of_output>")
    return ParsedStep(StepKind.OUTPUT, text, output=body[len(OUTPUT_START) : -len(END_OF_OUTPUT)])


def _parse_answer(text: str, body: str) -> ParsedStep:
    inner = body.removeprefix(ANSWER_START)
    if not inner.endswith(END_OF_ANSWER):
        if any(marker in inner for marker in MARKERS):
            return ParsedStep(StepKind.MALFORMED, text, error="marker inside an unfinished answer")
        return ParsedStep(StepKind.INCOMPLETE, text, answer=extract_boxed(inner), error="answer not finished")
    inner = inner[: -len(END_OF_ANSWER)]
    if any(marker in inner for marker in MARKERS):
        return ParsedStep(StepKind.MALFORMED, text, error="marker inside the answer")
    boxed = extract_boxed(inner)
    return ParsedStep(StepKind.ANSWER, text, answer=boxed, error=None if boxed is not None else "no \\boxed{} answer")


def _parse_code(text: str, body: str) -> ParsedStep:
    counts = _counts(body)
    ends = [m for m in (END_OF_STEP, END_OF_CODE) if body.endswith(m)]
    if not ends:
        if counts:
            return ParsedStep(StepKind.MALFORMED, text, error=f"unexpected {', '.join(counts)} in a code step")
        return ParsedStep(StepKind.INCOMPLETE, text, code=body, comments=_comments(body), error="no end-of-step marker")
    end = ends[0]
    if counts != {end: 1}:
        others = ", ".join(f"{m}×{n}" for m, n in counts.items())
        return ParsedStep(StepKind.MALFORMED, text, error=f"a code step must hold exactly one end marker ({others})")
    code = body[: -len(end)].rstrip()
    if not code.strip():
        return ParsedStep(StepKind.MALFORMED, text, error="empty code step")
    kind = StepKind.CODE_END if end == END_OF_CODE else StepKind.STEP
    return ParsedStep(kind, text, code=code, comments=_comments(code))


def _comments(code: str) -> tuple[str, ...]:
    return tuple(line.strip()[1:].strip() for line in code.splitlines() if line.strip().startswith("#"))


def parse_solution(text: str) -> list[str]:
    """Split a solution (what follows the question, or the whole prompt + completion) into steps.

    The inverse of `render_solution`: each step keeps its end marker; a trailing unfinished piece becomes
    a last (INCOMPLETE or MALFORMED) step. Never raises.
    """
    head = text.rfind(ASSISTANT_PREFIX)
    if head >= 0:
        text = text[head + len(ASSISTANT_PREFIX) :]
    text = text.lstrip()
    if text.startswith(CODE_START):
        text = text[len(CODE_START) :]
    steps: list[str] = []
    ends = (END_OF_STEP, END_OF_CODE, END_OF_OUTPUT, END_OF_ANSWER)
    while True:
        hits = [(i, m) for m in ends if (i := text.find(m)) >= 0]
        if not hits:
            break
        index, marker = min(hits)
        piece = text[: index + len(marker)].strip("\n")
        text = text[index + len(marker) :]
        if piece.strip():
            steps.append(piece)
    if text.strip():
        steps.append(text.strip("\n"))
    return steps


def program_of(steps: Sequence[str]) -> str:
    """The program of a node: the code of every code step so far, markers, outputs and answers removed."""
    parts = [parsed.code for parsed in map(parse_step, steps) if parsed.is_code]
    return "\n".join(parts) + ("\n" if parts else "")


def is_final(step: str) -> bool:
    """Whether a step ends the trajectory (the ANSWER step; a malformed answer is not final)."""
    return parse_step(step).kind is StepKind.ANSWER


def ends_code(step: str) -> bool:
    """Whether a step is the last code step: the search runs the program and appends the output next."""
    return parse_step(step).kind is StepKind.CODE_END


def extract_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` (or `\\fbox{...}`) with balanced braces; None if there is none.

    One pass over the text, however many unclosed boxes it holds (model output can be any garbage).
    """
    spans = boxed_spans(text)
    return spans[-1][2] if spans else None


def boxed_spans(text: str) -> list[tuple[int, int, str]]:
    """Every closed `\\boxed{...}` / `\\fbox{...}`: (where its command starts, where it ends, its content)."""
    starts = sorted((i, i + len(command)) for command in _BOX_COMMANDS for i in _find_all(text, command + "{"))
    if not starts:
        return []
    closing = _matching_braces(text)
    spans = []
    for command_index, open_index in starts:
        close_index = closing.get(open_index)
        if close_index is not None:
            spans.append((command_index, close_index + 1, text[open_index + 1 : close_index].strip()))
    return spans


def _find_all(text: str, needle: str) -> list[int]:
    found, index = [], text.find(needle)
    while index >= 0:
        found.append(index)
        index = text.find(needle, index + 1)
    return found


def _matching_braces(text: str) -> dict[int, int]:
    """Index of each unescaped '{' that is closed -> index of its '}'."""
    stack: list[int] = []
    closing: dict[int, int] = {}
    for i, char in enumerate(text):
        if i and text[i - 1] == "\\":
            continue
        if char == "{":
            stack.append(i)
        elif char == "}" and stack:
            closing[stack.pop()] = i
    return closing


def answer_from_output(stdout: str) -> str | None:
    """The answer a program printed: its last non-empty line."""
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


def final_answer(steps: Sequence[str], stdout: str | None = None) -> str | None:
    """The trajectory's answer: the boxed answer of its ANSWER step, else the last line the program printed.

    `stdout` defaults to the content of the trajectory's output block.
    """
    parsed = [parse_step(step) for step in steps]
    for step in reversed(parsed):
        if step.kind is StepKind.ANSWER and step.answer:
            return step.answer
    if stdout is None:
        stdout = next((s.output for s in reversed(parsed) if s.kind is StepKind.OUTPUT), None)
    return answer_from_output(stdout) if stdout is not None else None
