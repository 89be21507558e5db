"""One SQLite connection driven from one worker thread, so no query blocks the event loop.

Every store that keeps data in SQLite (state counters, the spend ledger, the response cache)
talks to its file through a `SqliteWorker`: calls are functions of the connection, run in order
on the worker's own thread. The file is opened in WAL mode with a busy timeout, so several
processes on one host may share it; `BEGIN IMMEDIATE` transactions make check-and-change
operations atomic across them.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from modelyard.state.folders import private_folder

T = TypeVar("T")

Migration = tuple[str, str]
"""(name, SQL script): one schema change. Lists of them are append-only: never edit or reorder
an entry that has shipped; add a new one."""


def apply_migrations(conn: sqlite3.Connection, component: str, steps: Sequence[Migration]) -> None:
    """Run the steps of `component` not yet recorded in the file, in order, each recorded once."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS _migrations ("
        " component TEXT NOT NULL, name TEXT NOT NULL, applied_at REAL NOT NULL,"
        " PRIMARY KEY (component, name))"
    )
    done = {
        row[0]
        for row in conn.execute("SELECT name FROM _migrations WHERE component = ?", (component,))
    }
    for name, script in steps:
        if name in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have applied it while we waited for the lock.
            exists = conn.execute(
                "SELECT 1 FROM _migrations WHERE component = ? AND name = ?", (component, name)
            ).fetchone()
            if exists is None:
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO _migrations VALUES (?, ?, ?)", (component, name, time.time())
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def open_wal(path: str | Path, *, timeout: float, **options: bool) -> sqlite3.Connection:
    """A connection to `path` in WAL mode, waiting up to `timeout` seconds for other processes'
    locks. Two processes opening a new file at once both switch it to WAL, and SQLite answers
    the loser "database is locked" at once, without its busy handler (it could deadlock): that
    answer is retried here until the timeout (it had failed one start in five of two stores)."""
    conn = sqlite3.connect(path, timeout=timeout, isolation_level=None, **options)
    give_up = time.monotonic() + timeout
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= give_up:
                conn.close()
                raise
            time.sleep(0.01)


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


class SqliteWorker:
    """A SQLite file opened lazily on a private thread; `run(fn)` calls `fn(connection)` there."""

    def __init__(
        self,
        path: str | Path,
        *,
        component: str,
        migrations: Sequence[Migration],
        busy_timeout: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self._component = component
        self._migrations = tuple(migrations)
        self._busy_timeout = busy_timeout
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"sqlite-{component}")
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if str(self.path) != ":memory:":
                private_folder(self.path.parent)
            conn = open_wal(self.path, timeout=self._busy_timeout, check_same_thread=False)
            conn.execute("PRAGMA synchronous=NORMAL")
            apply_migrations(conn, self._component, self._migrations)
            self._conn = conn
        return self._conn

    def call(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run `function` on the worker thread and wait for it (for synchronous callers)."""
        return self._executor.submit(lambda: function(self._connection())).result()

    async def run(self, function: Callable[[sqlite3.Connection], T]) -> T:
        """Run `function(connection)` on the worker thread without blocking the event loop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: function(self._connection()))

    async def aclose(self) -> None:
        """Close the connection and stop the thread."""
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    def close(self) -> None:
        """Close from synchronous code."""
        self._executor.submit(self._close).result()
        self._executor.shutdown(wait=True)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def transaction(conn: sqlite3.Connection, function: Callable[[sqlite3.Connection], T]) -> T:
    """Run `function` inside `BEGIN IMMEDIATE` ... `COMMIT` (rolled back if it raises)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = function(conn)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
