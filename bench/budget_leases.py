"""What leases add to a budget reservation: holds + reserve + settle on the memory store, for two
source trees side by side in one run (rounds interleave them, each in a fresh process).

    .venv/bin/python bench/budget_leases.py --before /path/to/old/src --after src

Each figure is the median over rounds of the best of 5 repeats of N iterations, one request's
holds (a total and a per-key budget), its reservation and its settlement, one after another.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import asyncio, json, sys, time
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget
from modelyard.state.memory import MemoryStore
from modelyard.types import user

async def main(n):
    book = BudgetBook(MemoryStore())
    budgets = [Budget(name="total", scope="total", limit=1e12),
               Budget(name="per-key", scope="key", selector="*", limit=1e12)]
    request = user("How do I reset my password?", max_tokens=50, key_id="tenant-1")
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(n):
            holds = book.holds(budgets, request, "m", 0.001)
            await book.reserve(holds)
            await book.settle(holds, 0.0004)
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    print(json.dumps(best))

asyncio.run(main(int(sys.argv[1])))
"""


def once(src: str, iterations: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(Path(src).resolve())}
    out = subprocess.run(
        [sys.executable, "-c", CHILD, str(iterations)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return float(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the src folder of the tree before")
    parser.add_argument("--after", default="src", help="the src folder of the tree after")
    parser.add_argument("--iterations", type=int, default=20000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    before: list[float] = []
    after: list[float] = []
    for _ in range(args.rounds):
        before.append(once(args.before, args.iterations))
        after.append(once(args.after, args.iterations))
    b, a = statistics.median(before), statistics.median(after)
    print(f"holds + reserve + settle, memory store, {args.iterations} x 5 x {args.rounds} rounds")
    print(f"before: {b:.2f} us  (rounds: {', '.join(f'{x:.2f}' for x in before)})")
    print(f"after:  {a:.2f} us  (rounds: {', '.join(f'{x:.2f}' for x in after)})")
    print(f"after / before: {a / b:.2f}  (+{a - b:.2f} us per request)")


if __name__ == "__main__":
    main()
