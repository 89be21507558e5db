"""What `serve --workers N` pays per request for sharing its live counters in the SQLite file.

With one worker the embedded default keeps rate windows, circuits and retry budgets in process
memory; with several it keeps them in the state file, so the workers count together
(`state.factory.live_store`). This times one request's live-counter work on each store, side by
side in one run: a virtual key's rpm (one window acquire, its rate headers read in the same
step) and the stack a hosted model gets by default (retry with its budget, circuit breaker,
rate-limit learner), bare and with the model's own `limits: {rpm, tpm}` (two more window
acquires and the token correction), in front of a scripted model that answers at once.

`batched` is the same store behind `state.batched.BatchedStore` (what `live_store` gives
several workers on SQLite): counts sent in one round trip every 0.2 s, circuit states cached
for 0.25 s. `--shared` adds the local Redis and PostgreSQL (127.0.0.1, as the tests use them),
plain (what `live_store` gives them) and batched.

    .venv/bin/python bench/live_store.py [--calls 2000] [--rounds 3] [--shared]

Per case: wall and CPU (every thread of the process: the SQLite worker's too) microseconds per
request, one after another; `x2` is two processes at once on one file (the workers of
`serve --workers 2` under load), each process's figures. Rounds interleave the stores; the
table shows the median round.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from modelyard.config.resilience import BreakerSpec, RetryBudgetSpec, RetrySpec
from modelyard.model import Model, ModelInfo
from modelyard.providers.fake import Reply, ScriptedModel
from modelyard.resilience.breaker import BreakerModel, BreakerPolicy, CircuitBreaker
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.resilience.retry import RetryBudget, RetryModel, RetryPolicy
from modelyard.state.base import StateStore
from modelyard.state.batched import BatchedStore
from modelyard.state.memory import MemoryStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from modelyard.state.sqlite import SqliteStore
from modelyard.types import user

REDIS_URL = "redis://127.0.0.1:6379/0"
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REQUEST = user("How do I reset my password?", max_tokens=64)
LIMITLESS = 1e12
"""Limits no bench run reaches: the work is the same as under a real limit that admits."""


def stacked(store: StateStore, limits: RateLimits) -> Model:
    """The default hosted stack, as `resilience/stack.py` builds it, with `limits` on the model."""
    info = ModelInfo(name="m", kind="fake", provider="p")
    model: Model = ScriptedModel(info=info, default=Reply(text="Open Settings, then Security."))
    learner = Limiter("model:m", limits, store)
    model = RateLimitModel(model, [learner], learner=learner)
    breaker = CircuitBreaker("model:m", BreakerPolicy.from_spec(BreakerSpec()), store)
    model = BreakerModel(model, [breaker])
    budget = RetryBudget("provider:p", RetryBudgetSpec(), store)
    return RetryModel(model, RetryPolicy.from_spec(RetrySpec()), budget=budget)


def cases(store: StateStore) -> dict[str, Callable[[], Awaitable[object]]]:
    """One request's live-counter work, by case."""
    default = stacked(store, RateLimits())
    limited = stacked(store, RateLimits(rpm=int(LIMITLESS), tpm=int(LIMITLESS)))

    async def key_rpm() -> object:
        return await store.window_acquire("key-rpm:bench", 1, limit=LIMITLESS, window=60)

    async def key_and_limited() -> object:
        await key_rpm()
        return await limited.complete(REQUEST)

    return {
        "key rpm (one window acquire)": key_rpm,
        "default hosted stack": lambda: default.complete(REQUEST),
        "stack with model rpm + tpm": lambda: limited.complete(REQUEST),
        "key rpm + stack with rpm + tpm": key_and_limited,
    }


async def per_call(
    steps: dict[str, Callable[[], Awaitable[object]]], calls: int, warm: int
) -> dict[str, tuple[float, float]]:
    """(wall, CPU) microseconds per call of each step, after `warm` calls of it untimed."""
    out = {}
    for name, step in steps.items():
        for _ in range(warm):
            await step()
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            await step()
        out[name] = (
            (time.perf_counter() - wall) / calls * 1e6,
            (time.process_time() - cpu) / calls * 1e6,
        )
    return out


async def timed(store: StateStore, calls: int) -> dict[str, tuple[float, float]]:
    """Each case's figures on `store` (a batched one sends what it counted before closing)."""
    out = await per_call(cases(store), calls, warm=min(200, calls))
    await store.aclose()
    inner = store.inner if isinstance(store, BatchedStore) else store
    if isinstance(inner, RedisStore):
        await inner.clear_prefix()
    if isinstance(inner, PostgresStore):
        await inner.drop_tables()
    if inner is not store:
        await inner.aclose()
    return out


async def operations(path: str, calls: int) -> dict[str, tuple[float, float]]:
    """One SQLite operation's figures each, and the thread hop's alone."""
    store = SqliteStore(path)
    steps: dict[str, Callable[[], Awaitable[object]]] = {
        "thread hop alone": lambda: store._worker.run(lambda conn: None),
        "get (a circuit's state)": lambda: store.get("breaker:bench:state"),
        "adjust (a call counted)": lambda: store.adjust("bench", 1.0, ttl=60),
        "window acquire": lambda: store.window_acquire("w", 1, limit=LIMITLESS, window=60),
    }
    out = await per_call(steps, calls, warm=0)
    await store.aclose()
    return out


def make(kind: str, path: str) -> StateStore:
    """A fresh store of `kind` (`sqlite`, `redis`, `postgres`, `memory`; `+batched` puts a
    `BatchedStore` in front); `path`: the SQLite file."""
    backend, _, batched = kind.partition("+")
    store: StateStore
    if backend == "memory":
        store = MemoryStore()
    elif backend == "sqlite":
        store = SqliteStore(path)
    elif backend == "redis":
        store = RedisStore(REDIS_URL, prefix=f"bench-{uuid.uuid4().hex[:12]}:")
    else:
        store = PostgresStore(POSTGRES_URL, table_prefix="b" + uuid.uuid4().hex[:10] + "_")
    # As `live_store` makes it: across a network, each flush a release applied once.
    return BatchedStore(store, applied_once=backend != "sqlite") if batched else store


def run_one(kind: str, path: str, calls: int) -> dict[str, tuple[float, float]]:
    """One process's figures on a fresh store of `kind`."""
    return asyncio.run(timed(make(kind, path), calls))


def pair(kind: str, path: str, calls: int) -> dict[str, tuple[float, float]]:
    """Two processes timing at once on one file; the mean of their figures."""
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        both = pool.starmap(run_one, [(kind, path, calls)] * 2)
    return {
        name: (
            statistics.fmean(r[name][0] for r in both),
            statistics.fmean(r[name][1] for r in both),
        )
        for name in both[0]
    }


def main(calls: int, rounds: int, shared: bool) -> None:
    kinds = ["memory", "sqlite", "sqlite+batched", "sqlite x2", "sqlite+batched x2"]
    if shared:
        kinds += ["redis", "redis+batched", "postgres", "postgres+batched"]
    runs: dict[str, list[dict[str, tuple[float, float]]]] = {kind: [] for kind in kinds}
    with tempfile.TemporaryDirectory() as folder:
        for i in range(rounds):
            for kind in kinds:
                store, _, two = kind.partition(" ")
                path = str(Path(folder) / f"{i}-{kind}.db")
                runs[kind].append(pair(store, path, calls) if two else run_one(store, path, calls))
    median = {
        kind: {
            name: (
                statistics.median(r[name][0] for r in results),
                statistics.median(r[name][1] for r in results),
            )
            for name in results[0]
        }
        for kind, results in runs.items()
    }
    print(f"{calls} calls per case, median of {rounds} rounds; wall / CPU µs per request")
    for name in median["memory"]:
        print(f"\n{name}")
        memory_cpu = median["memory"][name][1]
        for kind in kinds:
            wall, cpu = median[kind][name]
            print(f"  {kind:<20} {wall:7.1f} / {cpu:7.1f}   {cpu / memory_cpu:6.1f}x memory CPU")
    with tempfile.TemporaryDirectory() as folder:
        steps = asyncio.run(operations(str(Path(folder) / "ops.db"), calls))
    print("\none SQLite operation, as the stack makes them; wall / CPU µs")
    for name, (wall, cpu) in steps.items():
        print(f"{name:<32} {wall:6.0f} / {cpu:6.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--shared", action="store_true", help="Redis and PostgreSQL too")
    arguments = parser.parse_args()
    main(arguments.calls, arguments.rounds, arguments.shared)
