"""A shared store used from several event loops: one `asyncio.run` after another, and threads'
loops at once. Each loop has connections of its own; what they count lives in the server, so
a limit holds across them."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest

from modelyard.cost.cache_redis import RedisCache
from modelyard.state.base import Claim, Lease, StateStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from tests.state.conftest import POSTGRES_URL, REDIS_URL, unique_prefix
from tests.test_yard_threads import in_threads


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def store(request: pytest.FixtureRequest) -> Iterator[StateStore]:
    """A shared store, its keys or tables removed afterwards (on a loop of its own)."""
    made: StateStore
    if request.param == "redis":
        made = RedisStore(REDIS_URL, prefix=unique_prefix())
    else:
        made = PostgresStore(POSTGRES_URL, table_prefix="t" + uuid.uuid4().hex[:10] + "_")
    yield made

    async def clean() -> None:
        if isinstance(made, RedisStore):
            await made.clear_prefix()
        else:
            assert isinstance(made, PostgresStore)
            await made.drop_tables()
        await made.aclose()

    asyncio.run(clean())


def test_a_store_serves_one_asyncio_run_after_another(store: StateStore) -> None:
    for _ in range(3):
        asyncio.run(store.adjust("calls", 1.0))
    assert asyncio.run(store.counter("calls")) == 3.0


def test_a_store_used_by_threads_loops_at_once_holds_its_limits_across_them(
    store: StateStore,
) -> None:
    """Two threads' loops reserve against one limit and acquire in one window together: the
    server admits exactly the limit, whichever loop asked."""
    start = threading.Barrier(2)

    def thread(name: str) -> Callable[[], Coroutine[Any, Any, tuple[int, int]]]:
        async def work() -> tuple[int, int]:
            await asyncio.to_thread(start.wait, 10)
            reserved = admitted = 0
            for number in range(10):
                claim = Claim(key="budget", amount=1.0, limit=12.0)
                lease = Lease(id=f"{name}-{number}", seconds=60.0)
                if await store.reserve_or_explain([claim], lease=lease) is None:
                    reserved += 1
                    await store.release(lease, [("spent", 1.0, None)])
                use = await store.window_acquire("rpm", 1.0, limit=7.0, window=60.0)
                admitted += use.wait == 0.0
            return reserved, admitted

        return work

    (a_reserved, a_admitted), (b_reserved, b_admitted) = in_threads(thread("a"), thread("b"))
    assert a_admitted + b_admitted == 7
    # Every release gave its reservation back: all 20 fit under 12, one at a time or two.
    assert a_reserved + b_reserved == 20
    assert asyncio.run(store.counter("spent")) == 20.0
    assert asyncio.run(store.counter("budget")) == 0.0


@pytest.mark.redis
def test_the_redis_cache_serves_one_asyncio_run_after_another() -> None:
    cache = RedisCache(REDIS_URL, prefix=unique_prefix(), max_entries=10)
    asyncio.run(cache.put("k", b"answer", 60.0))
    assert asyncio.run(cache.get("k")) == b"answer"

    async def cleared() -> int:
        try:
            return await cache.clear()
        finally:
            await cache.aclose()

    assert asyncio.run(cleared()) == 1
