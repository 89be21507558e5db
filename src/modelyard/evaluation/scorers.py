"""Scorers: did an answer match the item's label? Each returns a `Score` whose value is None when
the answer (or the label) could not be read, so unparsed answers are counted and reported apart
instead of silently counting as right or wrong.

By name (`make_scorer`): `exact`, `choice`, `number`, `regex:PATTERN`, `json:FIELD`,
`recorded`, `judge:MODEL`, `callable:module:function`.
"""

from __future__ import annotations

import abc
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from modelyard.errors import ConfigError, ModelError
from modelyard.evaluation.dataset import Item
from modelyard.evaluation.replay import RECORDED_MODEL, RECORDED_SCORE
from modelyard.functions import call_function, import_function, unit_value
from modelyard.model import Model
from modelyard.patterns.normalise import choice, lookup, number, parse_json_answer
from modelyard.suggest import did_you_mean
from modelyard.types import ChatResponse, user

UNPARSED = "unparsed"
UNLABELLED = "unlabelled"


@dataclass(frozen=True, slots=True, kw_only=True)
class Score:
    """A score in [0, 1], or None with the reason (`unparsed`, `unlabelled`)."""

    value: float | None
    parsed: str | None = None
    reason: str = ""
    cost: float = 0.0
    """USD the scorer itself spent (a judge model's calls)."""


def unparsed(note: str = "") -> Score:
    """A Score for an answer the scorer could not read."""
    return Score(value=None, reason=UNPARSED, parsed=note or None)


class Scorer(abc.ABC):
    """Scores one answer against one item."""

    name: str = "scorer"
    needs_label: bool = True

    @abc.abstractmethod
    async def score(self, item: Item, response: ChatResponse) -> Score:
        """The score of `response` for `item`."""

    def labelled(self, item: Item) -> bool:
        """Whether this scorer has what it needs of `item`'s label to score an answer."""
        return not self.needs_label or item.label is not None


class _Comparing(Scorer):
    """Extracts a value from the answer and from the label, and compares them."""

    def extract(self, text: str) -> str | None:
        """The comparable value in `text`, or None when there is none."""
        return _squash(text)

    def same(self, answer: str, label: str) -> bool:
        """Whether the extracted answer equals the extracted label."""
        return answer == label

    def labelled(self, item: Item) -> bool:
        return item.label is not None and self.extract(item.label) is not None

    async def score(self, item: Item, response: ChatResponse) -> Score:
        # The label first: an item whose label this scorer cannot read is left out whatever
        # the answer, as a failed call on it is, so every system is judged on the same items.
        label = None if item.label is None else self.extract(item.label)
        answer = self.extract(response.text)
        if label is None:
            return Score(value=None, reason=UNLABELLED, parsed=answer)
        if answer is None:
            return unparsed()
        return Score(value=1.0 if self.same(answer, label) else 0.0, parsed=answer)


def _squash(text: str) -> str | None:
    value = " ".join(text.split()).strip().lower()
    return value or None


class ExactScorer(_Comparing):
    """The whole answer equals the label, ignoring case and runs of whitespace."""

    name = "exact"


class ChoiceScorer(_Comparing):
    """The multiple-choice letter of the answer equals the label's (`B`, `(B)`, `Answer: B`)."""

    name = "choice"

    def extract(self, text: str) -> str | None:
        return choice(text)


class NumberScorer(_Comparing):
    """The answer's final number (after `####` or `answer is`, else the last) equals the
    label's within `tolerance` (relative)."""

    name = "number"

    def __init__(self, tolerance: float = 1e-6) -> None:
        self.tolerance = tolerance

    def extract(self, text: str) -> str | None:
        return number(text)

    def same(self, answer: str, label: str) -> bool:
        a, b = float(answer), float(label)
        return abs(a - b) <= self.tolerance * max(1.0, abs(b))


class RegexScorer(_Comparing):
    """The first group (or the whole match) of `pattern` in the answer equals the label."""

    name = "regex"

    def __init__(self, pattern: str) -> None:
        try:
            self.pattern = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"invalid scorer regex {pattern!r}: {exc}") from None

    async def score(self, item: Item, response: ChatResponse) -> Score:
        label = None if item.label is None else self.extract(item.label)
        if label is None:  # as `labelled` says: a blank label is none
            return Score(value=None, reason=UNLABELLED)
        found = self.pattern.search(response.text)
        answer = None if found is None else found.group(1 if self.pattern.groups else 0)
        if answer is None:  # no match, or a first group that took no part in it
            return unparsed()
        same = self.extract(answer) == label
        return Score(value=1.0 if same else 0.0, parsed=answer)


class JsonFieldScorer(_Comparing):
    """The answer is JSON (fences allowed); its `field` (dotted path) equals the label."""

    name = "json"

    def __init__(self, field: str) -> None:
        self.path = tuple(part for part in field.split(".") if part)

    def extract(self, text: str) -> str | None:
        try:
            value = lookup(parse_json_answer(text), self.path)
        except (ValueError, KeyError):
            return None
        text_value = value if isinstance(value, str) else json.dumps(value)
        return _squash(text_value)

    def labelled(self, item: Item) -> bool:
        # The label is the field's value itself, not JSON to read a field from.
        return item.label is not None

    async def score(self, item: Item, response: ChatResponse) -> Score:
        if item.label is None:
            return Score(value=None, reason=UNLABELLED)
        answer = self.extract(response.text)
        if answer is None:
            return unparsed()
        return Score(value=1.0 if answer == _squash(item.label) else 0.0, parsed=answer)


def recorded_score(response: ChatResponse) -> float | None:
    """The recorded correctness of the replayed answer `response` returned, when it is clear
    which recorded answer that was."""
    if response.decision is None:
        return None
    replayed = [
        d
        for d in response.decision.walk()
        if (RECORDED_MODEL in d.details or RECORDED_SCORE in d.details)
        and d.error is None
        and not d.children
    ]
    # The answering model's own answer, also when its score was not recorded: a checker's
    # recorded score (a cascade's agreement check, a verifier) is not the answer's.
    mine = [d for d in replayed if d.node == response.model]
    if mine:
        value = mine[-1].details.get(RECORDED_SCORE)
        return None if value is None else float(value)
    values = {d.details.get(RECORDED_SCORE) for d in replayed}
    value = values.pop() if len(values) == 1 else None
    return None if value is None else float(value)


class RecordedScorer(Scorer):
    """The replayed model's recorded correctness (needs no label)."""

    name = "recorded"
    needs_label = False

    async def score(self, item: Item, response: ChatResponse) -> Score:
        value = recorded_score(response)
        if value is None:
            return unparsed("no recorded score for the answering model")
        return Score(value=value, parsed=response.model)


JUDGE_PROMPT = """You grade answers. Reply with exactly one word: CORRECT or INCORRECT.

Question:
{question}

Reference answer:
{label}

Answer to grade:
{answer}
"""
_VERDICT = re.compile(r"\b(INCORRECT|CORRECT)\b", re.IGNORECASE)


class JudgeScorer(Scorer):
    """A judge Model reads the question, the reference and the answer and says CORRECT or
    INCORRECT; anything else is unparsed. The judge's cost is reported apart."""

    name = "judge"

    def __init__(self, judge: Model, template: str = JUDGE_PROMPT) -> None:
        self.judge = judge
        self.template = template

    async def score(self, item: Item, response: ChatResponse) -> Score:
        if item.label is None:
            return Score(value=None, reason=UNLABELLED)
        prompt = self.template.format(question=item.prompt, label=item.label, answer=response.text)
        try:
            verdict = await self.judge.complete(user(prompt, temperature=0.0))
        except ModelError as exc:
            return Score(value=None, reason=UNPARSED, parsed=f"judge failed: {exc}", cost=exc.cost)
        found = _VERDICT.search(verdict.text)
        if found is None:
            return Score(value=None, reason=UNPARSED, parsed=verdict.text[:80], cost=verdict.cost)
        right = found.group(1).upper() == "CORRECT"
        return Score(value=1.0 if right else 0.0, parsed=found.group(1).upper(), cost=verdict.cost)


CallableResult = bool | float | int | Score | None


class CallableScorer(Scorer):
    """A Python function `(item, response) -> bool | float | Score | None`; an async one runs on
    the event loop, a synchronous one in a worker thread (as node functions do), so a slow one
    does not hold the other items. None means unparsed. A function that raises, or returns a
    number outside 0 to 1, stops the evaluation with a ConfigError naming it and the item:
    counting the item as wrong would skew accuracy without a word."""

    name = "callable"

    def __init__(
        self, function: Callable[..., Any], needs_label: bool = False, spec: str | None = None
    ) -> None:
        self.function = function
        self.needs_label = needs_label
        self.spec = spec or f"callable:{function.__module__}:{function.__qualname__}"

    async def score(self, item: Item, response: ChatResponse) -> Score:
        try:
            result = await call_function(self.function, item, response)
        except Exception as exc:  # the user's code: any error is theirs to see, with the item
            raise ConfigError(
                f"scorer {self.spec} raised {type(exc).__name__} on item {item.id}: {exc}"
            ) from exc
        if isinstance(result, Score):
            return result
        if result is None:
            return unparsed()
        value = unit_value(result, bools=True)
        if value is not None:
            return Score(value=value)
        raise ConfigError(
            f"scorer {self.spec} returned {result!r} on item {item.id}; expected true/false, "
            "a number from 0 to 1, a Score or None"
        )


def make_scorer(spec: str, models: Mapping[str, Model] | None = None) -> Scorer:
    """The scorer a CLI string names (see the module doc)."""
    kind, _, argument = spec.partition(":")
    simple: dict[str, Callable[[], Scorer]] = {
        "exact": ExactScorer,
        "choice": ChoiceScorer,
        "number": NumberScorer,
        "recorded": RecordedScorer,
    }
    if kind in simple and not argument:
        return simple[kind]()
    if kind == "regex" and argument:
        return RegexScorer(argument)
    if kind == "json" and argument:
        return JsonFieldScorer(argument)
    if kind == "judge" and argument:
        if models is None or argument not in models:
            hint = did_you_mean(argument, sorted(models or {}))
            raise ConfigError(f"judge model {argument!r} is not in the config{hint}")
        return JudgeScorer(models[argument])
    if kind == "callable" and argument:
        return CallableScorer(import_function(argument), spec=spec)
    raise ConfigError(
        f"unknown scorer {spec!r}; use exact, choice, number, regex:PATTERN, json:FIELD, "
        "recorded, judge:MODEL or callable:module:function"
    )
