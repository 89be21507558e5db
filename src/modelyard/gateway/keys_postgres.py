"""Virtual keys in PostgreSQL (asyncpg): one key store every gateway replica follows, so a key
made or revoked on any host is honoured by all of them within about a second.

Tables `<prefix>keys` (the SQLite store's columns) and `<prefix>key_changes`, a single row
counting changes: each create, revoke and import bumps it in its own transaction, so a replica's
poll is one read of one row. On first use a store imports what the host's SQLite key file holds
and the shared tables lack (hashes, ids and revocations; never a secret: none is stored), so
moving a deployment to the shared store loses no key and lets no revoked key back in.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from modelyard.config.gateway import GatewaySpec
from modelyard.gateway.keys import (
    KeySnapshot,
    KeyStore,
    SqliteKeyStore,
    VirtualKey,
)
from modelyard.state.postgres_tables import PostgresTables

log = logging.getLogger("modelyard.gateway")

T = TypeVar("T")

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_keys",
        """
        CREATE TABLE IF NOT EXISTS {p}keys (
            id TEXT PRIMARY KEY, hash TEXT NOT NULL UNIQUE, name TEXT NOT NULL,
            systems TEXT[] NOT NULL, rpm INTEGER, budget DOUBLE PRECISION,
            max_concurrency INTEGER, admin BOOLEAN NOT NULL DEFAULT FALSE,
            created DOUBLE PRECISION NOT NULL, revoked DOUBLE PRECISION);
        CREATE TABLE IF NOT EXISTS {p}key_changes (
            one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), changes BIGINT NOT NULL);
        INSERT INTO {p}key_changes (one, changes) VALUES (TRUE, 0) ON CONFLICT DO NOTHING
        """,
    ),
    # Nullable, no default needed: an older release's INSERT names its columns (or, by
    # position, PostgreSQL fills the ones left out with NULL), and its SELECT names them too.
    ("002_key_tpm", "ALTER TABLE {p}keys ADD COLUMN IF NOT EXISTS tpm INTEGER"),
]
"""Append-only: add a new entry for any schema change. `{p}` is the table prefix."""

_COLUMNS = "hash, id, name, systems, rpm, budget, max_concurrency, admin, created, revoked, tpm"


def key_store(spec: GatewaySpec, local: Path) -> KeyStore:
    """The config's key store: the shared one when `gateway.keys_url` is set (which imports the
    keys of the SQLite file at `local` it lacks), else that file."""
    if spec.keys_url is None:
        return SqliteKeyStore(local)
    prefix = spec.keys_table_prefix or spec.request_log_table_prefix
    return PostgresKeyStore(spec.keys_url, table_prefix=prefix, local=local)


class PostgresKeyStore(PostgresTables, KeyStore):
    """Virtual keys in PostgreSQL tables every replica shares."""

    component = "keys"
    setting = "gateway.keys_url"
    tables = ("keys", "key_changes")
    migrations = MIGRATIONS
    pool_size = 2

    def __init__(
        self,
        url: str,
        *,
        table_prefix: str = "modelyard_",
        timeout: float = 5.0,
        local: Path | None = None,
    ) -> None:
        super().__init__(url, table_prefix=table_prefix, timeout=timeout)
        self.local = local
        """A SQLite key file whose keys are imported on first use (then forgotten)."""

    async def _add(self, digest: str, key: VirtualKey) -> None:
        async def insert(conn: Any) -> None:
            async with conn.transaction():
                await conn.execute(*self._insert(digest, key), timeout=self.timeout)
                await self._bump(conn)

        await self._with(insert)

    async def revoke(self, key_id: str) -> bool:
        """Revoke a key by id; False when there is no such active key."""

        async def update(conn: Any) -> bool:
            async with conn.transaction():
                status = await conn.execute(
                    f"UPDATE {self.p}keys SET revoked = $1 WHERE id = $2 AND revoked IS NULL",
                    time.time(),
                    key_id,
                    timeout=self.timeout,
                )
                if status == "UPDATE 0":
                    return False
                await self._bump(conn)
                return True

        return await self._with(update)

    async def all(self) -> list[VirtualKey]:
        """Every key, revoked ones included, oldest first."""
        return [key for _, key in (await self._read())[1]]

    async def version(self) -> int:
        """The change counter: one row, read every second by every replica."""

        async def read(conn: Any) -> int:
            changes = await conn.fetchval(
                f"SELECT changes FROM {self.p}key_changes", timeout=self.timeout
            )
            return int(changes)

        return await self._with(read)

    async def snapshot(self) -> KeySnapshot:
        """Everything the gateway holds, read at one version."""
        version, rows = await self._read()
        active = {digest: key for digest, key in rows if key.revoked is None}
        return KeySnapshot(version=version, active=active, issued=bool(rows))

    async def _read(self) -> tuple[int, list[tuple[str, VirtualKey]]]:
        async def read(conn: Any) -> tuple[int, list[tuple[str, VirtualKey]]]:
            # One snapshot of the database: the counter and the rows agree.
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                changes = await conn.fetchval(
                    f"SELECT changes FROM {self.p}key_changes", timeout=self.timeout
                )
                rows = await conn.fetch(
                    f"SELECT {_COLUMNS} FROM {self.p}keys ORDER BY created, id",
                    timeout=self.timeout,
                )
            return int(changes), [(row["hash"], _key(row)) for row in rows]

        return await self._with(read)

    def _insert(self, digest: str, key: VirtualKey, conflict: str = "") -> tuple[Any, ...]:
        """The statement (and its arguments) adding `key`, with `conflict` as its ON CONFLICT
        clause."""
        return (
            f"INSERT INTO {self.p}keys ({_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9,"
            f" $10, $11){conflict}",
            digest,
            key.id,
            key.name,
            list(key.systems),
            key.rpm,
            key.budget,
            key.max_concurrency,
            key.admin,
            key.created,
            key.revoked,
            key.tpm,
        )

    async def _bump(self, conn: Any) -> None:
        await conn.execute(
            f"UPDATE {self.p}key_changes SET changes = changes + 1", timeout=self.timeout
        )

    async def _with(self, work: Callable[[Any], Awaitable[T]], *, bounded: bool = True) -> T:
        """`work` on a connection, once the host's key file is imported (on first use)."""
        if self.local is not None:
            local = self.local
            # A statement per key, each with its own timeout: a big key file may take longer.
            await super()._with(lambda conn: self._import(conn, local), bounded=False)
            self.local = None
        return await super()._with(work, bounded=bounded)

    async def _import(self, conn: Any, local: Path) -> None:
        """Add what the SQLite key file at `local` holds and the shared tables lack, and carry
        its revocations over: safe when several replicas start at once."""
        file = await asyncio.to_thread(_existing, local)
        records = await file.records() if file is not None else []
        if not records:
            return
        async with conn.transaction():
            present = {
                row["id"]: row["revoked"]
                for row in await conn.fetch(
                    f"SELECT id, revoked FROM {self.p}keys WHERE id = ANY($1)",
                    [key.id for _, key in records],
                    timeout=self.timeout,
                )
            }
            added = added_revoked = revoked = 0
            for digest, key in records:
                if key.id not in present:
                    status = await conn.execute(
                        *self._insert(digest, key, conflict=" ON CONFLICT DO NOTHING"),
                        timeout=self.timeout,
                    )
                    if status == "INSERT 0 1":  # not made by a replica starting beside us
                        added += 1
                        added_revoked += key.revoked is not None
                elif key.revoked is not None and present[key.id] is None:
                    status = await conn.execute(
                        f"UPDATE {self.p}keys SET revoked = $1 WHERE id = $2 AND revoked IS NULL",
                        key.revoked,
                        key.id,
                        timeout=self.timeout,
                    )
                    revoked += status == "UPDATE 1"
            if added or revoked:
                await self._bump(conn)
        if added or revoked:
            log.info(
                "imported %d virtual keys (%d revoked) and %d revocations from %s into %s, "
                "where keys are kept from now on",
                added,
                added_revoked,
                revoked,
                local,
                self.source,
            )


def _key(row: Any) -> VirtualKey:
    return VirtualKey(
        id=row["id"],
        name=row["name"],
        systems=tuple(row["systems"]),
        rpm=row["rpm"],
        tpm=row["tpm"],
        budget=row["budget"],
        max_concurrency=row["max_concurrency"],
        admin=row["admin"],
        created=row["created"],
        revoked=row["revoked"],
    )


def _existing(local: Path) -> SqliteKeyStore | None:
    """The key file at `local`, if there is one (none is made)."""
    return SqliteKeyStore(local) if local.is_file() else None
