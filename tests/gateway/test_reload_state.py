"""What a hot reload keeps of a provider's circuits, learned holds and retry budget: kept while
where its calls go stays the same, started afresh when its endpoint or credentials change."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import pytest
from tests.state.conftest import REDIS_URL, unique_prefix

from modelyard.errors import UnavailableError
from modelyard.live import LiveConfig
from modelyard.model import Model
from modelyard.resilience.breaker import CircuitBreaker
from modelyard.resilience.ratelimit import RateLimitModel
from modelyard.resilience.retry import RetryModel
from modelyard.state.redis import RedisStore

T = TypeVar("T")

BROKEN = "http://127.0.0.1:9/v1"
FIXED = "http://127.0.0.1:10/v1"


def config(
    url: str = BROKEN, *, key: str = "sk-old", state: str = "", per: str = "model", ratio: float = 0
) -> str:
    return f"""
providers:
  up:
    type: openai
    base_url: {url}
    api_key: {key}
    breaker: {{per: {per}, min_calls: 2, failure_rate: 0.5, open_for: 300}}
    retry: {{budget: {{ratio: {ratio}, min_retries: 1}}}}
models:
  gpt: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 1, output: 2}}}}
{state}"""


@pytest.fixture
def written(tmp_path: Path) -> Path:
    return tmp_path / "modelyard.yaml"


def serving(path: Path, text: str) -> LiveConfig:
    """A gateway's live config, started from `text` written at `path`."""
    path.write_text(text)
    return LiveConfig(path, grace=0)


async def opened(circuit: CircuitBreaker) -> None:
    """Fail calls through `circuit` until it opens."""
    for _ in range(2):
        permit = await circuit.admit()
        await circuit.record(permit, UnavailableError("connection refused"))
    assert await circuit.refusing_for() is not None


def circuit(live: LiveConfig, scope: str = "model:gpt") -> CircuitBreaker:
    found = live.current.built.health.get(scope)
    assert found is not None
    return found


def layer(model: Model, kind: type[T]) -> T:
    node = model
    while not isinstance(node, kind):
        node = node.children[0]
    return node


async def reloaded(live: LiveConfig, text: str) -> None:
    live.path.write_text(text)
    await live.reload()


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (config(BROKEN), config(FIXED)),
        (config(key="sk-old"), config(key="sk-new")),
        (config(BROKEN, per="provider"), config(FIXED, per="provider")),
    ],
    ids=["base_url", "api_key", "per-provider"],
)
async def test_a_reload_that_moves_a_provider_closes_its_circuit(
    written: Path, before: str, after: str
) -> None:
    live = serving(written, before)
    scope = "provider:up" if "per: provider" in before else "model:gpt"
    await opened(circuit(live, scope))
    await reloaded(live, after)
    assert await circuit(live, scope).refusing_for() is None
    await live.aclose()


async def test_a_reload_that_leaves_the_endpoint_keeps_its_open_circuit(written: Path) -> None:
    live = serving(written, config())
    await opened(circuit(live))
    await reloaded(live, config() + "# an unrelated edit\n")
    assert await circuit(live).refusing_for() is not None
    await live.aclose()


async def test_a_reload_that_moves_a_provider_forgets_the_hold_its_old_endpoint_asked_for(
    written: Path,
) -> None:
    live = serving(written, config())
    limiter = layer(live.current.models["gpt"], RateLimitModel).limiters[-1]
    limiter.hold(600, "the provider asked to retry after 600s", exact=True)
    await reloaded(live, config() + "# an unrelated edit\n")
    assert layer(live.current.models["gpt"], RateLimitModel).limiters[-1]._held_for() > 0
    await reloaded(live, config(FIXED))
    assert layer(live.current.models["gpt"], RateLimitModel).limiters[-1]._held_for() == 0
    await live.aclose()


@pytest.mark.redis
async def test_a_shared_circuit_follows_the_endpoint_across_replicas(written: Path) -> None:
    """On Redis, the replica reloaded to the fixed endpoint starts closed, while one still on
    the broken endpoint keeps its open circuit (and its failures do not reach the new one)."""
    prefix = unique_prefix()
    state = f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{prefix}'}}\n"
    other = written.with_name("replica.yaml")
    live, replica = serving(written, config(state=state)), serving(other, config(state=state))
    try:
        await opened(circuit(replica))
        assert await circuit(live).refusing_for() is not None, "one circuit across replicas"
        await reloaded(live, config(FIXED, state=state))
        assert await circuit(live).refusing_for() is None
        assert await circuit(replica).refusing_for() is not None
    finally:
        await live.aclose()
        await replica.aclose()
        cleaner = RedisStore(REDIS_URL, prefix=prefix)
        await cleaner.clear_prefix()
        await cleaner.aclose()


async def test_a_retry_budget_is_carried_across_a_reload(written: Path) -> None:
    live = serving(written, config())
    budget = layer(live.current.models["gpt"], RetryModel).budget
    assert budget is not None
    assert await budget.try_spend()  # the one retry `min_retries` allows
    await reloaded(live, config() + "# an unrelated edit\n")
    carried = layer(live.current.models["gpt"], RetryModel).budget
    assert carried is not None and carried is not budget
    assert not await carried.try_spend()
    await live.aclose()
