"""The FAQ retriever: right entry for paraphrases, low confidence for unrelated questions."""

from __future__ import annotations

import pytest

from modelyard.errors import NoAnswerError
from modelyard.local.datasets import read_faq
from modelyard.local.minilm import MiniLMEmbedder
from modelyard.local.retriever import FaqIndex, RetrieverModel, questions_of
from modelyard.model import ModelInfo
from modelyard.types import user

from .conftest import DATA

pytestmark = pytest.mark.local

PARAPHRASES = [
    ("I can't remember my password, what do I do?", "reset-password"),
    ("How many days until my refund shows up?", "refund-time"),
    ("Do you deliver to Canada?", "shipping-countries"),
    ("I want to stop my subscription", "cancel-subscription"),
    ("Can I update the e-mail linked to my account?", "change-email"),
    ("At what times can I reach your support team?", "opening-hours"),
    ("Where do I get a PDF of my bill?", "invoice"),
    ("Where is my parcel right now?", "track-order"),
]
UNRELATED = ["What is the boiling point of water?", "Who painted the Mona Lisa?"]


def retriever(minilm: MiniLMEmbedder, refuse_below: float | None = None) -> RetrieverModel:
    entries = read_faq(DATA / "faq.jsonl")
    index = FaqIndex.of(entries, minilm.encode(questions_of(entries)))
    info = ModelInfo(name="faq", kind="retriever")
    return RetrieverModel(info, minilm, entries, index=index, refuse_below=refuse_below)


@pytest.mark.parametrize(("question", "entry"), PARAPHRASES)
async def test_paraphrase_finds_its_entry(
    question: str, entry: str, minilm: MiniLMEmbedder
) -> None:
    response = await retriever(minilm).complete(user(question))
    assert response.decision is not None
    assert response.decision.details["entry"] == entry
    answers = {e.id: e.answer for e in read_faq(DATA / "faq.jsonl")}
    assert response.text == answers[entry]


async def test_unrelated_questions_get_lower_confidence(minilm: MiniLMEmbedder) -> None:
    model = retriever(minilm)
    matched = [(await model.complete(user(q))).confidence for q, _ in PARAPHRASES]
    unrelated = [(await model.complete(user(q))).confidence for q in UNRELATED]
    assert all(c is not None for c in matched + unrelated)
    assert min(matched) > max(unrelated)  # type: ignore[type-var]
    assert max(unrelated) < 0.4  # type: ignore[operator]


async def test_scores_hold_the_top_k_entries_best_first(minilm: MiniLMEmbedder) -> None:
    response = await retriever(minilm).complete(user("I forgot my password"))
    assert response.decision is not None
    scores = list(response.decision.scores.items())
    assert len(scores) == 3
    assert scores[0][0] == "reset-password"
    assert scores[0][1] >= scores[1][1] >= scores[2][1]
    assert response.confidence == pytest.approx(scores[0][1], abs=1e-4)


async def test_refuse_below_raises_no_answer_for_unrelated_questions(
    minilm: MiniLMEmbedder,
) -> None:
    model = retriever(minilm, refuse_below=0.5)
    with pytest.raises(NoAnswerError) as caught:
        await model.complete(user(UNRELATED[0]))
    assert not caught.value.retryable
    assert caught.value.decision is not None
    assert caught.value.decision.threshold == 0.5
    answered = await model.complete(user("I forgot my password"))
    assert answered.confidence is not None and answered.confidence >= 0.5
