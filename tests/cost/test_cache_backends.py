"""Every cache backend: entries with a TTL, LRU eviction beyond max_entries, semantic vectors,
hit counters, clear."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from modelyard.cost.cache_codec import pack_vector, unpack_vector
from modelyard.cost.cache_redis import RedisCache
from modelyard.cost.cache_store import CacheBackend, MemoryCache, SqliteCache
from tests.state.test_policy import own_redis, start_redis, stop_redis, wait_until_up  # noqa: F401

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture(
    params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)],
)
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[CacheBackend]:
    made: CacheBackend
    if request.param == "memory":
        made = MemoryCache(max_entries=3)
    elif request.param == "sqlite":
        made = SqliteCache(tmp_path / "cache.db", max_entries=3)
    else:
        made = RedisCache(REDIS_URL, prefix=f"test-{uuid.uuid4().hex[:12]}:", max_entries=3)
    yield made
    await made.clear()
    await made.aclose()


async def test_entries_round_trip(backend: CacheBackend) -> None:
    await backend.put("k", b"value", 60)
    assert await backend.get("k") == b"value"
    assert await backend.get("other") is None


async def test_entries_expire(backend: CacheBackend) -> None:
    await backend.put("k", b"value", 0.05)
    await asyncio.sleep(0.12)
    assert await backend.get("k") is None


async def test_expired_entries_are_not_counted(backend: CacheBackend) -> None:
    await backend.put("gone", b"value", 0.05)
    await backend.put("kept", b"value", 60)
    await asyncio.sleep(0.12)
    assert (await backend.stats()).entries == 1


async def test_least_recently_used_entry_is_evicted_beyond_max_entries(
    backend: CacheBackend,
) -> None:
    for key in ("a", "b", "c"):
        await backend.put(key, key.encode(), 60)
        await asyncio.sleep(0.002)
    assert await backend.get("a") == b"a"  # now b is the least recently used
    await asyncio.sleep(0.002)
    await backend.put("d", b"d", 60)
    assert await backend.get("b") is None
    assert [await backend.get(k) for k in ("a", "c", "d")] == [b"a", b"c", b"d"]


async def test_vectors_are_kept_per_scope(backend: CacheBackend) -> None:
    vector = np.array([0.6, 0.8], dtype=np.float32)
    await backend.add_vector("s1", "k", pack_vector("question", vector), 60)
    found = [unpack_vector(key, blob) for key, blob in await backend.vectors("s1")]
    assert [(v.key, v.text) for v in found] == [("k", "question")]
    assert np.allclose(found[0].vector, vector)
    assert await backend.vectors("s2") == []


async def test_hits_misses_and_savings_are_counted_and_cleared(backend: CacheBackend) -> None:
    await backend.put("k", b"v", 60)
    await backend.count(hit=True, saved=0.25)
    await backend.count(hit=False)
    stats = await backend.stats()
    assert (stats.entries, stats.hits, stats.misses, stats.saved) == (1, 1, 1, 0.25)
    assert await backend.clear() == 1
    assert (await backend.stats()).hits == 0


@pytest.mark.redis
async def test_a_redis_that_went_down_is_left_alone_until_its_retry_interval(
    own_redis: int,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    url = f"redis://127.0.0.1:{own_redis}/0"
    cache = RedisCache(url, prefix="t:", max_entries=10, retry_interval=5, clock=lambda: now[0])
    await asyncio.gather(*(cache.get("k") for _ in range(10)))  # ten pooled connections
    await asyncio.to_thread(stop_redis, own_redis)
    assert await cache.get("k") is None
    await asyncio.to_thread(start_redis, own_redis)
    await wait_until_up(own_redis)
    other = RedisCache(url, prefix="t:", max_entries=10)
    await other.put("k", b"answer", ttl=60)
    # Within the interval it is not asked (each try would cost a timeout where packets drop).
    assert await cache.get("k") is None
    now[0] = 5.0
    assert await cache.get("k") == b"answer"
    # None of the connections opened before the restart sends the cache back to missing.
    assert await asyncio.gather(*(cache.get("k") for _ in range(10))) == [b"answer"] * 10
    warnings = [r.getMessage() for r in caplog.records if r.name == "modelyard.cache"]
    assert len(warnings) == 2
    assert "unavailable" in warnings[0] and "is back" in warnings[1]
    await other.aclose()
    await cache.aclose()
