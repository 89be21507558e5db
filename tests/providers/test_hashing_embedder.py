"""The hashing embedder: deterministic unit vectors from character trigrams, in bounded time."""

from __future__ import annotations

import hashlib
import math

import pytest

from modelyard.errors import BadRequestError
from modelyard.model import ModelInfo
from modelyard.providers.local_basic import HashingEmbedder
from modelyard.types import EmbeddingRequest

EMBEDDER = HashingEmbedder(ModelInfo(name="hash", kind="embedder"), 128)


def test_vectors_are_unit_length_deterministic_and_closer_for_similar_spellings() -> None:
    a, b, far = (EMBEDDER.vector(t) for t in ("refund my order", "refund my orders", "weather"))
    assert math.isclose(sum(v * v for v in a), 1.0)
    assert a == EMBEDDER.vector("Refund my order")  # case is ignored
    near = sum(x * y for x, y in zip(a, b, strict=True))
    assert near > sum(x * y for x, y in zip(a, far, strict=True)) and near > 0.8


def test_a_huge_text_is_read_by_its_head_and_tail_only() -> None:
    head, tail = "question: " * 1000, " the answer is 42" * 700  # 10,000 and 11,900 chars
    middle = "filler " * 2_000_000  # 14 MB: about 10 s of hashing if read whole
    huge = EMBEDDER.vector(head + middle + tail)
    half = HashingEmbedder.MAX_CHARS // 2
    assert huge == EMBEDDER.vector((head + middle)[:half] + (middle + tail)[-half:])
    other_middle = "padding " * 2_000_000
    assert huge == EMBEDDER.vector(head + other_middle + tail)  # the middle is not read
    assert huge != EMBEDDER.vector(head + middle + tail.replace("42", "41"))  # the end is


def reference_vector(text: str, dimensions: int) -> tuple[float, ...]:
    """The embedding as specified, one trigram at a time: trained artifacts depend on it."""
    values = [0.0] * dimensions
    padded = f"  {text.lower()} "
    for i in range(len(padded) - 2):
        digest = hashlib.blake2b(padded[i : i + 3].encode(), digest_size=8).digest()
        values[int.from_bytes(digest[:4], "little") % dimensions] += 1 if digest[4] & 1 else -1
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return tuple(v / norm for v in values)


def test_kept_trigrams_give_the_specified_vectors_and_stay_bounded() -> None:
    texts = ["aaaa aaaa aaaa", "refund my order, refund it", "Ünïcode ✓ 数学 #### 12", ""]
    small = HashingEmbedder(ModelInfo(name="hash", kind="embedder"), 64)
    small.MAX_TRIGRAMS = 10
    for embedder in (EMBEDDER, small):
        for _ in range(2):  # the second time from the kept trigrams
            for text in texts:
                assert embedder.vector(text) == reference_vector(text, embedder.dimensions)
    assert len(small._trigrams) == 10


async def test_dimensions_other_than_its_own_are_refused_not_ignored() -> None:
    # An OpenAI client asking `dimensions=64` stores what it gets: 128 would fail it later.
    with pytest.raises(BadRequestError, match=r"128-dimensional.*64"):
        await EMBEDDER.embed(EmbeddingRequest(inputs=("a",), dimensions=64))
    same = await EMBEDDER.embed(EmbeddingRequest(inputs=("a",), dimensions=128))
    assert len(same.vectors[0]) == 128
