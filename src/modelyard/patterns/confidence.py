"""Confidence arithmetic, free of I/O: token probabilities, agreement, and reading a checker's
verdict ("yes", "no", "0.8", "8/10", "85%") as a score in [0, 1]."""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

from modelyard.types import TokenLogprob

_YES = frozenset({"yes", "y", "true", "correct", "pass", "passed", "valid", "accept", "ok"})
_NO = frozenset({"no", "n", "false", "incorrect", "wrong", "fail", "failed", "invalid", "reject"})
# Numbers start only where a number starts: retrying inside a long run of digits that ends in
# no match would take time quadratic in the run (a verifier's reply is untrusted input).
_FRACTION = re.compile(r"(?<![\d.])(-?\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)")
_PERCENT = re.compile(r"(?<![\d.])(-?\d+(?:\.\d+)?)\s*%")
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_WORD = re.compile(r"[a-z]+")


def mean_token_probability(tokens: Sequence[TokenLogprob]) -> float | None:
    """The mean of the tokens' probabilities, or None without tokens."""
    if not tokens:
        return None
    return sum(math.exp(t.logprob) for t in tokens) / len(tokens)


def min_token_probability(tokens: Sequence[TokenLogprob]) -> float | None:
    """The probability of the least likely token, or None without tokens."""
    if not tokens:
        return None
    return math.exp(min(t.logprob for t in tokens))


def majority(keys: Sequence[str | None]) -> tuple[str | None, float]:
    """The most common non-None key (the earliest on a tie) and its share of all `keys`.

    Keys that are None (unparsed answers, failed calls) count in the denominator: they did
    not agree with anything.
    """
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None, 0.0
    best = max(counts.values())
    winner = next(k for k in keys if k is not None and counts[k] == best)
    return winner, best / len(keys)


def agreement(keys: Sequence[str | None], target: str | None) -> float:
    """The share of `keys` equal to `target` (0 when the target itself is None)."""
    if target is None or not keys:
        return 0.0
    return sum(1 for k in keys if k == target) / len(keys)


def parse_verdict(text: str) -> float | None:
    """A checker's answer as a score in [0, 1]; None when it says neither yes/no nor a score."""
    lowered = text.strip().lower()
    if not lowered:
        return None
    fraction = _FRACTION.search(lowered)
    if fraction and float(fraction.group(2)) > 0:
        return _clamp(float(fraction.group(1)) / float(fraction.group(2)))
    percent = _PERCENT.search(lowered)
    if percent:
        return _clamp(float(percent.group(1)) / 100.0)
    first_word = _WORD.search(lowered)
    if first_word and lowered.startswith(first_word.group(0)):
        if first_word.group(0) in _YES:
            return 1.0
        if first_word.group(0) in _NO:
            return 0.0
    number = _NUMBER.search(lowered)
    if number:
        value = float(number.group(0))
        return value if 0.0 <= value <= 1.0 else None
    words = set(_WORD.findall(lowered))
    yes, no = bool(words & _YES), bool(words & _NO)
    if yes != no:
        return 1.0 if yes else 0.0
    return None


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))
