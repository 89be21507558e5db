"""The PostgreSQL store's counters and values past their expiry are swept, a bounded batch at a
time, with its idle rate windows (a budget's counters are one row per subject per period: never
deleted, the table grew for good); and a counter a reservation resets in place as the sweep
runs keeps what the reservation counted. Against the real server at 127.0.0.1:5432 (database
`test`)."""

from __future__ import annotations

import asyncio
import random

import asyncpg
import pytest

from modelyard.state import postgres as postgres_state
from modelyard.state.base import Claim
from modelyard.state.postgres import PostgresStore
from tests.state.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres


async def keys_in(prefix: str) -> tuple[set[str], set[str]]:
    """The keys with a row in the counters table, and in the values table."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        counters = {row["key"] for row in await conn.fetch(f"SELECT key FROM {prefix}counters")}
        values = {row["key"] for row in await conn.fetch(f"SELECT key FROM {prefix}values")}
    finally:
        await conn.close()
    return counters, values


async def expired(store: PostgresStore, keys: list[str], *, value: float) -> None:
    """Counters of `store` at `keys` holding `value`, past their expiry (a period over an hour
    ago), as the previous release left them."""
    await store.counter(keys[0])  # the tables made
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.executemany(
            f"INSERT INTO {store.p}counters VALUES ($1, $2, "
            "extract(epoch from clock_timestamp()) - 3600)",
            [(key, value) for key in keys],
        )
    finally:
        await conn.close()


async def test_counters_and_values_past_their_expiry_are_swept_and_the_others_stay(
    sweeping: PostgresStore, prefix: str
) -> None:
    # A daily budget's counter of yesterday (budget:<name>:<subject>:<day>) stayed for good.
    await sweeping.adjust("budget:b:alice:day1", 1.5, ttl=0.2)
    await sweeping.set("breaker:m:state", b"open", ttl=0.2)
    await sweeping.adjust("budget:b:alice:day2", 2.5, ttl=3600)
    await sweeping.adjust("total", 3.5)  # no expiry: never swept
    await sweeping.set("note", b"kept", ttl=3600)
    await asyncio.sleep(0.3)
    await sweeping.adjust("budget:b:bob:day2", 1, ttl=3600)  # sweeps
    assert await keys_in(prefix) == (
        {"budget:b:alice:day2", "total", "budget:b:bob:day2"},
        {"note"},
    )
    assert await sweeping.counter("budget:b:alice:day2") == 2.5
    assert await sweeping.counter("total") == 3.5
    assert await sweeping.get("note") == b"kept"


async def test_a_sweep_deletes_a_bounded_number_of_expired_rows(
    sweeping: PostgresStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_state, "_SWEEP_ROWS", 3, raising=False)
    # No sweep while the ten are written: on a loaded machine the first could expire (and be
    # swept) before the last is written.
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 3600.0, raising=False)
    for i in range(5):
        await sweeping.adjust(f"c{i}", 1, ttl=0.2)
        await sweeping.set(f"v{i}", b"x", ttl=0.2)
    await asyncio.sleep(0.3)
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 0.0, raising=False)
    await sweeping.adjust("live", 1, ttl=3600)
    counters, values = await keys_in(prefix)
    assert (len(counters - {"live"}), len(values)) == (2, 2)  # three of each five went
    await sweeping.adjust("live", 1, ttl=3600)  # the next sweep
    assert await keys_in(prefix) == ({"live"}, set())


async def test_a_sweep_that_fails_leaves_the_answer_of_the_call_before_it(
    sweeping: PostgresStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The reservation has committed when the sweep after it runs: a failed sweep must not
    # make it look refused or failed (its worst case would stay reserved, unanswered).
    monkeypatch.setattr(PostgresStore, "_expired_sql", lambda self, table: "SELECT nonsense")
    assert await sweeping.reserve([Claim(key="k", amount=1, limit=10, ttl=60)]) is None
    assert await sweeping.counter("k") == 1
    assert "sweeping expired state failed" in caplog.text


async def held_up(task: asyncio.Future[object], prefix: str) -> bool:
    """Wait until `task` is done (False) or a statement deleting from `prefix`'s counters
    waits on a lock (True)."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        while not task.done():
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND query LIKE $1",
                f"%DELETE FROM {prefix}counters%",
            ):
                return True
            await asyncio.sleep(0.01)
    finally:
        await conn.close()
    return False


async def test_a_counter_a_reservation_is_resetting_is_not_swept_nor_waited_for(
    sweeping: PostgresStore, prefix: str
) -> None:
    # A reservation resets an expired counter in place (same key, new value and expiry). A
    # sweep that picked the row as expired, waited for the reservation, then deleted it would
    # drop what the reservation had just counted: the budget would forget spend.
    await expired(sweeping, ["budget:b:alice:day1"], value=7.0)
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        async with conn.transaction():  # the reservation's write, not committed yet
            assert await sweeping._add(conn, "budget:b:alice:day1", 2.0, 3600) == 2.0
            # Another key's write sweeps meanwhile.
            sweep = asyncio.ensure_future(sweeping.adjust("other", 1, ttl=3600))
            waited = await held_up(sweep, prefix)
    finally:
        await conn.close()
    await sweep
    assert await sweeping.counter("budget:b:alice:day1") == 2.0
    assert not waited  # a sweep never holds up a reservation behind another
    await sweeping.adjust("other", 1, ttl=3600)  # sweeps again, the reservation committed
    assert await sweeping.counter("budget:b:alice:day1") == 2.0


async def test_reservations_on_expired_counters_while_replicas_sweep_count_each_once(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 replicas reserve on 200 counters past their expiry (holding 1000 each, a period
    # over), each in an order of its own, while a fifth only sweeps, 5 rows at a time: each
    # counter must end at what was reserved on it since, whether a sweep deleted it first or
    # a reservation reset it first.
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 0.0, raising=False)
    monkeypatch.setattr(postgres_state, "_SWEEP_ROWS", 5, raising=False)
    keys = [f"budget:b:user{i}:day1" for i in range(200)]
    replicas = [PostgresStore(POSTGRES_URL, table_prefix=prefix) for _ in range(5)]
    await expired(replicas[0], keys, value=1000.0)

    async def reserve_each(store: PostgresStore, seed: int) -> None:
        for key in random.Random(seed).sample(keys, len(keys)):
            claim = Claim(key=key, amount=1, limit=10_000, ttl=3600)
            assert await store.reserve([claim]) is None

    async def sweep_until(reserving: asyncio.Future[object]) -> None:
        while not reserving.done():
            await replicas[4].adjust("sweeper", 1, ttl=3600)  # and sweeps

    try:
        reserving = asyncio.gather(*(reserve_each(s, n) for n, s in enumerate(replicas[:4])))
        await asyncio.gather(reserving, sweep_until(reserving))
        totals = {key: await replicas[0].counter(key) for key in keys}
    finally:
        for store in replicas:
            await store.aclose()
    assert {key: total for key, total in totals.items() if total != 4} == {}
