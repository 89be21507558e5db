"""Added latency per request of budget + rate-limit checks, per state backend.

Each request goes through a BudgetGuard (a total and a per-key budget: one atomic reservation,
one settlement) and one sliding-window rate-limit acquire, in front of a zero-latency fake
model; the baseline is the same fake called bare. Requests run one after another, so each
figure is the full round trip cost of the checks, not hidden by concurrency.

    .venv/bin/python bench/state_overhead.py --requests 2000 --backends memory,sqlite,redis
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget
from modelyard.cost.budgets import BudgetGuard
from modelyard.cost.prices import Price
from modelyard.model import Model, ModelInfo, Wrapper
from modelyard.providers.fake import ScriptedModel
from modelyard.state.base import StateStore
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, ChatResponse, Chunk, user


class RateLimited(Wrapper):
    """One sliding-window acquire per request, as a client-side rpm limit does."""

    def __init__(self, inner: Model, store: StateStore) -> None:
        super().__init__(inner)
        self.store = store

    async def complete(self, request: ChatRequest) -> ChatResponse:
        wait = (await self.store.window_acquire("rpm:bench", 1, limit=1e9, window=60)).wait
        assert wait == 0
        return await self.inner.complete(request)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async for chunk in self.inner.stream(request):
            yield chunk


def make_store(kind: str, redis_url: str, folder: Path) -> StateStore:
    if kind == "memory":
        return MemoryStore()
    if kind == "sqlite":
        from modelyard.state.sqlite import SqliteStore

        return SqliteStore(folder / "state.db")
    from modelyard.state.redis import RedisStore

    return RedisStore(redis_url, prefix=f"bench-{uuid.uuid4().hex[:8]}:")


async def timed(model: Model, requests: int) -> list[float]:
    request = user("How do I reset my password?", max_tokens=50, key_id="tenant-1")
    for _ in range(min(100, requests)):  # warm up connections and code paths
        await model.complete(request)
    out = []
    for _ in range(requests):
        started = time.perf_counter()
        await model.complete(request)
        out.append((time.perf_counter() - started) * 1e6)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    fake = ScriptedModel(info=ModelInfo(name="fake", kind="fake", price=Price(input=1, output=2)))
    base = await timed(fake, args.requests)
    base_p50 = statistics.median(base)
    print(f"baseline (bare fake model): p50 {base_p50:.1f} us, p99 {pct(base, 0.99):.1f} us")
    print(f"{'backend':8} {'p50 added us':>13} {'p99 added us':>13} {'p50 total us':>13}")
    budgets = [
        Budget(name="total", scope="total", limit=1e9),
        Budget(name="per-key", scope="key", selector="*", limit=1e9),
    ]
    with tempfile.TemporaryDirectory() as folder:
        for kind in args.backends.split(","):
            store = make_store(kind, args.redis_url, Path(folder))
            guarded = BudgetGuard(
                RateLimited(fake, store),
                book=BudgetBook(store),
                own=[],
                per_request=budgets,
                targets={},
            )
            times = await timed(guarded, args.requests)
            print(
                f"{kind:8} {statistics.median(times) - base_p50:13.1f} "
                f"{pct(times, 0.99) - base_p50:13.1f} {statistics.median(times):13.1f}"
            )
            if kind == "redis":
                pings = []
                for _ in range(min(args.requests, 500)):
                    started = time.perf_counter()
                    await store.ping()  # type: ignore[attr-defined]
                    pings.append((time.perf_counter() - started) * 1e6)
                ping = statistics.median(pings)
                print(f"{'':8} (one bare Redis PING round trip: p50 {ping:.1f} us)")
            if hasattr(store, "clear_prefix"):
                await store.clear_prefix()
            await store.aclose()


if __name__ == "__main__":
    asyncio.run(main())
