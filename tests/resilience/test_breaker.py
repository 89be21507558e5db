"""Circuit breakers: when they open, how they probe, what they count, what health shows."""

from __future__ import annotations

import pytest

from modelyard.errors import (
    BadRequestError,
    ModelError,
    ModelTimeoutError,
    RateLimitedError,
    UnavailableError,
)
from modelyard.providers.fake import Reply
from modelyard.resilience.breaker import (
    BreakerModel,
    BreakerPolicy,
    CircuitBreaker,
    CircuitState,
    counts_as_failure,
)
from modelyard.resilience.fallback import FallbackModel
from modelyard.resilience.health import HealthRegistry
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from modelyard.types import user
from tests.resilience.scripted import fails, scripted

POLICY = BreakerPolicy(failure_rate=0.5, min_calls=4, window=10.0, open_for=5.0, probes=2)


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def breaker(clock: Clock, store: MemoryStore | None = None) -> CircuitBreaker:
    return CircuitBreaker("model:a", POLICY, store or MemoryStore(), clock=clock)


async def call(model: BreakerModel) -> str:
    try:
        return (await model.complete(user("x"))).text
    except ModelError as exc:
        return exc.code or exc.kind


async def test_opens_at_the_failure_rate_once_min_calls_is_reached() -> None:
    clock = Clock()
    inner = scripted("a", "ok", "ok", default=fails("unavailable"))
    model = BreakerModel(inner, [breaker(clock)])
    results = [await call(model) for _ in range(5)]
    # ok, ok, fail (1/3: too few calls), fail (2/4 = 50%: opens), then fail fast
    assert results == ["ok", "ok", "unavailable", "unavailable", "circuit_open"]
    assert len(inner.calls) == 4


async def test_open_circuit_error_is_not_retryable_and_names_the_last_error() -> None:
    clock = Clock()
    model = BreakerModel(scripted("a", default=fails("unavailable")), [breaker(clock)])
    for _ in range(4):
        await call(model)
    with pytest.raises(UnavailableError) as caught:
        await model.complete(user("x"))
    assert caught.value.code == "circuit_open" and not caught.value.retryable
    assert "scripted unavailable" in str(caught.value)
    # What the gateway sends as Retry-After: the time until the next probe.
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 30


async def test_probes_close_the_circuit_after_enough_successes_in_a_row() -> None:
    clock = Clock()
    inner = scripted("a", *[fails("unavailable")] * 4, default="back")
    circuit = breaker(clock)
    model = BreakerModel(inner, [circuit])
    for _ in range(4):
        await call(model)
    assert (await circuit.health()).state is CircuitState.OPEN
    clock.now += 5.0
    assert (await circuit.health()).state is CircuitState.HALF_OPEN
    assert await call(model) == "back"  # first probe
    assert (await circuit.health()).state is not CircuitState.CLOSED
    assert await call(model) == "back"  # second probe closes it
    assert (await circuit.health()).state is CircuitState.CLOSED
    assert (await circuit.health()).calls == 0  # a fresh window after closing


async def test_a_failed_probe_reopens_for_another_period() -> None:
    clock = Clock()
    model = BreakerModel(scripted("a", default=fails("timeout")), [breaker(clock)])
    for _ in range(4):
        await call(model)
    clock.now += 5.0
    assert await call(model) == "timeout"  # the probe went out and failed
    assert await call(model) == "circuit_open"
    clock.now += 4.9
    assert await call(model) == "circuit_open"


async def test_only_one_probe_at_a_time() -> None:
    clock = Clock()
    circuit = breaker(clock)
    model = BreakerModel(scripted("a", default=fails("unavailable")), [circuit])
    for _ in range(4):
        await call(model)
    clock.now += 5.0
    first = await circuit.admit()
    assert first.probe
    with pytest.raises(UnavailableError) as caught:
        await circuit.admit()
    assert "probe is in flight" in str(caught.value)
    await circuit.release(first)
    assert (await circuit.admit()).probe


def test_client_errors_do_not_count_but_outages_and_429s_do() -> None:
    assert not counts_as_failure(BadRequestError("bad"))
    assert not counts_as_failure(UnavailableError("open", code="circuit_open"))
    assert counts_as_failure(ModelTimeoutError("late", code="deadline"))
    assert not counts_as_failure(RateLimitedError("ours", code="client_rate_limit"))
    assert counts_as_failure(UnavailableError("down"))
    assert counts_as_failure(ModelTimeoutError("slow"))
    assert counts_as_failure(RateLimitedError("provider 429"))


async def test_a_stream_of_400s_never_opens_the_circuit() -> None:
    clock = Clock()
    circuit = breaker(clock)
    model = BreakerModel(scripted("a", default=fails("bad_request")), [circuit])
    results = {await call(model) for _ in range(10)}
    assert results == {"bad_request"}
    assert (await circuit.health()).state is CircuitState.CLOSED


async def test_replicas_sharing_a_store_share_the_circuit() -> None:
    clock = Clock()
    store = MemoryStore()
    one = BreakerModel(scripted("a", default=fails("unavailable")), [breaker(clock, store)])
    other_inner = scripted("a", default="fine")
    other = BreakerModel(other_inner, [breaker(clock, store)])
    for _ in range(4):
        await call(one)
    assert await call(other) == "circuit_open"
    assert other_inner.calls == []


async def test_open_circuit_sends_a_fallback_on_at_once() -> None:
    clock = Clock()
    primary_inner = scripted("a", default=fails("unavailable"))
    primary = BreakerModel(primary_inner, [breaker(clock)])
    backup = scripted("b", default="backup")
    chain = FallbackModel("f", [primary, backup])
    for _ in range(6):
        assert (await chain.complete(user("x"))).model == "b"
    assert len(primary_inner.calls) == 4


async def test_a_broken_stream_counts_as_a_failure() -> None:
    clock = Clock()
    circuit = breaker(clock)
    model = BreakerModel(scripted("a", default=Reply(text="a b c", cut_after=1)), [circuit])
    for _ in range(4):
        with pytest.raises(UnavailableError):
            await collect(model.stream(user("x")))
    assert (await circuit.health()).state is CircuitState.OPEN


async def test_health_registry_reports_every_circuit() -> None:
    clock = Clock()
    registry = HealthRegistry()
    registry.add(breaker(clock))
    registry.add(CircuitBreaker("provider:p", POLICY, MemoryStore(), clock=clock))
    model = BreakerModel(scripted("a", default=fails("unavailable")), list(registry))
    for _ in range(4):
        await call(model)
    report = await registry.report()
    assert not report.healthy
    assert set(report.degraded) == {"model:a", "provider:p"}
    opened = report.to_dict()["circuits"]
    assert isinstance(opened, list) and opened[0]["opened_at"] == clock.now
    assert "scripted unavailable" in str(opened[0]["last_error"])
