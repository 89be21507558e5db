"""The ledger writes in batches off the request path and loses nothing at shutdown."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from modelyard.cost import scope as request_scope
from modelyard.cost.accounting import spend_rows
from modelyard.cost.ledger import MIGRATIONS, Ledger, SpendRow, SqliteLedgerFile
from modelyard.resilience.fallback import FallbackModel
from modelyard.state.sqlite_worker import apply_migrations
from tests.cost.helpers import priced, question


def row(i: int) -> SpendRow:
    return SpendRow(at=1.0, day="2026-01-01", request_id=str(i), system="s", model="m", cost=0.5)


async def test_record_queues_and_aclose_writes_everything(tmp_path: Path) -> None:
    ledger = Ledger(SqliteLedgerFile(tmp_path / "l.db"), flush_interval=60)
    for i in range(1234):
        ledger.record([row(i)])
    await ledger.aclose()
    file = SqliteLedgerFile(tmp_path / "l.db")
    assert await file.query("SELECT COUNT(*), SUM(cost) FROM spend") == [(1234, 617.0)]
    await file.aclose()


async def test_background_task_flushes_without_being_asked(tmp_path: Path) -> None:
    ledger = Ledger(SqliteLedgerFile(tmp_path / "l.db"), flush_interval=0.02)
    ledger.record([row(1)])
    await asyncio.sleep(0.15)
    assert ledger.written == 1
    await ledger.aclose()


async def test_the_writer_runs_outside_the_request_that_started_it(tmp_path: Path) -> None:
    # Started inside a request, the writer would carry its context (trace span, cost scope)
    # into every later write.
    seen: list[object] = []
    file = SqliteLedgerFile(tmp_path / "l.db")
    write = file.write

    async def watched(*batch: object) -> None:
        seen.append(request_scope.current())
        await write(*batch)  # type: ignore[arg-type]

    file.write = watched  # type: ignore[method-assign]
    ledger = Ledger(file, flush_interval=0.02)
    with request_scope.entered(request_scope.RequestScope(entry="support")):
        ledger.record([row(1)])
    for _ in range(500):  # the writer's own flush, not the one aclose would do
        if seen:
            break
        await asyncio.sleep(0.01)
    await ledger.aclose()
    assert seen and seen[0] is None


async def test_full_queue_drops_and_counts(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ledger = Ledger(SqliteLedgerFile(tmp_path / "l.db"), max_queue=2, flush_interval=60)
    ledger.record([row(1), row(2)])
    with caplog.at_level(logging.INFO, logger="modelyard"):
        for n in range(3, 6):  # a full queue refuses each: told once, not once a row
            ledger.record([row(n)])
        assert ledger.dropped == 3
        await ledger.aclose()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("modelyard")]
    assert len(lines) == 2, lines
    assert "the queue of 2 row(s) waiting is full" in lines[0]
    assert "dropped 3 row(s) while the queue was full" in lines[1]
    assert "writing keeps up again" in lines[1]  # no write failed: not told as an outage's end


async def test_rows_split_a_fallbacks_spend_between_the_models_it_used() -> None:
    failing, steady = priced("failing", error="unavailable"), priced("steady")
    request = question(key_id="k1", tags=("team:a",))
    response = await FallbackModel("chain", [failing, steady]).complete(request)
    rows = spend_rows("support", request, response, None)
    by_model = {r.model: r for r in rows}
    assert set(by_model) == {"failing", "steady"}
    assert by_model["steady"].answered and not by_model["failing"].answered
    assert sum(r.cost for r in rows) == response.cost
    assert by_model["steady"].key_id == "k1" and by_model["steady"].tags == ("team:a",)


async def test_aclose_while_the_writer_works_through_full_batches_loses_nothing(
    tmp_path: Path,
) -> None:
    ledger = Ledger(SqliteLedgerFile(tmp_path / "l.db"), flush_interval=1.0, batch_size=10)
    for i in range(25):
        ledger.record([row(i)])  # every tenth row wakes the writer
        await asyncio.sleep(0)
    await asyncio.wait_for(ledger.aclose(), 5)
    assert ledger.written == 25
    file = SqliteLedgerFile(tmp_path / "l.db")
    assert await file.query("SELECT COUNT(*) FROM spend") == [(25,)]
    await file.aclose()


def test_aclose_on_a_new_loop_after_the_writers_loop_closed_writes_everything(
    tmp_path: Path,
) -> None:
    ledger = Ledger(SqliteLedgerFile(tmp_path / "l.db"), flush_interval=60)

    async def use() -> None:
        ledger.record([row(1)])  # starts the writer on this loop, which then closes

    asyncio.run(use())
    ledger.record([row(2)])  # no running loop: queued for aclose
    asyncio.run(asyncio.wait_for(ledger.aclose(), 5))
    assert ledger.written == 2


def test_a_request_refused_before_any_model_names_no_model() -> None:
    from modelyard.errors import BudgetExceededError

    refused = BudgetExceededError("budget daily would be passed", model="support")
    (only,) = spend_rows("support", question(), None, refused)
    assert (only.system, only.model, only.error, only.cost) == (
        "support",
        "(none)",
        "budget_exceeded",
        0.0,
    )


async def test_a_ledger_written_before_tokens_were_marked_estimated_is_migrated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "l.db"
    with sqlite3.connect(path) as db:  # as an older modelyard left it
        apply_migrations(db, "ledger", MIGRATIONS[:1])
        db.execute(
            "INSERT INTO spend (at, day, request_id, system, model, cost) VALUES"
            " (1.0, '2026-01-01', 'old', 's', 'm', 0.5)"
        )
    ledger = Ledger(SqliteLedgerFile(path), flush_interval=60)
    ledger.record([replace(row(1), input_tokens=7, tokens_estimated=True)])
    await ledger.aclose()
    file = SqliteLedgerFile(path)
    rows = await file.query("SELECT request_id, input_tokens, tokens_estimated FROM spend")
    await file.aclose()
    assert sorted(rows) == [("1", 7, 1), ("old", 0, 0)]


async def test_a_batch_written_again_counts_each_row_once(tmp_path: Path) -> None:
    file = SqliteLedgerFile(tmp_path / "l.db")
    batch = [("p-0", row(1)), ("p-1", row(2))]
    await file.write(batch, [])
    await file.write([*batch, ("p-2", row(3))], [])  # a retry, with a newer row behind it
    assert await file.query("SELECT COUNT(*), SUM(cost) FROM spend") == [(3, 1.5)]
    await file.aclose()


async def test_a_write_cancelled_before_it_ran_is_written_at_close(tmp_path: Path) -> None:
    file = SqliteLedgerFile(tmp_path / "l.db")
    ledger = Ledger(file, flush_interval=60)
    gate = threading.Event()
    busy = asyncio.ensure_future(file.worker.run(lambda _: gate.wait(5)))
    ledger.record([row(1)])
    flushing = asyncio.ensure_future(ledger.flush())
    await asyncio.sleep(0.05)  # the write waits behind the busy worker
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
    gate.set()
    await busy
    await ledger.aclose()
    again = SqliteLedgerFile(tmp_path / "l.db")
    assert await again.query("SELECT COUNT(*) FROM spend") == [(1,)]
    await again.aclose()


async def test_rows_written_before_uids_are_kept_by_the_migration(tmp_path: Path) -> None:
    path = tmp_path / "l.db"
    with sqlite3.connect(path) as db:  # as an older modelyard left it
        apply_migrations(db, "ledger", MIGRATIONS[:2])
        for _ in range(2):  # two rows alike: nothing unique about them before uids
            db.execute(
                "INSERT INTO spend (at, day, request_id, system, model, cost) VALUES"
                " (1.0, '2026-01-01', 'old', 's', 'm', 0.5)"
            )
    ledger = Ledger(SqliteLedgerFile(path), flush_interval=60)
    ledger.record([row(1)])
    await ledger.aclose()
    file = SqliteLedgerFile(path)
    rows = await file.query("SELECT request_id, uid IS NULL FROM spend")
    await file.aclose()
    assert sorted(rows) == [("1", 0), ("old", 1), ("old", 1)]
