"""What leases add to a budget reservation: holds + reserve + settle on the memory store, for two
source trees side by side in one run (rounds interleave them, each in a fresh process).

    .venv/bin/python bench/budget_leases.py --before /path/to/old/src --after src

Each figure is the median over rounds of the best of 5 repeats of N iterations, one request's
holds (a total and a per-key budget), its reservation and its settlement, one after another.
"""

from __future__ import annotations

import statistics

from interleaved import interleave, trees_parser  # bench/ is on the path when run as a script

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


def main() -> None:
    parser = trees_parser(__doc__.splitlines()[0], rounds=5)
    parser.add_argument("--iterations", type=int, default=20000)
    args = parser.parse_args()
    before, after = interleave(args, CHILD, args.iterations)
    b, a = statistics.median(before), statistics.median(after)
    print(f"holds + reserve + settle, memory store, {args.iterations} x 5 x {args.rounds} rounds")
    print(f"before: {b:.2f} us  (rounds: {', '.join(f'{x:.2f}' for x in before)})")
    print(f"after:  {a:.2f} us  (rounds: {', '.join(f'{x:.2f}' for x in after)})")
    print(f"after / before: {a / b:.2f}  (+{a - b:.2f} us per request)")


if __name__ == "__main__":
    main()
