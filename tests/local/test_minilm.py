"""MiniLM embeddings: unit vectors, meaning captured, cache, async path."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.errors import BadRequestError
from modelyard.local.minilm import DIMENSIONS, MiniLMEmbedder
from modelyard.types import EmbeddingRequest

pytestmark = pytest.mark.local


def test_vectors_have_unit_length(minilm: MiniLMEmbedder) -> None:
    vectors = minilm.encode(["Hello world", "A much longer sentence about shipping delays.", ""])
    assert vectors.shape == (3, DIMENSIONS)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_paraphrases_are_closer_than_unrelated_sentences(minilm: MiniLMEmbedder) -> None:
    a, b, c = minilm.encode(
        [
            "How do I reset my password?",
            "I forgot my password, how can I change it?",
            "What time does the train to Paris leave?",
        ]
    )
    assert a @ b > 0.7
    assert a @ c < 0.3


def test_batch_and_single_encoding_agree(minilm: MiniLMEmbedder) -> None:
    texts = ["short", "a somewhat longer sentence that needs padding in a batch"]
    batched = minilm.encode(texts)
    minilm.runtime._cache.clear()
    single = np.stack([minilm.encode([t])[0] for t in texts])
    assert np.allclose(batched, single, atol=1e-4)


def test_repeated_texts_come_from_the_cache(minilm: MiniLMEmbedder) -> None:
    text = "a sentence seen twice by the cache test"
    first = minilm.encode([text])
    assert minilm.runtime.lookup([text])[0] is not None
    assert np.array_equal(minilm.encode([text]), first)


async def test_embed_returns_one_vector_per_input_with_token_usage(minilm: MiniLMEmbedder) -> None:
    response = await minilm.embed(EmbeddingRequest(inputs=("one", "two words", "one")))
    assert len(response.vectors) == 3
    assert len(response.vectors[0]) == DIMENSIONS
    assert response.vectors[0] == response.vectors[2]
    # [CLS] and [SEP] around each text's word pieces.
    assert response.usage.input_tokens == 3 + 4 + 3


async def test_embed_refuses_other_dimensions(minilm: MiniLMEmbedder) -> None:
    with pytest.raises(BadRequestError, match="384"):
        await minilm.embed(EmbeddingRequest(inputs=("x",), dimensions=128))
