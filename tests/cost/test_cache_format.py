"""Entries outlive the modelyard that stored them: one stored in another shape is never read,
and one that cannot be decoded is a miss, said once, never an error to the caller."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import orjson
import pytest

from modelyard.cost import cache_codec, cache_keys
from modelyard.cost.cache import Cached, ResponseCache, SemanticPolicy
from modelyard.cost.cache_codec import pack_vector
from modelyard.cost.cache_keys import exact_key, identity, semantic_scope
from modelyard.cost.cache_store import SqliteCache
from modelyard.model import ModelInfo
from modelyard.providers.local_basic import HashingEmbedder
from modelyard.types import Usage
from tests.cost.helpers import priced, question

BASE = question("What is the capital of France?", temperature=0.0, key_id="tenant-a")
SECRET = "the customer's account number is 4417"


@pytest.fixture
async def cache(tmp_path: Path) -> ResponseCache:
    made = ResponseCache(SqliteCache(tmp_path / "cache.db", max_entries=100))
    yield made  # type: ignore[misc]
    await made.aclose()


async def old_entry() -> bytes:
    """An entry as a modelyard whose Usage named its fields otherwise would have stored it."""
    data = orjson.loads(cache_codec.encode(await priced(text=SECRET).complete(BASE)))
    data["usage"] = {"prompt_tokens": 3, "completion_tokens": 5}
    return orjson.dumps(data)


async def test_an_entry_that_does_not_decode_is_a_miss_said_once_without_its_content(
    cache: ResponseCache, caplog: pytest.LogCaptureFixture
) -> None:
    inner = priced(text="Paris")
    wrapper = Cached(inner, cache=cache, who=identity(inner, "v1"))
    for asked in (BASE, dataclasses.replace(BASE, seed=1)):
        await cache.backend.put(exact_key(asked, wrapper.who), await old_entry(), 60)
    with caplog.at_level(logging.WARNING, logger="modelyard.cache"):
        first = await wrapper.complete(BASE)
        other = await wrapper.complete(dataclasses.replace(BASE, seed=1))
        again = await wrapper.complete(BASE)
    assert first.text == other.text == again.text == "Paris"
    assert len(inner.calls) == 2  # both unreadable entries missed; the answer was stored over
    assert again.decision is not None and again.decision.kind == "cache"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cache sqlite" in warnings[0] and "4417" not in warnings[0]


async def test_an_unreadable_semantic_entry_or_vector_is_no_candidate(
    cache: ResponseCache, caplog: pytest.LogCaptureFixture
) -> None:
    embedder = HashingEmbedder(ModelInfo(name="hash", kind="hashing"), 512)
    inner = priced(text="Paris")
    policy = SemanticPolicy(embedder=embedder, threshold=0.5)
    wrapper = Cached(inner, cache=cache, who=identity(inner, "v1"), semantic=policy)
    scope = semantic_scope(BASE, wrapper.who)
    vector = np.ones(512, dtype=np.float32) / np.sqrt(512)
    await cache.backend.add_vector(scope, "unreadable", b"\xff\xff\xff\x7fnot a vector", 60)
    await cache.backend.add_vector(scope, "short", pack_vector(BASE.last_user_text, vector[:3]), 60)
    await cache.backend.put("old", await old_entry(), 60)
    await cache.backend.add_vector(scope, "old", pack_vector(BASE.last_user_text, vector), 60)
    with caplog.at_level(logging.WARNING, logger="modelyard.cache"):
        answer = await wrapper.complete(BASE)
    assert answer.text == "Paris" and len(inner.calls) == 1
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1


async def test_entries_stored_in_another_format_are_never_read(
    cache: ResponseCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    inner = priced(text="Paris")
    wrapper = Cached(inner, cache=cache, who=identity(inner, "v1"))
    monkeypatch.setattr(cache_keys, "ENTRY_FORMAT", "0.older")
    await wrapper.complete(BASE)
    monkeypatch.undo()
    await wrapper.complete(BASE)
    assert len(inner.calls) == 2


def test_a_field_changed_in_a_stored_type_changes_the_entry_format(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    before = cache_codec._shape()

    renamed = dataclasses.make_dataclass("Usage", [("prompt_tokens", int, 0)], frozen=True)
    stored = tuple(renamed if t is Usage else t for t in cache_codec._STORED)
    monkeypatch.setattr(cache_codec, "_STORED", stored)
    assert cache_codec._shape() != before
