"""The PostgreSQL store when its server stops answering: unreachable after `timeout`, as Redis
is, never a wait as long as the outage. Talks to the real server at 127.0.0.1:5432 (database
`test`) through a relay the test can stall."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Iterator
from typing import TypeVar

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Claim
from modelyard.state.policy import PolicyStore
from modelyard.state.postgres import PostgresStore
from tests.fakes.tcp_relay import TcpRelay

pytestmark = pytest.mark.postgres
T = TypeVar("T")

GUARD = 20.0
"""Seconds after which a call is taken to hang (far above any timeout the tests set)."""


async def answered(call: Awaitable[T]) -> T:
    """What `call` returns or raises; AssertionError if it is still waiting after GUARD."""
    task = asyncio.ensure_future(call)
    done, _ = await asyncio.wait({task}, timeout=GUARD)
    if not done:
        task.cancel()
        raise AssertionError(f"still waiting for the store after {GUARD:g} s")
    return task.result()


@pytest.fixture
def relay() -> Iterator[TcpRelay]:
    """A relay to the real server, listening."""
    running = TcpRelay("127.0.0.1", 5432)
    running.restore()
    yield running
    running.close()


async def test_a_server_that_stops_answering_is_unreachable_not_waited_for(
    relay: TcpRelay,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{relay.port}/test"
    store = PostgresStore(url, table_prefix="t" + uuid.uuid4().hex[:10] + "_", timeout=0.3)
    claim = Claim(key="b", amount=1, limit=10)
    try:
        assert await store.reserve([claim]) is None
        relay.stall()
        with pytest.raises(UnavailableError) as caught:
            await answered(store.reserve([claim]))
        assert caught.value.code == "state_unavailable"
        assert "no answer within 0.3 s" in caught.value.message
        assert "state.url" in caught.value.message
        relay.flow()
        assert await answered(store.reserve([claim])) is None  # back, without a restart
        assert await store.counter("b") == 2
    finally:
        relay.flow()
        await store.drop_tables()
        await store.aclose()


async def test_a_stalled_server_with_on_unavailable_local_counts_in_process(
    relay: TcpRelay,
) -> None:
    url = f"postgresql://postgres@127.0.0.1:{relay.port}/test"
    primary = PostgresStore(url, table_prefix="t" + uuid.uuid4().hex[:10] + "_", timeout=0.3)
    store = PolicyStore(primary, on_unavailable="local", retry_interval=60)
    claim = Claim(key="b", amount=1, limit=10)
    try:
        assert await store.reserve([claim]) is None
        relay.stall()
        assert await answered(store.reserve([claim])) is None
        assert store.health().mode == "local"
    finally:
        relay.flow()
        await primary.drop_tables()
        await store.aclose()
