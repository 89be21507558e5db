"""Confidence arithmetic: token probabilities, agreement and checker verdicts."""

from __future__ import annotations

import math

import pytest

from modelyard.patterns.confidence import (
    agreement,
    majority,
    mean_token_probability,
    min_token_probability,
    parse_verdict,
)
from modelyard.types import TokenLogprob


def tokens(*probabilities: float) -> list[TokenLogprob]:
    return [TokenLogprob(token=str(i), logprob=math.log(p)) for i, p in enumerate(probabilities)]


def test_mean_and_min_token_probability() -> None:
    assert mean_token_probability(tokens(0.9, 0.5)) == pytest.approx(0.7)
    assert min_token_probability(tokens(0.9, 0.5)) == pytest.approx(0.5)
    assert mean_token_probability([]) is None


def test_majority_counts_unreadable_answers_against_the_winner() -> None:
    assert majority(["a", None, "a", "b"]) == ("a", 0.5)
    assert majority(["b", "a"]) == ("b", 0.5)
    assert majority([None, None]) == (None, 0.0)


def test_agreement_is_the_share_equal_to_the_target() -> None:
    assert agreement(["x", "x", "y"], "x") == pytest.approx(2 / 3)
    assert agreement(["x"], None) == 0.0


@pytest.mark.parametrize(
    ("text", "score"),
    [
        ("Yes", 1.0),
        ("no, the date is wrong", 0.0),
        ("0.85", 0.85),
        ("Score: 8/10", 0.8),
        ("90%", 0.9),
        ("7", None),
        ("I cannot tell", None),
        ("The answer is correct.", 1.0),
    ],
)
def test_parse_verdict(text: str, score: float | None) -> None:
    assert parse_verdict(text) == score
