"""The request log: nothing lost at shutdown, the same record from memory and from the file."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from dataclasses import replace
from pathlib import Path

from modelyard.observability.decision_log import _MIGRATIONS, DecisionLog, RequestRecord
from modelyard.types import Decision


def record(request_id: str) -> RequestRecord:
    leaf = Decision(node="cheap", kind="model", chosen="cheap-2024", reason="answered", cost=0.5)
    return RequestRecord(
        id=request_id,
        at=1700000000.0,
        key_id="key_1",
        target="support",
        api="openai",
        stream=False,
        config_version="abc123",
        status=200,
        model="cheap",
        provider_model="cheap-2024",
        latency_ms=12.3456,
        cost=0.5,
        input_tokens=10,
        output_tokens=5,
        decision=Decision(node="support", kind="fallback", chosen="cheap", children=(leaf,)),
    )


async def test_records_survive_a_restart_and_read_the_same(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite3"
    log = DecisionLog(path, recent=1)
    log.record(record("r1"))
    log.record(record("r2"))  # pushes r1 out of memory
    await log.aclose()  # flushes
    expected = record("r1").to_dict()
    reopened = DecisionLog(path)
    assert await reopened.get("r1") == expected
    assert await reopened.get("missing") is None
    await reopened.aclose()


async def test_a_written_record_reads_back_from_memory_unchanged(tmp_path: Path) -> None:
    log = DecisionLog(tmp_path / "requests.sqlite3")
    log.record(record("r1"))
    before = await log.get("r1")
    await log.flush()
    assert await log.get("r1") == before
    await log.aclose()


async def test_memory_only_log_keeps_recent_records(tmp_path: Path) -> None:
    log = DecisionLog(None, recent=2)
    for name in ("a", "b", "c"):
        log.record(record(name))
    assert await log.get("a") is None
    assert (await log.get("c"))["decision"]["children"][0]["node"] == "cheap"  # type: ignore[index]
    await log.aclose()


async def test_a_log_written_before_tokens_were_marked_estimated_is_migrated(
    tmp_path: Path,
) -> None:
    path = tmp_path / "requests.sqlite3"
    with sqlite3.connect(path) as db:  # the first tables, as an older modelyard made them
        for statement in _MIGRATIONS:
            db.execute(statement)
        db.execute(
            "INSERT INTO requests VALUES ('old', 1, NULL, 's', 'openai', 0, 'v', 504, 'm', NULL,"
            " 1.0, 0.25, 0, 0, 'timeout', NULL)"
        )
    log = DecisionLog(path)
    log.record(replace(record("new"), tokens_estimated=True))
    await log.aclose()
    reopened = DecisionLog(path, recent=0)
    old, new = await reopened.get("old"), await reopened.get("new")
    await reopened.aclose()
    assert old is not None and old["tokens_estimated"] is False
    assert new is not None and new["tokens_estimated"] is True


async def test_a_write_cancelled_before_it_ran_is_written_at_close(tmp_path: Path) -> None:
    path = tmp_path / "requests.sqlite3"
    log = DecisionLog(path)
    gate = threading.Event()
    busy = asyncio.get_running_loop().run_in_executor(log._writer, gate.wait, 5)
    log.record(record("r1"))
    flushing = asyncio.ensure_future(log.flush())
    await asyncio.sleep(0.05)  # the write waits behind the busy writer thread
    flushing.cancel()
    await asyncio.gather(flushing, return_exceptions=True)
    gate.set()
    await busy
    await log.aclose()
    reopened = DecisionLog(path)
    assert await reopened.get("r1") == record("r1").to_dict()
    await reopened.aclose()
