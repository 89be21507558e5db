"""Specialist-generalist configs: who answers, when the generalist does, and check-time notes."""

from __future__ import annotations

from collections.abc import Callable

from modelyard.errors import ConfigError
from modelyard.streaming import collect
from modelyard.types import user
from modelyard.yard import Yard
from tests.patterns.conftest import PRICE, with_hosted

CONFIG = f"""
models:
  clf:
    local:
      type: fake
      answers:
        "integrate x": {{text: "math", confidence: 0.92}}
        "maybe math": {{text: "math", confidence: 0.4}}
        "a poem": {{text: "poetry", confidence: 0.99}}
        "crash": {{error: unavailable}}
  mathbot:
    local: {{type: fake, default: "x^2/2 + C"}}
    {PRICE}
  general:
    local: {{type: fake, default: "Let me help."}}
    {PRICE}
systems:
  desk:
    type: specialist
    classifier: clf
    specialists: {{math: mathbot}}
    generalist: general
    min_confidence: 0.6
"""


async def test_the_specialist_answers_its_type(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await yard.complete("desk", "integrate x")
    assert (response.text, response.model, response.cost) == ("x^2/2 + C", "mathbot", 3.0)
    decision = response.decision
    assert decision is not None
    assert (decision.kind, decision.chosen) == ("specialist", "mathbot")
    assert decision.reason == "classifier said 'math'; confidence 0.920 >= 0.6"
    assert dict(decision.scores) == {"math": 0.92}
    assert decision.threshold == 0.6
    assert [c.node for c in decision.children] == ["clf", "mathbot"]


async def test_unsure_classifier_means_the_generalist(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await yard.complete("desk", "maybe math")
    assert (response.model, response.cost) == ("general", 3.0)
    assert response.decision is not None
    assert response.decision.reason == (
        "classifier said 'math'; confidence 0.400 < 0.6; generalist"
    )


async def test_a_type_without_a_specialist_goes_to_the_generalist(
    yard_of: Callable[[str], Yard],
) -> None:
    async with yard_of(CONFIG) as yard:
        response = await yard.complete("desk", "a poem")
    assert response.model == "general"
    assert response.decision is not None
    assert response.decision.reason == "classifier said 'poetry': no specialist for it; generalist"


async def test_a_failed_classifier_means_the_generalist(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await yard.complete("desk", "crash")
    assert response.model == "general"
    assert response.decision is not None
    assert response.decision.children[0].error is not None


async def test_adding_a_specialist_is_config_only(yard_of: Callable[[str], Yard]) -> None:
    text = CONFIG.replace(
        "specialists: {math: mathbot}", "specialists: {math: mathbot, poetry: mathbot}"
    )
    async with yard_of(text) as yard:
        response = await yard.complete("desk", "a poem")
    assert response.model == "mathbot"


def test_a_specialist_the_classifier_cannot_pick_is_noted(yard_of: Callable[[str], Yard]) -> None:
    text = CONFIG.replace(
        "specialists: {math: mathbot}", "specialists: {math: mathbot, law: general}"
    ).replace("min_confidence: 0.6", "min_confidence: 0.6\n    labels: [math, poetry]")
    yard = yard_of(text)
    assert yard.notes == [
        "desk: specialist 'law' can never be chosen: classifier clf only gives math, poetry"
    ]


def test_a_min_confidence_a_hosted_classifier_cannot_clear_is_refused(
    config_error: Callable[[str], ConfigError],
) -> None:
    """A hosted model gives no confidence: every request would go to the generalist."""
    error = config_error(with_hosted(CONFIG.replace("classifier: clf", "classifier: hosted")))
    message = str(error)
    assert "systems.desk.min_confidence: the classifier's model 'hosted'" in message
    assert "min_confidence 0.6 would send every request to the generalist" in message


async def test_stream_goes_to_the_specialist(yard_of: Callable[[str], Yard]) -> None:
    async with yard_of(CONFIG) as yard:
        response = await collect(yard.get("desk").stream(user("integrate x")))
    assert (response.text, response.model, response.cost) == ("x^2/2 + C", "mathbot", 3.0)
