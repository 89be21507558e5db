"""The request log: every request's outcome and decision record, kept for audit.

Recording is a list append on the hot path; a background task writes batches to SQLite on one
writer thread that keeps its connection open, so no request ever waits on the disk. The most
recent records are also held in memory for `GET /v1/requests/{id}`, as encoded JSON once they
are written (a few thousand object trees would otherwise keep the garbage collector busy).
`aclose()` flushes what is pending, so a clean shutdown loses nothing.

With the gateway's `capture`, a record also carries its exchange (the messages and the answer),
kept in a `traffic` table beside it; `read_traffic` reads them back for replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import orjson

from modelyard.background import WriteOutage
from modelyard.state.folders import private_folder
from modelyard.state.sqlite_worker import Migration, apply_migrations, open_wal, transaction
from modelyard.types import Decision

log = logging.getLogger("modelyard.log")
T = TypeVar("T")

_MIGRATIONS = (
    """
    CREATE TABLE IF NOT EXISTS requests (
        id TEXT PRIMARY KEY,
        at REAL NOT NULL,
        key_id TEXT,
        target TEXT NOT NULL,
        api TEXT NOT NULL,
        stream INTEGER NOT NULL,
        config_version TEXT NOT NULL,
        status INTEGER NOT NULL,
        model TEXT,
        provider_model TEXT,
        latency_ms REAL NOT NULL,
        cost REAL NOT NULL,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        error TEXT,
        decision TEXT
    )
    """,
    "CREATE INDEX IF NOT EXISTS requests_at ON requests (at)",
    """
    CREATE TABLE IF NOT EXISTS traffic (
        id TEXT PRIMARY KEY,
        messages TEXT NOT NULL,
        answer TEXT NOT NULL
    )
    """,
)
"""The first tables, made if missing (files older than `MIGRATIONS` have them, unrecorded)."""

MIGRATIONS: list[Migration] = [
    (
        "002_tokens_estimated",
        "ALTER TABLE requests ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0",
    ),
]
"""Append-only: add a new entry for any schema change after the first tables."""


class SharedRequestLog(Protocol):
    """A request log every replica writes (`request_log_postgres`)."""

    async def write(
        self, rows: Sequence[tuple[Any, ...]], exchanges: Sequence[tuple[str, str, str]]
    ) -> None:
        """Store records (rows of `COLUMNS`) and captured exchanges."""

    async def read(self, request_id: str) -> tuple[Any, ...] | None:
        """One record's row, or None."""

    async def traffic(
        self, *, since: float | None, target: str | None, limit: int | None
    ) -> list[tuple[Any, ...]]:
        """Captured exchanges in `read_traffic`'s row shape, oldest first."""

    async def aclose(self) -> None:
        """Release connections."""


@dataclass(frozen=True, slots=True)
class Exchange:
    """What a captured request asked (role and text of each message) and was answered."""

    messages: tuple[tuple[str, str], ...]
    answer: str


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestRecord:
    """One request as it ended."""

    id: str
    at: float
    key_id: str | None
    target: str
    api: str
    stream: bool
    config_version: str
    status: int
    model: str | None = None
    provider_model: str | None = None
    latency_ms: float = 0.0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_estimated: bool = False
    """Whether the tokens are modelyard's estimate (a failed call's cost was worked out from
    them, or the provider reported none), not the provider's count."""
    error: str | None = None
    decision: Decision | None = None
    exchange: Exchange | None = None
    """Set only when the gateway captures this request's traffic."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, with the decision tree expanded."""
        return {
            "id": self.id,
            "at": self.at,
            "key_id": self.key_id,
            "target": self.target,
            "api": self.api,
            "stream": self.stream,
            "config_version": self.config_version,
            "status": self.status,
            "model": self.model,
            "provider_model": self.provider_model,
            "latency_ms": round(self.latency_ms, 3),
            "cost": self.cost,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "tokens_estimated": self.tokens_estimated,
            "error": self.error,
            "decision": self.decision.to_dict() if self.decision else None,
        }


class DecisionLog:
    """Recent records in memory, all records in SQLite (when a path is given)."""

    def __init__(
        self,
        path: Path | None,
        *,
        shared: SharedRequestLog | None = None,
        recent: int = 10_000,
        flush_every: float = 0.5,
        max_pending: int = 100_000,
    ) -> None:
        self.path = None if shared is not None else path
        self.shared = shared
        """Where every replica keeps its records (PostgreSQL), instead of this process's file."""
        self.outbox = None if shared is None or path is None else path.with_name(OUTBOX)
        """With a shared log: where records wait on the host until it takes them, so a process
        killed outright during an outage leaves them to the next one (which ships them)."""
        self._backlog = self.outbox is not None  # a process killed before may have left some
        self._recent: OrderedDict[str, RequestRecord | tuple[Any, ...]] = OrderedDict()
        self._recent_size = recent
        self._pending: list[RequestRecord] = []
        self.max_pending = max_pending
        """Records kept to write while the store is down; those past it are dropped (counted),
        as the ledger's queue does, so a long outage cannot grow a replica without bound."""
        self.dropped = 0
        self._flush_every = flush_every
        # A shared log's errors name its setting and server; a file's do not name the file.
        what = "request log" if self.path is None else f"request log {self.path}"
        self._outage = WriteOutage(log, what, items="request record(s)", retry_every=flush_every)
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="modelyard-log")
        self._db: sqlite3.Connection | None = None
        """Opened and used only on the writer thread."""
        self._file = self.path or self.outbox
        if self._file is not None:
            private_folder(self._file.parent)
            self._writer.submit(self._migrate).result()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            assert self._file is not None
            self._db = open_wal(self._file, timeout=30)
            self._db.execute("PRAGMA synchronous=NORMAL")
        return self._db

    def _migrate(self) -> None:
        db = self._connection()
        for migration in _MIGRATIONS:
            db.execute(migration)
        apply_migrations(db, "requests", MIGRATIONS)

    async def _on_writer(self, function: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, function, *args)

    def record(self, record: RequestRecord) -> None:
        """Keep a record; never blocks."""
        recent = self._recent
        recent[record.id] = record
        if len(recent) > self._recent_size:
            recent.popitem(last=False)
        if self.path is None and self.shared is None:
            return
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            self._outage.dropped(1, self.max_pending)
            return
        self._pending.append(record)

    def start(self) -> None:
        """Start the background writer (inside the running loop)."""
        if (self.path is not None or self.shared is not None) and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._flush_every)
            await self.flush()

    async def flush(self) -> None:
        """Write pending records now."""
        if self._pending and (self.path is not None or self.shared is not None):
            await self._write_pending()
        if self._backlog:
            await self._ship()

    async def _write_pending(self) -> None:
        batch, self._pending = self._pending, []
        try:
            if self.shared is not None and self.outbox is None:
                encoded = _rows(batch)
                await self.shared.write(encoded, _exchanges(batch))
            else:  # this process's file, or the outbox a shared log's records wait in
                encoded = await self._on_writer(self._write, batch)
        except BaseException as exc:  # a disk, a database down: the records are kept to retry
            # A cancel too (a stop landing mid-write): a record written again replaces itself.
            self._pending[:0] = batch
            if not isinstance(exc, Exception):
                raise
            self._outage.failed(exc, len(self._pending))
            return
        recent = self._recent
        for record, data in zip(batch, encoded, strict=True):
            if recent.get(record.id) is record:
                recent[record.id] = data
        if self.outbox is not None:
            self._backlog = True
        else:
            self._outage.written(len(batch))

    async def _ship(self) -> None:
        """Move the records waiting in the outbox to the shared log, oldest first."""
        assert self.shared is not None
        shipped = 0
        try:
            while rows_exchanges := await self._on_writer(self._oldest):
                rows, exchanges = rows_exchanges
                await self.shared.write(rows, exchanges)
                await self._on_writer(self._forget, [(row[0],) for row in rows])
                shipped += len(rows)
        except Exception as exc:  # kept in the outbox for the next flush
            if not self._outage.ongoing:
                self._outage.failed(exc, await self._on_writer(self._waiting))
            return
        self._backlog = False
        if shipped:
            self._outage.written(shipped)

    def _oldest(self) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]]] | None:
        """The outbox's oldest records and their exchanges, or None when it is empty."""
        db = self._connection()
        rows = db.execute(
            f"SELECT {', '.join(COLUMNS)} FROM requests ORDER BY at LIMIT {OUTBOX_BATCH}"
        ).fetchall()
        if not rows:
            return None
        marks = ", ".join("?" for _ in rows)
        exchanges = db.execute(
            f"SELECT id, messages, answer FROM traffic WHERE id IN ({marks})",
            [row[0] for row in rows],
        ).fetchall()
        return rows, exchanges

    def _waiting(self) -> int:
        count: int = self._connection().execute("SELECT count(*) FROM requests").fetchone()[0]
        return count

    def _forget(self, ids: list[tuple[str]]) -> None:
        def apply(db: sqlite3.Connection) -> None:
            db.executemany("DELETE FROM requests WHERE id = ?", ids)
            db.executemany("DELETE FROM traffic WHERE id = ?", ids)

        transaction(self._connection(), apply)

    def _write(self, batch: list[RequestRecord]) -> list[tuple[Any, ...]]:
        """Store a batch (on the writer thread); returns each record's row, which `get` reads
        (a tuple of plain values costs the garbage collector nothing to keep)."""
        rows = _rows(batch)
        db = self._connection()
        db.execute("BEGIN")
        try:
            db.executemany(_INSERT, rows)
            exchanges = _exchanges(batch)
            if exchanges:
                db.executemany("INSERT OR REPLACE INTO traffic VALUES (?,?,?)", exchanges)
        except sqlite3.Error:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")
        return rows

    async def get(self, request_id: str) -> dict[str, Any] | None:
        """A request's record by id, from memory or the file."""
        record = self._recent.get(request_id)
        if isinstance(record, tuple):
            return _from_row(record)
        if record is not None:
            return record.to_dict()
        if self.shared is not None:  # maybe served by another replica
            row = await self.shared.read(request_id)
            return None if row is None else _from_row(row)
        if self.path is None:
            return None
        return await self._on_writer(self._read, request_id)

    def _read(self, request_id: str) -> dict[str, Any] | None:
        cursor = self._connection().execute(
            f"SELECT {', '.join(COLUMNS)} FROM requests WHERE id = ?", (request_id,)
        )
        row = cursor.fetchone()
        return None if row is None else _from_row(row)

    async def aclose(self) -> None:
        """Stop the writer and flush everything pending."""
        if self._task is not None:
            # Asked to stop as well as cancelled: a cancel that lands while the shared log's
            # driver waits on a database that stopped answering can be swallowed there, and
            # the writer would retry forever, holding the gateway's shutdown with it.
            self._stopping = True
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()
        if self._db is not None:
            await self._on_writer(self._db.close)
            self._db = None
        if self.shared is not None:
            await self.shared.aclose()
        self._writer.shutdown(wait=False)


OUTBOX = "requests-outbox.sqlite3"
"""The outbox's file name, beside `gateway.request_log`."""

OUTBOX_BATCH = 500
"""Records shipped from the outbox in one write."""

COLUMNS = (
    "id",
    "at",
    "key_id",
    "target",
    "api",
    "stream",
    "config_version",
    "status",
    "model",
    "provider_model",
    "latency_ms",
    "cost",
    "input_tokens",
    "output_tokens",
    "error",
    "decision",
    "tokens_estimated",
)
"""The request log's columns, in the tables' order (a column added later comes last)."""

_INSERT = (
    f"INSERT OR REPLACE INTO requests ({', '.join(COLUMNS)})"
    f" VALUES ({', '.join('?' for _ in COLUMNS)})"
)


def _rows(batch: list[RequestRecord]) -> list[tuple[Any, ...]]:
    """Each record as a row of `COLUMNS` (the decision tree as JSON text)."""
    return [
        (
            r.id,
            r.at,
            r.key_id,
            r.target,
            r.api,
            int(r.stream),
            r.config_version,
            r.status,
            r.model,
            r.provider_model,
            round(r.latency_ms, 3),
            r.cost,
            r.input_tokens,
            r.output_tokens,
            r.error,
            orjson.dumps(r.decision.to_dict()).decode() if r.decision else None,
            int(r.tokens_estimated),
        )
        for r in batch
    ]


def _exchanges(batch: list[RequestRecord]) -> list[tuple[str, str, str]]:
    """The captured exchanges of a batch: (id, messages as JSON, answer)."""
    return [
        (r.id, orjson.dumps(r.exchange.messages).decode(), r.exchange.answer)
        for r in batch
        if r.exchange is not None
    ]


def _from_row(row: tuple[Any, ...]) -> dict[str, Any]:
    out = dict(zip(COLUMNS, row, strict=True))
    out["stream"] = bool(out["stream"])
    out["tokens_estimated"] = bool(out["tokens_estimated"])
    out["decision"] = orjson.loads(out["decision"]) if out["decision"] else None
    return out


def read_traffic(
    path: Path, *, since: float | None = None, target: str | None = None, limit: int | None = None
) -> list[dict[str, Any]]:
    """The captured exchanges in the request log at `path`, oldest first: each request's id,
    time, target, answering model, config version, cost, latency, messages and answer.
    ValueError when there is no log there or it holds no traffic table."""
    where: list[str] = ["1"]
    args: list[float | str] = []
    if since is not None:
        where.append("r.at >= ?")
        args.append(since)
    if target is not None:
        where.append("r.target = ?")
        args.append(target)
    query = (
        "SELECT r.id, r.at, r.target, r.model, r.config_version, r.cost, r.latency_ms, "
        "t.messages, t.answer FROM traffic t JOIN requests r ON r.id = t.id "
        f"WHERE {' AND '.join(where)} ORDER BY r.at"
    )
    if limit is not None:
        query += f" LIMIT {int(limit)}"
    if not path.is_file():
        raise ValueError(f"no request log at {path}")
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)  # never creates one
    try:
        rows = db.execute(query, args).fetchall()
    except sqlite3.DatabaseError as exc:  # a log from before capture existed, or not a log
        raise ValueError(f"{path} holds no captured traffic ({exc})") from None
    finally:
        db.close()
    return exchange_dicts(rows)


def exchange_dicts(rows: Sequence[Sequence[Any]]) -> list[dict[str, Any]]:
    """Traffic rows (id, at, target, model, config_version, cost, latency_ms, messages JSON,
    answer) as the dicts `read_traffic` returns."""
    names = ("id", "at", "target", "model", "config_version", "cost", "latency_ms")
    return [
        {
            **dict(zip(names, row[:7], strict=True)),
            "messages": orjson.loads(row[7]),
            "answer": row[8],
        }
        for row in rows
    ]


def now() -> float:
    """Wall-clock seconds, for record timestamps."""
    return time.time()
