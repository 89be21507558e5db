"""One Yard used from one event loop after another (a script's `asyncio.run` per batch, a test
framework's loop per test): each loop gets pools of its own, closed when it ends."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import modelyard
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import FakeUpstream

KEY = "sk-loops"


def config(fake: FakeOpenAI, ledger: Path) -> str:
    return f"""
providers:
  up: {{type: openai, base_url: "{fake.url}/v1", api_key: {KEY}}}
models:
  m: {{provider: up, id: gpt-4o-mini, price: {{input: 1000, output: 1000}}}}
ledger: {{path: "{ledger}", flush_interval: 30}}
"""


async def batch(yard: modelyard.Yard, number: int) -> list[str]:
    """Two calls at once, so the loop's pool holds two connections, then a stream."""
    answers = await asyncio.gather(
        *(yard.complete("m", f"batch {number} call {i}") for i in range(2))
    )
    streamed = [chunk async for chunk in yard.stream("m", f"batch {number} streamed")]
    final = streamed[-1].response
    assert final is not None
    return [*(a.text for a in answers), final.text]


def spend_rows(ledger: Path) -> int:
    with sqlite3.connect(ledger) as db:
        count: int = db.execute("SELECT count(*) FROM spend").fetchone()[0]
    return count


def test_a_yard_serves_one_event_loop_after_another_leaking_no_pool_and_losing_no_row(
    write_config: Callable[[str], Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = tmp_path / "ledger.db"
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    with FakeOpenAI(api_key=KEY).running() as fake, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        yard = modelyard.load(write_config(config(fake, ledger)))
        answers = []
        for number in range(3):
            answers += asyncio.run(batch(yard, number))
            gc.collect()  # what a loop left unclosed warns now
        asyncio.run(yard.aclose())
        gc.collect()
    assert answers == [
        f"Echo: batch {n} {what}" for n in range(3) for what in ("call 0", "call 1", "streamed")
    ]
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []
    assert [str(u.exc_value) for u in unraisable] == []
    assert spend_rows(ledger) == 9


def test_each_loops_spend_is_written_when_it_ends(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """Though the ledger flushes every 30 s: a script that runs a batch per `asyncio.run` and
    never closes its yard still has its spend recorded, batch by batch."""
    ledger = tmp_path / "ledger.db"
    with FakeOpenAI(api_key=KEY).running() as fake:
        yard = modelyard.load(write_config(config(fake, ledger)))
        for number in range(2):
            asyncio.run(batch(yard, number))
            assert spend_rows(ledger) == 3 * (number + 1)
        asyncio.run(yard.aclose())


def test_a_loop_that_waited_on_the_ledger_leaves_nothing_bound_to_it(
    write_config: Callable[[str], Path], tmp_path: Path
) -> None:
    """A ledger whose lock was waited on (two flushes at once) on the first loop writes on
    the second all the same."""
    ledger = tmp_path / "ledger.db"
    with FakeOpenAI(api_key=KEY).running() as fake:
        yard = modelyard.load(write_config(config(fake, ledger)))
        spend = yard.built.ledger
        assert spend is not None

        async def contended(number: int) -> None:
            await batch(yard, number)
            await asyncio.gather(spend.flush(), spend.flush())

        asyncio.run(contended(0))
        asyncio.run(contended(1))
        asyncio.run(yard.aclose())
    assert spend_rows(ledger) == 6


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[modelyard.Yard, FakeOpenAI]]:
    """One yard for the module's tests, each of which pytest-asyncio runs on a loop of its own."""
    ledger = tmp_path_factory.mktemp("loops") / "ledger.db"
    with FakeOpenAI(api_key=KEY).running() as fake:
        assert isinstance(fake, FakeOpenAI)
        path = tmp_path_factory.mktemp("config") / "config.yaml"
        path.write_text(config(fake, ledger), encoding="utf-8")
        yard = modelyard.load(path)
        yield yard, fake
        asyncio.run(yard.aclose())


@pytest.mark.parametrize("turn", [1, 2])
async def test_a_yard_shared_by_tests_answers_on_each_tests_loop(
    shared: tuple[modelyard.Yard, FakeOpenAI], turn: int
) -> None:
    yard, _ = shared
    assert await batch(yard, turn) == [
        f"Echo: batch {turn} {what}" for what in ("call 0", "call 1", "streamed")
    ]
    (client,) = yard.resources.clients.values()
    assert list(client._sessions) == [asyncio.get_running_loop()]


def test_the_pool_a_tests_loop_used_was_closed_when_the_loop_ended(
    shared: tuple[modelyard.Yard, FakeOpenAI],
) -> None:
    yard, _ = shared
    (client,) = yard.resources.clients.values()
    assert client._sessions == {}


class FakeHook(FakeUpstream):
    """An alert webhook on a real socket (kept alive), answering every POST with {}."""

    def routes(self) -> list[web.RouteDef]:
        async def alerts(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "alert")

        return [web.post("/alerts", alerts)]

    def answer(self, kind: str, request: web.Request, body: Any) -> dict[str, Any]:
        return {}


def test_the_alert_webhooks_pool_is_each_loops_own_too(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    unraisable: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    # Each call costs $0.008 of the $1 budget: the first passes 0.5 %, the second 1.2 %.
    text = """
models:
  m:
    local: {type: fake, default: "priced answer"}
    price: {input: 1000, output: 1000}
budgets:
  - {name: watched, scope: total, window: day, limit: 1, alert_at: [0.005, 0.012]}
state: {backend: memory}
alerts: {log: false, webhook: {url: "%s/alerts"}}
"""
    with FakeHook().running() as hook, warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always", ResourceWarning)
        yard = modelyard.load(write_config(text % hook.url))

        async def call(turn: int) -> None:
            await yard.complete("m", "hi", max_tokens=5)
            async with asyncio.timeout(10):
                while len(hook.requests) < turn:  # noqa: ASYNC110 (the hook serves in a thread)
                    await asyncio.sleep(0.01)

        for turn in (1, 2):
            asyncio.run(call(turn))
            gc.collect()
        asyncio.run(yard.aclose())
        gc.collect()
    assert [r.json["kind"] for r in hook.requests] == ["budget_threshold"] * 2
    assert [str(w.message) for w in seen if issubclass(w.category, ResourceWarning)] == []
    assert [str(u.exc_value) for u in unraisable] == []
