"""Classifiers on MiniLM embeddings: accuracy on held-out tickets, probabilities, determinism."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.errors import BadRequestError
from modelyard.local.classifier import (
    CentroidClassifier,
    ClassifierModel,
    LogisticClassifier,
    example_texts,
    train,
)
from modelyard.local.datasets import group_examples, read_examples
from modelyard.local.minilm import MiniLMEmbedder
from modelyard.model import ModelInfo
from modelyard.providers.local_basic import HashingEmbedder
from modelyard.types import user

from .conftest import DATA

pytestmark = pytest.mark.local

HELD_OUT = [
    ("I need my money returned", "refund"),
    ("Why haven't I received my refund?", "refund"),
    ("You charged my card but I returned the shoes", "refund"),
    ("Refund the duplicate charge please", "refund"),
    ("Reset link expired, can't get into my account", "password"),
    ("I keep getting 'wrong password'", "password"),
    ("Help me sign in, I lost my password", "password"),
    ("How do I change the password for my profile?", "password"),
    ("My parcel is stuck in transit", "shipping"),
    ("What is the delivery date for my order?", "shipping"),
    ("Is shipping free over $50?", "shipping"),
    ("The package says delivered but I don't have it", "shipping"),
    ("Clicking save shows an error", "bug"),
    ("The app keeps crashing on startup", "bug"),
    ("Images fail to load on the product page", "bug"),
    ("Checkout button does nothing", "bug"),
    ("Please cancel my plan", "cancel"),
    ("I want to quit the service", "cancel"),
    ("End my subscription today", "cancel"),
    ("Don't charge me next month, I'm leaving", "cancel"),
]


@pytest.fixture(scope="module")
def examples() -> dict[str, list[str]]:
    return group_examples(read_examples(DATA / "intents.jsonl"))


def model(minilm: MiniLMEmbedder, examples: dict[str, list[str]], method: str) -> ClassifierModel:
    trained = train(examples, minilm.encode(example_texts(examples)), method=method)
    info = ModelInfo(name="intent", kind="classifier")
    return ClassifierModel(info, minilm, examples, method=method, trained=trained)


@pytest.mark.parametrize("method", ["centroid", "logistic"])
def test_held_out_accuracy(
    method: str, minilm: MiniLMEmbedder, examples: dict[str, list[str]]
) -> None:
    predictions = model(minilm, examples, method).predict([text for text, _ in HELD_OUT])
    correct = sum(p[0] == label for p, (_, label) in zip(predictions, HELD_OUT, strict=True))
    assert correct / len(HELD_OUT) >= 0.9


@pytest.mark.parametrize("method", ["centroid", "logistic"])
def test_probabilities_cover_every_label_and_sum_to_one(
    method: str, minilm: MiniLMEmbedder, examples: dict[str, list[str]]
) -> None:
    ((label, probability, scores),) = model(minilm, examples, method).predict(["Where's my box?"])
    assert set(scores) == set(examples)
    assert sum(scores.values()) == pytest.approx(1.0)
    assert probability == max(scores.values()) == scores[label]


def test_off_topic_text_gets_lower_confidence_than_a_clear_one(
    minilm: MiniLMEmbedder, examples: dict[str, list[str]]
) -> None:
    classifier = model(minilm, examples, "centroid")
    (clear, off_topic) = classifier.predict(
        ["Please refund my order", "What's the capital of Peru?"]
    )
    assert clear[1] > 0.8
    assert off_topic[1] < clear[1] - 0.2


def test_centroid_temperature_is_fitted_within_its_range(
    minilm: MiniLMEmbedder, examples: dict[str, list[str]]
) -> None:
    trained = train(examples, minilm.encode(example_texts(examples)), method="centroid")
    assert isinstance(trained, CentroidClassifier)
    assert 0.005 < trained.temperature < 1.0


def test_training_is_deterministic(minilm: MiniLMEmbedder, examples: dict[str, list[str]]) -> None:
    vectors = minilm.encode(example_texts(examples))
    first = train(examples, vectors, method="logistic")
    second = train(examples, vectors, method="logistic")
    assert isinstance(first, LogisticClassifier) and isinstance(second, LogisticClassifier)
    assert np.array_equal(first.weights, second.weights)


async def test_model_answers_the_label_with_confidence_and_scores(
    minilm: MiniLMEmbedder, examples: dict[str, list[str]]
) -> None:
    response = await model(minilm, examples, "centroid").complete(user("My parcel is late"))
    assert response.text == "shipping"
    assert response.confidence is not None
    assert response.decision is not None
    assert response.decision.scores["shipping"] == response.confidence
    assert set(response.decision.scores) == set(examples)


async def test_async_only_embedder_trains_on_first_request() -> None:
    examples = {"greeting": ["hello there", "hi friend"], "farewell": ["goodbye now", "bye bye"]}
    embedder = HashingEmbedder(ModelInfo(name="hash", kind="hashing"), 256)
    classifier = ClassifierModel(ModelInfo(name="c", kind="classifier"), embedder, examples)
    assert classifier.trained is None
    response = await classifier.complete(user("hello there friend"))
    assert response.text == "greeting"
    assert classifier.trained is not None


def test_predict_needs_a_synchronous_embedder() -> None:
    embedder = HashingEmbedder(ModelInfo(name="hash", kind="hashing"), 64)
    examples = {"a": ["x"], "b": ["y"]}
    classifier = ClassifierModel(ModelInfo(name="c", kind="classifier"), embedder, examples)
    with pytest.raises(BadRequestError, match="synchronously"):
        classifier.predict(["x"])
