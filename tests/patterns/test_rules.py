"""Routing rules: each condition, first-match order, and the index that keeps it cheap."""

from __future__ import annotations

import re

import pytest

from modelyard.patterns.rules import Rule, RuleSet
from modelyard.types import ChatRequest, ImagePart, Message, TextPart, Tool, user


def match(rules: list[Rule], request: ChatRequest, **kwargs: object) -> str | None:
    found = RuleSet(rules, **kwargs).match(request)  # type: ignore[arg-type]
    return None if found is None else found.rule.route


def test_keywords_match_whole_words_case_blind() -> None:
    rules = [Rule(route="billing", keywords=("refund", "credit card"))]
    assert match(rules, user("I want a REFUND now")) == "billing"
    assert match(rules, user("my Credit  Card was charged")) == "billing"
    assert match(rules, user("refunded")) is None


def test_keywords_with_symbols_fall_back_to_substring() -> None:
    assert match([Rule(route="cpp", keywords=("c++",))], user("help with C++ templates")) == "cpp"


def test_regex_searches_the_last_user_message() -> None:
    rules = [Rule(route="code", regex=re.compile(r"```|def \w+\("))]
    assert match(rules, user("fix def f(x): pass")) == "code"
    assert match(rules, user("hello")) is None


def test_length_in_estimated_tokens() -> None:
    rules = [Rule(route="long", min_tokens=100)]
    assert match(rules, user("x" * 400)) == "long"
    assert match(rules, user("x" * 100)) is None


def test_metadata_and_tags_must_all_hold() -> None:
    rules = [Rule(route="vip", metadata=(("tier", "gold"),), tags=frozenset({"beta"}))]
    assert match(rules, user("hi", metadata={"tier": "gold"}, tags=("beta", "x"))) == "vip"
    assert match(rules, user("hi", metadata={"tier": "gold"})) is None


def test_tools_and_images_present() -> None:
    rules = [Rule(route="agent", tools=True), Rule(route="vision", images=True)]
    assert match(rules, user("hi", tools=(Tool(name="f"),))) == "agent"
    picture = Message(role="user", content=(TextPart(text="what is this"), ImagePart(url="x")))
    assert match(rules, ChatRequest(messages=(picture,))) == "vision"
    assert match(rules, user("hi")) is None


def test_language_uses_the_injected_detector_once() -> None:
    seen: list[str] = []

    def detect(text: str) -> tuple[str, float]:
        seen.append(text)
        return ("fr", 0.9) if "bonjour" in text else ("en", 0.95)

    rules = [
        Rule(route="french", languages=frozenset({"fr"}), min_language_score=0.8),
        Rule(route="fr-low", languages=frozenset({"fr"})),
    ]
    assert match(rules, user("bonjour"), detect=detect) == "french"
    assert seen == ["bonjour"]
    assert match(rules, user("hello"), detect=detect) is None


def test_language_rules_need_a_detector() -> None:
    with pytest.raises(ValueError, match="language detector"):
        RuleSet([Rule(route="fr", languages=frozenset({"fr"}))])


def test_first_rule_in_config_order_wins_across_indexes() -> None:
    rules = [
        Rule(route="first", regex=re.compile("refund")),
        Rule(route="second", keywords=("refund",)),
        Rule(route="third", metadata=(("tier", "gold"),)),
    ]
    assert match(rules, user("refund", metadata={"tier": "gold"})) == "first"
    assert match(rules[1:], user("refund", metadata={"tier": "gold"})) == "second"


def test_match_says_what_matched() -> None:
    found = RuleSet([Rule(route="billing", keywords=("refund",), max_tokens=50)]).match(
        user("a refund please")
    )
    assert found is not None
    assert found.index == 0
    assert found.matched.startswith("keyword 'refund'")


def test_a_thousand_keyword_rules_find_the_right_one() -> None:
    rules = [Rule(route=f"r{i}", keywords=(f"word{i}",)) for i in range(1000)]
    assert match(rules, user("please use word737 here")) == "r737"
