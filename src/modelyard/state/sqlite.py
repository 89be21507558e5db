"""The embedded default, persisted: counters, values and rate windows in a SQLite file.

A restart loses no spend, and several processes on one host may share the file: every
check-and-change runs inside one `BEGIN IMMEDIATE` transaction, which SQLite serializes across
processes. Queries run on a worker thread (`SqliteWorker`), never on the event loop. Expiry uses
the wall clock, since it must mean the same after a restart.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from modelyard.state.base import (
    Change,
    Claim,
    Lease,
    Reclaimed,
    StateStore,
    WindowUse,
    window_wait,
)
from modelyard.state.sqlite_worker import Migration, SqliteWorker, transaction

MIGRATIONS: list[Migration] = [
    (
        "001_state",
        """
        CREATE TABLE state_counters (
            key TEXT PRIMARY KEY, value REAL NOT NULL, expires_at REAL);
        CREATE TABLE state_values (
            key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL);
        CREATE TABLE state_windows (key TEXT NOT NULL, at REAL NOT NULL, amount REAL NOT NULL);
        CREATE INDEX state_windows_key_at ON state_windows (key, at)
        """,
    ),
    (
        "002_leases",
        """
        CREATE TABLE state_leases (
            id TEXT PRIMARY KEY, expires_at REAL NOT NULL, held TEXT NOT NULL) WITHOUT ROWID
        """,
    ),
    (
        "003_released",
        """
        CREATE TABLE state_released (id TEXT PRIMARY KEY, expires_at REAL NOT NULL) WITHOUT ROWID;
        CREATE INDEX state_released_expires_at ON state_released (expires_at)
        """,
    ),
    (
        "004_window_sums",
        """
        CREATE TABLE state_window_sums (
            key TEXT PRIMARY KEY, used REAL NOT NULL, entries INTEGER NOT NULL) WITHOUT ROWID;
        INSERT INTO state_window_sums
            SELECT key, SUM(amount), COUNT(*) FROM state_windows GROUP BY key
        """,
    ),
    (
        "005_window_idle",
        # When each window is empty (its newest entry's time plus its length, `span`), so a
        # sweep can drop the windows of keys no longer used. A table of its own, not a column
        # of state_window_sums: a process of the previous release sharing the file during an
        # upgrade writes that table's three columns by position (and no idle time: the sweep
        # checks a window's entries against its span before dropping it). Windows written
        # before this did not record their length; every window modelyard keeps is a minute (a
        # rate limit's, scaled in tests, a virtual key's rpm), so a day is safely past it.
        """
        CREATE TABLE state_window_idle (
            key TEXT PRIMARY KEY, idle_at REAL NOT NULL, span REAL NOT NULL) WITHOUT ROWID;
        CREATE INDEX state_window_idle_at ON state_window_idle (idle_at);
        INSERT INTO state_window_idle
            SELECT key, 86400 + MAX(at), 86400 FROM state_windows GROUP BY key;
        INSERT OR IGNORE INTO state_window_idle SELECT key, 0, 86400 FROM state_window_sums
        """,
    ),
]
"""Append-only: add a new entry for any schema change."""

_EPSILON = 1e-12
_WINDOW_TABLES = ("state_windows", "state_window_sums", "state_window_idle")
_SWEEP_EVERY = 60.0
_SWEEP_WINDOWS = 100
"""The most idle windows one sweep drops, so its cost stays bounded however many keys went
idle at once (about 1 ms; the rest go in the next sweeps, 144,000 a day)."""

_UPSERT = """
INSERT INTO state_counters (key, value, expires_at) VALUES (?1, ?2, ?3)
ON CONFLICT (key) DO UPDATE SET
    value = CASE WHEN expires_at IS NOT NULL AND expires_at <= ?4
                 THEN excluded.value ELSE value + excluded.value END,
    expires_at = CASE WHEN expires_at IS NOT NULL AND expires_at <= ?4
                 THEN excluded.expires_at ELSE COALESCE(expires_at, excluded.expires_at) END
"""


def _current(conn: sqlite3.Connection, key: str, now: float) -> float:
    row = conn.execute(
        "SELECT value FROM state_counters WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)",
        (key, now),
    ).fetchone()
    return float(row[0]) if row else 0.0


def _add(conn: sqlite3.Connection, key: str, delta: float, ttl: float | None, now: float) -> None:
    expires = None if ttl is None else now + ttl
    conn.execute(_UPSERT, (key, delta, expires, now))


def _apply(conn: sqlite3.Connection, changes: Sequence[Change], now: float) -> list[float]:
    out = []
    for key, delta, ttl in changes:
        _add(conn, key, delta, ttl, now)
        out.append(_current(conn, key, now))
    return out


def _give_back(conn: sqlite3.Connection, held: str, now: float) -> tuple[tuple[str, float], ...]:
    """Take what a lease reserved (`held`, as stored) off its counters that have not expired."""
    amounts = tuple((str(key), float(amount)) for key, amount in json.loads(held))
    conn.executemany(
        "UPDATE state_counters SET value = value - ?2 "
        "WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?3)",
        [(key, amount, now) for key, amount in amounts],
    )
    return amounts


def _window_left(conn: sqlite3.Connection, key: str, cutoff: float) -> tuple[float, int]:
    """What the window of `key` holds once its entries at or before `cutoff` have left it:
    (their sum, how many), from the running sum, touching only the entries that leave (a
    sum of the whole window on each call cost as much as the entries in it). Inside the
    caller's transaction, so every process sharing the file keeps the sum right."""
    row = conn.execute(
        "SELECT used, entries FROM state_window_sums WHERE key = ?", (key,)
    ).fetchone()
    used, entries = (float(row[0]), int(row[1])) if row else (0.0, 0)
    gone, count = conn.execute(
        "SELECT COALESCE(SUM(amount), 0.0), COUNT(*) FROM state_windows WHERE key = ? AND at <= ?",
        (key, cutoff),
    ).fetchone()
    if count:
        conn.execute("DELETE FROM state_windows WHERE key = ? AND at <= ?", (key, cutoff))
        used, entries = used - gone, entries - count
    if entries <= 0:
        return 0.0, 0  # no rounding left over from the amounts added and taken off
    return used, entries


def _window_sum(
    conn: sqlite3.Connection, key: str, used: float, entries: int, newest: float, window: float
) -> None:
    """Keep the window's running sum, and when it empties: `window` after its `newest` entry."""
    conn.execute("INSERT OR REPLACE INTO state_window_sums VALUES (?, ?, ?)", (key, used, entries))
    conn.execute(
        "INSERT OR REPLACE INTO state_window_idle VALUES (?, ?, ?)", (key, newest + window, window)
    )


def _drop_idle_windows(conn: sqlite3.Connection, now: float) -> None:
    """Drop up to `_SWEEP_WINDOWS` windows whose every entry has left them: the keys of rate
    limits and virtual keys no longer used (an idle window holds nothing a limit counts). Each
    is checked against its entries first: a process of the previous release, sharing the file
    during an upgrade, adds entries without moving the idle time; such a window is kept, its
    idle time moved past its newest entry."""
    due = conn.execute(
        "SELECT key, span FROM state_window_idle WHERE idle_at <= ? ORDER BY idle_at LIMIT ?",
        (now, _SWEEP_WINDOWS),
    ).fetchall()
    idle: list[tuple[str]] = []
    for key, span in due:
        newest = conn.execute("SELECT MAX(at) FROM state_windows WHERE key = ?", (key,)).fetchone()
        if newest[0] is None or newest[0] + span <= now:
            idle.append((key,))
        else:
            conn.execute(
                "UPDATE state_window_idle SET idle_at = ? WHERE key = ?", (newest[0] + span, key)
            )
    for table in _WINDOW_TABLES:
        conn.executemany(f"DELETE FROM {table} WHERE key = ?", idle)


class SqliteStore(StateStore):
    """State in a SQLite file, shared by the processes of one host."""

    backend = "sqlite"

    def __init__(self, path: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self._clock = clock
        self._worker = SqliteWorker(path, component="state", migrations=MIGRATIONS)
        self._swept = 0.0

    def _sweep(self, conn: sqlite3.Connection, now: float) -> None:
        """Forget expired rows and idle windows once a minute (in the transaction of a
        reservation or a window's acquire), so the file does not grow without bound."""
        if now - self._swept < _SWEEP_EVERY:
            return
        self._swept = now
        conn.execute("DELETE FROM state_counters WHERE expires_at <= ?", (now,))
        conn.execute("DELETE FROM state_values WHERE expires_at <= ?", (now,))
        _drop_idle_windows(conn, now)

    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        refused = await self.reserve_or_explain(claims)
        return None if refused is None else refused[0]

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        def apply(conn: sqlite3.Connection) -> tuple[Claim, float] | None:
            now = self._clock()
            for claim in claims:
                current = _current(conn, claim.key, now)
                if current + claim.amount > claim.limit + _EPSILON:
                    return claim, current
            for claim in claims:
                _add(conn, claim.key, claim.amount, claim.ttl, now)
            if lease is not None and claims:
                held = json.dumps([[c.key, c.amount] for c in claims])
                conn.execute(
                    "INSERT INTO state_leases VALUES (?, ?, ?)",
                    (lease.id, now + lease.seconds, held),
                )
            self._sweep(conn, now)
            return None

        return await self._worker.run(lambda conn: transaction(conn, apply))

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        def apply(conn: sqlite3.Connection) -> float:
            now = self._clock()
            _add(conn, key, delta, ttl, now)
            return _current(conn, key, now)

        return await self._worker.run(lambda conn: transaction(conn, apply))

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        def apply(conn: sqlite3.Connection) -> list[float]:
            return _apply(conn, changes, self._clock())

        return await self._worker.run(lambda conn: transaction(conn, apply))

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        def apply(conn: sqlite3.Connection) -> list[float]:
            now = self._clock()
            # BEGIN IMMEDIATE holds the file's write lock, so no sweep can take it in between.
            seen = conn.execute(
                "SELECT 1 FROM state_released WHERE id = ? AND expires_at > ?", (lease.id, now)
            ).fetchone()
            if seen is not None:  # released before: this is a retry whose first answer was lost
                return [_current(conn, key, now) for key, _, _ in changes]
            conn.execute(
                "INSERT OR REPLACE INTO state_released VALUES (?, ?)",
                (lease.id, now + lease.seconds),
            )
            row = conn.execute("SELECT held FROM state_leases WHERE id = ?", (lease.id,)).fetchone()
            if row is not None:
                conn.execute("DELETE FROM state_leases WHERE id = ?", (lease.id,))
                _give_back(conn, row[0], now)
            return _apply(conn, changes, now)

        return await self._worker.run(lambda conn: transaction(conn, apply))

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            expires = self._clock() + seconds
            for table in ("state_leases", "state_released"):
                conn.executemany(
                    f"UPDATE {table} SET expires_at = ? WHERE id = ?",
                    [(expires, lease_id) for lease_id in lease_ids],
                )

        if lease_ids:
            await self._worker.run(lambda conn: transaction(conn, apply))

    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        def apply(conn: sqlite3.Connection) -> list[Reclaimed]:
            now = self._clock()
            conn.execute("DELETE FROM state_released WHERE expires_at <= ?", (now,))
            rows = conn.execute(
                "SELECT id, held FROM state_leases WHERE expires_at <= ? "
                "ORDER BY expires_at LIMIT ?",
                (now, limit),
            ).fetchall()
            conn.executemany("DELETE FROM state_leases WHERE id = ?", [(i,) for i, _ in rows])
            return [Reclaimed(id=i, amounts=_give_back(conn, held, now)) for i, held in rows]

        return await self._worker.run(lambda conn: transaction(conn, apply))

    async def counter(self, key: str) -> float:
        now = self._clock()
        return await self._worker.run(lambda conn: _current(conn, key, now))

    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        def apply(conn: sqlite3.Connection) -> WindowUse:
            now = self._clock()
            self._sweep(conn, now)
            used, entries = _window_left(conn, key, now - window)
            if used + amount <= limit + _EPSILON:
                conn.execute("INSERT INTO state_windows VALUES (?, ?, ?)", (key, now, amount))
                _window_sum(conn, key, used + amount, entries + 1, now, window)
                return WindowUse(wait=0.0, used=used + amount, reset=window)
            newest = conn.execute(
                "SELECT MAX(at) FROM state_windows WHERE key = ?", (key,)
            ).fetchone()[0]
            _window_sum(conn, key, used, entries, now if newest is None else newest, window)
            reset = newest + window - now if newest is not None else 0.0
            # Read oldest first only as far as `window_wait` needs, not the whole window.
            rows = conn.execute(
                "SELECT at, amount FROM state_windows WHERE key = ? ORDER BY at", (key,)
            )
            wait = window_wait(rows, used + amount - limit, window, now)
            rows.close()
            return WindowUse(wait=wait, used=used, reset=reset)

        return await self._worker.run(lambda conn: transaction(conn, apply))

    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        if age >= window:
            return

        def apply(conn: sqlite3.Connection) -> None:
            now = self._clock()
            used, entries = _window_left(conn, key, now - window)
            # A row dated in the past, as an older release reads and writes them: it leaves
            # the window (and the running sum) with the entry it corrects.
            at = now - max(age, 0.0)
            conn.execute("INSERT INTO state_windows VALUES (?, ?, ?)", (key, at, amount))
            newest = conn.execute(
                "SELECT MAX(at) FROM state_windows WHERE key = ?", (key,)
            ).fetchone()[0]
            _window_sum(conn, key, used + amount, entries + 1, newest, window)

        await self._worker.run(lambda conn: transaction(conn, apply))

    async def get(self, key: str) -> bytes | None:
        now = self._clock()

        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM state_values WHERE key = ? "
                "AND (expires_at IS NULL OR expires_at > ?)",
                (key, now),
            ).fetchone()
            return bytes(row[0]) if row else None

        return await self._worker.run(read)

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        expires = None if ttl is None else self._clock() + ttl
        await self._worker.run(
            lambda conn: conn.execute(
                "INSERT OR REPLACE INTO state_values VALUES (?, ?, ?)", (key, value, expires)
            )
        )

    async def delete(self, key: str) -> None:
        def apply(conn: sqlite3.Connection) -> None:
            for table in ("state_counters", "state_values", *_WINDOW_TABLES):
                conn.execute(f"DELETE FROM {table} WHERE key = ?", (key,))

        await self._worker.run(lambda conn: transaction(conn, apply))

    async def aclose(self) -> None:
        await self._worker.aclose()
