"""How an ensemble turns its members' answers into one, free of I/O: vote tallies (plain or
confidence-weighted), when a tally can no longer change, and the judge and fuser prompts with a
robust reading of the judge's pick."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from modelyard.patterns.normalise import exact


@dataclass(frozen=True, slots=True)
class Tally:
    """The outcome of a vote: the winning key, the first member that gave it, and the shares."""

    winner: str | None
    first: int | None
    """Index of the first member (in config order) whose answer has the winning key."""
    votes: dict[str, float]
    total: float
    """All weight cast or forfeited (members without a parsed answer count here too)."""

    @property
    def share(self) -> float:
        """The winner's share of the total: the ensemble's agreement."""
        if self.winner is None or self.total <= 0:
            return 0.0
        return self.votes[self.winner] / self.total


def tally(keys: Sequence[str | None], weights: Sequence[float]) -> Tally:
    """Sum `weights` per key; the heaviest key wins, ties going to the earliest member."""
    votes: dict[str, float] = {}
    first: dict[str, int] = {}
    for i, (key, weight) in enumerate(zip(keys, weights, strict=True)):
        if key is None:
            continue
        votes[key] = votes.get(key, 0.0) + weight
        first.setdefault(key, i)
    total = float(sum(weights))
    if not votes:
        return Tally(winner=None, first=None, votes=votes, total=total)
    best = max(votes.values())
    winner = min((k for k, v in votes.items() if v == best), key=first.__getitem__)
    return Tally(winner=winner, first=first[winner], votes=votes, total=total)


def settled(result: Tally, outstanding: float, earliest_outstanding: int | None) -> bool:
    """Whether members still out (with `outstanding` weight in total) can no longer change the
    winner: the leader is ahead of every rival by more than they could add, or ties in its
    favour because the members still out come later in config order."""
    if result.winner is None:
        return False
    lead = result.votes[result.winner]
    runner_up = max((v for k, v in result.votes.items() if k != result.winner), default=0.0)
    # A member still out could also start a new key; that key's best is `outstanding`.
    challenger = max(runner_up, 0.0) + outstanding
    if lead > challenger:
        return True
    return (
        lead == challenger
        and earliest_outstanding is not None
        and result.first is not None
        and result.first < earliest_outstanding
    )


JUDGE_PROMPT = (
    "Several assistants answered the same request. Pick the best answer.\n\n"
    "Request:\n{question}\n\n{candidates}\n\n"
    "Reply with the number of the best answer only (for example: 2)."
)
FUSE_PROMPT = (
    "Several assistants answered the same request. Write one answer that keeps what is right "
    "in them and drops what is wrong. Reply with the answer only.\n\n"
    "Request:\n{question}\n\n{candidates}"
)


def candidates_block(texts: Sequence[str]) -> str:
    """Candidate answers numbered from 1, as judges and fusers see them."""
    return "\n\n".join(f"Answer {i}:\n{text}" for i, text in enumerate(texts, 1))


# At most 6 digits: a longer run names no candidate (and int() refuses over 4,300 digits).
_PICK_STATED = re.compile(
    r"(?i)\b(?:answer|candidate|option|number|response|#)\s*(?:#\s*)?(\d{1,6})\b"
)
_PICK_ANY = re.compile(r"\b(\d{1,6})\b")


def parse_pick(text: str, candidates: Sequence[str]) -> int | None:
    """The 0-based index of the candidate a judge picked, or None when its reply names none.

    Accepts "2", "Answer 2", "the best is answer #2.", or the winning text itself.
    """
    n = len(candidates)
    for pattern in (_PICK_STATED, _PICK_ANY):
        for match in pattern.finditer(text):
            number = int(match.group(1))
            if 1 <= number <= n:
                return number - 1
    key = exact(text)
    for i, candidate in enumerate(candidates):
        if key is not None and exact(candidate) == key:
            return i
    return None
