"""One gateway-like process for the multi-process budget test: loads a config, fires N concurrent
requests at a system, prints what happened as JSON.

    python -m tests.cost.budget_worker CONFIG SYSTEM N
"""

from __future__ import annotations

import asyncio
import json
import sys

import modelyard
from modelyard.errors import BudgetExceededError


async def main(config: str, system: str, count: int) -> None:
    async with modelyard.load(config) as yard:
        results = await asyncio.gather(
            *(yard.complete(system, f"question {i}", max_tokens=40) for i in range(count)),
            return_exceptions=True,
        )
    out = {"costs": [], "refusals": [], "other": []}
    for result in results:
        if isinstance(result, BudgetExceededError):
            out["refusals"].append(str(result))
        elif isinstance(result, BaseException):
            out["other"].append(repr(result))
        else:
            out["costs"].append(result.cost)
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
