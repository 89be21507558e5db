"""The shared ledger behind a local outbox, so a process killed outright loses no row it had
written while the database was out of reach.

Each batch the `Ledger` writes lands first in a SQLite file on the host (the outbox, committed
before the write returns), and is then shipped to the shared ledger (PostgreSQL) and deleted
from the outbox. A database that is down or cut off costs nothing but time: its rows wait in the
outbox, and every later write (and `modelyard costs`) ships them once it answers. A process
killed outright (SIGKILL, the OOM killer) leaves its unshipped rows in the file, and the next
process on the host that writes the ledger or reads it ships them; the replicas of one host
share the file, and a row shipped twice (two of them at once, or a ship whose reply was lost)
counts once, by its `uid`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
from collections.abc import Sequence
from typing import Any

from modelyard.background import WriteOutage, detached
from modelyard.cost.ledger import (
    ALERT_COLUMNS,
    SPEND_COLUMNS,
    Keyed,
    KeyedAlert,
    LedgerFile,
    SqliteLedgerFile,
    alert_from_values,
    row_from_values,
)
from modelyard.loops import Slots
from modelyard.state.sqlite_worker import transaction

log = logging.getLogger("modelyard.ledger")


class OutboxLedgerFile:
    """A `LedgerFile` that writes through a local SQLite outbox to a shared one."""

    def __init__(
        self,
        shared: LedgerFile,
        outbox: SqliteLedgerFile,
        *,
        batch_size: int = 500,
        retry_every: float = 1.0,
    ) -> None:
        self.shared = shared
        self.outbox = outbox
        self.batch_size = batch_size
        self.where = shared.where
        self.backlog = True
        """Whether the outbox may hold rows not shipped yet (true at start: a process killed
        before this one may have left some)."""
        self._outage = WriteOutage(
            log,
            f"spend ledger {shared.where} (rows wait in {outbox.where})",
            items="row(s)",
            retry_every=retry_every,
        )
        self._shipping: asyncio.Task[None] | None = None
        self._lock = Slots(1)  # its callers may run on several event loops (threads)

    async def write(self, spend: Sequence[Keyed], alerts: Sequence[KeyedAlert]) -> None:
        """Commit the batch to the outbox, then ship what it holds in the background (a shared
        ledger that hangs holds no write); rows it cannot take wait for a later write."""
        if spend or alerts:
            await self.outbox.write(spend, alerts)
            self.backlog = True
        if self._shipping is None or self._shipping.done():
            self._shipping = detached(self.ship())

    async def ship(self) -> None:
        """Move what the outbox holds to the shared ledger, batch by batch, oldest first."""
        async with self._lock:
            await self._ship()

    async def _ship(self) -> None:
        if not self.outbox.path.exists():  # made by the first write to it
            self.backlog = False
        if not self.backlog:
            return
        shipped = 0
        while True:
            spend, alerts = await self.outbox.worker.run(self._oldest)
            if not spend and not alerts:
                self.backlog = False
                if shipped:
                    self._outage.written(shipped)
                return
            try:
                await self.shared.write(spend, alerts)
            except Exception as exc:
                if not self._outage.ongoing:
                    self._outage.failed(exc, await self.outbox.worker.run(_count))
                return
            uids = [(uid,) for uid, _ in spend] + [(uid,) for uid, _ in alerts]
            await self.outbox.worker.run(functools.partial(_delete, uids=uids))
            shipped += len(uids)

    def _oldest(self, conn: sqlite3.Connection) -> tuple[list[Keyed], list[KeyedAlert]]:
        spend = conn.execute(
            f"SELECT {SPEND_COLUMNS} FROM spend ORDER BY id LIMIT ?", (self.batch_size,)
        ).fetchall()
        alerts = conn.execute(
            f"SELECT {ALERT_COLUMNS} FROM alerts ORDER BY id LIMIT ?", (self.batch_size,)
        ).fetchall()
        return [row_from_values(r) for r in spend], [alert_from_values(r) for r in alerts]

    async def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Ship what waits in the outbox (so a report counts it), then query the shared ledger."""
        await self.ship()
        return await self.shared.query(sql, params)

    async def leave_loop(self) -> None:
        """The running loop is ending: let the shipping under way on it end (what it has not
        shipped waits in the outbox for the next write, on any loop), then close the shared
        ledger's connections on it."""
        await self._shipped_here()
        await self.shared.leave_loop()

    async def _shipped_here(self) -> None:
        """Wait for the shipping under way, if it runs on the running loop (one started on
        another loop ends there, or ended with its loop)."""
        shipping = self._shipping
        if shipping is not None and shipping.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([shipping])

    async def aclose(self) -> None:
        """Ship what still waits, then release both files."""
        await self._shipped_here()
        await self.ship()
        await self.shared.aclose()
        await self.outbox.aclose()


def _count(conn: sqlite3.Connection) -> int:
    """How many rows and alerts the outbox holds."""
    row = conn.execute("SELECT (SELECT count(*) FROM spend) + (SELECT count(*) FROM alerts)")
    count: int = row.fetchone()[0]
    return count


def _delete(conn: sqlite3.Connection, *, uids: list[tuple[str]]) -> None:
    """Remove the shipped rows and alerts from the outbox, in one transaction."""

    def apply(conn: sqlite3.Connection) -> None:
        conn.executemany("DELETE FROM spend WHERE uid = ?", uids)
        conn.executemany("DELETE FROM alerts WHERE uid = ?", uids)

    transaction(conn, apply)
