"""PostgreSQL `window_acquire` with a full window: calls per second for two source trees side by
side in one run (rounds interleave them, each a fresh process on fresh tables).

    .venv/bin/python bench/postgres_window.py --before /path/to/old/src --after src

The store takes its time from the database's clock, so the window cannot be stepped as
bench/sqlite_window.py steps it: a key's window table is filled with `--entries` entries of
the last minute before the store first opens it (a store whose tables predate the running sum
fills the sum from them), and the window is an hour long, so each measured call adds one entry
and none leave. Each figure is the best of 3 repeats of N calls, one after another on one
connection; the window then holds `--entries` to `--entries` + 3N entries.
"""

from __future__ import annotations

# bench/ is on the path when run as a script
from interleaved import window_bench

CHILD = """
import asyncio, json, sys, time, uuid
import asyncpg
from modelyard.state.postgres import PostgresStore

URL = "postgresql://postgres@127.0.0.1:5432/test"

async def main(entries, n):
    prefix = "bench" + uuid.uuid4().hex[:8] + "_"
    conn = await asyncpg.connect(URL)
    await conn.execute(
        f"CREATE TABLE {prefix}windows (key TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,"
        " amount DOUBLE PRECISION NOT NULL)"
    )
    now = await conn.fetchval("SELECT extract(epoch from clock_timestamp())::float8")
    rows = [("key-rpm:k1", now - 60 + 60 * i / entries, 1.0) for i in range(entries)]
    await conn.executemany(f"INSERT INTO {prefix}windows VALUES ($1, $2, $3)", rows)
    await conn.close()
    store = PostgresStore(URL, table_prefix=prefix)
    try:
        async def call():
            use = await store.window_acquire("key-rpm:k1", 1, limit=1e9, window=3600)
            assert use.wait == 0.0, use

        await call()  # the pool opened, the tables migrated
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                await call()
            best = max(best, n / (time.perf_counter() - started))
    finally:
        await store.drop_tables()
        await store.aclose()
    print(json.dumps(best))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def main() -> None:
    window_bench(__doc__.splitlines()[0], CHILD, "postgres", calls=300)


if __name__ == "__main__":
    main()
