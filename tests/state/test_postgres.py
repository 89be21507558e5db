"""The PostgreSQL store when its server stops answering: unreachable after `timeout`, as Redis
is, never a wait as long as the outage. Talks to the real server at 127.0.0.1:5432 (database
`test`) through a relay the test can stall."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Claim
from modelyard.state.policy import PolicyStore
from modelyard.state.postgres import PostgresStore
from tests.conftest import relayed_postgres
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


CLAIM = Claim(key="b", amount=1, limit=10)


@pytest.fixture
async def relayed(postgres_relay: TcpRelay) -> AsyncIterator[PostgresStore]:
    """A store on fresh tables with a 0.3 s timeout, reaching the server through
    `postgres_relay`, which has already passed one reservation on."""
    url = relayed_postgres(postgres_relay)
    store = PostgresStore(url, table_prefix="t" + uuid.uuid4().hex[:10] + "_", timeout=0.3)
    assert await store.reserve([CLAIM]) is None
    yield store
    postgres_relay.flow()
    await store.drop_tables()
    await store.aclose()


async def test_a_server_that_stops_answering_is_unreachable_not_waited_for(
    relayed: PostgresStore, postgres_relay: TcpRelay
) -> None:
    postgres_relay.stall()
    with pytest.raises(UnavailableError) as caught:
        await answered(relayed.reserve([CLAIM]))
    assert caught.value.code == "state_unavailable"
    assert "no answer within 0.3 s" in caught.value.message
    assert "state.url" in caught.value.message
    postgres_relay.flow()
    assert await answered(relayed.reserve([CLAIM])) is None  # back, without a restart
    assert await relayed.counter("b") == 2


async def test_a_stalled_server_with_on_unavailable_local_counts_in_process(
    relayed: PostgresStore, postgres_relay: TcpRelay
) -> None:
    store = PolicyStore(relayed, on_unavailable="local", retry_interval=60)
    postgres_relay.stall()
    assert await answered(store.reserve([CLAIM])) is None
    assert store.health().mode == "local"


async def test_local_counts_whose_move_was_answered_too_late_are_added_once(
    relayed: PostgresStore, postgres_relay: TcpRelay
) -> None:
    store = PolicyStore(relayed, on_unavailable="local", retry_interval=0.05)
    postgres_relay.stall()
    assert await answered(store.reserve([CLAIM])) is None  # counted locally
    postgres_relay.flow()
    postgres_relay.lose_replies_after(b"COMMIT")
    await asyncio.sleep(0.06)
    # The move is applied, its answer lost: still down, the count kept locally to enforce.
    assert await answered(store.counter("b")) == 1
    assert store.health().mode == "local"
    postgres_relay.flow()
    await asyncio.sleep(0.06)
    assert await answered(store.counter("b")) == 2  # the first reservation and this one, once
    assert store.health().ok
