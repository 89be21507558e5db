"""PostgreSQL state's sweep of expired counters and values with a backlog: how long one sweep
(the once-a-minute one, after a call that writes) takes, by how many rows it may delete.

    .venv/bin/python bench/postgres_sweep.py
    .venv/bin/python bench/postgres_sweep.py --expired 200000 --live 200000 --rows 250 500 1000

Per `--rows`, fresh tables hold `--expired` counters past their expiry (a year of periods
over) and `--live` counters not, and `--expired` / 10 values past their expiry; then
`--sweeps` sweeps run one after another (each deletes up to `--rows` counters and as many
values, and looks for idle rate windows). `--no-index` drops the index on `expires_at` first.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
import uuid

import asyncpg

from modelyard.state import postgres as postgres_state
from modelyard.state.postgres import PostgresStore

URL = "postgresql://postgres@127.0.0.1:5432/test"
NOW = "extract(epoch from clock_timestamp())"


async def fill(prefix: str, expired: int, live: int, index: bool) -> None:
    conn = await asyncpg.connect(URL)
    try:
        year = 365 * 86400.0
        await conn.execute(
            f"INSERT INTO {prefix}counters SELECT 'budget:b:user' || g, 1,"
            f" {NOW} - $2 + g * ($2 - 60) / $1 FROM generate_series(1, $1) g",
            expired,
            year,
        )
        await conn.execute(
            f"INSERT INTO {prefix}counters SELECT 'live:' || g, 1, {NOW} + 86400"
            " FROM generate_series(1, $1) g",
            live,
        )
        await conn.execute(
            f"INSERT INTO {prefix}values SELECT 'v' || g, 'x', {NOW} - 60"
            " FROM generate_series(1, $1) g",
            expired // 10,
        )
        if not index:
            for table in ("counters", "values"):
                await conn.execute(f"DROP INDEX {prefix}{table}_expires_at")
        for table in ("counters", "values"):
            await conn.execute(f"VACUUM ANALYZE {prefix}{table}")
    finally:
        await conn.close()


async def run(rows: int, args: argparse.Namespace) -> None:
    postgres_state._SWEEP_ROWS = rows
    prefix = "bench" + uuid.uuid4().hex[:8] + "_"
    store = PostgresStore(URL, table_prefix=prefix)
    try:
        await store.counter("made")  # the pool opened, the tables migrated
        await fill(prefix, args.expired, args.live, not args.no_index)
        times = []
        for _ in range(args.sweeps):
            store._swept = float("-inf")  # due
            started = time.perf_counter()
            await store._sweep()
            times.append((time.perf_counter() - started) * 1000)
        times.sort()
        print(
            f"rows {rows:>5}: median {statistics.median(times):6.1f} ms, "
            f"p90 {times[int(len(times) * 0.9)]:6.1f} ms, max {times[-1]:6.1f} ms "
            f"({args.sweeps} sweeps; {args.expired:,} expired, {args.live:,} live"
            f"{', no index' if args.no_index else ''})",
            flush=True,
        )
    finally:
        await store.drop_tables()
        await store.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expired", type=int, default=200_000)
    parser.add_argument("--live", type=int, default=200_000)
    parser.add_argument("--rows", type=int, nargs="+", default=[100, 250, 500, 1000, 2000])
    parser.add_argument("--sweeps", type=int, default=30)
    parser.add_argument("--no-index", action="store_true")
    args = parser.parse_args()
    for rows in args.rows:
        asyncio.run(run(rows, args))


if __name__ == "__main__":
    main()
