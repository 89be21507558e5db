"""Shared state in PostgreSQL (asyncpg, the `postgres` extra): the choice when a database is
already there and Redis is not.

A reservation takes transaction-scoped advisory locks on its keys (in sorted order, so two
reservations never deadlock), reads, checks and writes inside one transaction. A rate window
keeps a running sum per key beside its entries, changed under the same lock in the same
transaction, so an acquire touches only the entries leaving the window, and records when the
window will be empty (`window_idle`). Once a minute, after a call that writes, each process
sweeps a bounded batch of what no longer counts, in statements of their own: windows empty
since (keys no longer used), and counters and values past their expiry (a budget's counters
of periods over). Expiry uses the database's clock, so every process agrees on it. Connection
failures raise `UnavailableError` with code `state_unavailable`, for `state.policy.PolicyStore`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from modelyard.errors import UnavailableError
from modelyard.state.base import (
    Change,
    Claim,
    Lease,
    Reclaimed,
    StateStore,
    WindowUse,
    server_location,
)
from modelyard.state.postgres_tables import Index, Migration, PostgresTables

T = TypeVar("T")

MIGRATIONS: list[Migration] = [
    (
        "001_state",
        """
        CREATE TABLE IF NOT EXISTS {p}counters (
            key TEXT PRIMARY KEY, value DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION);
        CREATE TABLE IF NOT EXISTS {p}values (
            key TEXT PRIMARY KEY, value BYTEA NOT NULL, expires_at DOUBLE PRECISION);
        CREATE TABLE IF NOT EXISTS {p}windows (
            key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL, amount DOUBLE PRECISION NOT NULL);
        CREATE INDEX IF NOT EXISTS {p}windows_key_at ON {p}windows (key, at)
        """,
    ),
    (
        "002_leases",
        """
        CREATE TABLE IF NOT EXISTS {p}leases (
            id TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL, held TEXT NOT NULL);
        CREATE INDEX IF NOT EXISTS {p}leases_expires_at ON {p}leases (expires_at)
        """,
    ),
    (
        "003_released",
        """
        CREATE TABLE IF NOT EXISTS {p}released (
            id TEXT PRIMARY KEY, expires_at DOUBLE PRECISION NOT NULL);
        CREATE INDEX IF NOT EXISTS {p}released_expires_at ON {p}released (expires_at)
        """,
    ),
    (
        "004_window_sums",
        """
        CREATE TABLE IF NOT EXISTS {p}window_sums (
            key TEXT PRIMARY KEY, used DOUBLE PRECISION NOT NULL, entries BIGINT NOT NULL);
        INSERT INTO {p}window_sums
            SELECT key, SUM(amount), COUNT(*) FROM {p}windows GROUP BY key
            ON CONFLICT (key) DO NOTHING
        """,
    ),
    (
        "005_window_idle",
        # When each window is empty (its newest entry's time plus its length, `span`), so a
        # sweep can drop the windows of keys no longer used. A table of its own, not columns of
        # window_sums: a replica of the previous release sharing the tables during an upgrade
        # writes that table's three columns by position. Windows written before this did not
        # record their length; every window modelyard keeps is a minute (a rate limit's, scaled
        # in tests, a virtual key's rpm), so a day past the newest entry is safely past it.
        """
        CREATE TABLE IF NOT EXISTS {p}window_idle (
            key TEXT PRIMARY KEY, idle_at DOUBLE PRECISION NOT NULL,
            span DOUBLE PRECISION NOT NULL);
        CREATE INDEX IF NOT EXISTS {p}window_idle_at ON {p}window_idle (idle_at);
        INSERT INTO {p}window_idle (key, idle_at, span)
            SELECT key, MAX(at) + 86400, 86400 FROM {p}windows GROUP BY key
            ON CONFLICT (key) DO NOTHING;
        INSERT INTO {p}window_idle (key, idle_at, span)
            SELECT key, 0, 86400 FROM {p}window_sums
            ON CONFLICT (key) DO NOTHING
        """,
    ),
    # What the sweep of expired rows reads, oldest first, so it never scans the table: a
    # budget's counters are one row per subject per period, and the table may be long by the
    # time this is applied. Built concurrently, so replicas of the previous release keep
    # writing meanwhile (and after: the tables are as they were, with one index more).
    (
        "006_counters_expires_at",
        Index(name="{p}counters_expires_at", table="{p}counters", columns="expires_at"),
    ),
    (
        "006_values_expires_at",
        Index(name="{p}values_expires_at", table="{p}values", columns="expires_at"),
    ),
]
"""Append-only: add a new entry for any schema change (an `Index` for an index on a table that
may be long). `{p}` is the table prefix."""

_NOW = "extract(epoch from clock_timestamp())"
_EPSILON = 1e-12
_WINDOW_TABLES = ("windows", "window_sums", "window_idle")
_SWEEP_EVERY = 60.0
"""Seconds between one process's sweeps of idle windows and expired rows."""
_SWEEP_WINDOWS = 100
"""The most idle windows one sweep drops, so its cost stays bounded however many keys went
idle at once (the rest go in the next sweeps: 144,000 a day a process)."""
_SWEEP_ROWS = 500
"""The most expired counters, and values, one sweep deletes (the rest go in the next sweeps:
720,000 a day a process). On 2 shared cores, with 200,000 expired counters and 200,000 live, a
sweep of 500 takes 2-6 ms (1,000: 4-10 ms; 2,000: 9-15 ms) through the index on `expires_at`;
without it, one of any size reads the whole table (180-340 ms). `bench/postgres_sweep.py`."""

log = logging.getLogger("modelyard.state")


class PostgresStore(PostgresTables, StateStore):
    """State in PostgreSQL tables named `<table_prefix>counters`, `...values`, `...windows`,
    `...window_sums`, `...window_idle`, `...leases`, `...released`."""

    backend = "postgres"
    component = "state"
    setting = "state.url"
    tables = ("counters", "values", *_WINDOW_TABLES, "leases", "released")
    migrations = MIGRATIONS
    pool_size = 10

    def __init__(self, url: str, *, table_prefix: str = "modelyard_", timeout: float = 2.0) -> None:
        super().__init__(url, table_prefix=table_prefix, timeout=timeout)
        self._swept = float("-inf")
        # With no database named, PostgreSQL opens the user's own.
        user = urlsplit(url).username or "(the user's own)"
        self.location = server_location(url, default_port=5432, database=user, names=f"{self.p}*")

    async def _lock_keys(self, conn: Any, keys: Sequence[str]) -> None:
        for key in sorted(set(keys)):
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", self.p + key)

    async def _current(self, conn: Any, key: str) -> float:
        value = await conn.fetchval(
            f"SELECT value FROM {self.p}counters WHERE key = $1 "
            f"AND (expires_at IS NULL OR expires_at > {_NOW})",
            key,
        )
        return float(value) if value is not None else 0.0

    async def _add(self, conn: Any, key: str, delta: float, ttl: float | None) -> float:
        value = await conn.fetchval(
            f"""
            INSERT INTO {self.p}counters AS c (key, value, expires_at)
            VALUES ($1, $2, CASE WHEN $3::float8 IS NULL THEN NULL ELSE {_NOW} + $3 END)
            ON CONFLICT (key) DO UPDATE SET
              value = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= {_NOW}
                           THEN excluded.value ELSE c.value + excluded.value END,
              expires_at = CASE WHEN c.expires_at IS NOT NULL AND c.expires_at <= {_NOW}
                           THEN excluded.expires_at
                           ELSE COALESCE(c.expires_at, excluded.expires_at) END
            RETURNING value
            """,
            key,
            delta,
            ttl,
        )
        return float(value)

    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        refused = await self.reserve_or_explain(claims)
        return None if refused is None else refused[0]

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        async def apply(conn: Any) -> tuple[Claim, float] | None:
            async with conn.transaction():
                await self._lock_keys(conn, [c.key for c in claims])
                for claim in claims:
                    current = await self._current(conn, claim.key)
                    if current + claim.amount > claim.limit + _EPSILON:
                        return claim, current
                for claim in claims:
                    await self._add(conn, claim.key, claim.amount, claim.ttl)
                if lease is not None and claims:
                    await conn.execute(
                        f"INSERT INTO {self.p}leases VALUES ($1, {_NOW} + $2, $3)",
                        lease.id,
                        lease.seconds,
                        json.dumps([[c.key, c.amount] for c in claims]),
                    )
                return None

        return await self._with_sweep(apply)

    async def _give_back(self, conn: Any, held: str) -> tuple[tuple[str, float], ...]:
        """Take what a lease reserved (`held`, as stored) off its counters not expired."""
        amounts = tuple((str(key), float(amount)) for key, amount in json.loads(held))
        await conn.executemany(
            f"UPDATE {self.p}counters SET value = value - $2 WHERE key = $1 "
            f"AND (expires_at IS NULL OR expires_at > {_NOW})",
            amounts,
        )
        return amounts

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        async def apply(conn: Any) -> list[float]:
            async with conn.transaction():
                # The release's row, the lease's, then the counters' locks: a sweep takes them
                # in the same order, so the two never wait on each other in a circle. A second
                # release of the lease waits here for the first to commit, then finds its row.
                # One round trip: the lease ends only if this is the release's first time.
                first, held = await conn.fetchrow(
                    f"""
                    WITH first AS (
                        INSERT INTO {self.p}released AS r VALUES ($1, {_NOW} + $2)
                        ON CONFLICT (id) DO UPDATE SET expires_at = excluded.expires_at
                            WHERE r.expires_at <= {_NOW}
                        RETURNING TRUE AS yes),
                    ended AS (
                        DELETE FROM {self.p}leases WHERE id = $1 AND EXISTS (SELECT 1 FROM first)
                        RETURNING held)
                    SELECT (SELECT yes FROM first), (SELECT held FROM ended)
                    """,
                    lease.id,
                    lease.seconds,
                )
                if first is None:  # a retry whose first answer was lost
                    return [await self._current(conn, key) for key, _, _ in changes]
                keys = [key for key, _, _ in changes]
                if held is not None:
                    keys += [key for key, _ in json.loads(held)]
                await self._lock_keys(conn, keys)
                if held is not None:
                    await self._give_back(conn, held)
                return [await self._add(conn, key, delta, ttl) for key, delta, ttl in changes]

        return await self._with_sweep(apply)

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        async def apply(conn: Any) -> None:
            for table in ("leases", "released"):
                await conn.execute(
                    f"UPDATE {self.p}{table} SET expires_at = {_NOW} + $2 "
                    "WHERE id = ANY($1::text[])",
                    list(lease_ids),
                    seconds,
                )

        if lease_ids:
            await self._with(apply)

    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        async def apply(conn: Any) -> list[Reclaimed]:
            async with conn.transaction():
                await conn.execute(
                    f"DELETE FROM {self.p}released WHERE id IN (SELECT id FROM {self.p}released"
                    f" WHERE expires_at <= {_NOW} FOR UPDATE SKIP LOCKED)"
                )
                # SKIP LOCKED: two sweepers take disjoint leases, and neither waits for the other.
                rows = await conn.fetch(
                    f"""
                    DELETE FROM {self.p}leases WHERE id IN (
                        SELECT id FROM {self.p}leases WHERE expires_at <= {_NOW}
                        ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED)
                    RETURNING id, held
                    """,
                    limit,
                )
                await self._lock_keys(
                    conn, [key for row in rows for key, _ in json.loads(row["held"])]
                )
                return [
                    Reclaimed(id=row["id"], amounts=await self._give_back(conn, row["held"]))
                    for row in rows
                ]

        return await self._with(apply)

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        return await self._with_sweep(lambda conn: self._add(conn, key, delta, ttl))

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        async def apply(conn: Any) -> list[float]:
            async with conn.transaction():
                await self._lock_keys(conn, [key for key, _, _ in changes])
                return [await self._add(conn, key, delta, ttl) for key, delta, ttl in changes]

        return await self._with_sweep(apply)

    async def counter(self, key: str) -> float:
        return await self._with(lambda conn: self._current(conn, key))

    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        async def apply(conn: Any) -> WindowUse:
            async with conn.transaction():
                # Every replica takes this lock first, so the sum is read and written by one
                # transaction at a time, and always with the entries it sums.
                await self._lock_keys(conn, ["w:" + key])
                clock, used, entries, left = await conn.fetchrow(self._left_sql, key, window)
                now = float(clock)
                if entries <= 0:
                    used, entries = 0.0, 0  # no rounding left over once the window empties
                if used + amount <= limit + _EPSILON:
                    await conn.execute(
                        self._admit_sql, key, now, amount, used + amount, entries + 1, window
                    )
                    return WindowUse(wait=0.0, used=used + amount, reset=window)
                if left:
                    await conn.execute(self._sum_sql, key, used, entries)
                newest, frees = await conn.fetchrow(
                    self._frees_sql, key, used + amount - limit - _EPSILON, window
                )
                reset = newest + window - now if newest is not None else 0.0
                wait = max(0.0, frees + window - now) if frees is not None else window
                return WindowUse(wait=wait, used=used, reset=reset)

        return await self._with_sweep(apply)

    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        if age >= window:
            return

        async def apply(conn: Any) -> None:
            async with conn.transaction():
                await self._lock_keys(conn, ["w:" + key])  # as `window_acquire`
                clock, used, entries, _ = await conn.fetchrow(self._left_sql, key, window)
                if entries <= 0:
                    used, entries = 0.0, 0
                # A row dated in the past, as a replica of an older release reads them: it
                # leaves the window (and the running sum) with the entry it corrects.
                at = float(clock) - max(age, 0.0)
                await conn.execute(
                    self._correct_sql, key, at, amount, used + amount, entries + 1, window
                )

        await self._with_sweep(apply)

    async def _with_sweep(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """`_with(work)`, then the sweep if it is due (`_sweep`)."""
        done = await self._with(work)
        await self._sweep()
        return done

    async def _sweep(self) -> None:
        """Once every `_SWEEP_EVERY` seconds, after the call that finds it due (one that
        writes: a process that serves sweeps), whose answer it neither holds up within the
        database nor spoils (a sweep that fails is logged and tried again a minute later):
        drop up to `_SWEEP_WINDOWS` idle windows, and `_SWEEP_ROWS` expired counters and as
        many values, each in a statement of its own."""
        now = time.monotonic()
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        try:
            await self._with(self._drop_expired)
        except UnavailableError as exc:
            log.warning("sweeping expired state failed, trying again in a minute: %s", exc)
        except Exception:  # a bug of ours, told in full: the call before it has committed
            log.exception("sweeping expired state failed, trying again in a minute")

    async def _drop_expired(self, conn: Any) -> None:
        await self._drop_idle_windows(conn)
        for table in ("counters", "values"):
            await conn.execute(self._expired_sql(table), _SWEEP_ROWS)

    def _expired_sql(self, table: str) -> str:
        """($1 most): delete up to $1 rows of `table` past their expiry, oldest first. A row a
        call is writing is skipped (`SKIP LOCKED`: a sweep never waits); one a call wrote since
        this statement began is read again as it locks it, so a counter a reservation has just
        reset in place (same key, new expiry: `_add`) is no longer past its expiry and stays.
        A call that finds the row locked here waits the statement out, then inserts the key
        afresh: as it would have reset it."""
        # `(SELECT now)`, not the clock itself: a volatile bound is only a filter, and an index
        # scan for it would read on through every live row when none has expired. The rows
        # found by `ctid`, locked: with `key IN`, past about 1,000 the planner joins the table.
        return f"""
            DELETE FROM {self.p}{table} WHERE ctid = ANY(ARRAY(
                SELECT ctid FROM {self.p}{table} WHERE expires_at <= (SELECT {_NOW})
                ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED))
            """

    async def _drop_idle_windows(self, conn: Any) -> None:
        """Drop the windows due to be empty that no one is acquiring on (their lock is taken
        here, never waited for), once their entries say they are: a replica of the previous
        release writes entries without recording when the window empties, and a window it
        still uses is kept, its idle time moved on."""
        async with conn.transaction():
            keys = await conn.fetchval(self._idle_sql, _SWEEP_WINDOWS, self.p + "w:")
            if keys:  # read again under the locks, in a statement of its own
                await conn.execute(self._drop_sql, keys)

    @property
    def _idle_sql(self) -> str:
        """($1 most, $2 lock prefix) -> the keys of up to $1 windows due to be empty, oldest
        first, whose acquire lock (`_lock_keys`) this transaction could take."""
        return f"""
            SELECT COALESCE(array_agg(key), '{{}}') FROM (
                SELECT key FROM {self.p}window_idle WHERE idle_at <= {_NOW}
                ORDER BY idle_at LIMIT $1) due
            WHERE pg_try_advisory_xact_lock(hashtext($2 || key))
            """

    @property
    def _drop_sql(self) -> str:
        """($1 keys): drop the windows of `keys` with no entry left within their span, and
        move the idle time of the others to when their newest entry leaves."""
        return f"""
            WITH clock AS (SELECT {_NOW} AS now),
            due AS MATERIALIZED (
                SELECT i.key,
                    (SELECT MAX(at) FROM {self.p}windows w WHERE w.key = i.key) + i.span AS empty
                FROM {self.p}window_idle i WHERE i.key = ANY($1::text[])),
            gone AS MATERIALIZED (
                SELECT key FROM due, clock WHERE due.empty IS NULL OR due.empty <= clock.now),
            kept AS (
                UPDATE {self.p}window_idle i SET idle_at = due.empty FROM due, clock
                WHERE i.key = due.key AND due.empty > clock.now),
            entries AS (DELETE FROM {self.p}windows WHERE key IN (SELECT key FROM gone)),
            sums AS (DELETE FROM {self.p}window_sums WHERE key IN (SELECT key FROM gone))
            DELETE FROM {self.p}window_idle WHERE key IN (SELECT key FROM gone)
            """

    @property
    def _left_sql(self) -> str:
        """($1 key, $2 window) -> (now, used, entries, left): the window's running sum once the
        entries that left it are deleted, summed in the database; only they are touched."""
        return f"""
            WITH clock AS (SELECT {_NOW} AS now),
            gone AS (
                DELETE FROM {self.p}windows w USING clock
                WHERE w.key = $1 AND w.at <= clock.now - $2 RETURNING w.amount)
            SELECT clock.now,
                COALESCE(s.used, 0) - COALESCE((SELECT SUM(amount) FROM gone), 0),
                COALESCE(s.entries, 0) - (SELECT COUNT(*) FROM gone),
                (SELECT COUNT(*) FROM gone)
            FROM clock LEFT JOIN {self.p}window_sums s ON s.key = $1
            """

    @property
    def _sum_sql(self) -> str:
        """($1 key, $2 used, $3 entries): write the window's running sum."""
        return f"""
            INSERT INTO {self.p}window_sums VALUES ($1, $2, $3) ON CONFLICT (key)
            DO UPDATE SET used = excluded.used, entries = excluded.entries
            """

    @property
    def _admit_sql(self) -> str:
        """($1 key, $2 at, $3 amount, $4 used, $5 entries, $6 window): record an entry, the
        new sum, and when the window will be empty."""
        return self._entry_sql(later=False)

    @property
    def _correct_sql(self) -> str:
        """`_admit_sql` for an entry dated in the past: the window empties when it did, or
        when this entry leaves if that is later."""
        return self._entry_sql(later=True)

    def _entry_sql(self, *, later: bool) -> str:
        return f"""
            WITH entry AS (INSERT INTO {self.p}windows VALUES ($1, $2, $3)),
            idle AS ({self._idle_at_sql("VALUES ($1, $2 + $6, $6)", later=later)})
            INSERT INTO {self.p}window_sums VALUES ($1, $4, $5) ON CONFLICT (key)
            DO UPDATE SET used = excluded.used, entries = excluded.entries
            """

    def _idle_at_sql(self, rows: str, *, later: bool = False) -> str:
        """Record `rows` (key, idle_at, span) as when windows will be empty (with `later`, only
        where that is later than what is recorded)."""
        idle_at = f"GREATEST({self.p}window_idle.idle_at, excluded.idle_at)"
        return f"""
            INSERT INTO {self.p}window_idle (key, idle_at, span) {rows} ON CONFLICT (key)
            DO UPDATE SET idle_at = {idle_at if later else "excluded.idle_at"},
                span = excluded.span
            """

    @property
    def _frees_sql(self) -> str:
        """($1 key, $2 excess, $3 window) -> (newest, frees): the newest entry's time, and that
        of the oldest entry whose leaving frees `excess` (`window_wait`, in the database: a
        refused call fetches two numbers, not the window); and when the window will be empty,
        recorded (its entries may be a replica's of the previous release, which does not)."""
        return f"""
            WITH newest AS (SELECT MAX(at) AS at FROM {self.p}windows WHERE key = $1),
            idle AS ({self._idle_at_sql("SELECT $1, at + $3, $3 FROM newest WHERE at IS NOT NULL")})
            SELECT newest.at, (
                SELECT at FROM (
                    SELECT at, SUM(amount) OVER (ORDER BY at) AS freed
                    FROM {self.p}windows WHERE key = $1) running
                WHERE freed >= $2 ORDER BY at LIMIT 1)
            FROM newest
            """

    async def get(self, key: str) -> bytes | None:
        async def read(conn: Any) -> bytes | None:
            value = await conn.fetchval(
                f"SELECT value FROM {self.p}values WHERE key = $1 "
                f"AND (expires_at IS NULL OR expires_at > {_NOW})",
                key,
            )
            return None if value is None else bytes(value)

        return await self._with(read)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._with_sweep(
            lambda conn: conn.execute(
                f"""
                INSERT INTO {self.p}values (key, value, expires_at)
                VALUES ($1, $2, CASE WHEN $3::float8 IS NULL THEN NULL ELSE {_NOW} + $3 END)
                ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                    expires_at = excluded.expires_at
                """,
                key,
                value,
                ttl,
            )
        )

    async def delete(self, key: str) -> None:
        async def apply(conn: Any) -> None:
            async with conn.transaction():
                await self._lock_keys(conn, ["w:" + key])  # not while a window's sum is written
                for table in ("counters", "values", *_WINDOW_TABLES):
                    await conn.execute(f"DELETE FROM {self.p}{table} WHERE key = $1", key)

        await self._with(apply)
