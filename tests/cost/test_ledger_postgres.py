"""The spend ledger in PostgreSQL: replicas write one ledger and every report reads all of it.
Talks to the real server at 127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest
from typer.testing import CliRunner

import modelyard
from modelyard.cli import app
from modelyard.cost import reports
from modelyard.cost.alerts import Alert
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget
from modelyard.cost.ledger import Ledger, SpendRow
from modelyard.cost.ledger_postgres import MIGRATIONS, PostgresLedgerFile
from modelyard.state.memory import MemoryStore
from tests.conftest import outage_told, relayed_postgres
from tests.fakes.server import free_port
from tests.fakes.tcp_relay import TcpRelay
from tests.state.conftest import POSTGRES_URL, fresh_tables
from tests.state.test_postgres import answered

pytestmark = pytest.mark.postgres


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Tables no other test run uses, dropped afterwards."""
    async for name in fresh_tables(PostgresLedgerFile):
        yield name


def spent(i: int, system: str, tags: tuple[str, ...] = ()) -> SpendRow:
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return SpendRow(
        at=time.time(), day=day, request_id=f"r{i}", system=system, model="m", cost=0.25, tags=tags
    )


async def test_two_replicas_write_one_ledger_and_reports_read_all_of_it(prefix: str) -> None:
    replicas = [
        Ledger(PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix), flush_interval=60)
        for _ in range(2)
    ]
    for n, ledger in enumerate(replicas):
        for i in range(3):
            ledger.record([spent(10 * n + i, "support", tags=("customer:acme",))])
        ledger.record_alert(Alert(kind="budget_threshold", where="b", message=f"from {n}"))
    for ledger in replicas:
        await ledger.aclose()
    file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
    try:
        (system,) = await reports.spend_by(file, "system", days=1)
        assert (system.name, system.requests, system.cost) == ("support", 6, 1.5)
        (tag,) = await reports.spend_by(file, "tag", days=1)
        assert (tag.name, tag.cost) == ("customer:acme", 1.5)
        budget = Budget(name="acme", scope="tag", selector="*", window="day", limit=10.0)
        (line,) = await reports.budget_lines(BudgetBook(MemoryStore()), [budget], file)
        assert (line.subject, line.spent, line.source) == ("customer:acme", 1.5, "ledger")
        messages = sorted(row[3] for row in await reports.recent_alerts(file))
        assert messages == ["from 0", "from 1"]
    finally:
        await file.aclose()


def test_costs_shows_what_every_replica_spent(
    prefix: str, write_config: Callable[[str], Path]
) -> None:
    config = write_config(
        "models:\n  m: {local: {type: fake, default: answer}, price: {input: 1000, output: 1000}}\n"
        f"ledger: {{backend: postgres, url: '{POSTGRES_URL}', table_prefix: {prefix}}}\n"
    )
    costs = []
    for _ in range(2):  # two processes' worth of yards, one after the other
        with modelyard.load_sync(config) as yard:
            costs.append(yard.complete("m", "hello").cost)
    result = CliRunner().invoke(app, ["costs", str(config)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    line = next(x for x in result.stdout.splitlines() if x.strip().startswith("│ m "))
    assert f"{sum(costs):.6f}" in line  # both yards' spend, read from the shared tables
    assert not (config.parent / ".modelyard").exists() or not list(
        (config.parent / ".modelyard").glob("*/ledger.db")
    )


async def test_a_ledger_that_cannot_make_its_tables_leaves_no_connection_open() -> None:
    import asyncpg

    # The ledger's own connections, by a name of this test's: other runs on the same server
    # (a developer's, a helper's) open and close theirs meanwhile.
    name = f"ledger_test_{uuid.uuid4().hex[:8]}"

    async def connections() -> int:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            count: int = await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1", name
            )
            return count
        finally:
            await conn.close()

    file = PostgresLedgerFile(f"{POSTGRES_URL}?application_name={name}", table_prefix="ok_")
    file.p = "9x_"  # a name PostgreSQL refuses: the migration fails on every try
    before = await connections()
    for _ in range(3):
        with pytest.raises(asyncpg.PostgresError):
            await file.write([("u1", spent(1, "s"))], [])
    assert await connections() <= before
    with pytest.raises(ValueError, match="must start with a letter"):
        PostgresLedgerFile(POSTGRES_URL, table_prefix="9x_")


def test_a_ledger_that_cannot_be_reached_is_named_not_reported_as_output(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    url = f"postgresql://spender:hunter2-secret@127.0.0.1:{free_port()}/test"
    config.write_text(
        f"models:\n  m:\n    local: {{type: fake}}\nledger: {{backend: postgres, url: '{url}'}}\n"
    )
    shown = CliRunner().invoke(app, ["costs", str(config)])
    assert shown.exit_code == 1, shown.output
    assert "ledger.url (postgresql://127.0.0.1:" in shown.output
    assert "cannot use the ledger tables" in shown.output and "output failed" not in shown.output
    assert "hunter2" not in shown.output


async def test_a_ledger_whose_database_stops_answering_names_it_and_still_closes(
    prefix: str, postgres_relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    ledger = Ledger(PostgresLedgerFile(url, table_prefix=prefix, timeout=0.3), flush_interval=60)
    try:
        ledger.record([spent(1, "s")])
        await ledger.flush()
        relay.stall()
        ledger.record([spent(2, "s")])
        # A shutdown must not wait on a database that no longer answers (SIGTERM would hang
        # until the process is killed); the row it could not write is reported.
        await answered(ledger.aclose())
    finally:
        relay.flow()
    failures = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert failures and "ledger.url" in failures[-1] and "no answer within 0.3 s" in failures[-1]
    file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
    try:
        (system,) = await reports.spend_by(file, "system", days=1)
        assert system.requests == 1
    finally:
        await file.aclose()


async def test_an_outage_is_one_line_and_its_end_another_with_no_traceback(
    prefix: str, postgres_relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    ledger = Ledger(PostgresLedgerFile(url, table_prefix=prefix, timeout=0.5), flush_interval=60)
    try:
        ledger.record([spent(1, "s")])
        await ledger.flush()  # connected, tables made
        with caplog.at_level(logging.INFO):
            relay.cut()
            for i in range(2, 6):
                ledger.record([spent(i, "s")])
                await ledger.flush()
                await asyncio.sleep(0.4)  # time for a pool to try to reconnect by itself
            relay.restore()
            await ledger.flush()
    finally:
        await ledger.aclose()
    began, ended = outage_told(caplog, "modelyard.ledger")
    assert "ledger.url (postgresql://127.0.0.1:" in began and "cannot write" in began
    assert "keeping the 1 row(s) waiting" in began and "retrying every 60 s" in began
    assert "writing again after" in ended and "wrote the 4 row(s) held back" in ended
    file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
    try:
        (system,) = await reports.spend_by(file, "system", days=1)
        assert system.requests == 5
    finally:
        await file.aclose()


async def test_a_batch_whose_commit_reply_was_lost_is_written_once(
    prefix: str, postgres_relay: TcpRelay
) -> None:
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    ledger = Ledger(PostgresLedgerFile(url, table_prefix=prefix, timeout=0.5), flush_interval=60)
    ledger.record_alert(Alert(kind="budget_threshold", where="b", message="once"))
    await ledger.flush()  # tables made, the pool open
    ledger.record([spent(1, "s"), spent(2, "s")])
    ledger.record_alert(Alert(kind="budget_threshold", where="b", message="twice?"))
    relay.lose_replies_after(b"COMMIT")
    await ledger.flush()  # committed, but the reply never came: kept to retry
    assert ledger.written == 0
    relay.flow()
    await answered(ledger.aclose())  # the retry
    file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
    try:
        (system,) = await reports.spend_by(file, "system", days=1)
        assert (system.requests, system.cost) == (2, 0.5)
        assert sorted(row[3] for row in await reports.recent_alerts(file)) == ["once", "twice?"]
    finally:
        await file.aclose()


async def test_rows_written_before_uids_are_kept_by_the_migration(prefix: str) -> None:
    import asyncpg

    from modelyard.cost.ledger_postgres import MIGRATIONS

    conn = await asyncpg.connect(POSTGRES_URL)
    try:  # the tables as an older modelyard left them, with two rows alike
        for name, script in MIGRATIONS[:2]:
            await conn.execute(script.format(p=prefix))
            await conn.execute(
                "INSERT INTO modelyard_migrations VALUES ($1, $2)", f"ledger:{prefix}", name
            )
        for _ in range(2):
            await conn.execute(
                f"INSERT INTO {prefix}spend (at, day, request_id, system, model, cost)"
                " VALUES ($1, to_char(now(), 'YYYY-MM-DD'), 'old', 's', 'm', 0.25)",
                time.time(),
            )
    finally:
        await conn.close()
    # Two replicas start at once: one migrates, the other finds it done.
    replicas = [Ledger(PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)) for _ in range(2)]
    for n, ledger in enumerate(replicas):
        ledger.record([spent(n, "s")])
    await asyncio.gather(*(ledger.flush() for ledger in replicas))
    for ledger in replicas:
        await ledger.aclose()
    file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
    try:
        rows = await file.query("SELECT request_id, uid IS NULL FROM spend")
        assert sorted(rows) == [("old", True), ("old", True), ("r0", False), ("r1", False)]
    finally:
        await file.aclose()


async def uid_indexes(conn: asyncpg.Connection, prefix: str) -> dict[str, tuple[bool, bool]]:
    """Each uid index of the ledger's tables: (valid, unique)."""
    rows = await conn.fetch(
        "SELECT c.relname, i.indisvalid, i.indisunique FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = ANY($1)",
        [f"{prefix}spend_uid", f"{prefix}alerts_uid"],
    )
    return {r["relname"].removeprefix(prefix): (r["indisvalid"], r["indisunique"]) for r in rows}


async def before_uids(conn: asyncpg.Connection, prefix: str, *, columns: bool) -> None:
    """The tables as a modelyard before uids left them (with the uid columns, if `columns`:
    a deployment whose indexes are still to build)."""
    for name, step in MIGRATIONS:
        if name == "003_uid" and not columns:
            break
        if not isinstance(step, str):
            break
        await conn.execute(step.format(p=prefix))
        await conn.execute(
            "INSERT INTO modelyard_migrations VALUES ($1, $2)", f"ledger:{prefix}", name
        )


async def test_an_index_a_failed_build_left_invalid_is_built_again(prefix: str) -> None:
    conn = await asyncpg.connect(POSTGRES_URL)
    try:
        await before_uids(conn, prefix, columns=False)
        await conn.execute(f"ALTER TABLE {prefix}spend ADD COLUMN uid TEXT")
        insert = (
            f"INSERT INTO {prefix}spend (at, day, request_id, system, model, cost, uid)"
            " VALUES (0, '2026-01-01', 'r', 's', 'm', 0.25, 'same')"
        )
        await conn.execute(insert)
        await conn.execute(insert)
        # A concurrent build that failed (here: on the duplicates) leaves its index invalid.
        with pytest.raises(asyncpg.UniqueViolationError):
            await conn.execute(
                f"CREATE UNIQUE INDEX CONCURRENTLY {prefix}spend_uid ON {prefix}spend (uid)"
            )
        assert (await uid_indexes(conn, prefix))["spend_uid"] == (False, True)
        await conn.execute(f"DELETE FROM {prefix}spend")
        file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
        try:
            await file.write([("u1", spent(1, "s"))], [])
        finally:
            await file.aclose()
        assert await uid_indexes(conn, prefix) == {
            "spend_uid": (True, True),
            "alerts_uid": (True, True),
        }
    finally:
        await conn.close()


async def test_the_uid_indexes_build_while_replicas_keep_writing(prefix: str) -> None:
    conn, other = await asyncpg.connect(POSTGRES_URL), await asyncpg.connect(POSTGRES_URL)
    row = (
        f"INSERT INTO {prefix}spend (at, day, request_id, system, model, cost)"
        " VALUES (0, '2026-01-01', $1, 's', 'm', 0.25)"
    )
    try:
        await before_uids(conn, prefix, columns=True)
        writing = conn.transaction()  # a replica's write in flight: the build waits for it
        await writing.start()
        await conn.execute(row, "in flight")
        file = PostgresLedgerFile(POSTGRES_URL, table_prefix=prefix)
        migrating = asyncio.ensure_future(file.write([("u1", spent(1, "s"))], []))
        for _ in range(200):
            waiting = await other.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE $1",
                f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {prefix}spend_uid%",
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the index build never started"
        await other.execute(row, "meanwhile", timeout=2)  # another replica is not held up
        await writing.commit()
        await asyncio.wait_for(migrating, 10)
        await file.aclose()
        assert await uid_indexes(conn, prefix) == {
            "spend_uid": (True, True),
            "alerts_uid": (True, True),
        }
        assert await conn.fetchval(f"SELECT count(*) FROM {prefix}spend") == 3
    finally:
        await conn.close()
        await other.close()
