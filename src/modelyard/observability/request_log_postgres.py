"""The request log in PostgreSQL (asyncpg): every gateway replica writes its requests' records
(and captured traffic) to one place, so `GET /v1/requests/{id}` answers on any replica and
`modelyard traffic` exports what all of them captured.

Tables `<table_prefix>requests` and `<table_prefix>traffic` have the SQLite log's columns.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from modelyard.config.gateway import GatewaySpec
from modelyard.observability.decision_log import COLUMNS
from modelyard.state.postgres_tables import PostgresTables

MIGRATIONS: list[tuple[str, str]] = [
    (
        "001_requests",
        """
        CREATE TABLE IF NOT EXISTS {p}requests (
            id TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, key_id TEXT, target TEXT NOT NULL,
            api TEXT NOT NULL, stream INTEGER NOT NULL, config_version TEXT NOT NULL,
            status INTEGER NOT NULL, model TEXT, provider_model TEXT,
            latency_ms DOUBLE PRECISION NOT NULL, cost DOUBLE PRECISION NOT NULL,
            input_tokens INTEGER NOT NULL, output_tokens INTEGER NOT NULL, error TEXT,
            decision TEXT);
        CREATE INDEX IF NOT EXISTS {p}requests_at ON {p}requests (at);
        CREATE TABLE IF NOT EXISTS {p}traffic (
            id TEXT PRIMARY KEY, messages TEXT NOT NULL, answer TEXT NOT NULL)
        """,
    ),
    (
        "002_tokens_estimated",
        "ALTER TABLE {p}requests ADD COLUMN IF NOT EXISTS tokens_estimated INTEGER NOT NULL"
        " DEFAULT 0",
    ),
]
"""Append-only: add a new entry for any schema change."""


def shared_request_log(spec: GatewaySpec) -> PostgresRequestLog | None:
    """The request log every replica shares, when the config names one."""
    if spec.request_log_url is None:
        return None
    return PostgresRequestLog(spec.request_log_url, table_prefix=spec.request_log_table_prefix)


class PostgresRequestLog(PostgresTables):
    """Writes and reads request records in PostgreSQL tables every replica shares."""

    component = "requests"
    setting = "gateway.request_log_url"
    tables = ("requests", "traffic")
    migrations = MIGRATIONS

    async def write(
        self, rows: Sequence[tuple[Any, ...]], exchanges: Sequence[tuple[str, str, str]]
    ) -> None:
        """Store a batch of records (rows in `COLUMNS` order) and exchanges, in one
        transaction; a record written again (same id) replaces the earlier one."""
        names = ", ".join(COLUMNS)
        marks = ", ".join(f"${i}" for i in range(1, len(COLUMNS) + 1))
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])

        async def insert(conn: Any) -> None:
            async with conn.transaction():
                await conn.executemany(
                    f"INSERT INTO {self.p}requests ({names}) VALUES ({marks})"
                    f" ON CONFLICT (id) DO UPDATE SET {updates}",
                    rows,
                )
                if exchanges:
                    await conn.executemany(
                        f"INSERT INTO {self.p}traffic (id, messages, answer) VALUES ($1, $2, $3)"
                        " ON CONFLICT (id) DO UPDATE SET messages = EXCLUDED.messages,"
                        " answer = EXCLUDED.answer",
                        exchanges,
                    )

        await self._with(insert)

    async def read(self, request_id: str) -> tuple[Any, ...] | None:
        """One record's row (in `COLUMNS` order), or None."""
        row = await self._with(
            lambda conn: conn.fetchrow(
                f"SELECT {', '.join(COLUMNS)} FROM {self.p}requests WHERE id = $1", request_id
            )
        )
        return None if row is None else tuple(row.values())

    async def traffic(
        self, *, since: float | None, target: str | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        """Captured exchanges, oldest first, in `decision_log.read_traffic`'s row shape."""
        where, args = ["TRUE"], list[Any]()
        if since is not None:
            args.append(since)
            where.append(f"r.at >= ${len(args)}")
        if target is not None:
            args.append(target)
            where.append(f"r.target = ${len(args)}")
        query = (
            "SELECT r.id, r.at, r.target, r.model, r.config_version, r.cost, r.latency_ms,"
            f" t.messages, t.answer FROM {self.p}traffic t JOIN {self.p}requests r"
            f" ON r.id = t.id WHERE {' AND '.join(where)} ORDER BY r.at"
        )
        if limit is not None:
            query += f" LIMIT {int(limit)}"
        # An export of much traffic may take longer than a write's timeout.
        rows = await self._with(lambda conn: conn.fetch(query, *args), bounded=False)
        return [tuple(row.values()) for row in rows]
