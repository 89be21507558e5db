"""SQLite: what the embedded default adds to memory — nothing lost across a restart."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import modelyard
from modelyard.state import sqlite as sqlite_state
from modelyard.state.base import Claim, Lease
from modelyard.state.sqlite import MIGRATIONS, SqliteStore
from modelyard.state.sqlite_worker import SqliteWorker


def clocked(tmp_path: Path) -> tuple[SqliteStore, list[float]]:
    """A store on a file in `tmp_path` whose wall clock reads `now[0]` (1000.0 at first)."""
    now = [1000.0]
    return SqliteStore(tmp_path / "state.db", clock=lambda: now[0]), now


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
    assert [name for _, name in rows] == [
        "001_state",
        "002_leases",
        "003_released",
        "004_window_sums",
        "005_window_idle",
    ]
    conn.close()


async def test_two_processes_starting_on_a_new_file_at_once_both_open_it(tmp_path: Path) -> None:
    # Both switch the new file to WAL; SQLite answered the loser "database is locked" at once,
    # past its busy timeout (one start in five of two stores failed).
    for attempt in range(40):
        path = tmp_path / f"state-{attempt}.db"
        stores = [SqliteStore(path), SqliteStore(path)]
        try:
            taken = await asyncio.gather(*(s.adjust("a", 1) for s in stores * 2))
        finally:
            for store in stores:
                await store.aclose()
        assert sorted(taken) == [1, 2, 3, 4]


async def test_a_file_written_before_leases_keeps_its_counters_and_takes_leases(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old = SqliteStore(path)
    old._worker = SqliteWorker(path, component="state", migrations=MIGRATIONS[:1])
    old._swept = time.time()  # no sweep: that of windows needs a table the old file lacks
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
    store, now = clocked(tmp_path)
    await store.adjust("a", 2, ttl=60)
    now[0] += 59
    assert await store.counter("a") == 2
    now[0] += 2
    assert await store.counter("a") == 0
    await store.aclose()


async def test_a_file_written_before_window_sums_keeps_what_its_windows_hold(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    old = SqliteWorker(path, component="state", migrations=MIGRATIONS[:3])
    now = time.time()
    entries = [("rpm", now, 1.0), ("rpm", now, 1.0), ("tpm", now, 700.0)]
    insert = "INSERT INTO state_windows VALUES (?, ?, ?)"
    await old.run(lambda conn: conn.executemany(insert, entries))
    await old.aclose()
    store = SqliteStore(path)
    assert (await store.window_acquire("rpm", 1, limit=3, window=60)).used == 3
    assert (await store.window_acquire("tpm", 400, limit=1000, window=60)).wait > 0
    await store.aclose()


def _window_rows(path: Path) -> dict[str, tuple[int, int, int]]:
    """Per key: (its rows in state_windows, in state_window_sums, in state_window_idle)."""
    conn = sqlite3.connect(path)
    rows: dict[str, list[int]] = {}
    for i, table in enumerate(sqlite_state._WINDOW_TABLES):
        for key, count in conn.execute(f"SELECT key, COUNT(*) FROM {table} GROUP BY key"):
            rows.setdefault(key, [0, 0, 0])[i] = count
    conn.close()
    return {key: (c[0], c[1], c[2]) for key, c in rows.items()}


async def test_a_process_of_the_previous_release_keeps_writing_its_windows(
    tmp_path: Path,
) -> None:
    # During an upgrade on one host, a process started before it shares the migrated file and
    # writes state_window_sums' three columns by position: a fourth column broke its every
    # rate-limit check ("table state_window_sums has 4 columns but 3 values were supplied").
    path = tmp_path / "state.db"
    store = SqliteStore(path)
    await store.window_acquire("rpm", 1, limit=10, window=60)
    conn = sqlite3.connect(path)
    conn.execute("INSERT OR REPLACE INTO state_window_sums VALUES (?, ?, ?)", ("rpm", 2.0, 2))
    conn.execute("INSERT INTO state_windows VALUES (?, ?, ?)", ("rpm", time.time(), 1.0))
    conn.commit()
    conn.close()
    assert (await store.window_acquire("rpm", 1, limit=10, window=60)).used == 3
    await store.aclose()


async def test_a_correction_dated_in_the_past_keeps_when_its_window_empties(
    tmp_path: Path,
) -> None:
    # Its row leaves before the window's newest: recorded as when the window empties, a sweep
    # would drop the window while that newest entry still counted.
    store, now = clocked(tmp_path)
    await store.window_acquire("tpm", 5, limit=10, window=60)
    now[0] += 10
    await store.window_correct("tpm", -4, age=10, window=60)
    conn = sqlite3.connect(store.path)
    rows = conn.execute("SELECT at, amount FROM state_windows ORDER BY at, amount").fetchall()
    idle = conn.execute("SELECT idle_at, span FROM state_window_idle").fetchall()
    sums = conn.execute("SELECT used, entries FROM state_window_sums").fetchall()
    conn.close()
    assert rows == [(1000.0, -4.0), (1000.0, 5.0)]  # dated as the entry it corrects
    assert (idle, sums) == ([(1060.0, 60.0)], [(1.0, 2)])
    now[0] += 50  # both leave together
    assert (await store.window_acquire("tpm", 10, limit=10, window=60)).used == 10
    await store.aclose()


async def test_windows_of_keys_never_used_again_are_swept(tmp_path: Path) -> None:
    # A virtual key's rpm window (key-rpm:<id>) kept its rows for good once the key was
    # revoked or abandoned: the file grew with every key ever used.
    store, now = clocked(tmp_path)
    path = store.path
    for key in ("key-rpm:gone", "key-rpm:used", "ratelimit:day"):
        await store.window_acquire(key, 1, limit=100, window=3600 if key.endswith("day") else 60)
    now[0] += 120  # every minute window is empty now, the hour's is not
    await store.window_acquire("key-rpm:used", 1, limit=100, window=60)
    rows = _window_rows(path)
    assert "key-rpm:gone" not in rows
    assert rows["key-rpm:used"] == (1, 1, 1)
    assert rows["ratelimit:day"] == (1, 1, 1)  # still in its window: it counts
    assert (await store.window_acquire("ratelimit:day", 1, limit=100, window=3600)).used == 2
    await store.aclose()


async def test_a_window_a_process_of_the_previous_release_still_writes_is_not_swept(
    tmp_path: Path,
) -> None:
    # That process adds entries but no idle time: a sweep trusting the idle time alone dropped
    # the window while it held them, and its rate limit counted from zero again.
    store, now = clocked(tmp_path)
    path = store.path
    await store.window_acquire("rpm", 1, limit=3, window=60)
    now[0] += 120  # idle as this release recorded it ...
    conn = sqlite3.connect(path)  # ... but the older process took two more since
    conn.executemany("INSERT INTO state_windows VALUES (?, ?, ?)", [("rpm", now[0] - 1, 1.0)] * 2)
    conn.execute("INSERT OR REPLACE INTO state_window_sums VALUES (?, ?, ?)", ("rpm", 3.0, 3))
    conn.commit()
    conn.close()
    await store.window_acquire("other", 1, limit=3, window=60)  # the minute's sweep runs
    assert _window_rows(path)["rpm"] == (3, 1, 1)
    assert (await store.window_acquire("rpm", 1, limit=3, window=60)).used == 3  # two of them
    now[0] += 120  # idle now by its entries too: the next sweep takes it
    await store.window_acquire("other", 1, limit=3, window=60)
    assert "rpm" not in _window_rows(path)
    await store.aclose()


async def test_a_sweep_takes_a_bounded_number_of_idle_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_state, "_SWEEP_WINDOWS", 3)
    store, now = clocked(tmp_path)
    path = store.path
    for i in range(5):
        await store.window_acquire(f"key-rpm:{i}", 1, limit=100, window=60)
    now[0] += 120
    await store.window_acquire("key-rpm:new", 1, limit=100, window=60)
    assert len(_window_rows(path)) == 1 + 2  # three of the five idle ones went
    now[0] += 61  # the next sweep, a minute later, takes the rest
    await store.window_acquire("key-rpm:new", 1, limit=100, window=60)
    assert set(_window_rows(path)) == {"key-rpm:new"}
    await store.aclose()


def steps_of(store: SqliteStore, entries: int) -> int:
    """SQLite's virtual-machine steps for one `window_acquire` with `entries` in the window."""
    now = [1000.0]

    async def run() -> int:
        for _ in range(entries):
            now[0] += 0.001
            await store.window_acquire("rpm", 1, limit=1e9, window=3600)
        steps = [0]

        def count() -> int:
            steps[0] += 1
            return 0

        await store._worker.run(lambda conn: conn.set_progress_handler(count, 1))
        await store.window_acquire("rpm", 1, limit=1e9, window=3600)
        await store._worker.run(lambda conn: conn.set_progress_handler(None, 1))
        return steps[0]

    store._clock = lambda: now[0]
    return asyncio.run(run())


def test_a_window_acquire_costs_the_same_however_full_the_window(tmp_path: Path) -> None:
    # It used to sum the whole window on every call: a key's rpm at 5,000 requests a minute
    # cost 100 times one at 50.
    small = SqliteStore(tmp_path / "small.db")
    full = SqliteStore(tmp_path / "full.db")
    few, many = steps_of(small, 50), steps_of(full, 5000)
    asyncio.run(small.aclose())
    asyncio.run(full.aclose())
    assert many < 1.5 * few, (few, many)


_ACQUIRER = """
import asyncio, sys
from modelyard.state.sqlite import SqliteStore

async def main(path, count):
    store = SqliteStore(path)
    admitted = 0
    for i in range(count):
        amount = -1.0 if i % 7 == 6 else 1.0  # a correction now and then, as tpm makes
        use = await store.window_acquire("key-rpm:k", amount, limit=100, window=60)
        admitted += use.wait == 0.0 and amount > 0
    await store.aclose()
    print(admitted)

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_processes_sharing_the_file_keep_one_running_sum(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    source = str(Path(modelyard.__file__).parents[1])
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _ACQUIRER, str(path), "60"],
            env={**os.environ, "PYTHONPATH": source},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    admitted = 0
    for worker in workers:
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        admitted += int(out)
    conn = sqlite3.connect(path)
    entries = conn.execute("SELECT SUM(amount), COUNT(*) FROM state_windows").fetchone()
    kept = conn.execute("SELECT used, entries FROM state_window_sums").fetchone()
    conn.close()
    assert kept == entries
    corrections = 3 * 8
    assert entries[0] == admitted - corrections <= 100
    assert admitted < 3 * (60 - 8), "the limit must have refused some"
