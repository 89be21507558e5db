"""Client-side limits: rpm, tpm, concurrency, learned holds, the queue and its bounds."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from modelyard.errors import RateLimitedError
from modelyard.providers.fake import Reply
from modelyard.providers.headers import RateLimitInfo
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, ChatResponse, user
from tests.resilience.scripted import fails, scripted


def limited(limits: RateLimits, *script: object, **kwargs: object) -> RateLimitModel:
    inner = scripted("m", *script, **kwargs)  # type: ignore[arg-type]
    limiter = Limiter("model:m", limits, MemoryStore())
    return RateLimitModel(inner, [limiter], learner=limiter)


async def test_rpm_fails_fast_when_configured_to() -> None:
    model = limited(RateLimits(rpm=2, when_limited="fail"))
    await model.complete(user("x"))
    await model.complete(user("x"))
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert caught.value.code == "client_rate_limit"
    assert caught.value.retry_after is not None and 0 < caught.value.retry_after <= 60


async def test_rpm_waits_in_the_queue_until_the_window_frees() -> None:
    model = limited(RateLimits(rpm=2, window=0.1, max_wait=1.0))
    started = time.monotonic()
    for _ in range(3):
        await model.complete(user("x"))
    assert 0.09 <= time.monotonic() - started < 0.5


async def test_a_wait_past_the_deadline_fails_at_once_and_says_so() -> None:
    model = limited(RateLimits(rpm=1, window=1.0, max_wait=5.0))
    await model.complete(user("x"))
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x", deadline=time.monotonic() + 0.2))
    assert time.monotonic() - started < 0.05
    assert "deadline" in str(caught.value)


async def test_a_wait_longer_than_max_wait_fails_at_once_saying_how_long_it_would_be() -> None:
    """The window frees in a minute, past max_wait: refused at once (no wait), and said so;
    the message had read "waited the allowed 5.00s" after no wait at all."""
    model = limited(RateLimits(rpm=1, window=60.0, max_wait=5.0))
    await model.complete(user("x"))
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert time.monotonic() - started < 0.05
    message = str(caught.value)
    assert "waited" not in message, message
    room = r"room again in (59\.\d\d|60\.00)s, longer than the 5\.00s max_wait allows"
    assert re.search(rf"the rpm limit 1 is reached; {room}", message), message


async def test_tokens_are_estimated_then_corrected_to_the_real_usage() -> None:
    model = limited(RateLimits(tpm=1000, when_limited="fail"))
    # Each request reserves ~410 tokens (max_tokens 400 + prompt) but uses far fewer, so
    # after correction many fit where only two would without it.
    for _ in range(6):
        await model.complete(user("x", max_tokens=400))
    limiter = model.limiters[0]
    with pytest.raises(RateLimitedError):
        await limiter.acquire(user("x"), 1000)


async def test_a_request_larger_than_the_tpm_is_refused_for_good() -> None:
    model = limited(RateLimits(tpm=100))
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x", max_tokens=500))
    assert not caught.value.retryable
    assert "lower max_tokens" in str(caught.value)


async def test_concurrency_is_capped_and_a_waiter_gives_up_after_max_wait() -> None:
    slow = limited(
        RateLimits(max_concurrency=1, max_wait=0.02), default=Reply(text="slow", latency=0.1)
    )
    first = asyncio.create_task(slow.complete(user("x")))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimitedError) as caught:
        await slow.complete(user("x"))
    assert "concurrent" in str(caught.value)
    assert (await first).text == "slow"
    assert (await slow.complete(user("x"))).text == "slow"


async def test_the_queue_is_bounded() -> None:
    limits = RateLimits(rpm=1, window=0.2, max_wait=1.0, max_queue=1)
    model = limited(limits)
    await model.complete(user("x"))
    waiting = asyncio.create_task(model.complete(user("x")))
    await asyncio.sleep(0.01)
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert "queued" in str(caught.value)
    await waiting


async def test_headers_saying_nothing_is_left_hold_requests_until_the_reset() -> None:
    model = limited(RateLimits(max_wait=10.0))
    model.limiters[0].learn(RateLimitInfo(remaining_requests=0, reset_requests_s=5.0))
    started = time.monotonic()
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert time.monotonic() - started < 0.05  # not queued: the retry layer owns the wait
    assert caught.value.retry_after is not None and 4.9 < caught.value.retry_after <= 5.0
    assert model.inner.calls == []  # type: ignore[attr-defined]


async def test_with_the_limit_known_the_hold_is_one_requests_share_of_the_reset() -> None:
    """Quotas refill continuously: with 10 a window and none left, the next one is due after a
    tenth of the time to a full reset. A reset years away is capped."""
    limiter = limited(RateLimits()).limiters[0]
    limiter.learn(RateLimitInfo(limit_requests=10, remaining_requests=0, reset_requests_s=20.0))
    assert 1.9 < limiter._held_for() <= 2.0
    limiter.learn(RateLimitInfo(remaining_tokens=0, reset_tokens_s=1e8))
    assert limiter._held_for() <= 600.0


async def test_a_429s_own_retry_after_replaces_a_longer_hold_from_quota_headers() -> None:
    model = limited(RateLimits(), fails("rate_limited", retry_after=0.05))
    limiter = model.limiters[0]
    answer = model.inner.complete

    async def refused_with_quota_headers(request: ChatRequest) -> ChatResponse:
        # A RemoteModel reports the 429's quota headers to its listeners before raising.
        limiter.learn(RateLimitInfo(remaining_requests=0, reset_requests_s=30.0))
        return await answer(request)

    model.inner.complete = refused_with_quota_headers  # type: ignore[method-assign]
    with pytest.raises(RateLimitedError):
        await model.complete(user("x"))
    assert 0 < limiter._held_for() <= 0.05  # the provider's 50 ms, not the guessed 30 s


async def test_a_provider_429_with_retry_after_holds_the_next_requests() -> None:
    model = limited(RateLimits(), fails("rate_limited", retry_after=0.05))
    with pytest.raises(RateLimitedError):
        await model.complete(user("x"))
    with pytest.raises(RateLimitedError) as caught:
        await model.complete(user("x"))
    assert caught.value.code == "client_rate_limit"
    assert caught.value.retry_after is not None and caught.value.retry_after <= 0.05
    await asyncio.sleep(0.05)
    assert (await model.complete(user("x"))).text == "ok"
    assert len(model.inner.calls) == 2  # type: ignore[attr-defined]


async def test_a_call_cut_short_gives_back_its_estimate_only_within_its_minute() -> None:
    # The estimate of a call that ran 55 s is corrected as of when it was counted: the refund
    # leaves the window with it. Dated at the call's end, it made room for a second tpm in
    # the next minute beside the 900 tokens taken at 55 s.
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    limits = RateLimits(tpm=1000, when_limited="fail")
    limiter = Limiter("model:m", limits, store, clock=lambda: now[0])
    ticket = await limiter.acquire(user("x"), 1000)
    now[0] = 55.0
    await limiter.settle(ticket, 100)
    await limiter.acquire(user("x"), 900)  # the refund, within the estimate's minute
    now[0] = 61.0
    with pytest.raises(RateLimitedError):
        await limiter.acquire(user("x"), 200)
    await limiter.acquire(user("x"), 100)


async def test_usage_beyond_the_estimate_counts_from_the_calls_end_however_long_it_ran() -> None:
    # A 100-token estimate for a call that ran 90 s and used 900: its minute is over, but the
    # 800 it used beyond the estimate fill the window from its end (dated back, they would
    # never count).
    now = [0.0]
    store = MemoryStore(clock=lambda: now[0])
    limiter = Limiter(
        "model:m", RateLimits(tpm=1000, when_limited="fail"), store, clock=lambda: now[0]
    )
    ticket = await limiter.acquire(user("x"), 100)
    now[0] = 90.0
    await limiter.settle(ticket, 900)
    with pytest.raises(RateLimitedError):
        await limiter.acquire(user("x"), 300)
    await limiter.acquire(user("x"), 200)
