"""A request log shared in PostgreSQL keeps its records in a local outbox until the database
takes them: a gateway killed outright during an outage leaves them to the next process, which
ships them. Talks to the real server at 127.0.0.1:5432 (database `test`) through a relay."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from modelyard.observability.decision_log import DecisionLog
from modelyard.observability.request_log_postgres import PostgresRequestLog
from tests.conftest import killed_once_written, relayed_postgres
from tests.fakes.tcp_relay import TcpRelay
from tests.observability.test_decision_log import record
from tests.state.conftest import fresh_tables

pytestmark = pytest.mark.postgres

KILLED = """
import asyncio, sys
from pathlib import Path
from modelyard.observability.decision_log import DecisionLog
from modelyard.observability.request_log_postgres import PostgresRequestLog
from tests.observability.test_decision_log import record

async def main() -> None:
    shared = PostgresRequestLog(sys.argv[1], table_prefix=sys.argv[2])
    log = DecisionLog(Path(sys.argv[3]), shared=shared, flush_every=0.05)
    log.start()
    for name in ("r1", "r2"):
        log.record(record(name))
    await asyncio.sleep(1)  # the database is cut off: every write fails
    print("written", flush=True)
    await asyncio.sleep(3600)

asyncio.run(main())
"""


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Tables no other test run uses, dropped afterwards."""
    async for name in fresh_tables(PostgresRequestLog):
        yield name


async def test_records_a_killed_gateway_could_not_write_reach_the_shared_log_from_the_next(
    prefix: str, postgres_relay: TcpRelay, tmp_path: Path
) -> None:
    url = relayed_postgres(postgres_relay)
    path = tmp_path / "requests.sqlite3"
    postgres_relay.cut()
    await killed_once_written(KILLED, url, prefix, str(path))
    postgres_relay.restore()

    log = DecisionLog(path, shared=PostgresRequestLog(url, table_prefix=prefix))
    log.record(record("r3"))
    await log.aclose()

    shared = PostgresRequestLog(url, table_prefix=prefix)
    try:
        found = {name: await shared.read(name) for name in ("r1", "r2", "r3")}
    finally:
        await shared.aclose()
    assert [name for name, row in found.items() if row is None] == []
    with sqlite3.connect(tmp_path / "requests-outbox.sqlite3") as conn:
        assert conn.execute("SELECT count(*) FROM requests").fetchone() == (0,)
