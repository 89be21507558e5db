"""The spend ledger in PostgreSQL (asyncpg): one ledger every gateway replica writes and
`modelyard costs` reads, so a report shows all of the replicas' spend, not one's share.

Tables `<table_prefix>spend` and `<table_prefix>alerts` have the SQLite ledger's columns (tags
as `jsonb`). Reports are written once, in SQLite's dialect; `query` translates the three things
that differ (table names, `?` placeholders, `json_each` over the tags) rather than keeping a
second copy of every report.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from modelyard.cost.ledger import (
    ALERT_COLUMNS,
    SPEND_COLUMNS,
    SPEND_WIDTH,
    Keyed,
    KeyedAlert,
    alert_values,
    row_values,
)
from modelyard.state.postgres_tables import Index, Migration, PostgresTables

MIGRATIONS: list[Migration] = [
    (
        "001_spend",
        """
        CREATE TABLE IF NOT EXISTS {p}spend (
            id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, day TEXT NOT NULL,
            request_id TEXT NOT NULL, system TEXT NOT NULL, model TEXT NOT NULL,
            key_id TEXT, tags JSONB NOT NULL DEFAULT '[]', cost DOUBLE PRECISION NOT NULL,
            saved DOUBLE PRECISION NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0,
            answered INTEGER NOT NULL DEFAULT 0, error TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX IF NOT EXISTS {p}spend_day ON {p}spend (day);
        CREATE INDEX IF NOT EXISTS {p}spend_system_day ON {p}spend (system, day);
        CREATE TABLE IF NOT EXISTS {p}alerts (
            id BIGSERIAL PRIMARY KEY, at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL,
            place TEXT NOT NULL, message TEXT NOT NULL, value DOUBLE PRECISION,
            threshold DOUBLE PRECISION, details JSONB NOT NULL DEFAULT '{{}}');
        CREATE INDEX IF NOT EXISTS {p}alerts_at ON {p}alerts (at)
        """,
    ),
    (
        "002_tokens_estimated",
        "ALTER TABLE {p}spend ADD COLUMN IF NOT EXISTS tokens_estimated INTEGER NOT NULL DEFAULT 0",
    ),
    (
        # Rows written before have no uid (NULL, which a unique index never compares equal).
        # Its indexes were built here too, blocking the ledger's writes while they were built
        # on a long table: a deployment that applied it has them, one that has not builds them
        # in the steps below, concurrently.
        "003_uid",
        """
        ALTER TABLE {p}spend ADD COLUMN IF NOT EXISTS uid TEXT;
        ALTER TABLE {p}alerts ADD COLUMN IF NOT EXISTS uid TEXT
        """,
    ),
    (
        "003_uid_spend_index",
        Index(name="{p}spend_uid", table="{p}spend", columns="uid", unique=True),
    ),
    (
        "003_uid_alerts_index",
        Index(name="{p}alerts_uid", table="{p}alerts", columns="uid", unique=True),
    ),
    (
        "004_refused",
        "ALTER TABLE {p}spend ADD COLUMN IF NOT EXISTS refused INTEGER NOT NULL DEFAULT 0",
    ),
]
"""Append-only: add a new entry for any schema change (an `Index` for an index on a table
that may be long)."""

_TABLES = re.compile(r"\b(spend|alerts)\b(?!_)")
_TAGS = re.compile(r"json_each\(spend\.tags\)(\s+(?:AS\s+)?t)\b")
_PLACEHOLDER = re.compile(r"\?")


def _marks(count: int, jsonb: int) -> str:
    """`$1, ..., $count`, the `jsonb`th cast to jsonb."""
    return ", ".join(f"${i}::jsonb" if i == jsonb else f"${i}" for i in range(1, count + 1))


class PostgresLedgerFile(PostgresTables):
    """Reads and writes the ledger's PostgreSQL tables (shared by every replica)."""

    component = "ledger"
    setting = "ledger.url"
    tables = ("spend", "alerts")
    migrations = MIGRATIONS
    backlog = False

    def __init__(self, url: str, *, table_prefix: str = "modelyard_", timeout: float = 5.0) -> None:
        super().__init__(url, table_prefix=table_prefix, timeout=timeout)
        self.where = f"postgres tables {self.p}spend/{self.p}alerts"

    async def write(self, spend: Sequence[Keyed], alerts: Sequence[KeyedAlert]) -> None:
        """Insert a batch in one transaction, skipping the uids already there (a batch sent
        again after its commit's reply was lost)."""
        await self._with(lambda conn: self._insert(conn, spend, alerts))

    async def _insert(
        self, conn: Any, spend: Sequence[Keyed], alerts: Sequence[KeyedAlert]
    ) -> None:
        async with conn.transaction():
            if spend:
                await conn.executemany(
                    f"INSERT INTO {self.p}spend ({SPEND_COLUMNS}) VALUES ({_marks(SPEND_WIDTH, 8)})"
                    " ON CONFLICT (uid) DO NOTHING",
                    [row_values(r) for r in spend],
                )
            if alerts:
                await conn.executemany(
                    f"INSERT INTO {self.p}alerts ({ALERT_COLUMNS}) VALUES ({_marks(8, 8)})"
                    " ON CONFLICT (uid) DO NOTHING",
                    [alert_values(a) for a in alerts],
                )

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query written in SQLite's dialect (see the module doc)."""
        # A report over a long ledger may take longer than the writes' timeout.
        rows = await self._with(
            lambda conn: conn.fetch(self.translate(sql), *params), bounded=False
        )
        return [tuple(row.values()) for row in rows]

    def translate(self, sql: str) -> str:
        """`sql` (SQLite's dialect, tables `spend` and `alerts`) for these tables."""
        sql = _TAGS.sub(r"jsonb_array_elements_text(spend.tags)\1(value)", sql)
        sql = _TABLES.sub(lambda m: self.p + m.group(1), sql)
        numbers = iter(range(1, sql.count("?") + 1))
        return _PLACEHOLDER.sub(lambda _: f"${next(numbers)}", sql)
