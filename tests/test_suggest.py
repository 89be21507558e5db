"""A name that is not there is answered with the likely ones meant, then every known name."""

from __future__ import annotations

from modelyard.suggest import did_you_mean


def test_a_typo_is_answered_with_the_close_name_first_then_every_name() -> None:
    assert did_you_mean("fron", ["back", "front"]) == "; did you mean 'front'? known: back, front"


def test_a_cut_short_name_or_a_case_slip_is_meant_too() -> None:
    assert did_you_mean("fron", ["front-desk", "faq"], listed=None) == (
        "; did you mean 'front-desk'?"
    )
    assert did_you_mean("A", ["a", "b"], listed=None) == "; did you mean 'a'?"


def test_with_nothing_close_the_known_names_alone_are_listed_under_their_label() -> None:
    assert did_you_mean("zzz", ["a", "b"], listed="available") == "; available: a, b"
    assert did_you_mean("zzz", [], listed="defined providers") == "; defined providers: none"
    assert did_you_mean("zzz", ["a"], listed=None) == ""
