"""SQLite `window_acquire` with a full window: calls per second for two source trees side by
side in one run (rounds interleave them, each a fresh process on a fresh file).

    .venv/bin/python bench/sqlite_window.py --before /path/to/old/src --after src

A key's window holds `--entries` acquisitions (a virtual key's rpm at that many requests per
minute): a clock the store is given moves one window / entries per call, so after the first
window each call lets one entry leave as it records one, the steady state of a busy rpm
limit. Each figure is the best of 3 repeats of N calls in that state.
"""

from __future__ import annotations

# bench/ is on the path when run as a script
from interleaved import window_bench

CHILD = """
import asyncio, json, sys, tempfile, time
from pathlib import Path
from modelyard.state.sqlite import SqliteStore

async def main(entries, n):
    now = [1_000_000.0]
    step = 60.0 / entries
    def clock():
        return now[0]
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(Path(folder) / "state.db", clock=clock)

        async def call():
            now[0] += step
            use = await store.window_acquire("key-rpm:k1", 1, limit=2 * entries, window=60)
            assert use.wait == 0.0, use

        for _ in range(entries):  # fill the window
            await call()
        best = 0.0
        for _ in range(3):
            started = time.perf_counter()
            for _ in range(n):
                await call()
            best = max(best, n / (time.perf_counter() - started))
        await store.aclose()
    print(json.dumps(best))

asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def main() -> None:
    window_bench(__doc__.splitlines()[0], CHILD, "sqlite", calls=2000)


if __name__ == "__main__":
    main()
