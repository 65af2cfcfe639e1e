"""The fast path, in the calling process: answers that normalise to plain numbers or to the same string.

It decides only when it is certain; everything else goes to math-verify (services/math/grading/verify.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from services.math.grading.verdict import GradeResult
from services.math.stepfmt import extract_boxed

_ANSWER_IS = re.compile(r"answer\s*(?:is\b|:)\s*:?", re.IGNORECASE)
_TEXT_COMMANDS = re.compile(r"\\(?:text|textbf|textrm|mathrm|mbox|mathbf|textit)\s*\{([^{}]*)\}")
_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\circ|\\degree")
_LEFT_RIGHT = re.compile(r"\\(?:left|right)(?=[\\()\[\]{}|.])|\\(?:big|Big|bigg|Bigg)[lr]?")
_VARIABLE_EQUALS = re.compile(r"^[a-zA-Z](?:_\{?\w+\}?)?\s*=\s*(?=\S)")
_NUMBER_WITH_UNIT = re.compile(r"^([-+]?[\d.,/]+)\s*[a-zA-Z][a-zA-Z .]+$")  # "18 dollars", "5 cm"
_THOUSANDS = re.compile(r"^[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_WORDS = re.compile(r"^[A-Za-z]{2,}(?: [A-Za-z]+)*$")
_INTEGER = re.compile(r"^[-+]?\d+$")
# At most a 3-digit exponent: Fraction("1e99999999") would build a 100-million-digit integer in the caller.
_DECIMAL = re.compile(r"^[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d{1,3})?$")
_SLASH_FRACTION = re.compile(r"^([-+]?\d+)\s*/\s*(\d+)$")
_LATEX_FRACTION = re.compile(r"^([-+]?)\\frac\s*(?:\{\s*([-+]?\d+)\s*\}|(\d))\s*(?:\{\s*(\d+)\s*\}|(\d))$")


def extract_answer(text: str) -> str:
    """The answer inside free text: the last ``\\boxed{}``, GSM8K's ``#### N``, or what follows "answer is"."""
    boxed = extract_boxed(text)
    if boxed is not None:
        return boxed.strip()
    if "####" in text:
        return text.rsplit("####", 1)[1].strip()
    matches = list(_ANSWER_IS.finditer(text))
    if matches:  # the last "answer is" / "answer:" wins
        last = matches[-1]
        rest = text[last.end() :].strip().rstrip(".").strip()
        if rest:
            return rest
    return text.strip()


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


def _show(value: Fraction) -> str:
    return str(value.numerator) if value.denominator == 1 else f"{value.numerator}/{value.denominator}"
