"""A process killed outright (SIGKILL) mid-request, on the real Redis and PostgreSQL: what its
requests reserved is given back once their leases expire, and nothing is charged for them."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.config.loader import load_config
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget, BudgetStatus
from modelyard.cost.budget_leases import LeaseKeeper
from modelyard.state.base import StateStore
from modelyard.state.factory import make_store
from modelyard.state.policy import PolicyStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from tests.conftest import ROOT
from tests.state.conftest import POSTGRES_URL, REDIS_URL

pytestmark = [pytest.mark.redis, pytest.mark.postgres]

LEASE = 10.0
"""The shortest `state.hold_lease` a config may set."""
REQUESTS = 5
CONFIG = """
state: {{backend: {backend}, url: "{url}", prefix: "{prefix}", hold_lease: {lease}}}
ledger: {{enabled: false}}
alerts: {{anomaly: null}}
models:
  slow:
    local: {{type: fake, default: {{text: "never sent", latency: 600}}}}
    price: {{input: 1.0, output: 2.0}}
    max_output_tokens: 100
budgets:
  - {{name: monthly, scope: total, window: month, limit: 1.0}}
"""


async def status(store: StateStore, budget: Budget) -> BudgetStatus:
    out = await BudgetBook(store).status(budget, "all")
    assert out is not None
    return out


async def until_reserved(stores: list[StateStore], budget: Budget) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        held = [await status(store, budget) for store in stores]
        if all(s.reserved > 0 for s in held):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the workers never reserved")


async def drop(store: StateStore) -> None:
    primary = store.primary if isinstance(store, PolicyStore) else store
    if isinstance(primary, RedisStore):
        await primary.clear_prefix()
    if isinstance(primary, PostgresStore):
        await primary.drop_tables()
    await store.aclose()


def test_what_a_killed_replica_reserved_is_given_back_after_its_lease(
    write_config: Callable[..., Path],
) -> None:
    prefix = f"t{uuid.uuid4().hex[:10]}_"
    paths = [
        write_config(
            CONFIG.format(backend=backend, url=url, prefix=prefix, lease=LEASE),
            name=f"{backend}.yaml",
        )
        for backend, url in (("redis", REDIS_URL), ("postgres", POSTGRES_URL))
    ]
    loaded = [load_config(path) for path in paths]
    budget = Budget.from_spec(loaded[0].config.budgets[0])
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "tests.cost.budget_worker", str(path), "slow", str(REQUESTS)],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for path in paths
    ]

    async def scenario() -> None:
        stores = [make_store(c.config.state, c.base_dir) for c in loaded]
        try:
            await until_reserved(stores, budget)
            for worker in workers:
                worker.send_signal(signal.SIGKILL)
                worker.wait(timeout=10)
            killed_at = time.monotonic()
            held = [await status(store, budget) for store in stores]
            for store, before in zip(stores, held, strict=True):
                assert before.reserved > 0 and before.spent == 0
                assert await LeaseKeeper(store).sweep() == []  # still within its lease
            await asyncio.sleep(max(0.0, killed_at + LEASE + 0.5 - time.monotonic()))
            for store in stores:
                swept = await LeaseKeeper(store).sweep()
                assert 0 < len(swept) <= REQUESTS
                after = await status(store, budget)
                assert after.reserved == pytest.approx(0.0, abs=1e-12)
                assert after.spent == 0
        finally:
            for store in stores:
                await drop(store)

    try:
        asyncio.run(scenario())
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
