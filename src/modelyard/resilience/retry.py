"""Retries: repeat a call that failed in a way that may pass, without making an outage worse.

The rules, in the order they are checked after a failure:
1. never retry what cannot succeed (`error.retryable` is False: context length, content filter,
   auth, bad request, exhausted quota, an open circuit), nor a 429 when the request says its
   caller sends it on to another deployment at once (`fails_over_on_429`: a balance with a
   member left to try, as LiteLLM's Router moves on from a rate-limited deployment);
2. at most `attempts` retries per request;
3. wait what the provider asked (`retry_after`, from Retry-After, retry-after-ms or the
   rate-limit reset headers) — but when it asks for longer than `max_retry_after`, give up at
   once and let the 429 go up to a fallback; otherwise back off exponentially with jitter;
4. never sleep past the request's deadline;
5. spend from the provider's retry budget (`RetryBudget`): once retries would add more than
   the configured share of traffic, fail fast, so an outage does not multiply the load.
A stream is retried only until its first content reached the caller; after that it ends with
`StreamInterruptedError`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Literal

from modelyard.config.resilience import RetryBudgetSpec, RetrySpec
from modelyard.errors import ModelError, RateLimitedError, StreamInterruptedError
from modelyard.model import Model, Wrapper, elapsed_ms
from modelyard.resilience.streams import GuardedStream, annotate, interrupted
from modelyard.state.base import Claim, StateStore
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision, Usage

Sleep = Callable[[float], Awaitable[None]]


async def sleep_at_least(seconds: float) -> None:
    """Sleep `seconds` of `time.monotonic`, the clock a rate limiter's hold is set on.

    An event loop's timer may fire early by its granularity: uvloop (the gateway's loop) counts
    in milliseconds from the time cached at its iteration's start, so `asyncio.sleep(2)` can end
    up to a millisecond short. A retry that waited a 429's Retry-After so would reach the
    model's limiter while the hold that 429 set still had that millisecond to run, and be
    refused without being sent (a retry spent on nothing)."""
    until = time.monotonic() + seconds
    await asyncio.sleep(seconds)
    for _ in range(100):  # each more sleep is shorter: the first is all but ever enough
        left = until - time.monotonic()
        if left <= 0:
            return
        await asyncio.sleep(left)


Tries = Callable[[int, float], Model]
"""The Model each try calls, given the try's number (from 1) and the seconds waited before it:
the inner model inside a span of its own when the config traces
(`observability.attempts.TracedTries`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long to wait between tries."""

    attempts: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 20.0
    jitter: Literal["full", "decorrelated", "none"] = "full"
    max_retry_after: float = 60.0

    @classmethod
    def from_spec(cls, spec: RetrySpec, time_scale: float = 1.0) -> RetryPolicy:
        """The policy a config section describes (durations times `time_scale`)."""
        return cls(
            attempts=spec.attempts,
            initial_backoff=spec.initial_backoff * time_scale,
            max_backoff=spec.max_backoff * time_scale,
            jitter=spec.jitter,
            max_retry_after=spec.max_retry_after * time_scale,
        )

    def backoff(self, retry: int, previous: float, rng: random.Random) -> float:
        """Seconds to wait before retry number `retry` (0-based) when the provider said nothing;
        `previous` is the last wait (for decorrelated jitter)."""
        ceiling = min(self.max_backoff, self.initial_backoff * 2.0**retry)
        if self.jitter == "full":
            return rng.uniform(0.0, ceiling)
        if self.jitter == "decorrelated":
            low = self.initial_backoff
            return min(self.max_backoff, rng.uniform(low, max(low, previous * 3)))
        return ceiling


class RetryBudget:
    """A provider's allowance of retries, shared by its models (and, through the store, by
    every replica): per window, `min_retries` plus `ratio` x the requests sent."""

    def __init__(
        self,
        key: str,
        spec: RetryBudgetSpec,
        store: StateStore,
        *,
        time_scale: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.ratio = spec.ratio
        self.min_retries = spec.min_retries
        self.window = spec.window * time_scale
        self.store = store
        self.clock = clock

    def _bucket(self) -> int:
        return int(self.clock() // self.window)

    async def record_request(self) -> None:
        """Count one request (its first try) towards the allowance."""
        await self.store.add(
            f"retry-budget:{self.key}:requests:{self._bucket()}", 1.0, ttl=self.window * 2
        )

    async def try_spend(self) -> bool:
        """Take one retry from the allowance; False when it is spent."""
        bucket = self._bucket()
        current = await self.store.counter(f"retry-budget:{self.key}:requests:{bucket}")
        previous = await self.store.counter(f"retry-budget:{self.key}:requests:{bucket - 1}")
        allowed = self.min_retries + self.ratio * max(current, previous)
        claim = Claim(
            key=f"retry-budget:{self.key}:retries:{bucket}",
            amount=1.0,
            limit=allowed,
            ttl=self.window * 2,
        )
        return await self.store.reserve([claim]) is None


class RetryModel(Wrapper):
    """Retries the inner Model by the rules in the module docstring."""

    def __init__(
        self,
        inner: Model,
        policy: RetryPolicy,
        *,
        budget: RetryBudget | None = None,
        sleep: Sleep = sleep_at_least,
        rng: random.Random | None = None,
        tries: Tries | None = None,
    ) -> None:
        super().__init__(inner)
        self.policy = policy
        self.budget = budget
        self._tries = tries
        self._sleep = sleep
        self._rng = rng or random.Random()

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        out["retries"] = self.policy.attempts
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        run = _Run(self)
        if self.budget is not None:
            await self.budget.record_request()
        while True:
            try:
                response = await self._try(run).complete(request)
            except ModelError as exc:
                wait = await self._failed(run, exc, request)
                if wait is None:
                    raise run.gave_up(exc) from None
                await self._sleep(wait)
                continue
            return run.answered(response)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        run = _Run(self)
        if self.budget is not None:
            await self.budget.record_request()
        while True:
            attempt = GuardedStream(self._try(run).stream(request))
            try:
                async for chunk in attempt.chunks():
                    yield chunk
            except ModelError as exc:
                if attempt.committed:
                    run.record(exc, "stream broke after its first content; not retried")
                    sent = len(attempt.assembler.text)
                    error = interrupted(exc, model=self.name, sent_chars=sent)
                    raise run.finish(error)  # noqa: B904 (its cause is set)
                wait = await self._failed(run, exc, request)
                if wait is None:
                    raise run.gave_up(exc) from None
                await self._sleep(wait)
                continue
            assert attempt.response is not None
            yield Chunk(response=run.answered(attempt.response))
            return

    def _try(self, run: _Run) -> Model:
        """What the next try calls: the inner model, in its own span when traced."""
        if self._tries is None:
            return self.inner
        return self._tries(run.tries + 1, run.previous_wait)

    async def _failed(self, run: _Run, exc: ModelError, request: ChatRequest) -> float | None:
        """Record a failed try; the seconds to wait before the next, or None to give up."""
        retry = run.tries
        reason = await self._refusal(exc, request, retry, run.previous_wait)
        if isinstance(reason, str):
            run.record(exc, reason)
            return None
        run.record(exc, f"retrying in {reason * 1000:.0f} ms")
        run.previous_wait = reason
        run.waits.append(reason)
        return reason

    async def _refusal(
        self, exc: ModelError, request: ChatRequest, retry: int, previous: float
    ) -> str | float:
        """Why not to retry (a reason), or how long to wait first."""
        # A stream that broke before any content reached the caller (this wrapper only sees
        # those: later breaks are handled where the content passed) is as good as unsent.
        retryable = exc.retryable or isinstance(exc, StreamInterruptedError)
        if not retryable:
            return f"{exc.kind} cannot succeed on a retry"
        if request.fails_over_on_429 and isinstance(exc, RateLimitedError):
            return "a 429 goes to the balance's next member"
        if retry >= self.policy.attempts:
            return f"all {self.policy.attempts} retries used"
        if exc.retry_after is not None:
            if exc.retry_after > self.policy.max_retry_after:
                annotate(
                    exc,
                    f"not retried: Retry-After {exc.retry_after:g}s is longer than "
                    f"max_retry_after {self.policy.max_retry_after:g}s",
                )
                return "Retry-After longer than max_retry_after"
            wait = exc.retry_after
        else:
            wait = self.policy.backoff(retry, previous, self._rng)
        left = request.remaining()
        if left is not None and wait >= left:
            annotate(
                exc,
                f"not retried: waiting {wait:.2f}s would pass the request's deadline "
                f"({max(left, 0.0):.2f}s left)",
            )
            return "no time left before the deadline"
        if self.budget is not None and not await self.budget.try_spend():
            annotate(exc, f"not retried: the retry budget of {self.budget.key} is spent")
            return "retry budget spent"
        return wait


class _Run:
    """The tries of one request: their decisions and costs, and how the run ended."""

    __slots__ = (
        "attempts",
        "model",
        "previous_wait",
        "reason",
        "spent",
        "started",
        "used",
        "waits",
    )

    def __init__(self, model: RetryModel) -> None:
        self.model = model
        self.started = time.perf_counter()
        self.attempts: list[Decision] = []
        self.spent = 0.0
        self.used: Usage | None = None
        """The estimated tokens behind `spent` (`ModelError.usage`), if any try was billed."""
        self.previous_wait = 0.0
        self.waits: list[float] = []
        self.reason = ""

    @property
    def tries(self) -> int:
        return len(self.attempts)

    def record(self, exc: ModelError, reason: str) -> None:
        from modelyard.patterns.records import failed  # at import, a cycle through patterns

        self.attempts.append(failed(self.model.inner, exc))
        self.spent += exc.cost
        if exc.usage is not None:
            self.used = exc.usage if self.used is None else self.used + exc.usage
        self.reason = reason

    def _details(self) -> dict[str, object]:
        return {"attempts": self.tries, "waits_ms": [round(w * 1000, 1) for w in self.waits]}

    def answered(self, response: ChatResponse) -> ChatResponse:
        if not self.attempts:
            return response
        from modelyard.patterns.records import answered  # at import, a cycle through patterns

        self.attempts.append(answered(self.model.inner, response))
        cost = self.spent + response.cost
        decision = Decision(
            node=self.model.name,
            kind="retry",
            chosen=response.model,
            reason=f"answered on try {self.tries} after {self.tries - 1} failure(s)",
            latency_ms=elapsed_ms(self.started),
            cost=cost,
            children=tuple(self.attempts),
            details=self._details(),
        )
        return replace(response, cost=cost, decision=decision)

    def gave_up(self, exc: ModelError) -> ModelError:
        if self.tries == 1:
            exc.cost, exc.usage = self.spent, self.used
            return exc
        return self.finish(exc)

    def finish(self, exc: ModelError) -> ModelError:
        exc.cost, exc.usage = self.spent, self.used
        decision = Decision(
            node=self.model.name,
            kind="retry",
            reason=f"gave up after {self.tries} tries: {self.reason}",
            latency_ms=elapsed_ms(self.started),
            cost=self.spent,
            error=f"{exc.kind}: {exc.message}",
            children=tuple(self.attempts),
            details=self._details(),
        )
        return exc.with_decision(decision)
