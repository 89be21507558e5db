"""Vote tallies, when a vote is settled, and reading a judge's pick."""

from __future__ import annotations

from modelyard.patterns.combine import parse_pick, settled, tally


def test_tally_picks_the_heaviest_key_and_the_first_member_that_gave_it() -> None:
    result = tally(["b", "a", "a", None], [1, 1, 1, 1])
    assert result.winner == "a"
    assert result.first == 1
    assert result.share == 0.5


def test_tie_goes_to_the_earliest_member() -> None:
    assert tally(["b", "a"], [1, 1]).winner == "b"


def test_weights_decide_a_weighted_vote() -> None:
    assert tally(["a", "b", "b"], [0.9, 0.3, 0.4]).winner == "a"


def test_settled_when_outstanding_members_cannot_catch_up() -> None:
    assert settled(tally(["a", "a"], [1, 1]), outstanding=1.0, earliest_outstanding=2)
    assert not settled(tally(["a", "b"], [1, 1]), outstanding=1.0, earliest_outstanding=2)


def test_a_tie_in_reach_settles_only_if_the_leader_comes_first() -> None:
    # a leads 1-0; one member out could tie at 1-1; a wins ties only if it is earlier.
    assert settled(tally(["a"], [1]), outstanding=1.0, earliest_outstanding=1)
    assert not settled(tally([None, "a"], [0, 1]), outstanding=1.0, earliest_outstanding=0)


def test_parse_pick_reads_numbers_phrases_and_the_text_itself() -> None:
    candidates = ["Paris", "Lyon", "Nice"]
    assert parse_pick("2", candidates) == 1
    assert parse_pick("The best is Answer #3.", candidates) == 2
    assert parse_pick("lyon", candidates) == 1
    assert parse_pick("Answer 7", candidates) is None
    assert parse_pick("none of them", candidates) is None
