"""The spend ledger: what every request spent, by system, model, key, tag and day.

`Ledger.record` only appends to an in-memory queue; a background task writes the queue in
batches (every `flush_interval` seconds, or sooner when `batch_size` rows wait), so the request
path never waits on disk. `aclose()` writes whatever is still queued: nothing is lost at a clean
shutdown. Alerts are kept in the same file so `modelyard costs` can list them.

Each row and alert gets an id when queued (`uid`, unique in its table), and a write inserts
only the ids not there yet: a batch written again after a failure that came after its commit
(a reply lost on the way back from PostgreSQL, a write cut by a cancel) counts each row once.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from modelyard.background import WriteOutage, detached
from modelyard.cost.alerts import Alert
from modelyard.loops import PerLoop, Slots
from modelyard.state.sqlite_worker import Migration, SqliteWorker, transaction

log = logging.getLogger("modelyard.ledger")

MIGRATIONS: list[Migration] = [
    (
        "001_spend",
        """
        CREATE TABLE spend (
            id INTEGER PRIMARY KEY, at REAL NOT NULL, day TEXT NOT NULL,
            request_id TEXT NOT NULL, system TEXT NOT NULL, model TEXT NOT NULL,
            key_id TEXT, tags TEXT NOT NULL DEFAULT '[]', cost REAL NOT NULL,
            saved REAL NOT NULL DEFAULT 0, cached INTEGER NOT NULL DEFAULT 0,
            answered INTEGER NOT NULL DEFAULT 0, error TEXT,
            input_tokens INTEGER NOT NULL DEFAULT 0, output_tokens INTEGER NOT NULL DEFAULT 0);
        CREATE INDEX spend_day ON spend (day);
        CREATE INDEX spend_system_day ON spend (system, day);
        CREATE TABLE alerts (
            id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, place TEXT NOT NULL,
            message TEXT NOT NULL, value REAL, threshold REAL, details TEXT NOT NULL DEFAULT '{}');
        CREATE INDEX alerts_at ON alerts (at)
        """,
    ),
    (
        "002_tokens_estimated",
        "ALTER TABLE spend ADD COLUMN tokens_estimated INTEGER NOT NULL DEFAULT 0",
    ),
    (
        "003_uid",
        """
        ALTER TABLE spend ADD COLUMN uid TEXT;
        CREATE UNIQUE INDEX spend_uid ON spend (uid);
        ALTER TABLE alerts ADD COLUMN uid TEXT;
        CREATE UNIQUE INDEX alerts_uid ON alerts (uid)
        """,
    ),
    (
        "004_refused",
        "ALTER TABLE spend ADD COLUMN refused INTEGER NOT NULL DEFAULT 0",
    ),
]
"""Append-only: add a new entry for any schema change."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpendRow:
    """What one model call within one request spent (a request has one row per model it used)."""

    at: float
    day: str
    request_id: str
    system: str
    model: str
    cost: float
    key_id: str | None = None
    tags: tuple[str, ...] = ()
    saved: float = 0.0
    cached: bool = False
    answered: bool = False
    error: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    tokens_estimated: bool = False
    """Whether the tokens are modelyard's estimate (a failed call's cost was worked out from
    them, or the provider reported none), not the provider's count."""
    refused: bool = False
    """Whether the gateway itself refused the call before it left (its own client-side rate
    limit; a budget, with model `(none)`): nothing reached a provider, nothing was spent."""


Keyed = tuple[str, SpendRow]
"""A spend row and its `uid`."""

KeyedAlert = tuple[str, Alert]
"""An alert and its `uid`."""

SPEND_COLUMNS = (
    "uid, at, day, request_id, system, model, key_id, tags, cost, saved, cached, answered,"
    " error, input_tokens, output_tokens, tokens_estimated, refused"
)
"""The columns of `row_values`, in order."""

SPEND_WIDTH = SPEND_COLUMNS.count(",") + 1
"""How many columns `row_values` fills."""

ALERT_COLUMNS = "uid, at, kind, place, message, value, threshold, details"
"""The columns of `alert_values`, in order."""


def row_values(keyed: Keyed) -> tuple[Any, ...]:
    """The row's column values, in `SPEND_COLUMNS` order (tags as JSON text)."""
    uid, row = keyed
    return (
        uid,
        row.at,
        row.day,
        row.request_id,
        row.system,
        row.model,
        row.key_id,
        json.dumps(list(row.tags)),
        row.cost,
        row.saved,
        int(row.cached),
        int(row.answered),
        row.error,
        row.input_tokens,
        row.output_tokens,
        int(row.tokens_estimated),
        int(row.refused),
    )


def alert_values(keyed: KeyedAlert) -> tuple[Any, ...]:
    """The alert's column values, in `ALERT_COLUMNS` order (details as JSON text)."""
    uid, a = keyed
    return (uid, a.at, a.kind, a.where, a.message, a.value, a.threshold, json.dumps(a.details))


def row_from_values(values: tuple[Any, ...]) -> Keyed:
    """A row read back in `SPEND_COLUMNS` order: the inverse of `row_values`."""
    (uid, at, day, request_id, system, model, key_id, tags, cost, saved, cached, answered,
     error, input_tokens, output_tokens, tokens_estimated, refused) = values  # fmt: skip
    row = SpendRow(
        at=at,
        day=day,
        request_id=request_id,
        system=system,
        model=model,
        cost=cost,
        key_id=key_id,
        tags=tuple(json.loads(tags)),
        saved=saved,
        cached=bool(cached),
        answered=bool(answered),
        error=error,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        tokens_estimated=bool(tokens_estimated),
        refused=bool(refused),
    )
    return uid, row


def alert_from_values(values: tuple[Any, ...]) -> KeyedAlert:
    """An alert read back in `ALERT_COLUMNS` order: the inverse of `alert_values`."""
    uid, at, kind, where, message, value, threshold, details = values
    alert = Alert(
        kind=kind,
        where=where,
        message=message,
        value=value,
        threshold=threshold,
        details=json.loads(details),
        at=at,
    )
    return uid, alert


@dataclass(slots=True)
class _Pending:
    spend: list[Keyed] = field(default_factory=list)
    alerts: list[KeyedAlert] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.spend) + len(self.alerts)


class LedgerFile(Protocol):
    """Where the ledger is kept: a SQLite file per process, or PostgreSQL tables every
    replica shares (`cost.ledger_postgres`)."""

    where: str
    """What to name in a log line."""

    backlog: bool
    """Whether rows written earlier still wait to reach their place (a shared ledger behind a
    local outbox, `cost.ledger_outbox`): the writer then calls `write` with nothing new."""

    async def write(self, spend: Sequence[Keyed], alerts: Sequence[KeyedAlert]) -> None:
        """Insert a batch in one transaction, skipping the uids already there."""

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (SQLite's dialect)."""

    async def leave_loop(self) -> None:
        """The running event loop is ending: close the connections opened on it."""

    async def aclose(self) -> None:
        """Release the file or connections."""


class SqliteLedgerFile:
    """Reads and writes the ledger's SQLite file (on a worker thread)."""

    backlog = False

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.where = str(self.path)
        self.worker = SqliteWorker(path, component="ledger", migrations=MIGRATIONS)

    async def write(self, spend: Sequence[Keyed], alerts: Sequence[KeyedAlert]) -> None:
        """Insert a batch in one transaction, skipping the uids already there."""

        def apply(conn: sqlite3.Connection) -> None:
            conn.executemany(
                f"INSERT INTO spend ({SPEND_COLUMNS}) VALUES ({', '.join('?' * SPEND_WIDTH)})"
                " ON CONFLICT (uid) DO NOTHING",
                [row_values(r) for r in spend],
            )
            conn.executemany(
                f"INSERT INTO alerts ({ALERT_COLUMNS}) VALUES ({', '.join('?' * 8)})"
                " ON CONFLICT (uid) DO NOTHING",
                [alert_values(a) for a in alerts],
            )

        await self.worker.run(lambda conn: transaction(conn, apply))

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query."""
        return await self.worker.run(lambda conn: conn.execute(sql, tuple(params)).fetchall())

    async def leave_loop(self) -> None:
        """Nothing is bound to a loop: the file is used from a thread of its own."""

    async def aclose(self) -> None:
        """Close the file."""
        await self.worker.aclose()


@dataclass(slots=True, eq=False)
class _Writer:
    """The background task writing the ledger on one event loop, and how it is woken."""

    wake: asyncio.Event
    task: asyncio.Task[None] | None = None
    stopping: bool = False


class Ledger:
    """Queues spend rows and alerts and writes them in batches from a background task: one on
    each event loop recording rows (a library yard may serve several at once, in threads),
    all writing the one queue."""

    def __init__(
        self,
        file: LedgerFile,
        *,
        flush_interval: float = 1.0,
        batch_size: int = 500,
        max_queue: int = 100_000,
    ) -> None:
        self.file = file
        self.flush_interval = flush_interval
        self.batch_size = batch_size
        self.max_queue = max_queue
        self._pending = _Pending()
        self._queue_guard = threading.Lock()
        """Held to queue rows and to take the queue: threads' loops record at once."""
        self._writers: PerLoop[_Writer] = PerLoop()
        self._lock = Slots(1)
        """One flush at a time, whichever loop it runs on: one returning has written all that
        was queued before it (`aclose` counts on that)."""
        self.dropped = 0
        self.written = 0
        self._uid_prefix = uuid.uuid4().hex[:16] + "-"
        self._uids = itertools.count()
        self._outage = WriteOutage(
            log, f"spend ledger {file.where}", items="row(s)", retry_every=flush_interval
        )

    def _uid(self) -> str:
        """An id no other row or process uses: what makes writing a batch twice harmless."""
        return f"{self._uid_prefix}{next(self._uids)}"

    def record(self, rows: Sequence[SpendRow]) -> None:
        """Queue spend rows; never waits."""
        with self._queue_guard:
            if len(self._pending) + len(rows) > self.max_queue:
                self.dropped += len(rows)
                full = True
            else:
                self._pending.spend.extend((self._uid(), row) for row in rows)
                full = False
        if full:
            self._outage.dropped(len(rows), self.max_queue)
            return
        self._kick()

    def record_alert(self, alert: Alert) -> None:
        """Queue an alert; never waits."""
        with self._queue_guard:
            self._pending.alerts.append((self._uid(), alert))
        self._kick()

    def _kick(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # a synchronous caller: written at the next flush or at aclose
        writer = self._writers.get(loop)
        if writer is None or writer.task is None or writer.task.done():
            writer = self._writers.put(loop, _Writer(asyncio.Event()))
            writer.task = detached(self._run(writer))
        if len(self._pending) >= self.batch_size:
            writer.wake.set()

    async def _run(self, writer: _Writer) -> None:
        while not writer.stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.flush_interval):
                    await writer.wake.wait()
            writer.wake.clear()
            await self.flush()

    def _take(self) -> _Pending:
        with self._queue_guard:
            batch, self._pending = self._pending, _Pending()
        return batch

    def _put_back(self, batch: _Pending) -> None:
        """Queue `batch` again, in front of what was queued since it was taken."""
        with self._queue_guard:
            batch.spend.extend(self._pending.spend)
            batch.alerts.extend(self._pending.alerts)
            self._pending = batch

    async def flush(self) -> None:
        """Write everything queued so far."""
        async with self._lock:
            while len(self._pending):
                batch = self._take()
                try:
                    await self.file.write(batch.spend, batch.alerts)
                except BaseException as exc:  # a disk, a database down: nothing may be lost
                    # Keep the rows for the next try, in front of the newer ones; a cancel too
                    # (the uids make a batch that was written after all count once).
                    self._put_back(batch)
                    if not isinstance(exc, Exception):
                        raise
                    self._outage.failed(exc, len(self._pending))
                    return
                self.written += len(batch.spend)
                self._outage.written(len(batch))
            if self.file.backlog:
                await self.file.write((), ())

    async def _stop_writer(self) -> None:
        """Stop the running loop's writer; a writer on a loop that is gone (a closed test
        loop) is forgotten."""
        here = asyncio.get_running_loop()
        for loop in [loop for loop in self._writers if loop is here or loop.is_closed()]:
            writer = self._writers.pop(loop, None)
            if writer is None or writer.task is None or writer.task.done():
                continue
            if loop is here:
                # Asked to stop rather than cancelled: a cancel that lands as a full batch wakes
                # the writer can be swallowed by the wait (Python 3.11), leaving aclose waiting.
                # Waited for, not awaited: at a loop's end its runner may have cancelled it.
                writer.stopping = True
                writer.wake.set()
                await asyncio.wait([writer.task])
            else:
                writer.task.cancel()

    async def leave_loop(self) -> None:
        """The running loop is ending: stop its writer, if it has one, and write what is
        queued, then close the file's connections on it (a shared ledger's pool); the next row
        recorded on another loop starts one there."""
        if asyncio.get_running_loop() in self._writers:
            await self._stop_writer()
            await self.flush()
        await self.file.leave_loop()

    async def aclose(self) -> None:
        """Stop the background task and write what is still queued (the writers of other
        loops still running stop at their loop's end, with nothing left to write)."""
        await self._stop_writer()
        await self.flush()
        await self.file.aclose()
