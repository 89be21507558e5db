"""Retries: what is retried, how long between tries, and what the caller gets."""

from __future__ import annotations

import asyncio
import math
import random
import time

import pytest

from modelyard.config.resilience import RetryBudgetSpec
from modelyard.errors import (
    ContextLengthError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.providers.fake import Reply
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.resilience.retry import RetryBudget, RetryModel, RetryPolicy
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from modelyard.types import user
from tests.resilience.scripted import CostlyFailure, Sleeps, fails, scripted

FAST = RetryPolicy(attempts=2, initial_backoff=0.01, max_backoff=0.04, jitter="none")


async def test_retry_after_is_waited_exactly_then_the_retry_answers() -> None:
    inner = scripted("m", fails("rate_limited", retry_after=0.03), "second try")
    sleeps = Sleeps()
    response = await RetryModel(inner, FAST, sleep=sleeps).complete(user("x"))
    assert response.text == "second try"
    assert sleeps.waits == [0.03]
    assert len(inner.calls) == 2


async def test_retry_after_longer_than_allowed_is_not_waited_for() -> None:
    inner = scripted("m", default=fails("rate_limited", retry_after=120.0))
    policy = RetryPolicy(attempts=3, max_retry_after=30.0)
    with pytest.raises(RateLimitedError) as caught:
        await RetryModel(inner, policy, sleep=Sleeps()).complete(user("x"))
    assert len(inner.calls) == 1
    assert caught.value.retry_after == 120.0
    assert "max_retry_after" in str(caught.value)


async def test_a_429_is_handed_back_at_once_when_the_caller_fails_over_on_it() -> None:
    # A balance with another member to try marks the request: its member's retries would hold
    # the request on a rate-limited deployment while an equivalent one is free.
    inner = scripted("m", fails("rate_limited"), fails("unavailable"), "third try")
    sleeps = Sleeps()
    model = RetryModel(inner, FAST, sleep=sleeps)
    with pytest.raises(RateLimitedError):
        await model.complete(user("x", fails_over_on_429=True))
    assert len(inner.calls) == 1 and sleeps.waits == []
    # Other errors are retried as ever: the mark is about 429s alone.
    response = await model.complete(user("x", fails_over_on_429=True))
    assert (response.text, len(inner.calls)) == ("third try", 3)


async def test_non_retryable_errors_are_tried_once() -> None:
    inner = scripted("m", default=fails("context_length"))
    with pytest.raises(ContextLengthError):
        await RetryModel(inner, FAST, sleep=Sleeps()).complete(user("x"))
    assert len(inner.calls) == 1


async def test_backoff_doubles_up_to_the_cap_and_the_last_error_goes_up() -> None:
    inner = scripted("m", default=fails("unavailable"))
    policy = RetryPolicy(attempts=4, initial_backoff=0.01, max_backoff=0.03, jitter="none")
    sleeps = Sleeps()
    with pytest.raises(UnavailableError) as caught:
        await RetryModel(inner, policy, sleep=sleeps).complete(user("x"))
    assert sleeps.waits == [0.01, 0.02, 0.03, 0.03]
    assert len(inner.calls) == 5
    decision = caught.value.decision
    assert decision is not None and decision.kind == "retry" and len(decision.children) == 5


def test_full_jitter_stays_within_the_exponential_ceiling() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, jitter="full")
    rng = random.Random(7)
    waits = [policy.backoff(3, 0.0, rng) for _ in range(200)]
    assert all(0.0 <= w <= 0.8 for w in waits)
    assert max(waits) > 0.5 and min(waits) < 0.2


def test_decorrelated_jitter_grows_from_the_previous_wait_within_the_cap() -> None:
    policy = RetryPolicy(initial_backoff=0.1, max_backoff=1.0, jitter="decorrelated")
    rng = random.Random(3)
    waits = [policy.backoff(1, 0.2, rng) for _ in range(200)]
    assert all(0.1 <= w <= 0.6 for w in waits)


async def test_no_retry_sleeps_past_the_deadline() -> None:
    inner = scripted("m", default=fails("rate_limited", retry_after=0.5))
    sleeps = Sleeps()
    request = user("x", deadline=time.monotonic() + 0.2)
    with pytest.raises(RateLimitedError) as caught:
        await RetryModel(inner, FAST, sleep=sleeps).complete(request)
    assert sleeps.waits == []
    assert "deadline" in str(caught.value)


async def test_a_spent_retry_budget_fails_fast() -> None:
    store = MemoryStore()
    budget = RetryBudget("p", RetryBudgetSpec(ratio=0.0, min_retries=1, window=60), store)
    inner = scripted("m", default=fails("unavailable"))
    model = RetryModel(inner, FAST, budget=budget, sleep=Sleeps())
    with pytest.raises(UnavailableError):
        await model.complete(user("x"))
    assert len(inner.calls) == 2  # the one retry the budget allows
    with pytest.raises(UnavailableError) as caught:
        await model.complete(user("x"))
    assert len(inner.calls) == 3  # no retry left: the second request was tried once
    assert "retry budget" in str(caught.value)


async def test_budget_grows_with_traffic() -> None:
    store = MemoryStore()
    budget = RetryBudget("p", RetryBudgetSpec(ratio=0.5, min_retries=0, window=60), store)
    for _ in range(4):
        await budget.record_request()
    spent = [await budget.try_spend() for _ in range(3)]
    assert spent == [True, True, False]


async def test_failed_tries_are_children_and_their_cost_is_counted() -> None:
    answered = scripted("m", fails("unavailable"), "fine")
    response = await RetryModel(answered, FAST, sleep=Sleeps()).complete(user("x"))
    decision = response.decision
    assert decision is not None and decision.kind == "retry"
    assert [c.reason for c in decision.children] == ["failed", "answered"]
    assert decision.children[0].error is not None
    costly = CostlyFailure("c", UnavailableError, cost=0.25)
    with pytest.raises(UnavailableError) as caught:
        await RetryModel(costly, FAST, sleep=Sleeps()).complete(user("x"))
    assert caught.value.cost == pytest.approx(0.75)


async def test_stream_failing_before_its_first_chunk_is_retried_transparently() -> None:
    inner = scripted("m", fails("overloaded"), "all of it")
    chunks = [c async for c in RetryModel(inner, FAST, sleep=Sleeps()).stream(user("x"))]
    assert "".join(c.text for c in chunks) == "all of it"
    final = chunks[-1].response
    assert final is not None and final.decision is not None and final.decision.kind == "retry"


async def test_stream_cut_after_its_first_chunk_is_not_retried() -> None:
    inner = scripted("m", default=Reply(text="one two three four", cut_after=2))
    received: list[str] = []
    with pytest.raises(StreamInterruptedError) as caught:
        async for chunk in RetryModel(inner, FAST, sleep=Sleeps()).stream(user("x")):
            received.append(chunk.text)
    assert "".join(received) == "one two "
    assert len(inner.calls) == 1
    assert isinstance(caught.value.__cause__, UnavailableError)
    assert "8 characters" in str(caught.value)


async def test_a_successful_first_try_is_returned_untouched() -> None:
    inner = scripted("m", "hello")
    response = await RetryModel(inner, FAST).complete(user("x"))
    assert response.decision is not None and response.decision.kind == "model"
    assert (await collect(RetryModel(inner, FAST).stream(user("x")))).text == "ok"


class CoarseClockLoop(asyncio.SelectorEventLoop):
    """A loop whose clock counts in steps of 10 ms, as uvloop's counts in milliseconds: woken
    by other work, it fires a timer set mid-step up to a step before its delay has passed."""

    def time(self) -> float:
        return math.floor(time.monotonic() * 100) / 100


def test_a_retry_after_waited_on_a_coarse_timer_finds_the_429s_hold_over() -> None:
    # The 429's Retry-After holds the model's limiter as it waits: a timer ending early
    # reached the limiter with the hold still on, and the retry was refused, never sent.
    async def tick() -> None:  # the other work on a gateway's loop
        for _ in range(100_000):
            await asyncio.sleep(0.001)

    async def ask() -> list[str]:
        ticking = asyncio.create_task(tick())
        answers = []
        for _ in range(3):
            inner = scripted("m", fails("rate_limited", retry_after=0.05), "second try")
            limiter = Limiter("model:m", RateLimits(), MemoryStore())
            policy = RetryPolicy(attempts=1, jitter="none")
            model = RetryModel(RateLimitModel(inner, [limiter], learner=limiter), policy)
            answers.append((await model.complete(user("x"))).text)
            assert len(inner.calls) == 2
        ticking.cancel()
        return answers

    with asyncio.Runner(loop_factory=CoarseClockLoop) as runner:
        assert runner.run(ask()) == ["second try"] * 3
