"""What reads a model's answer (normalisers, verdict and pick parsers, scorers, signals) reads a
hostile one in linear time: a long run of spaces or digits that ends in no match (or a code
fence that never closes) used to take seconds to minutes through patterns that retried every
split of the run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from modelyard.evaluation.scorers import ChoiceScorer, JsonFieldScorer, NumberScorer
from modelyard.patterns.combine import parse_pick
from modelyard.patterns.confidence import parse_verdict
from modelyard.patterns.normalise import choice, json_field, number, stated_number
from modelyard.patterns.signals import worked_math

RUN = 200_000
"""Long enough that a quadratic pattern would run for hours, not the fraction of a second a
linear one needs."""

HOSTILE = {
    "spaces after a marker": "answer is" + " " * RUN + "x",
    "spaces after 'answer'": "answer" + " " * RUN + "(x",
    "spaces after ####": "####" + " " * RUN + "$ x",
    "spaces after #": "#" + " " * RUN,
    "digits with no end": "1" * RUN + "x",
    "digits then spaces": "7" * RUN + " " * RUN + "/x",
    "an open fence": "```json" + " " * RUN + "{",
}
READERS: dict[str, Callable[[str], object]] = {
    "stated_number": stated_number,
    "number": number,
    "choice": choice,
    "parse_verdict": parse_verdict,
    "parse_pick": lambda text: parse_pick(text, ["a", "b", "c"]),
    "number scorer": NumberScorer().extract,
    "choice scorer": ChoiceScorer().extract,
    "json scorer": JsonFieldScorer("a").extract,
    "parse_json_answer": lambda text: json_field(("a",))(text),
    "worked_math": worked_math,
}


@pytest.mark.parametrize("reader", sorted(READERS))
def test_hostile_answers_are_read_in_linear_time(reader: str) -> None:
    for text in HOSTILE.values():
        READERS[reader](text)


def test_a_number_too_long_to_be_an_answer_is_none_not_a_crash() -> None:
    assert number("#### " + "9" * 5000) is None
    assert stated_number("the answer is " + "9" * 5000) is None
    assert parse_pick("answer " + "1" * 5000, ["a", "b"]) is None
