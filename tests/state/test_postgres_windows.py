"""The PostgreSQL store's rate windows keep a running sum per key beside their entries: right
when several replicas acquire on one key at once, and filled from the entries of tables
written before it existed. Against the real server at 127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from modelyard.state.postgres import PostgresStore
from tests.state.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres

KEY = "key-rpm:k"
LIMIT = 100


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """A table prefix of this test alone; its tables are dropped afterwards."""
    name = "t" + uuid.uuid4().hex[:10] + "_"
    yield name
    store = PostgresStore(POSTGRES_URL, table_prefix=name)
    await store.drop_tables()
    await store.aclose()


async def acquires(store: PostgresStore, count: int) -> tuple[int, int]:
    """`count` acquires on KEY at once (a -1 correction every seventh, as tpm makes): how many
    positive ones were admitted, and how many corrections were made."""
    amounts = [-1.0 if i % 7 == 6 else 1.0 for i in range(count)]
    uses = await asyncio.gather(
        *(store.window_acquire(KEY, a, limit=LIMIT, window=600) for a in amounts)
    )
    admitted = sum(use.wait == 0.0 and a > 0 for use, a in zip(uses, amounts, strict=True))
    return admitted, amounts.count(-1.0)


async def sums_and_entries(prefix: str) -> tuple[tuple[float, int], tuple[float, int]]:
    """(the running sum row of KEY, the sum and count of its entries)."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        kept = await conn.fetchrow(
            f"SELECT used, entries FROM {prefix}window_sums WHERE key = $1", KEY
        )
        held = await conn.fetchrow(
            f"SELECT SUM(amount), COUNT(*) FROM {prefix}windows WHERE key = $1", KEY
        )
    finally:
        await conn.close()
    return (kept[0], kept[1]), (held[0], held[1])


async def test_replicas_acquiring_at_once_keep_one_running_sum(prefix: str) -> None:
    # Four replicas, each with its own pool of ten connections, 60 acquires each, all at once.
    replicas = [PostgresStore(POSTGRES_URL, table_prefix=prefix) for _ in range(4)]
    try:
        counts = await asyncio.gather(*(acquires(store, 60) for store in replicas))
        last = await replicas[0].window_acquire(KEY, 0, limit=LIMIT, window=600)
    finally:
        for store in replicas:
            await store.aclose()
    admitted = sum(a for a, _ in counts)
    corrections = sum(c for _, c in counts)
    (used, entries), (summed, count) = await sums_and_entries(prefix)
    assert (used, entries) == (pytest.approx(summed), count)
    assert used == pytest.approx(admitted - corrections) == pytest.approx(last.used)
    assert admitted <= LIMIT + corrections and used <= LIMIT  # refused past the limit
    assert admitted > LIMIT  # corrections made room: the window was full and was refused at


async def test_tables_written_before_window_sums_keep_what_their_windows_hold(
    prefix: str,
) -> None:
    # The windows table as migration 001 makes it, holding three entries of a full window.
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(
            f"CREATE TABLE {prefix}windows (key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,"
            " amount DOUBLE PRECISION NOT NULL)"
        )
        now = await conn.fetchval("SELECT extract(epoch from clock_timestamp())::float8")
        rows = [(KEY, now - 1, 1.0), (KEY, now - 0.5, 1.0), (KEY, now, 1.0)]
        await conn.executemany(f"INSERT INTO {prefix}windows VALUES ($1, $2, $3)", rows)
    finally:
        await conn.close()
    store = PostgresStore(POSTGRES_URL, table_prefix=prefix)
    try:
        refused = await store.window_acquire(KEY, 1, limit=3, window=60)
    finally:
        await store.aclose()
    assert refused.wait == pytest.approx(59, abs=1) and refused.used == 3
