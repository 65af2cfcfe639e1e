"""The fast path, in the calling process: answers that normalise to plain numbers or to the same string.

It decides only when it is certain; everything else goes to math-verify (services/math/grading/verify.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from services.math.grading.verdict import GradeResult
from services.math.stepfmt import boxed_spans

_ANSWER_IS = re.compile(r"answer\s*(?:is\b|:)\s*:?", re.IGNORECASE)
# What may stand between boxes that answer together: a few words, commas, delimiters; no digit, no equation.
_CONNECTOR = re.compile(r"^[^\d=]{0,30}$", re.DOTALL)
_DELIMITERS = re.compile(r"\$|\\[()\[\]]|\\q?quad|\\text\{\s*\}|\s|\.")
_LIST_WORD = re.compile(r"\b(?:and|or)\b")
# A math span that opens the text: $…$, $$…$$, \(…\) or \[…\]; an escaped \$ inside is a dollar sign.
_LEADING_MATH = re.compile(r"^(?:\$\$?|\\\(|\\\[)(.+?)(?<!\\)(?:\$\$?|\\\)|\\\])", re.DOTALL)
_SENTENCE_END = re.compile(r"\.\s+(?=[A-Z])|\n")
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf|textit)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?=[\\()\[\]{}|.])|\\(?:big|Big|bigg|Bigg)[lr]?")
_VARIABLE_EQUALS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_NUMBER_WITH_UNIT = re.compile(r"^([-+]?[\d.,/]+)\s*[a-zA-Z][a-zA-Z .]+$")  # "18 dollars", "5 cm"
_THOUSANDS = re.compile(r"^[-+]?[1-9]\d{0,2}(?:,\d{3})+(?:\.\d+)?$")
_WORDS = re.compile(r"^[A-Za-z]{2,}(?: [A-Za-z]+)*$")
_INTEGER = re.compile(r"^[-+]?\d+$")
_COMMA_DECIMAL = re.compile(r"^[-+]?\d+,\d+$")
_POINT_DECIMAL = re.compile(r"^[-+]?\d*\.\d+$")
# At most a 3-digit exponent: Fraction("1e99999999") would build a 100-million-digit integer in the caller.
_DECIMAL = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d{1,3})?$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\frac\s*(?:\{\s*([-+]?\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")


def extract_answer(text: str) -> str:
    """The answer inside free text: the last ``\\boxed{}`` (several boxes that end the text together, such as
    ``\\boxed{-2} and \\boxed{1}``, are one answer: ``-2, 1``), GSM8K's ``#### N``, or what follows the last
    "answer is" (its first math span, else its first sentence) — whichever comes last in the text."""
    matches = list(_ANSWER_IS.finditer(text))
    spans = boxed_spans(text)
    if spans and not (matches and matches[-1].start() > spans[-1][1]):
        return _final_boxes(text, spans)
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    if matches:  # the last "answer is" / "answer:" wins
        rest = text[matches[-1].end() :].strip()
        math = _LEADING_MATH.match(rest)
        if math is not None:
            return f"${math.group(1).strip()}$"
        rest = _SENTENCE_END.split(rest, maxsplit=1)[0].strip().rstrip(".").strip()
        if rest:
            return rest
    return text.strip()


def _final_boxes(text: str, spans: list[tuple[int, int, str]]) -> str:
    chosen = [spans[-1]]
    for span in reversed(spans[:-1]):
        gap = text[span[1] : chosen[0][0]]
        if span[1] > chosen[0][0] or not _joins(gap):
            break
        chosen.insert(0, span)
    return ", ".join(content for _, _, content in chosen)


@dataclass(frozen=True)
class _Normalised:
    text: str  # for string comparison: no spaces; words case-folded
    number: Fraction | None  # set when the answer is a plain number
    exact: bool  # False for decimals that may be rounded (0.33 for 1/3)
    percent: bool


def normalise(answer: str) -> str:
    """The cleaned-up answer string used for comparison (exposed for tests and the CLI)."""
    return _normalise(answer).text


def clean(answer: str) -> tuple[str, bool]:
    text = extract_answer(answer)
    text = text.replace("\\$", "").replace("$", "")
    text = _SPACING.sub(" ", text)
    text = text.replace("{,}", ",").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    text = _LEFT_RIGHT.sub("", text)
    text = _DEGREES.sub("", text)
    for _ in range(3):  # nested \text{\textbf{...}}
        text = _TEXT_COMMANDS.sub(r"\1", text)
    percent = "%" in text
    text = text.replace("\\%", "").replace("%", "")
    text = text.strip().rstrip(".").strip()
    text = _VARIABLE_EQUALS.sub("", text)
    unit = _NUMBER_WITH_UNIT.match(text)
    if unit is not None:
        text = unit.group(1)
    return text.strip(), percent


def _normalise(answer: str) -> _Normalised:
    text, percent = clean(answer)
    number, exact = _to_number(text)
    compact = re.sub(r"\s+", "", text)
    if _WORDS.match(text):  # "Evelyn" / "evelyn", "Yes" / "yes"; but never x vs X or \Pi vs \pi
        compact = compact.casefold()
    return _Normalised(compact, number, exact, percent)


def _to_number(text: str) -> tuple[Fraction | None, bool]:
    if ", " in text:  # "32, 349" is a list of two numbers, not 32349
        return None, False
    compact = text.replace(" ", "")
    if _THOUSANDS.match(compact):
        compact = compact.replace(",", "")
    if _INTEGER.match(compact):
        return Fraction(int(compact)), True
    if _DECIMAL.match(compact):
        value = Fraction(compact)
        return value, value.denominator == 1  # "27.0" is exact; "0.33" may be a rounded 1/3
    slash = _SLASH_FRACTION.match(compact)
    if slash is not None and int(slash.group(2)) != 0:
        return Fraction(int(slash.group(1)), int(slash.group(2))), True
    latex = _LATEX_FRACTION.match(compact)
    if latex is not None:
        sign, num_braced, num_digit, den_braced, den_digit = latex.groups()
        numerator, denominator = int(num_braced or num_digit), int(den_braced or den_digit)
        if denominator != 0:
            return Fraction(-numerator if sign == "-" else numerator, denominator), True
    return None, False


def fast_grade(reference: str, prediction: str) -> GradeResult | None:
    """The verdict when it is certain without sympy, else None (the caller then uses math-verify)."""
    ref, pred = _normalise(reference), _normalise(prediction)
    if not pred.text:
        return GradeResult(False, "no answer in the prediction", "empty")
    comma = _comma_decimal(ref.text, pred.text)
    if comma is not None:
        return comma
    if ref.number is not None and pred.number is not None:
        a, b = ref.number, pred.number
        if a == b:
            return GradeResult(True, "same number", "numeric")
        if (ref.percent or pred.percent) and (a == b * 100 or a * 100 == b):
            return GradeResult(True, "same number as a percentage", "numeric")
        if not (ref.exact and pred.exact) and abs(a - b) <= max(Fraction(1), abs(a), abs(b)) / 1000:
            return None  # a rounded decimal close to the other side: math-verify's rounding rules decide
        return GradeResult(False, f"different numbers ({_show(a)} vs {_show(b)})", "numeric")
    if ref.text == pred.text:
        return GradeResult(True, "same answer after normalisation", "string")
    return None


def _comma_decimal(ref: str, pred: str) -> GradeResult | None:
    """A decimal comma ("1,22", "0,111": not a thousands grouping) beside a decimal point ("1.22"): the same
    number when the digits agree. Only against a decimal point: alone, "0,1" may be the set {0, 1}."""
    for comma, point in ((ref, pred), (pred, ref)):
        if _COMMA_DECIMAL.match(comma) and not _THOUSANDS.match(comma) and _POINT_DECIMAL.match(point):
            equal = Fraction(comma.replace(",", ".")) == Fraction(point)
            return GradeResult(equal, "same number" if equal else "different numbers", "numeric")
    return None


def _joins(gap: str) -> bool:
    """Whether the text between two boxes makes them one answer: nothing but delimiters, or a short list-like
    connector ("and", "or", a comma) without numbers or equations ("\\boxed{1} papers and \\boxed{2}")."""
    if not _CONNECTOR.match(gap):
        return False
    bare = _DELIMITERS.sub("", gap)
    return not bare or "," in bare or _LIST_WORD.search(gap) is not None


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
