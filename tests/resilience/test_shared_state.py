"""Replicas that share a state store share circuits, rate limits and retry budgets — on every
backend (Redis and PostgreSQL ones talk to the real servers on 127.0.0.1)."""

from __future__ import annotations

import pytest

from modelyard.config.resilience import RetryBudgetSpec
from modelyard.errors import RateLimitedError, UnavailableError
from modelyard.resilience.breaker import BreakerModel, BreakerPolicy, CircuitBreaker, CircuitState
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.resilience.retry import RetryBudget
from modelyard.state.base import StateStore
from modelyard.types import user
from tests.resilience.scripted import fails, scripted
from tests.state.conftest import store  # noqa: F401  (the fixture: every backend in turn)

POLICY = BreakerPolicy(failure_rate=0.5, min_calls=3, window=10.0, open_for=5.0, probes=1)


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_one_replicas_failures_open_the_circuit_for_all(store: StateStore) -> None:  # noqa: F811
    clock = Clock()
    sick = BreakerModel(
        scripted("a", default=fails("unavailable")),
        [CircuitBreaker("model:a", POLICY, store, clock=clock)],
    )
    other_inner = scripted("a", default="fine")
    other_breaker = CircuitBreaker("model:a", POLICY, store, clock=clock)
    other = BreakerModel(other_inner, [other_breaker])
    for _ in range(3):
        with pytest.raises(UnavailableError):
            await sick.complete(user("x"))
    with pytest.raises(UnavailableError) as caught:
        await other.complete(user("x"))
    assert caught.value.code == "circuit_open" and other_inner.calls == []
    clock.now += 5.0
    probe = await other_breaker.admit()
    assert probe.probe
    with pytest.raises(UnavailableError):  # the other replica may not probe at the same time
        await sick.breakers[0].admit()
    await other_breaker.record(probe, None)
    assert (await other_breaker.health()).state is CircuitState.CLOSED
    assert (await other.complete(user("x"))).text == "fine"


async def test_replicas_share_an_rpm_limit(store: StateStore) -> None:  # noqa: F811
    limits = RateLimits(rpm=2, when_limited="fail")
    replicas = [
        RateLimitModel(scripted("m"), [Limiter("model:m", limits, store)]) for _ in range(2)
    ]
    await replicas[0].complete(user("x"))
    await replicas[1].complete(user("x"))
    with pytest.raises(RateLimitedError):
        await replicas[0].complete(user("x"))


async def test_replicas_share_a_retry_budget(store: StateStore) -> None:  # noqa: F811
    spec = RetryBudgetSpec(ratio=0.0, min_retries=2, window=60)
    one, two = (RetryBudget("provider:p", spec, store) for _ in range(2))
    assert [await one.try_spend(), await two.try_spend()] == [True, True]
    assert not await one.try_spend() and not await two.try_spend()
