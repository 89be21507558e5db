"""The PostgreSQL store's rate windows keep a running sum per key beside their entries: right
when several replicas acquire on one key at once, and filled from the entries of tables
written before it existed. The windows of keys no longer used are swept, a few at a time, and
a replica of the previous release sharing the tables keeps working. Against the real server at
127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from modelyard.state import postgres as postgres_state
from modelyard.state.postgres import MIGRATIONS, PostgresStore
from tests.state.conftest import POSTGRES_URL

pytestmark = pytest.mark.postgres

KEY = "key-rpm:k"
LIMIT = 100


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
    # The 240 take the key's lock one at a time: on a loaded machine the last waits longer
    # than the store's 2 s timeout, which this test is not about.
    replicas = [PostgresStore(POSTGRES_URL, table_prefix=prefix, timeout=30) for _ in range(4)]
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


async def window_rows(prefix: str) -> dict[str, tuple[int, int, int]]:
    """Per key: (its rows in windows, in window_sums, in window_idle)."""
    conn = await asyncpg.connect(POSTGRES_URL)
    rows: dict[str, list[int]] = {}
    try:
        for i, table in enumerate(("windows", "window_sums", "window_idle")):
            if await conn.fetchval("SELECT to_regclass($1)", prefix + table) is None:
                continue
            for key, count in await conn.fetch(
                f"SELECT key, COUNT(*) FROM {prefix}{table} GROUP BY key"
            ):
                rows.setdefault(key, [0, 0, 0])[i] = count
    finally:
        await conn.close()
    return {key: (c[0], c[1], c[2]) for key, c in rows.items()}


async def test_windows_of_keys_never_used_again_are_swept(
    sweeping: PostgresStore, prefix: str
) -> None:
    # A virtual key's rpm window (key-rpm:<id>) kept its rows for good once the key was
    # revoked or abandoned: the tables grew with every key ever used.
    for key, window in (("key-rpm:gone", 0.2), ("key-rpm:used", 0.2), ("ratelimit:h", 3600)):
        await sweeping.window_acquire(key, 1, limit=100, window=window)
    await asyncio.sleep(0.3)  # both short windows are empty now, the hour's is not
    await sweeping.window_acquire("key-rpm:used", 1, limit=100, window=0.2)
    rows = await window_rows(prefix)
    assert "key-rpm:gone" not in rows
    assert rows["key-rpm:used"] == (1, 1, 1)
    assert rows["ratelimit:h"] == (1, 1, 1)  # still in its window: it counts
    assert (await sweeping.window_acquire("ratelimit:h", 1, limit=100, window=3600)).used == 2


async def test_a_sweep_takes_a_bounded_number_of_idle_windows(
    sweeping: PostgresStore, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(postgres_state, "_SWEEP_WINDOWS", 3)
    # No sweep while the five are written: on a loaded machine the first could be idle (and
    # swept) before the last is written.
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 3600.0)
    for i in range(5):
        await sweeping.window_acquire(f"key-rpm:{i}", 1, limit=100, window=0.2)
    await asyncio.sleep(0.3)
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 0.0)
    await sweeping.window_acquire("key-rpm:new", 1, limit=100, window=60)
    assert len(await window_rows(prefix)) == 1 + 2  # three of the five idle ones went
    await sweeping.window_acquire("key-rpm:new", 1, limit=100, window=60)  # the next sweep
    assert set(await window_rows(prefix)) == {"key-rpm:new"}


class PreviousRelease(PostgresStore):
    """A replica of the release before idle windows were swept, as it writes the tables: its
    migrations end at 004_window_sums, and an admitted acquire writes the entry and the
    running sum only (the sum's three columns by position). `unused` takes the window, which
    this release passes and that one did not."""

    migrations = MIGRATIONS[:4]

    @property
    def _admit_sql(self) -> str:
        return f"""
            WITH unused AS (SELECT $6::float8),
            entry AS (INSERT INTO {self.p}windows VALUES ($1, $2, $3))
            INSERT INTO {self.p}window_sums VALUES ($1, $4, $5) ON CONFLICT (key)
            DO UPDATE SET used = excluded.used, entries = excluded.entries
            """

    async def _sweep(self) -> None:
        pass


async def age(prefix: str, key: str, seconds: float) -> None:
    """Move `key`'s entries and idle time `seconds` back, as if written that much earlier."""
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await conn.execute(f"UPDATE {prefix}windows SET at = at - $2 WHERE key = $1", key, seconds)
        await conn.execute(
            f"UPDATE {prefix}window_idle SET idle_at = idle_at - $2 WHERE key = $1", key, seconds
        )
    finally:
        await conn.close()


async def test_windows_a_replica_of_the_previous_release_writes_are_kept_while_they_count(
    sweeping: PostgresStore, prefix: str
) -> None:
    # During a rolling upgrade both releases share the tables. The previous one neither fails
    # (the running sums keep their three columns) nor records when its windows empty: a window
    # the new release saw go idle and the previous one wrote to since must not be swept.
    old = PreviousRelease(POSTGRES_URL, table_prefix=prefix)
    try:
        # Before the upgrade (the store's tables are made and migrated on its first use).
        await old.window_acquire("key-rpm:before", 1, limit=100, window=60)
        await sweeping.window_acquire("key-rpm:k", 1, limit=100, window=60)
        await age(prefix, "key-rpm:k", 120)  # idle for a minute, by what this release wrote
        assert (await old.window_acquire("key-rpm:k", 1, limit=100, window=60)).used == 1
        await sweeping.window_acquire("key-rpm:other", 1, limit=100, window=60)  # sweeps
        rows = await window_rows(prefix)
        assert rows["key-rpm:k"] == (1, 1, 1)
        assert rows["key-rpm:before"] == (1, 1, 1)  # written before: idle a day after, at most
        for key in ("key-rpm:k", "key-rpm:before"):
            assert (await sweeping.window_acquire(key, 1, limit=100, window=60)).used == 2
            assert (await old.window_acquire(key, 1, limit=100, window=60)).used == 3
    finally:
        await old.aclose()


async def test_sweeps_while_replicas_acquire_keep_each_sum_with_its_entries(
    prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A sweep drops a window only under its acquire lock: one dropping the running sum of a
    # window an acquire had just written to, but not the entry (or the other way round),
    # would leave the sum off from its entries for good. (Without the lock, this failed 3
    # runs in 3: windows of 10 ms on two keys, each acquire sweeping.)
    monkeypatch.setattr(postgres_state, "_SWEEP_EVERY", 0.0)
    replicas = [PostgresStore(POSTGRES_URL, table_prefix=prefix) for _ in range(4)]

    async def keep_acquiring(store: PostgresStore, seed: int) -> None:
        for i in range(150):
            key = f"key-rpm:{(seed + i) % 2}"
            await store.window_acquire(key, 1, limit=1000, window=0.01)

    try:
        await asyncio.gather(*(keep_acquiring(s, n) for n, s in enumerate(replicas)))
    finally:
        for store in replicas:
            await store.aclose()
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        off = await conn.fetch(
            f"""
            SELECT s.key, s.used, s.entries, w.used AS held, w.entries AS count
            FROM {prefix}window_sums s FULL JOIN (
                SELECT key, SUM(amount) AS used, COUNT(*) AS entries
                FROM {prefix}windows GROUP BY key) w ON w.key = s.key
            WHERE s.used IS DISTINCT FROM w.used OR s.entries IS DISTINCT FROM w.entries
            """
        )
    finally:
        await conn.close()
    assert off == []


async def test_a_correction_dated_in_the_past_keeps_when_its_window_empties(
    sweeping: PostgresStore, prefix: str
) -> None:
    # Its entry leaves before the window's newest: recorded as when the window empties, a
    # sweep would drop the window while that newest entry still counted.
    await sweeping.window_acquire(KEY, 1, limit=LIMIT, window=60)
    await sweeping.window_correct(KEY, -1, age=50, window=60)
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        idle_at, now = await conn.fetchrow(
            f"SELECT idle_at, extract(epoch from clock_timestamp())::float8 "
            f"FROM {prefix}window_idle WHERE key = $1",
            KEY,
        )
    finally:
        await conn.close()
    assert now + 59 < idle_at <= now + 60
    assert await window_rows(prefix) == {KEY: (2, 1, 1)}
