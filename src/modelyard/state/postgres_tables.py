"""Tables of modelyard's own in PostgreSQL (the shared ledger and request log): a pool whose
tables are made (and migrated) once, under a prefix several deployments can tell apart."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from typing import Any, ClassVar

TABLE_PREFIX = r"[A-Za-z_][A-Za-z0-9_]*"
"""What an unquoted PostgreSQL table name may start with and hold."""


def check_prefix(prefix: str) -> str:
    """`prefix`, or ValueError naming what a table prefix may hold."""
    if not re.fullmatch(TABLE_PREFIX, prefix):
        raise ValueError(
            "table prefix must start with a letter or _ and hold letters, digits and _, "
            f"got {prefix!r}"
        )
    return prefix


async def open_pool(
    url: str,
    *,
    component: str,
    migrations: Sequence[tuple[str, str]],
    prefix: str,
    timeout: float,  # noqa: ASYNC109 (asyncpg's own connect timeout, not a wait of ours)
    size: int = 4,
) -> Any:
    """A pool to `url` with `migrations` (each a name and a script with `{p}` for the prefix)
    applied once per `component`, under an advisory lock so replicas starting together agree.
    A pool whose migration fails is closed: a retry must not leave a connection open."""
    import asyncpg

    pool = await asyncpg.create_pool(url, min_size=1, max_size=size, timeout=timeout)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('modelyard-migrations'))")
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS modelyard_migrations ("
                " component TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (component, name))"
            )
            done = {
                r["name"]
                for r in await conn.fetch(
                    "SELECT name FROM modelyard_migrations WHERE component = $1", component
                )
            }
            for name, script in migrations:
                if name not in done:
                    await conn.execute(script.format(p=prefix))
                    await conn.execute(
                        "INSERT INTO modelyard_migrations VALUES ($1, $2)", component, name
                    )
    except BaseException:
        await pool.close()
        raise
    return pool


async def drop(pool: Any, component: str, tables: Sequence[str]) -> None:
    """Drop `tables` and forget `component`'s migrations (tests)."""
    async with pool.acquire() as conn:
        await conn.execute(f"DROP TABLE IF EXISTS {', '.join(tables)}")
        await conn.execute("DELETE FROM modelyard_migrations WHERE component = $1", component)


class PostgresTables:
    """Base of a component kept in its own PostgreSQL tables: `component` names it in the
    migrations table, `tables` are its table names without the prefix, `migrations` make
    them. The pool (and the tables) are made on first use."""

    component: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    migrations: ClassVar[Sequence[tuple[str, str]]]
    pool_size: ClassVar[int] = 4

    def __init__(self, url: str, *, table_prefix: str = "modelyard_", timeout: float = 5.0) -> None:
        self.url = url
        self.p = check_prefix(table_prefix)
        self.timeout = timeout
        self._pool: Any = None
        self._lock = asyncio.Lock()

    async def _get_pool(self) -> Any:
        async with self._lock:
            if self._pool is None:
                self._pool = await open_pool(
                    self.url,
                    component=f"{self.component}:{self.p}",
                    migrations=self.migrations,
                    prefix=self.p,
                    timeout=self.timeout,
                    size=self.pool_size,
                )
        return self._pool

    async def drop_tables(self) -> None:
        """Drop these tables (tests)."""
        pool = await self._get_pool()
        await drop(pool, f"{self.component}:{self.p}", [self.p + t for t in self.tables])

    async def aclose(self) -> None:
        """Close the pool."""
        if self._pool is not None:
            await self._pool.close()
            self._pool = None
