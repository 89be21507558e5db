"""A library yard reloads its config file: new calls get the new build, calls in flight finish
on theirs, a bad config changes nothing, and budgets, caches and the ledger carry on."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

import modelyard
from modelyard.config.loader import text_version
from modelyard.errors import BudgetExceededError, ConfigError
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault

KEY = "sk-reload"


def upstream(fake: FakeOpenAI, model_id: str, ledger: Path, connections: int = 10) -> str:
    return f"""
providers:
  up: {{type: openai, base_url: "{fake.url}/v1", api_key: {KEY}, max_connections: {connections}}}
models:
  m: {{provider: up, id: {model_id}, price: {{input: 1, output: 1}}}}
ledger: {{path: "{ledger}", flush_interval: 0.05}}
"""


def capped(answer: str) -> str:
    """A model whose one call (max_tokens=5) fits the day's budget, and a second does not."""
    return f"""
models:
  m:
    local: {{type: fake, default: "{answer}"}}
    price: {{input: 1000, output: 1000}}
budgets:
  - {{name: cap, scope: total, window: day, limit: 0.025}}
state: {{backend: memory}}
"""


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(api_key=KEY).running() as running:
        assert isinstance(running, FakeOpenAI)
        yield running


async def test_new_calls_get_the_new_config_and_a_call_in_flight_finishes_on_its_own(
    write_config: Callable[[str], Path], fake: FakeOpenAI, tmp_path: Path
) -> None:
    ledger = tmp_path / "ledger.db"
    path = write_config(upstream(fake, "gpt-4o-mini", ledger))
    async with modelyard.load(path) as yard:
        before = yard.version
        fake.push(Fault(delay=0.5))
        in_flight = asyncio.create_task(yard.complete("m", "slow one"))
        while not fake.requests:  # noqa: ASYNC110 (the fake serves in a thread of its own)
            await asyncio.sleep(0.01)
        # A new pool (max_connections changed) and a new model id: the old pool serves the
        # call in flight to its end.
        path.write_text(upstream(fake, "gpt-4o", ledger, connections=20))
        diff = await yard.reload()
        after = await yard.complete("m", "after")
        slow = await in_flight
    assert diff.changed == ["models.m", "providers.up"]
    assert yard.version != before
    assert slow.text == "Echo: slow one"
    assert [r.json["model"] for r in fake.requests] == ["gpt-4o-mini", "gpt-4o"]
    assert after.text == "Echo: after"
    # Both generations wrote to the one ledger, which the reload kept open.
    with sqlite3.connect(ledger) as db:
        assert db.execute("SELECT count(*) FROM spend").fetchone()[0] == 2


async def test_a_bad_config_raises_the_config_error_and_the_old_one_keeps_serving(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(capped("old answer"))
    async with modelyard.load(path) as yard:
        before = yard.version
        path.write_text(capped("new answer").replace("local:", "locale:"))
        with pytest.raises(ConfigError) as refused:
            await yard.reload()
        assert "models.m.locale: unknown key" in str(refused.value)
        assert str(path) in str(refused.value)
        assert yard.version == before
        assert (await yard.complete("m", "hi", max_tokens=5)).text == "old answer"


async def test_a_reload_keeps_the_budgets_spend(write_config: Callable[[str], Path]) -> None:
    path = write_config(capped("old answer"))
    async with modelyard.load(path) as yard:
        assert (await yard.complete("m", "hi", max_tokens=5)).text == "old answer"
        path.write_text(capped("new answer"))
        await yard.reload()
        assert yard.get("m") is not None
        # Started from zero, the budget would admit this call.
        with pytest.raises(BudgetExceededError):
            await yard.complete("m", "hi", max_tokens=5)


def test_a_sync_yard_reloads(write_config: Callable[[str], Path]) -> None:
    path = write_config(capped("old answer"))
    with modelyard.load_sync(path) as yard:
        assert yard.complete("m", "hi", max_tokens=5).text == "old answer"
        path.write_text(capped("new answer").replace("limit: 0.025", "limit: 1"))
        diff = yard.reload()
        assert diff.changed == ["budgets", "models.m"]
        assert yard.complete("m", "hi", max_tokens=5).text == "new answer"
        path.write_text("models: [")
        with pytest.raises(ConfigError):
            yard.reload()
        assert yard.complete("m", "hi", max_tokens=5).text == "new answer"


def test_a_watching_sync_yard_reloads_when_its_file_changes(
    write_config: Callable[[str], Path],
) -> None:
    path = write_config(capped("old answer"))
    with modelyard.load_sync(path, watch=True) as yard:
        time.sleep(0.3)  # let the watch arm
        path.write_text(capped("new answer"))
        new = text_version(capped("new answer"))
        deadline = time.monotonic() + 10
        while yard.yard.version != new and time.monotonic() < deadline:
            time.sleep(0.1)
        assert yard.complete("m", "hi", max_tokens=5).text == "new answer"


def test_reloads_at_once_on_one_loop_then_another_each_apply(
    write_config: Callable[[str], Path],
) -> None:
    """Two reloads at once wait on a lock: the next loop's reloads must not find it bound to
    the loop that has ended."""

    def text(answer: str) -> str:
        return capped(answer).replace("limit: 0.025", "limit: 1")

    path = write_config(text("first"))
    yard = modelyard.load(path)

    async def twice(answer: str) -> str:
        path.write_text(text(answer))
        await asyncio.gather(yard.reload(), yard.reload())
        return (await yard.complete("m", "hi", max_tokens=5)).text

    assert asyncio.run(twice("second")) == "second"
    assert asyncio.run(twice("third")) == "third"
    asyncio.run(yard.aclose())
