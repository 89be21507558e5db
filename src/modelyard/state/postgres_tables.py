"""Tables of modelyard's own in PostgreSQL (shared state, ledger, request log, virtual keys): a
pool whose tables are made (and migrated) once, under a prefix several deployments can tell
apart; a database that cannot be reached or used is one `UnavailableError` naming the setting
that points at it (never its password)."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from modelyard.errors import ConfigError, UnavailableError, redact, url_origin
from modelyard.loops import PerLoop

T = TypeVar("T")

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Index:
    """A migration step that builds an index without blocking writes to its table (`CREATE
    INDEX CONCURRENTLY`, which runs outside any transaction): a build on a large table holds
    no lock that stops the replicas writing. An index a failed build left invalid is dropped
    and built again. `name` and `table` hold `{p}` for the prefix."""

    name: str
    table: str
    columns: str
    unique: bool = False

    async def apply(self, conn: Any, prefix: str) -> None:
        """Build it (the connection in no transaction)."""
        name, table = self.name.format(p=prefix), self.table.format(p=prefix)
        valid = await conn.fetchval(
            "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass($1)", name
        )
        if valid is False:
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {name}")
        unique = "UNIQUE " if self.unique else ""
        await conn.execute(
            f"CREATE {unique}INDEX CONCURRENTLY IF NOT EXISTS {name} ON {table} ({self.columns})"
        )


Migration = tuple[str, str | Index]
"""A name, and a script (statements with `{p}` for the prefix, run in one transaction) or an
index built concurrently."""


@contextlib.asynccontextmanager
async def _locked(conn: Any, name: str) -> AsyncIterator[None]:
    """Hold the advisory lock `name` for the session (of every process that uses the
    database). Polled, not waited for inside a statement: a session waiting there holds a
    snapshot, which an index build of the holder (`Index`) would wait on in turn."""
    # The holder is another session, maybe on another host: no Event to wait on (ASYNC110).
    while not await conn.fetchval("SELECT pg_try_advisory_lock(hashtext($1))", name):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock(hashtext($1))", name)


async def _migrate(conn: Any, component: str, migrations: Sequence[Migration], prefix: str) -> None:
    """Apply the `migrations` `component` has not, each in its own transaction (an `Index`
    in none), under a lock of the component's: replicas starting together apply each once,
    and an index building for one component holds up no other's start."""
    async with _locked(conn, "modelyard-migrations"):
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS modelyard_migrations ("
            " component TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (component, name))"
        )
    async with _locked(conn, f"modelyard-migrations:{component}"):
        done = {
            r["name"]
            for r in await conn.fetch(
                "SELECT name FROM modelyard_migrations WHERE component = $1", component
            )
        }
        record = "INSERT INTO modelyard_migrations VALUES ($1, $2)"
        for name, step in migrations:
            if name in done:
                continue
            if isinstance(step, Index):
                await step.apply(conn, prefix)
                await conn.execute(record, component, name)
                continue
            async with conn.transaction():
                await conn.execute(step.format(p=prefix))
                await conn.execute(record, component, name)


async def open_pool(
    url: str,
    *,
    component: str,
    migrations: Sequence[Migration],
    prefix: str,
    timeout: float,  # noqa: ASYNC109 (asyncpg's own connect timeout, not a wait of ours)
    size: int = 4,
    migrate: bool = True,
) -> Any:
    """A pool to `url` with `migrations` applied once per `component` (`_migrate`), unless
    not `migrate` (applied by a pool before). A pool whose migration fails is closed: a retry
    must not leave a connection open."""
    import asyncpg

    # One connection made now (a wrong URL fails here), and no floor kept after: asyncpg
    # restores a floor from a background task that, while the server is down, logs a full
    # traceback at each try (every minute, once backed off). The store's users see an outage
    # on their next call and say so once (`PolicyStore`, `WriteOutage`, the key ring).
    pool = await asyncpg.create_pool(url, init_size=1, min_size=0, max_size=size, timeout=timeout)
    if not migrate:
        return pool
    try:
        async with pool.acquire() as conn:
            await _migrate(conn, component, migrations, prefix)
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
    them, `setting` is where the config names the database. The tables are made on first use,
    and a pool on each event loop's first use (asyncpg's connections serve only the loop that
    opened them, and a library yard may serve several: one `asyncio.run` after another, or
    threads' loops at once), closed at that loop's end (`leave_loop`) or, on its own loop, at
    `aclose`. Nothing a statement relies on is kept per connection: no session state, and
    asyncpg's prepared statements are its own cache, per connection."""

    component: ClassVar[str]
    tables: ClassVar[tuple[str, ...]]
    migrations: ClassVar[Sequence[Migration]]
    setting: ClassVar[str]
    """The config setting holding the URL, as errors name it (`ledger.url`)."""
    pool_size: ClassVar[int] = 4

    def __init__(self, url: str, *, table_prefix: str = "modelyard_", timeout: float = 5.0) -> None:
        self.url = url
        self.p = check_prefix(table_prefix)
        self.timeout = timeout
        self.source = f"{self.setting} ({url_origin(url)})"
        """The setting and the server it names, for messages."""
        self._pools: PerLoop[Any] = PerLoop()
        self._opening: PerLoop[asyncio.Lock] = PerLoop()
        """Each loop's lock while its pool is being opened: its callers wait for the one."""
        self._migrated = False
        self._giving_back: set[asyncio.Future[None]] = set()
        """Connections going back to the pool after their work timed out (`_give_back_later`)."""
        parts = urlsplit(url)
        self._secrets = (parts.password, parts.query)  # the query may hold `password=`

    async def _get_pool(self) -> Any:
        """The running loop's pool: one dict look-up, once it is open."""
        pool = self._pools.get(asyncio.get_running_loop())
        return pool if pool is not None else await self._open_pool()

    async def _open_pool(self) -> Any:
        loop = asyncio.get_running_loop()
        lock = self._opening.get(loop) or self._opening.put(loop, asyncio.Lock())
        async with lock:
            pool = self._pools.get(loop)
            if pool is None:
                try:
                    pool = await open_pool(
                        self.url,
                        component=f"{self.component}:{self.p}",
                        migrations=self.migrations,
                        prefix=self.p,
                        timeout=self.timeout,
                        size=self.pool_size,
                        migrate=not self._migrated,
                    )
                except ModuleNotFoundError as exc:
                    if exc.name != "asyncpg":
                        raise
                    needs = "PostgreSQL needs asyncpg: pip install 'modelyard[postgres]'"
                    raise ConfigError(f"{self.source}: {needs}") from None
                except Exception as exc:
                    if (error := self.unavailable(exc)) is None:
                        raise
                    raise error from exc
                self._migrated = True
                self._pools.put(loop, pool)
        return pool

    async def _with(self, work: Callable[[Any], Awaitable[T]], *, bounded: bool = True) -> T:
        """`work` on a pooled connection, a database that cannot be reached or used raising
        `unavailable`'s error, as does one that has not done `work` within `timeout` seconds
        (unless not `bounded`: work of many statements, each with a timeout of its own)."""
        try:
            pool = await self._get_pool()
            try:
                # The pool's timeout bounds connecting and giving the connection back, not
                # the work: a server that stops answering (a partition, a lock held by a
                # stalled session) would hold every request on the state store until the
                # outage ends, and `on_unavailable` would never apply.
                conn = await pool.acquire(timeout=self.timeout)
                try:
                    async with asyncio.timeout(self.timeout if bounded else None):
                        result = await work(conn)
                except TimeoutError:
                    self._give_back_later(pool, conn)
                    raise
                except BaseException:
                    await pool.release(conn)
                    raise
                await pool.release(conn)
                return result
            except TimeoutError:
                raise TimeoutError(f"no answer within {self.timeout:g} s") from None
        except Exception as exc:
            if (error := self.unavailable(exc)) is None:
                raise
            raise error from exc

    def _give_back_later(self, pool: Any, conn: Any) -> None:
        """Give back a connection whose work timed out, in the background: the pool first
        waits for the server to cancel the query, as long again as `timeout` when it does not
        answer, and the caller was promised an answer within `timeout` (a request on a state
        store 2 s away waited 2 s, not 1). The pool's own timeout bounds that wait."""

        async def give_back() -> None:
            with contextlib.suppress(Exception):  # the pool has dropped the connection then
                await pool.release(conn)

        task = asyncio.ensure_future(give_back())
        self._giving_back.add(task)
        task.add_done_callback(self._giving_back.discard)

    def unavailable(self, exc: BaseException) -> UnavailableError | None:
        """`exc` as the error that says the database cannot be reached or used (code
        `{component}_unavailable`), or None when it says something else (a bug of ours, or
        already that error)."""
        if not isinstance(exc, OSError | TimeoutError) and not _from_asyncpg(exc):
            return None
        detail = redact(f"{type(exc).__name__}: {exc}", *self._secrets)
        return UnavailableError(
            f"{self.source}: cannot use the {self.component} tables: {detail}",
            code=f"{self.component}_unavailable",
        )

    async def drop_tables(self) -> None:
        """Drop these tables (tests)."""
        pool = await self._get_pool()
        await drop(pool, f"{self.component}:{self.p}", [self.p + t for t in self.tables])

    async def leave_loop(self) -> None:
        """The running loop is ending: close its pool (the next call on another loop opens
        one there)."""
        await self._pools.leave(self._close_pool)

    async def aclose(self) -> None:
        """Close every loop's pool, each on its own loop (`PerLoop.close_all`)."""
        await self._pools.close_all(self._close_pool)

    async def _close_pool(self, pool: Any) -> None:
        """Close `pool`: gracefully if the server answers within `timeout`, else at once (a
        shutdown must not wait on a server that stopped answering)."""
        try:
            async with asyncio.timeout(self.timeout):
                await pool.close()
        except TimeoutError:
            pool.terminate()


_UNUSABLE = ("08", "28", "3D", "53", "57", "42501")
"""SQLSTATEs (classes, and one code) that say the server cannot be used as configured: a
connection lost or refused, a login refused, no such database, out of connections or room,
shut down, not allowed. Others (a syntax error) are bugs of ours and stay as they are."""


def _from_asyncpg(exc: BaseException) -> bool:
    if not type(exc).__module__.startswith("asyncpg"):
        return False
    state = getattr(exc, "sqlstate", None)  # none on the client's own errors (pool closed)
    return not state or state.startswith(_UNUSABLE)
