"""Virtual API keys: what callers present instead of provider keys.

Stored hashed (SHA-256 of a 192-bit random secret: a fast hash is safe for keys this long) in
SQLite. The gateway reads the whole table into memory in a worker thread and refreshes it when
another process (the `modelyard keys` CLI) changes it, so a lookup on the hot path is one dict
access and a revocation takes effect within a second.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modelyard.state.folders import private_folder

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
)


@dataclass(frozen=True, slots=True, kw_only=True)
class VirtualKey:
    """A caller's key: which systems it may use and its own limits."""

    id: str
    name: str
    systems: tuple[str, ...] = ("*",)
    """System or model names this key may call; `*` means all."""
    rpm: int | None = None
    budget: float | None = None
    """USD this key may spend per month (enforced by the budgets in the cost section)."""
    max_concurrency: int | None = None
    admin: bool = False
    created: float = field(default_factory=time.time)
    revoked: float | None = None

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
            "budget": self.budget,
            "max_concurrency": self.max_concurrency,
            "admin": self.admin,
            "created": self.created,
            "revoked": self.revoked,
        }


def hash_key(secret: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(secret.encode()).hexdigest()


class KeyStore:
    """The virtual keys table in a SQLite file."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        private_folder(self.path.parent)
        with self._connect() as db:
            db.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = db.execute("SELECT version FROM schema_version").fetchone()
            applied = row[0] if row else 0
            for migration in _MIGRATIONS[applied:]:
                db.execute(migration)
            if row is None:
                db.execute("INSERT INTO schema_version VALUES (?)", (len(_MIGRATIONS),))
            else:
                db.execute("UPDATE schema_version SET version = ?", (len(_MIGRATIONS),))

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            yield db
        finally:
            db.close()

    def create(
        self,
        name: str,
        *,
        systems: Iterable[str] = ("*",),
        rpm: int | None = None,
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
            budget=budget,
            max_concurrency=max_concurrency,
            admin=admin,
        )
        with self._connect() as db:
            db.execute(
                "INSERT INTO virtual_keys VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (
                    key.id,
                    hash_key(secret),
                    key.name,
                    json.dumps(list(key.systems)),
                    key.rpm,
                    key.budget,
                    key.max_concurrency,
                    int(key.admin),
                    key.created,
                ),
            )
        return secret, key

    def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""
        with self._connect() as db:
            cursor = db.execute(
                "UPDATE virtual_keys SET revoked = ? WHERE id = ? AND revoked IS NULL",
                (time.time(), key_id),
            )
            return cursor.rowcount > 0

    def all(self) -> list[VirtualKey]:
        """Every key, revoked ones included."""
        return [key for _, key in self._rows()]

    def active_by_hash(self) -> dict[str, VirtualKey]:
        """Active keys by the hash of their secret: what the gateway holds in memory."""
        return {digest: key for digest, key in self._rows() if key.revoked is None}

    def issued(self) -> bool:
        """Whether any key was ever made, revoked ones included (then callers need a key)."""
        with self._connect() as db:
            return db.execute("SELECT 1 FROM virtual_keys LIMIT 1").fetchone() is not None

    def version(self) -> int:
        """Changes whenever any connection commits to the file."""
        with self._connect() as db:
            count = db.execute(
                "SELECT COUNT(*), COALESCE(MAX(revoked), 0) FROM virtual_keys"
            ).fetchone()
            return hash((count[0], count[1]))

    def _rows(self) -> list[tuple[str, VirtualKey]]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT hash, id, name, systems, rpm, budget, max_concurrency, admin, created, "
                "revoked FROM virtual_keys ORDER BY created"
            ).fetchall()
        return [
            (
                row[0],
                VirtualKey(
                    id=row[1],
                    name=row[2],
                    systems=tuple(json.loads(row[3])),
                    rpm=row[4],
                    budget=row[5],
                    max_concurrency=row[6],
                    admin=bool(row[7]),
                    created=row[8],
                    revoked=row[9],
                ),
            )
            for row in rows
        ]
