"""A yard on shared state (a Redis or PostgreSQL `state:`, with a Redis response cache or a
PostgreSQL ledger) used from one event loop after another (a script's `asyncio.run` per
batch) and from threads' loops at once (a threaded web app): each loop opens connections of
its own, closed when it ends, and the budgets and rate windows, which live in the server,
count every loop's calls exactly."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import modelyard
from modelyard.errors import BudgetExceededError, RateLimitedError
from modelyard.state.postgres import PostgresStore
from tests.state.conftest import POSTGRES_URL, REDIS_URL, fresh_tables, unique_prefix
from tests.test_yard_threads import in_threads

RPM = 5
"""The model's requests a minute: what every loop's calls count against together."""


@dataclass(frozen=True, slots=True)
class Shared:
    """The config's shared sections, and how to read what the server counted."""

    sections: str
    spent: Callable[[], float]
    """USD the budget `cap` settled, as the server holds it."""


def _redis(prefix: str) -> Shared:
    import redis

    def spent() -> float:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}c:spent:cap:*"))
            return sum(float(client.get(key) or 0) for key in keys)  # type: ignore[arg-type]
        finally:
            client.close()

    sections = (
        f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n"
        f"cache: {{backend: redis, url: '{REDIS_URL}'}}\n"
    )
    return Shared(sections=sections, spent=spent)


def _postgres(tables: str) -> Shared:
    import asyncpg

    async def read() -> float:
        conn = await asyncpg.connect(POSTGRES_URL)
        try:
            value = await conn.fetchval(
                f"SELECT COALESCE(SUM(value), 0) FROM {tables}counters WHERE key LIKE 'spent:cap:%'"
            )
        finally:
            await conn.close()
        return float(value)

    sections = (
        f"state: {{backend: postgres, url: '{POSTGRES_URL}', prefix: '{tables}'}}\n"
        f"ledger: {{backend: postgres, url: '{POSTGRES_URL}', table_prefix: {tables}}}\n"
    )
    return Shared(sections=sections, spent=lambda: asyncio.run(read()))


@pytest.fixture
async def tables() -> AsyncIterator[str]:
    """A table prefix no other run uses; the state tables under it are dropped afterwards."""
    async for name in fresh_tables(PostgresStore):
        yield name


@pytest.fixture(
    params=[
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("postgres", marks=pytest.mark.postgres),
    ]
)
def shared(request: pytest.FixtureRequest) -> Iterator[Shared]:
    if request.param == "redis":
        prefix = unique_prefix()
        yield _redis(prefix)
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
    else:
        yield _postgres(request.getfixturevalue("tables"))


def config(shared: Shared) -> str:
    return f"""
models:
  m:
    local: {{type: fake, default: "priced answer"}}
    price: {{input: 1000, output: 1000}}
    limits: {{rpm: {RPM}, when_limited: fail}}
budgets:
  - {{name: cap, scope: total, window: day, limit: 10}}
{shared.sections}"""


async def call(yard: modelyard.Yard, text: str) -> float:
    return (await yard.complete("m", text, max_tokens=5)).cost


def test_one_asyncio_run_after_another_counts_every_call_in_the_shared_state(
    write_config: Callable[[str], Path], shared: Shared, quiet: list[str]
) -> None:
    yard = modelyard.load(write_config(config(shared)))
    costs = [asyncio.run(call(yard, f"batch {n}")) for n in range(RPM)]
    gc.collect()  # what a loop left open warns now
    # The rate window holds every loop's calls: the next, on a loop of its own, is refused.
    with pytest.raises(RateLimitedError):
        asyncio.run(call(yard, "one too many"))
    asyncio.run(yard.aclose())
    assert shared.spent() == pytest.approx(sum(costs))
    gc.collect()
    assert quiet == []


def test_a_budget_refuses_on_the_next_loop_what_earlier_loops_spent(
    write_config: Callable[[str], Path], shared: Shared
) -> None:
    """A call costs $0.01 and reserves its worst case, $0.027: under a $0.05 cap the third
    call fits ($0.02 spent), the fourth does not ($0.03 + $0.027), each on a loop of its own."""
    yard = modelyard.load(write_config(config(shared).replace("limit: 10", "limit: 0.05")))
    costs, refused = [], 0
    for n in range(RPM):
        try:
            costs.append(asyncio.run(call(yard, f"call {n}")))
        except BudgetExceededError:
            refused += 1
    asyncio.run(yard.aclose())
    assert costs == [pytest.approx(0.01)] * 3
    assert refused == RPM - 3
    assert shared.spent() == pytest.approx(0.03)


def test_two_threads_loops_at_once_count_against_one_rate_window_and_budget(
    write_config: Callable[[str], Path], shared: Shared, quiet: list[str]
) -> None:
    yard = modelyard.load(write_config(config(shared)))
    rounds = threading.Barrier(2)

    def thread(name: str) -> Callable[[], Any]:
        async def work() -> tuple[list[float], int]:
            costs, limited = [], 0
            for number in range(RPM):
                await asyncio.to_thread(rounds.wait, 10)  # both loops call together
                try:
                    costs.append(await call(yard, f"{name} {number}"))
                except RateLimitedError:
                    limited += 1
            return costs, limited

        return work

    (a_costs, a_limited), (b_costs, b_limited) = in_threads(thread("a"), thread("b"))
    asyncio.run(yard.aclose())
    assert len(a_costs) + len(b_costs) == RPM  # of 2 * RPM calls, in one window
    assert a_limited + b_limited == RPM
    assert shared.spent() == pytest.approx(sum(a_costs) + sum(b_costs))
    gc.collect()
    assert quiet == []
