"""examples/local-models.yaml builds and every model in it answers one question."""

from __future__ import annotations

import pytest

from modelyard.errors import NoAnswerError
from modelyard.yard import Yard, load

from ..conftest import EXAMPLES

pytestmark = pytest.mark.local

QUESTIONS = {
    "smollm2": "What is the capital of Germany?",
    "language": "Où est mon colis ?",
    "intent": "My package never arrived",
    "intent-logistic": "My package never arrived",
    "faq": "I forgot my password",
}


@pytest.fixture(scope="module")
def yard() -> Yard:
    return load(EXAMPLES / "local-models.yaml")


def test_every_local_model_of_the_example_is_asked(yard: Yard) -> None:
    assert set(yard.models) == set(QUESTIONS)


@pytest.mark.parametrize("name", sorted(QUESTIONS))
async def test_model_answers(name: str, yard: Yard) -> None:
    response = await yard.complete(name, QUESTIONS[name], max_tokens=24, temperature=0)
    assert response.text.strip()
    assert response.model == name
    assert response.decision is not None and response.decision.error is None


async def test_answers_are_the_expected_ones(yard: Yard) -> None:
    assert (await yard.complete("language", QUESTIONS["language"])).text == "fr"
    assert (await yard.complete("intent", QUESTIONS["intent"])).text == "shipping"
    assert (await yard.complete("intent-logistic", QUESTIONS["intent"])).text == "shipping"
    faq = await yard.complete("faq", QUESTIONS["faq"])
    assert "Reset password" in faq.text


async def test_support_falls_back_to_smollm2_when_the_faq_has_no_match(yard: Yard) -> None:
    with pytest.raises(NoAnswerError):
        await yard.complete("faq", "What is the capital of Germany?")
    response = await yard.complete(
        "support", "What is the capital of Germany?", max_tokens=16, temperature=0
    )
    assert response.model == "smollm2"
    assert "berlin" in response.text.lower()
