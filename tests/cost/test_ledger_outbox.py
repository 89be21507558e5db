"""The PostgreSQL ledger's local outbox: rows a gateway wrote while the database was out of
reach survive the process being killed outright, and the next process on the host ships them.
Talks to the real server at 127.0.0.1:5432 (database `test`) through a relay it cuts."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelyard.config.build_operations import ledger_file
from modelyard.config.operations import LedgerSpec
from modelyard.cost.ledger import Ledger
from modelyard.cost.ledger_postgres import PostgresLedgerFile
from tests.conftest import killed_once_written, relayed_postgres
from tests.cost.test_ledger_postgres import spent
from tests.fakes.tcp_relay import TcpRelay
from tests.state.conftest import fresh_tables

pytestmark = pytest.mark.postgres

KILLED = """
import asyncio, sys, time
from pathlib import Path
from modelyard.config.build_operations import ledger_file
from modelyard.config.operations import LedgerSpec
from modelyard.cost.ledger import Ledger
from tests.cost.test_ledger_postgres import spent

async def main() -> None:
    spec = LedgerSpec.model_validate_json(sys.argv[1])
    ledger = Ledger(ledger_file(spec, Path(sys.argv[2])), flush_interval=0.05)
    ledger.record([spent(i, "support") for i in range(3)])
    await asyncio.sleep(1)  # the database is cut off: every write of the batch fails
    print("written", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Tables no other test run uses, dropped afterwards."""
    async for name in fresh_tables(PostgresLedgerFile):
        yield name


async def test_rows_a_killed_process_could_not_write_reach_the_database_from_the_next_one(
    prefix: str, postgres_relay: TcpRelay, tmp_path: Path
) -> None:
    spec = LedgerSpec(
        backend="postgres",
        url=relayed_postgres(postgres_relay),
        table_prefix=prefix,
        path=str(tmp_path / "ledger.db"),
    )
    postgres_relay.cut()
    await killed_once_written(KILLED, spec.model_dump_json(), str(tmp_path))
    postgres_relay.restore()

    ledger = Ledger(ledger_file(spec, tmp_path), flush_interval=0.05)
    ledger.record([spent(9, "support")])
    await ledger.aclose()

    file = PostgresLedgerFile(relayed_postgres(postgres_relay), table_prefix=prefix)
    try:
        rows = await file.query("SELECT request_id FROM spend ORDER BY request_id")
    finally:
        await file.aclose()
    assert [r[0] for r in rows] == ["r0", "r1", "r2", "r9"]
    with sqlite3.connect(tmp_path / "ledger-outbox.db") as conn:
        assert conn.execute("SELECT count(*) FROM spend").fetchone() == (0,)
