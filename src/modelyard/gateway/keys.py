"""Virtual API keys: what callers present instead of provider keys, and the one interface
(`KeyStore`) of the places they are kept.

Stored hashed (SHA-256 of a 192-bit random secret: a fast hash is safe for keys this long), in a
SQLite file here (`SqliteKeyStore`, one host) or in PostgreSQL (`keys_postgres.PostgresKeyStore`,
every replica). The gateway reads the whole store into memory and, in the background, reloads it
when its version changes, so a lookup on the hot path is one dict access and a revocation takes
effect within a second.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.state.folders import private_folder
from modelyard.state.sqlite_worker import open_wal

KEY_PREFIX = "my-"

_MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS virtual_keys (
        id TEXT PRIMARY KEY,
        hash TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        systems TEXT NOT NULL,
        rpm INTEGER,
        budget REAL,
        max_concurrency INTEGER,
        admin INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL,
        revoked REAL
    )
    """,
    # A side table, not a column: an older release's INSERT into virtual_keys lists no
    # columns, and SQLite refuses one value short of the table's columns. Idempotent, as an
    # older process sharing the file sets schema_version back to its own count.
    """
    CREATE TABLE IF NOT EXISTS virtual_key_tpm (
        id TEXT PRIMARY KEY,
        tpm INTEGER NOT NULL
    )
    """,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualKey:
    """A caller's key: which systems it may use and its own limits."""

    id: str
    name: str
    systems: tuple[str, ...] = ("*",)
    """System or model names this key may call; `*` means all."""
    rpm: int | None = None
    tpm: int | None = None
    """Tokens per minute: each request's estimate (prompt plus output allowance) up front,
    corrected to the usage it reports."""
    budget: float | None = None
    """USD this key may spend per month (enforced by the budgets in the cost section)."""
    max_concurrency: int | None = None
    admin: bool = False
    created: float = field(default_factory=time.time)
    revoked: float | None = None

    @property
    def paced(self) -> bool:
        """Whether the key has limits its requests are admitted against (`KeyLimits.admit`):
        requests or tokens per minute, or concurrent slots."""
        return self.rpm is not None or self.tpm is not None or self.max_concurrency is not None

    def allows(self, target: str) -> bool:
        """Whether this key may call `target`."""
        return "*" in self.systems or target in self.systems

    def to_dict(self) -> dict[str, object]:
        """JSON-ready, without any secret."""
        return {
            "id": self.id,
            "name": self.name,
            "systems": list(self.systems),
            "rpm": self.rpm,
            "tpm": self.tpm,
            "budget": self.budget,
            "max_concurrency": self.max_concurrency,
            "admin": self.admin,
            "created": self.created,
            "revoked": self.revoked,
        }


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


@dataclass(frozen=True, slots=True, kw_only=True)
class KeySnapshot:
    """The keys as the gateway holds them in memory, and the store version they were read at."""

    version: int
    active: Mapping[str, VirtualKey]
    """Active keys by the hash of their secret."""
    issued: bool
    """Whether any key was ever made, revoked ones included (then callers need a key)."""


class KeyStore(abc.ABC):
    """Where virtual keys are kept; the gateway's key ring, its admin routes and the
    `modelyard keys` commands use any store the same way. A store adds a key minted here."""

    source: str
    """The setting that names the store, for messages (never a password)."""

    async def create(
        self,
        name: str,
        *,
        systems: Iterable[str] = ("*",),
        rpm: int | None = None,
        tpm: int | None = None,
        budget: float | None = None,
        max_concurrency: int | None = None,
        admin: bool = False,
    ) -> tuple[str, VirtualKey]:
        """Make a key; returns the secret (shown once, never stored) and its record."""
        secret = KEY_PREFIX + secrets.token_urlsafe(24)
        key = VirtualKey(
            id="key_" + secrets.token_hex(6),
            name=name,
            systems=tuple(systems) or ("*",),
            rpm=rpm,
            tpm=tpm,
            budget=budget,
            max_concurrency=max_concurrency,
            admin=admin,
        )
        await self._add(hash_key(secret), key)
        return secret, key

    @abc.abstractmethod
    async def _add(self, digest: str, key: VirtualKey) -> None:
        """Keep a new key under the hash of its secret."""

    @abc.abstractmethod
    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""

    @abc.abstractmethod
    async def all(self) -> list[VirtualKey]:
        """Every key, revoked ones included, oldest first."""

    @abc.abstractmethod
    async def version(self) -> int:
        """Changes whenever a key is made or revoked: one cheap read, polled every second."""

    @abc.abstractmethod
    async def snapshot(self) -> KeySnapshot:
        """Everything the gateway holds, read at one version."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Close any connection (the store opens again on next use)."""


class SqliteKeyStore(KeyStore):
    """The virtual keys table in a SQLite file, shared by the processes of one host."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.source = f"gateway.keys_db ({self.path})"
        private_folder(self.path.parent)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            applied = row[0] if row else 0
            for migration in _MIGRATIONS[applied:]:
                db.execute(migration)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (len(_MIGRATIONS),))
            else:  # never lowered: a newer release may share the file
                db.execute(
                    "UPDATE schema_version SET version = MAX(version, ?)", (len(_MIGRATIONS),)
                )

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = open_wal(self.path, timeout=10)
        try:
            yield db
        finally:
            db.close()

    async def _add(self, digest: str, key: VirtualKey) -> None:
        await asyncio.to_thread(self._insert, digest, key)

    def _insert(self, digest: str, key: VirtualKey) -> None:
        with self._connect() as db:
            db.execute("BEGIN IMMEDIATE")  # the key and its tpm appear together
            db.execute(
                "INSERT INTO virtual_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    key.id,
                    digest,
                    key.name,
                    json.dumps(list(key.systems)),
                    key.rpm,
                    key.budget,
                    key.max_concurrency,
                    int(key.admin),
                    key.created,
                ),
            )
            if key.tpm is not None:
                db.execute("INSERT INTO virtual_key_tpm VALUES (?, ?)", (key.id, key.tpm))
            db.execute("COMMIT")

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""
        return await asyncio.to_thread(self._revoke, key_id)

    def _revoke(self, key_id: str) -> bool:
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE virtual_keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), key_id),
            )
            return cursor.rowcount > 0

    async def all(self) -> list[VirtualKey]:
        """Every key, revoked ones included, oldest first."""
        return [key for _, key in await self.records()]

    async def records(self) -> list[tuple[str, VirtualKey]]:
        """Every key with the hash of its secret, oldest first (to move them to another
        store)."""
        return (await asyncio.to_thread(self._read))[1]

    async def version(self) -> int:
        """Changes whenever any connection commits a new or revoked key to the file."""
        return await asyncio.to_thread(self._version)

    async def snapshot(self) -> KeySnapshot:
        """Everything the gateway holds, read at one version."""
        version, rows = await asyncio.to_thread(self._read)
        active = {digest: key for digest, key in rows if key.revoked is None}
        return KeySnapshot(version=version, active=active, issued=bool(rows))

    async def aclose(self) -> None:
        """Nothing to close: each call opens the file and closes it."""

    def _version(self) -> int:
        with self._connect() as db:
            return _version_of(db)

    def _read(self) -> tuple[int, list[tuple[str, VirtualKey]]]:
        with self._connect() as db:
            db.execute("BEGIN")  # the version and the rows from one read of the file
            version = _version_of(db)
            rows = db.execute(
                "SELECT k.hash, k.id, k.name, k.systems, k.rpm, k.budget, k.max_concurrency, "
                "k.admin, k.created, k.revoked, t.tpm FROM virtual_keys k "
                "LEFT JOIN virtual_key_tpm t ON t.id = k.id ORDER BY k.created"
            ).fetchall()
            db.execute("COMMIT")
        return version, [
            (
                row[0],
                VirtualKey(
                    id=row[1],
                    name=row[2],
                    systems=tuple(json.loads(row[3])),
                    rpm=row[4],
                    tpm=row[10],
                    budget=row[5],
                    max_concurrency=row[6],
                    admin=bool(row[7]),
                    created=row[8],
                    revoked=row[9],
                ),
            )
            for row in rows
        ]


def _version_of(db: sqlite3.Connection) -> int:
    count, revoked = db.execute(
        "SELECT COUNT(*), COALESCE(MAX(revoked), 0) FROM virtual_keys"
    ).fetchone()
    return hash((count, revoked))
