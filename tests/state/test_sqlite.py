"""SQLite: what the embedded default adds to memory — nothing lost across a restart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from modelyard.state.base import Claim, Lease
from modelyard.state.sqlite import MIGRATIONS, SqliteStore
from modelyard.state.sqlite_worker import SqliteWorker


async def test_counters_survive_a_restart(tmp_path: Path) -> None:
    first = SqliteStore(tmp_path / "state.db")
    await first.reserve([Claim(key="spend", amount=0.75, limit=1.0, ttl=3600)])
    await first.aclose()
    second = SqliteStore(tmp_path / "state.db")
    assert await second.counter("spend") == 0.75
    assert await second.reserve([Claim(key="spend", amount=0.5, limit=1.0)]) is not None
    await second.aclose()


async def test_file_is_in_wal_mode_with_migrations_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    for _ in range(2):
        store = SqliteStore(path)
        await store.adjust("a", 1)
        await store.aclose()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    rows = conn.execute("SELECT component, name FROM _migrations").fetchall()
    assert rows == [("state", "001_state"), ("state", "002_leases"), ("state", "003_released")]
    conn.close()


async def test_a_file_written_before_leases_keeps_its_counters_and_takes_leases(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old = SqliteStore(path)
    old._worker = SqliteWorker(path, component="state", migrations=MIGRATIONS[:1])
    await old.reserve([Claim(key="spend", amount=0.75, limit=1.0, ttl=3600)])
    await old.aclose()
    store = SqliteStore(path)
    held = Lease(id="l", seconds=0.0)
    fits = await store.reserve_or_explain([Claim(key="spend", amount=0.25, limit=1.0)], lease=held)
    assert fits is None
    assert [r.id for r in await store.reclaim()] == ["l"]
    assert await store.counter("spend") == 0.75
    await store.aclose()


async def test_expiry_uses_the_injected_wall_clock(tmp_path: Path) -> None:
    now = [1000.0]
    store = SqliteStore(tmp_path / "state.db", clock=lambda: now[0])
    await store.adjust("a", 2, ttl=60)
    now[0] += 59
    assert await store.counter("a") == 2
    now[0] += 2
    assert await store.counter("a") == 0
    await store.aclose()
