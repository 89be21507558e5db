"""Where cached responses live: in process, in a SQLite file, or in Redis.

Each backend keeps entries (bytes under a key, with a TTL), evicts the least recently used beyond
`max_entries`, keeps the question vectors of the semantic cache per scope, and counts hits,
misses and the USD they saved. Backends store and return bytes; what the bytes mean is
`cache_codec`'s, read by the cache itself.
"""

from __future__ import annotations

import abc
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from modelyard.state.sqlite_worker import Migration, SqliteWorker, transaction


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheStats:
    """What a cache holds and has done."""

    entries: int
    hits: int
    misses: int
    saved: float


class CacheBackend(abc.ABC):
    """Storage for the response cache."""

    name = "cache"

    def __init__(self, *, max_entries: int) -> None:
        self.max_entries = max_entries

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The entry at `key` (and mark it recently used), or None."""

    @abc.abstractmethod
    async def put(self, key: str, value: bytes, ttl: float) -> None:
        """Store an entry, evicting the least recently used beyond `max_entries`."""

    @abc.abstractmethod
    async def add_vector(self, scope: str, key: str, blob: bytes, ttl: float) -> None:
        """Remember a question's packed vector in a semantic scope."""

    @abc.abstractmethod
    async def vectors(self, scope: str) -> list[tuple[str, bytes]]:
        """The live questions of a semantic scope: each entry's key and its packed vector."""

    @abc.abstractmethod
    async def count(self, *, hit: bool, saved: float = 0.0) -> None:
        """Count a lookup."""

    @abc.abstractmethod
    async def stats(self) -> CacheStats:
        """Entries, hits, misses, USD saved."""

    @abc.abstractmethod
    async def clear(self) -> int:
        """Forget every entry and counter; returns how many entries there were."""

    async def leave_loop(self) -> None:
        """The running event loop is ending: close the connections opened on it."""

    async def aclose(self) -> None:
        """Release connections."""


class MemoryCache(CacheBackend):
    """Entries in an ordered dict, most recently used last."""

    name = "memory"

    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(max_entries=max_entries)
        self.clock = clock
        self._entries: OrderedDict[str, tuple[bytes, float]] = OrderedDict()
        self._vectors: dict[str, OrderedDict[str, tuple[bytes, float]]] = {}
        self._hits = self._misses = 0
        self._saved = 0.0

    async def get(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[1] <= self.clock():
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        return item[0]

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        self._entries[key] = (value, self.clock() + ttl)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    async def add_vector(self, scope: str, key: str, blob: bytes, ttl: float) -> None:
        vectors = self._vectors.setdefault(scope, OrderedDict())
        vectors[key] = (blob, self.clock() + ttl)
        vectors.move_to_end(key)
        while len(vectors) > self.max_entries:
            vectors.popitem(last=False)

    async def vectors(self, scope: str) -> list[tuple[str, bytes]]:
        now = self.clock()
        vectors = self._vectors.get(scope, OrderedDict())
        for key in [k for k, (_, expires) in vectors.items() if expires <= now]:
            del vectors[key]
        return [(key, blob) for key, (blob, _) in vectors.items()]

    async def count(self, *, hit: bool, saved: float = 0.0) -> None:
        if hit:
            self._hits += 1
            self._saved += saved
        else:
            self._misses += 1

    async def stats(self) -> CacheStats:
        now = self.clock()
        live = sum(expires > now for _, expires in self._entries.values())
        return CacheStats(entries=live, hits=self._hits, misses=self._misses, saved=self._saved)

    async def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._vectors.clear()
        self._hits = self._misses = 0
        self._saved = 0.0
        return count


SQLITE_MIGRATIONS: list[Migration] = [
    (
        "001_cache",
        """
        CREATE TABLE cache_entries (
            key TEXT PRIMARY KEY, value BLOB NOT NULL, expires_at REAL NOT NULL,
            used_at REAL NOT NULL);
        CREATE INDEX cache_entries_used ON cache_entries (used_at);
        CREATE TABLE cache_vectors (
            scope TEXT NOT NULL, key TEXT NOT NULL, blob BLOB NOT NULL, expires_at REAL NOT NULL,
            PRIMARY KEY (scope, key));
        CREATE TABLE cache_stats (name TEXT PRIMARY KEY, value REAL NOT NULL)
        """,
    ),
]
"""Append-only: add a new entry for any schema change."""


class SqliteCache(CacheBackend):
    """Entries in a SQLite file (on a worker thread); survives restarts."""

    name = "sqlite"

    def __init__(
        self, path: str | Path, *, max_entries: int, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(max_entries=max_entries)
        self.clock = clock
        self.worker = SqliteWorker(path, component="cache", migrations=SQLITE_MIGRATIONS)

    async def get(self, key: str) -> bytes | None:
        now = self.clock()

        def read(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value FROM cache_entries WHERE key = ? AND expires_at > ?", (key, now)
            ).fetchone()
            if row is None:
                return None
            conn.execute("UPDATE cache_entries SET used_at = ? WHERE key = ?", (now, key))
            return bytes(row[0])

        return await self.worker.run(read)

    async def put(self, key: str, value: bytes, ttl: float) -> None:
        now = self.clock()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO cache_entries VALUES (?, ?, ?, ?)",
                (key, value, now + ttl, now),
            )
            conn.execute("DELETE FROM cache_entries WHERE expires_at <= ?", (now,))
            conn.execute(
                "DELETE FROM cache_entries WHERE key IN (SELECT key FROM cache_entries"
                " ORDER BY used_at DESC, rowid DESC LIMIT -1 OFFSET ?)",
                (self.max_entries,),
            )

        await self.worker.run(lambda conn: transaction(conn, write))

    async def add_vector(self, scope: str, key: str, blob: bytes, ttl: float) -> None:
        now = self.clock()

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR REPLACE INTO cache_vectors VALUES (?, ?, ?, ?)",
                (scope, key, blob, now + ttl),
            )
            conn.execute("DELETE FROM cache_vectors WHERE expires_at <= ?", (now,))
            conn.execute(
                "DELETE FROM cache_vectors WHERE scope = ? AND key IN (SELECT key FROM"
                " cache_vectors WHERE scope = ? ORDER BY expires_at DESC LIMIT -1 OFFSET ?)",
                (scope, scope, self.max_entries),
            )

        await self.worker.run(lambda conn: transaction(conn, write))

    async def vectors(self, scope: str) -> list[tuple[str, bytes]]:
        now = self.clock()
        rows = await self.worker.run(
            lambda conn: conn.execute(
                "SELECT key, blob FROM cache_vectors WHERE scope = ? AND expires_at > ?",
                (scope, now),
            ).fetchall()
        )
        return [(key, bytes(blob)) for key, blob in rows]

    async def count(self, *, hit: bool, saved: float = 0.0) -> None:
        def write(conn: sqlite3.Connection) -> None:
            names = [("hits", 1.0), ("saved", saved)] if hit else [("misses", 1.0)]
            for name, value in names:
                conn.execute(
                    "INSERT INTO cache_stats VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                    (name, value),
                )

        await self.worker.run(write)

    async def stats(self) -> CacheStats:
        now = self.clock()

        def read(conn: sqlite3.Connection) -> CacheStats:
            entries = conn.execute(
                "SELECT COUNT(*) FROM cache_entries WHERE expires_at > ?", (now,)
            ).fetchone()[0]
            counts = dict(conn.execute("SELECT name, value FROM cache_stats").fetchall())
            return CacheStats(
                entries=int(entries),
                hits=int(counts.get("hits", 0)),
                misses=int(counts.get("misses", 0)),
                saved=float(counts.get("saved", 0.0)),
            )

        return await self.worker.run(read)

    async def clear(self) -> int:
        def wipe(conn: sqlite3.Connection) -> int:
            count = int(conn.execute("SELECT COUNT(*) FROM cache_entries").fetchone()[0])
            for table in ("cache_entries", "cache_vectors", "cache_stats"):
                conn.execute(f"DELETE FROM {table}")
            return count

        return await self.worker.run(lambda conn: transaction(conn, wipe))

    async def aclose(self) -> None:
        await self.worker.aclose()
