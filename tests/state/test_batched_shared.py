"""Live counts on Redis and PostgreSQL, batched behind `PolicyStore` as `live_store` builds them:
a flush whose answer is lost, or that fails, or an outage, loses no count and counts none twice."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Change, Lease, StateStore
from modelyard.state.batched import BatchedStore
from modelyard.state.policy import OnUnavailable, PolicyStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from tests.state.conftest import POSTGRES_URL, REDIS_URL, unique_prefix

CALLS = "circuit:model:cheap:0:calls:7"
NEVER = 3600.0
"""A flush interval no test waits for: it flushes by hand."""


class Flaky(StateStore):
    """A shared store whose next `lost` flushes are applied and their answers lost (the outage
    begins with them if `then_down`), whose next `refused` flushes fail before they apply, and
    which refuses everything while `down`. Mixed into a real store's class."""

    lost = 0
    then_down = False
    refused = 0
    down = False

    def _check(self) -> None:
        if self.down:
            raise UnavailableError("the store is down", code="state_unavailable")
        if self.refused:
            self.refused -= 1
            raise UnavailableError("connection refused", code="state_unavailable")

    def _lose(self) -> None:
        if self.lost:
            self.lost -= 1
            self.down = self.then_down
            raise UnavailableError("no answer within 1 s", code="state_unavailable")

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        self._check()
        values = await super().release(lease, changes)  # type: ignore[safe-super]
        self._lose()
        return values

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        self._check()
        values = await super().adjust_many(changes)
        self._lose()
        return values

    async def counter(self, key: str) -> float:
        if self.down:
            raise UnavailableError("the store is down", code="state_unavailable")
        return await super().counter(key)  # type: ignore[safe-super]


class FlakyRedis(Flaky, RedisStore):
    """Redis, flaky."""


class FlakyPostgres(Flaky, PostgresStore):
    """PostgreSQL, flaky."""


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
async def shared(request: pytest.FixtureRequest) -> AsyncIterator[Flaky]:
    """The real backend of this test alone, flaky on demand."""
    made: FlakyRedis | FlakyPostgres
    if request.param == "redis":
        made = FlakyRedis(REDIS_URL, prefix=unique_prefix())
    else:
        made = FlakyPostgres(POSTGRES_URL, table_prefix="t" + uuid.uuid4().hex[:10] + "_")
    yield made
    made.down = False
    if isinstance(made, RedisStore):
        await made.clear_prefix()
    else:
        await made.drop_tables()
    await made.aclose()


class Stack:
    """The live store `live_store` builds on a shared backend: counts batched in front of the
    policy for outages, whose clock the test moves on (no probe races it)."""

    def __init__(
        self, shared: StateStore, on_unavailable: OnUnavailable, spool: Path | None = None
    ) -> None:
        self.now = 0.0
        self.policy = PolicyStore(
            shared,
            on_unavailable=on_unavailable,
            retry_interval=60.0,
            clock=lambda: self.now,
            spool=spool,
        )
        self.live = BatchedStore(self.policy, flush_every=NEVER, applied_once=True)

    def later(self) -> None:
        """Past the policy's retry interval: the backend is tried again."""
        self.now += 61.0

    async def aclose(self) -> None:
        await self.live.aclose()
        await self.policy.aclose()


@pytest.fixture
async def local(shared: Flaky) -> AsyncIterator[Stack]:
    stack = Stack(shared, "local")
    yield stack
    await stack.aclose()


@pytest.fixture
async def fail_closed(shared: Flaky) -> AsyncIterator[Stack]:
    stack = Stack(shared, "fail_closed")
    yield stack
    await stack.aclose()


async def counted_once_after_a_failed_flush(stack: Stack, shared: Flaky) -> None:
    """Count 2, flush (and fail, as `shared` is set to), count 1 more, and once the backend
    is tried again: 3 there, whether the failed flush was applied or not."""
    await stack.live.add(CALLS, 2.0, ttl=60)
    await stack.live.flush()
    await stack.live.add(CALLS, 1.0, ttl=60)
    stack.later()
    assert await stack.live.flush()
    assert await stack.live.counter(CALLS) == 3  # the backend's value, now it is seen back
    assert await shared.counter(CALLS) == 3


async def test_a_flush_applied_whose_answer_was_lost_is_counted_once(
    shared: Flaky, local: Stack
) -> None:
    shared.lost = 1
    await counted_once_after_a_failed_flush(local, shared)


async def test_a_flush_that_failed_before_it_applied_is_counted_once(
    shared: Flaky, fail_closed: Stack
) -> None:
    shared.refused = 1
    await counted_once_after_a_failed_flush(fail_closed, shared)


async def test_counts_made_during_an_outage_in_local_mode_are_seen_then_counted_once(
    shared: Flaky, local: Stack
) -> None:
    await local.live.add(CALLS, 2.0, ttl=60)
    shared.lost, shared.then_down = 1, True
    await local.live.flush()  # applied, its answer lost, and the backend gone with it
    await local.live.add(CALLS, 3.0, ttl=60)  # counted during the outage
    local.later()
    await local.live.flush()  # tried again: still down
    assert local.policy.health().mode == "local"
    assert await local.live.counter(CALLS) == 5  # this process sees its own counts
    shared.down = False
    local.later()
    assert await local.live.flush()
    assert await local.live.counter(CALLS) == 5  # the backend's value, now it is seen back
    assert await shared.counter(CALLS) == 5
    assert local.policy.health().ok


async def test_counts_made_during_an_outage_and_left_at_close_reach_the_store_at_next_start(
    shared: Flaky, tmp_path: Path
) -> None:
    stopped = Stack(shared, "local", spool=tmp_path)
    await stopped.live.add(CALLS, 2.0, ttl=60)
    shared.lost, shared.then_down = 1, True
    await stopped.live.flush()  # applied, its answer lost, and the backend gone with it
    await stopped.live.add(CALLS, 3.0, ttl=60)  # counted during the outage
    await stopped.aclose()  # still down: kept in the spool folder
    shared.down = False
    started = Stack(shared, "local", spool=tmp_path)  # the next start, the backend back
    try:
        assert await started.live.counter(CALLS) == 5  # handed over at its first contact
        assert await shared.counter(CALLS) == 5
    finally:
        await started.aclose()
