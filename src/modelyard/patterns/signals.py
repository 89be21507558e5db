"""Answer signals: a few deterministic facts about an answer that a learned check reads beside
its embedding (`modelyard train --features answer --signals NAME`).

An embedding says what an answer is about; it cannot tell that `12 * 7 = 74` is wrong or that an
answer trails off without stating one. Worked solutions fail that way, so checking their
arithmetic is the cheapest strong evidence a cascade has before paying the strong model. Signals
read the answer only, never a label: the same function runs at training time and on live traffic,
and the artifact names the set it was trained with so the two cannot drift apart.

    worked_math   final_answer    an answer is stated ("#### 12", "the answer is 12", \\boxed{12})
                  whole_number    the stated answer is a whole, non-negative number
                  calculation_error  a calculator note <<expr=value>> has the wrong value
                  equation_error  an inline equation "3 * 4 + 2 = 15" has the wrong value
                  hedging         second-guessing or rounding ("however", "can't have half", ...)
                  length          characters / 3,000, at most 1
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass

from modelyard.patterns.normalise import stated_number, states_answer
from modelyard.suggest import did_you_mean


@dataclass(frozen=True, slots=True)
class SignalSet:
    """A named set of answer signals and the function that computes them."""

    name: str
    names: tuple[str, ...]
    compute: Callable[[str], tuple[float, ...]]

    def __call__(self, answer: str) -> tuple[float, ...]:
        return self.compute(answer)


_OPERATORS: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
# Bounded pieces only: these run on live answers, so no pattern may backtrack without limit.
_LONGEST = 200
"""Characters of an expression (or of a note) read before an "=", at most."""
_MOST_EQUATIONS = 100
"""Equations (and, apart, calculator notes) checked per answer, at most."""
_CLAIMED = re.compile(r"=\s{0,3}(\$?\d[\d,]{0,20}(?:\.\d{1,10})?%?)")
_ARITHMETIC = frozenset("0123456789.,$%()+-*/x×÷^ ")
_START = frozenset("0123456789($")
_OPERATION = re.compile(r"\d[\s)%]{0,3}[-+*/x×÷^]")
_CALCULATOR_NOTE = re.compile(rf"<<([^=<>]{{1,{_LONGEST}}})=([^<>]{{1,40}})>>")
_HEDGING = re.compile(
    r"(?i)\b(however|but since|can't|cannot|round(?:ed|ing)?|approximately|assum(?:e|ing)"
    r"|not possible|doesn't make sense|wait)\b"
)
_TIMES = re.compile(r"(?<=\d)\s*x\s*(?=[\d(])")


def _value(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_value(node.operand)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _value(node.left), _value(node.right)
        if isinstance(node.op, ast.Pow) and abs(right) > 10:  # no 9**9**9 from an answer
            raise ValueError("exponent too large")
        return _OPERATORS[type(node.op)](left, right)
    raise ValueError("not arithmetic")


def arithmetic(expression: str) -> float:
    """The value of a written arithmetic expression ("$1,200 x 3", "20% * 50", "(4+2)/3").

    Raises ValueError when it is not plain arithmetic on numbers (never evaluates anything else).
    """
    text = expression.replace(",", "").replace("$", "").replace("×", "*").replace("÷", "/")
    text = _TIMES.sub("*", text.replace("^", "**")).replace("%", "/100")
    try:
        return _value(ast.parse(text.strip(), mode="eval").body)
    except (SyntaxError, ZeroDivisionError, OverflowError, RecursionError) as exc:
        raise ValueError(str(exc)) from None


def _wrong(expression: str, value: str) -> bool:
    """Whether `expression` evidently does not equal `value`, rounded as `value` is written
    ("10 / 3 = 3.33" is right); unreadable ones are not wrong."""
    try:
        got, claimed = arithmetic(expression), arithmetic(value)
    except ValueError:
        return False
    _, point, decimals = value.strip().rstrip("%").partition(".")
    shown = 10.0 ** -len(decimals) if point else 1.0
    if "%" in value:
        shown /= 100
    return abs(got - claimed) > shown / 2 + 1e-9 * max(1.0, abs(claimed))


def equations(text: str) -> list[tuple[str, str]]:
    """The inline equations of `text` as (expression, claimed value): for each "= number", the
    arithmetic written just before it ("16 - 3 = 13" -> ("16 - 3", "13")); a list stops at
    ", " so "3, 4 + 5 = 9" reads "4 + 5". Linear in the text, at most _MOST_EQUATIONS."""
    found: list[tuple[str, str]] = []
    for claimed in _CLAIMED.finditer(text):
        end = start = claimed.start()
        while start > 0 and end - start < _LONGEST and text[start - 1] in _ARITHMETIC:
            if text[start - 1] == "," and text[start : start + 1] == " ":
                break
            start -= 1
        while start < end and text[start] not in _START:
            start += 1
        expression = text[start:end].strip()
        if _OPERATION.search(expression):
            found.append((expression, claimed.group(1)))
            if len(found) == _MOST_EQUATIONS:
                break
    return found


def worked_math(answer: str) -> tuple[float, ...]:
    """The `worked_math` signals of one answer (see the module docstring)."""
    stated = stated_number(answer)  # canonical: "12", "-3", "2.5"
    whole = stated is not None and "." not in stated and not stated.startswith("-")
    notes = itertools.islice(_CALCULATOR_NOTE.finditer(answer), _MOST_EQUATIONS)
    prose = _CALCULATOR_NOTE.sub("", answer)
    return (
        float(states_answer(answer)),
        float(whole),
        float(any(_wrong(*note.groups()) for note in notes)),
        float(any(_wrong(e, v) for e, v in equations(prose))),
        float(_HEDGING.search(answer) is not None),
        min(len(answer) / 3000, 1.0),
    )


SIGNAL_SETS: dict[str, SignalSet] = {
    s.name: s
    for s in (
        SignalSet(
            "worked_math",
            (
                "final_answer",
                "whole_number",
                "calculation_error",
                "equation_error",
                "hedging",
                "length",
            ),
            worked_math,
        ),
    )
}


def signal_set(name: str) -> SignalSet:
    """The signal set called `name`; ValueError naming the known ones otherwise."""
    try:
        return SIGNAL_SETS[name]
    except KeyError:
        hint = did_you_mean(name, sorted(SIGNAL_SETS))
        raise ValueError(f"no answer signals called {name!r}{hint}") from None
