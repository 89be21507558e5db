"""Answer normalisers and label reading: the same meaning gets the same key."""

from __future__ import annotations

import pytest

from modelyard.patterns.normalise import (
    LabelReader,
    choice,
    exact,
    normaliser,
    number,
    stated_number,
)


@pytest.mark.parametrize(
    ("text", "key"),
    [("  Paris. ", "paris"), ("New   York", "new york"), ("", None), ("...", None)],
)
def test_exact_ignores_case_space_and_final_stop(text: str, key: str | None) -> None:
    assert exact(text) == key


@pytest.mark.parametrize(
    ("text", "letter"),
    [
        ("B", "B"),
        ("(c)", None),
        ("(C)", "C"),
        ("Answer: D", "D"),
        ("The answer is A.", "A"),
        ("B) because of friction", "B"),
        ("A dog barks", None),
        ("I am not sure", None),
        ("Answer: (b)", "B"),
        ("The answer is a bit unclear", None),
        ("The answer is (I)", "I"),
        ("the answer is I think", None),
        ("J", "J"),
    ],
)
def test_choice_reads_the_letter_and_nothing_else(text: str, letter: str | None) -> None:
    assert choice(text) == letter


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("#### 1,234", "1234"),
        ("so 3 apples and 4 pears: the answer is 7", "7"),
        ("12.50 dollars", "12.5"),
        ("-3", "-3"),
        ("so it is \\boxed{42}", "42"),
        ("about 2.5e3 of them", "2500"),
        ("She makes $18.00 every day.", "18"),
        ("1e5000", None),
        ("no digits", None),
    ],
)
def test_number_prefers_the_stated_answer_then_the_last_number(
    text: str, value: str | None
) -> None:
    assert number(text) == value


def test_stated_number_is_only_a_stated_answer() -> None:
    assert stated_number("3 + 4 = 7, and the answer is 7.50") == "7.5"
    assert stated_number("3 + 4 = 7") is None
    assert number("3 + 4 = 7") == "7"


def test_json_field_reads_fenced_json_and_compares_strings_loosely() -> None:
    read = normaliser("json:answer.city")
    assert read('```json\n{"answer": {"city": "Paris "}}\n```') == "paris"
    assert read('{"answer": {"town": "Paris"}}') is None
    assert read("not json") is None


def test_json_field_keys_non_strings_canonically() -> None:
    read = normaliser("json:items.0")
    assert read('{"items": [{"b": 1, "a": 2}]}') == '{"a":2,"b":1}'


def test_unknown_normaliser_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown normaliser"):
        normaliser("fuzzy")


def test_label_reader_takes_the_whole_answer_or_the_one_label_named() -> None:
    reader = LabelReader(["billing", "tech"])
    assert reader.read("Billing.") == "billing"
    assert reader.read("Label: tech") == "tech"
    assert reader.read("billing or tech") is None
    assert reader.read("sales") is None
