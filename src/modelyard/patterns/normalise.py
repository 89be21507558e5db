"""Answer normalisers: two answers that mean the same thing get the same key, or None when the
answer does not contain what the normaliser looks for (that answer then casts no vote).

    exact         case, surrounding space, inner runs of space and a final full stop ignored
    choice        the choice letter A–J ("B", "(B)", "Answer: B", "The answer is B."): the
                  answers' vote key and the choice scorer's reading
    number        the final number ("#### 1,234", "the answer is 12.50", "\\boxed{3}", "2.5e3"
                  -> "1234", "12.5", "3", "2500"): the answers' vote key, the number scorer's
                  reading and the label the GSM8K loader takes from a right answer
    json:<path>   a field of the JSON answer (fenced or bare), e.g. json:answer or json:items.0.id
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

Normaliser = Callable[[str], str | None]

_SPACE = re.compile(r"\s+")
_CHOICE_ALONE = re.compile(r"^\W*([A-J])\W*$")
# A lower-case letter counts only in brackets ("answer is a bit..." names no choice), and "I"
# before a lower-case word is the pronoun ("the answer is I think B").
_CHOICE_STATED = re.compile(
    r"\b(?i:answer|choice|option)\s*(?:(?i:is|:)\s*)?(?:(?i:option)\s*)?"
    r"(?:\(([A-Ja-j])\)|\(?\b(?!I\s+[a-z])([A-J])\b\)?)(?![\w'])"
)
_CHOICE_LEADING = re.compile(r"^\s*\(?([A-J])(?:[\).:]|\s+[-–])")
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:[eE]-?\d+)?|-?\.\d+")
_ANSWER_MARKER = r"(?i:####|answer\s*(?:is|:)|\\boxed\{)"
"""Where an answer states its answer: "#### 12", "the answer is 12", "\\boxed{12}"."""
_STATES_ANSWER = re.compile(_ANSWER_MARKER)
# No two runs of optional space side by side: these read live answers, and "\s*\$?\s*" takes
# time quadratic in a run of spaces that ends in no match.
_NUMBER_STATED = re.compile(_ANSWER_MARKER + r"\s*(?:\$\s*)?(-?[\d,]*\.?\d+)")
_FENCE = re.compile(r"```(?:json)?(.*?)```", re.S)  # "\s*(.*?)" would be quadratic in spaces


def exact(text: str) -> str | None:
    """Case- and spacing-insensitive text; a final full stop does not count."""
    key = _SPACE.sub(" ", text).strip().casefold().rstrip(".").strip()
    return key or None


def choice(text: str) -> str | None:
    """The choice letter A–J the answer gives, or None; a capital that starts a sentence ("A dog
    barks", "I think") is not one."""
    for pattern in (_CHOICE_ALONE, _CHOICE_STATED, _CHOICE_LEADING):
        match = pattern.search(text)
        if match:
            return next(letter for letter in match.groups() if letter).upper()
    return None


def number(text: str) -> str | None:
    """The answer's number in canonical form ("1,234.50" -> "1234.5"), or None."""
    return stated_number(text) or _canonical(_NUMBER.findall(text))


def states_answer(text: str) -> bool:
    """Whether the answer marks a final answer ("####", "answer is", "\\boxed{"), number or not."""
    return _STATES_ANSWER.search(text) is not None


def stated_number(text: str) -> str | None:
    """The number the answer states as its answer ("#### 12", "the answer is 12"), in canonical
    form; None when it states none."""
    return _canonical(_NUMBER_STATED.findall(text))


def _canonical(found: list[str]) -> str | None:
    if not found:
        return None
    raw = found[-1].replace(",", "")
    if len(raw) > 100:  # not an answer; and int() refuses more than 4,300 digits
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        return None
    if abs(value.adjusted()) > 100:  # "1e5000" is short to write but not an answer either
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def parse_json_answer(text: str) -> Any:
    """The JSON value an answer holds: the whole text, or its first fenced block, or the
    outermost braces; raises ValueError when there is none."""
    candidates = [text.strip()]
    fenced = _FENCE.search(text)
    if fenced:
        candidates.append(fenced.group(1).strip())
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        candidates.append(text[start : end + 1])
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    raise ValueError("the answer is not JSON")


def lookup(value: Any, path: tuple[str, ...]) -> Any:
    """The element of a JSON value at a path (list indices as numbers); KeyError if absent."""
    for part in path:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and _is_index(part, len(value)):
            value = value[int(part)]
        else:
            raise KeyError(part)
    return value


def _is_index(part: str, length: int) -> bool:
    return part.lstrip("-").isdigit() and -length <= int(part) < length


def json_field(path: tuple[str, ...]) -> Normaliser:
    """A normaliser keyed on one field of a JSON answer (strings compared as `exact`)."""

    def normalise(text: str) -> str | None:
        try:
            value = lookup(parse_json_answer(text), path)
        except (ValueError, KeyError):
            return None
        if isinstance(value, str):
            return exact(value)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    return normalise


NORMALISERS: dict[str, Normaliser] = {"exact": exact, "choice": choice, "number": number}
NORMALISER_PATTERN = r"^(exact|choice|number|json:[^\s.][^\s]*)$"
"""What config accepts for a normaliser (checked by the schema)."""


def normaliser(spec: str) -> Normaliser:
    """The normaliser a config string names; ValueError for an unknown one."""
    if spec in NORMALISERS:
        return NORMALISERS[spec]
    if spec.startswith("json:") and len(spec) > 5:
        return json_field(tuple(spec[5:].split(".")))
    raise ValueError(f"unknown normaliser {spec!r}; expected exact, choice, number or json:<path>")


class LabelReader:
    """Reads a classifier's answer as one of a known set of labels, case-blind: the whole
    answer ("Billing.", "`billing`"), else the one label named in it ("label: billing")."""

    __slots__ = ("_by_key", "_pattern")

    def __init__(self, labels: Iterable[str]) -> None:
        self._by_key = {label.casefold(): label for label in labels}
        words = sorted(self._by_key, key=len, reverse=True)
        self._pattern = (
            re.compile(r"(?<!\w)(" + "|".join(re.escape(w) for w in words) + r")(?!\w)")
            if words
            else None
        )

    def read(self, text: str) -> str | None:
        """The label `text` gives, or None when it names no known label (or several)."""
        key = text.strip().strip("`'\".:;!*[](){}<> \n").casefold()
        if key in self._by_key:
            return self._by_key[key]
        if self._pattern is None:
            return None
        found = {m.group(1) for m in self._pattern.finditer(text.casefold())}
        return self._by_key[found.pop()] if len(found) == 1 else None
