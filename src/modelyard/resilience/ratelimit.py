"""Client-side rate limits: slow down before the provider starts refusing us.

A `Limiter` holds one scope's limits (a provider's, shared by its models, or one model's):
requests and tokens per minute, counted in the `StateStore`'s sliding windows so replicas
sharing a store share the limit; calls in flight (`max_concurrency`, per process); and what the
provider itself said — when its rate-limit headers report nothing left, requests are not sent
until one request's share of the reset has passed, and after a 429 not before its Retry-After,
which overrides what the headers suggested (they would only be refused). A request
held that way fails at once with the time left as its `retry_after`: waiting on the
provider's word belongs to the retry layer (bounded by `max_retry_after`, its attempts and
budget, and the deadline) and moving on to the fallback; queueing here as well would wait
twice and, in a 429 storm, release one request per Retry-After while the rest pile up.

Tokens are estimated before the call (the prompt, plus `max_tokens` or the model's maximum
output, per choice) and corrected to the real usage after it, the correction dated when the
estimate was counted (so it leaves the window with it). A request that must wait waits
in a bounded queue for at most `max_wait` and never past its deadline; with
`when_limited: fail`, or when the queue is full, it fails at once with `RateLimitedError`
(code `client_rate_limit`), which a retry honours and a fallback moves past.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from modelyard.config.resilience import LimitsSpec
from modelyard.cost.accounting import REFUSED
from modelyard.cost.prices import estimate_input_tokens
from modelyard.errors import ModelError, RateLimitedError
from modelyard.loops import Slots
from modelyard.model import Model, Wrapper
from modelyard.providers.headers import RateLimitInfo
from modelyard.resilience.streams import closing
from modelyard.state.base import StateStore
from modelyard.state.policy import after_the_call
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

CLIENT_RATE_LIMIT = "client_rate_limit"
MINUTE = 60.0
MAX_LEARNED_HOLD = 600.0
"""The longest hold learned from quota headers (seconds)."""

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimits:
    """One scope's limits and what to do when they bind."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrency: int | None = None
    when_limited: Literal["wait", "fail"] = "wait"
    max_wait: float = 10.0
    max_queue: int = 1000
    window: float = MINUTE
    """The length of a "minute" (shorter under a drill's time scale)."""

    @classmethod
    def from_spec(cls, spec: LimitsSpec | None, time_scale: float = 1.0) -> RateLimits:
        """The limits a config section describes (durations times `time_scale`)."""
        if spec is None:
            return cls(window=MINUTE * time_scale)
        return cls(
            rpm=spec.rpm,
            tpm=spec.tpm,
            max_concurrency=spec.max_concurrency,
            when_limited=spec.when_limited,
            max_wait=spec.max_wait * time_scale,
            max_queue=spec.max_queue,
            window=MINUTE * time_scale,
        )


@dataclass(slots=True)
class Ticket:
    """What one admitted request holds: its token estimate and its concurrency slot."""

    limiter: Limiter
    tokens: int
    slot: bool = False
    settled: bool = field(default=False)
    counted_at: float = 0.0
    """When (the limiter's clock) its request and tokens were counted: a refund is dated then,
    so it leaves the window with what it corrects (`correct_estimate`)."""


async def correct_estimate(
    store: StateStore, key: str, amount: float, *, elapsed: float, window: float
) -> None:
    """Correct an estimate counted `elapsed` seconds ago in the window at `key` by `amount`.
    A refund is dated when the estimate was counted: dated now, it would leave the window as
    long after the estimate as the call ran, the limit having it to spare meanwhile. Usage
    beyond the estimate counts from now (dated back, a call longer than the window would never
    be charged it). A model's tpm and a virtual key's are corrected this way."""
    age = elapsed if amount < 0 else 0.0
    await store.window_correct(key, amount, age=age, window=window)


class Limiter:
    """The limits of one scope (see the module docstring)."""

    def __init__(
        self,
        scope: str,
        limits: RateLimits,
        store: StateStore,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self.scope = scope
        self.limits = limits
        self.store = store
        self._clock = clock
        self._sleep = sleep
        self._slots = Slots(limits.max_concurrency) if limits.max_concurrency else None
        self._waiting = 0
        self._held_until = 0.0
        self._held_why = ""

    def hold(self, seconds: float, why: str, *, exact: bool = False) -> None:
        """Send nothing for `seconds` (the provider said its quota is spent). An `exact` hold
        (a 429's own Retry-After) replaces a longer one guessed from quota headers."""
        until = self._clock() + seconds
        if exact or until > self._held_until:
            self._held_until = until
            self._held_why = why

    def learn(self, info: RateLimitInfo) -> None:
        """A `RemoteModel` rate-limit listener: hold when the provider reports nothing left.

        The reset headers say when the quota is *fully* replenished; quotas refill
        continuously, so with none left the next request is due after one request's share of
        that time (reset / limit), not the whole of it. Holds are capped: a reset far in the
        future is a clock or header problem, not a reason to stop for days.
        """
        if info.remaining_requests == 0 and info.reset_requests_s:
            share = info.reset_requests_s / max(1, info.limit_requests or 1)
            self.hold(min(share, MAX_LEARNED_HOLD), "the provider reports no requests left")
        if info.remaining_tokens == 0 and info.reset_tokens_s:
            self.hold(
                min(info.reset_tokens_s, MAX_LEARNED_HOLD), "the provider reports no tokens left"
            )

    def _held_for(self) -> float:
        return max(0.0, self._held_until - self._clock())

    async def acquire(self, request: ChatRequest, tokens: int) -> Ticket:
        """Admit one request, waiting if the config allows; RateLimitedError otherwise."""
        limits = self.limits
        if limits.tpm is not None and tokens > limits.tpm:
            raise self._refused(
                f"the request needs about {tokens} tokens, more than the tpm limit "
                f"{limits.tpm} allows in a minute; lower max_tokens",
                None,
                retryable=False,
            )
        if self._waiting >= limits.max_queue:
            raise self._refused(f"{self._waiting} requests are already queued", None)
        started = self._clock()
        budget = limits.max_wait if limits.when_limited == "wait" else 0.0
        left = request.remaining()
        by_deadline = left is not None and left < budget
        if left is not None:
            budget = max(0.0, min(budget, left))
        ticket = Ticket(self, tokens)
        self._waiting += 1
        try:
            await self._take_slot(ticket, started, budget, by_deadline)
            try:
                await self._take_window(ticket, started, budget, by_deadline)
            except BaseException:
                self.release(ticket)
                raise
        finally:
            self._waiting -= 1
        return ticket

    async def _take_slot(
        self, ticket: Ticket, started: float, budget: float, by_deadline: bool
    ) -> None:
        if self._slots is None:
            return
        if self._slots.locked():
            left = budget - (self._clock() - started)
            try:
                async with asyncio.timeout(max(left, 0.0)):
                    await self._slots.acquire()
            except TimeoutError:
                raise self._refused(
                    f"all {self.limits.max_concurrency} concurrent slots stayed busy",
                    None,
                    waited=budget,
                    by_deadline=by_deadline,
                ) from None
        else:
            await self._slots.acquire()
        ticket.slot = True

    async def _take_window(
        self, ticket: Ticket, started: float, budget: float, by_deadline: bool
    ) -> None:
        held = self._held_for()
        if held > 0:
            raise self._refused(self._held_why, held)
        while True:
            wait, why = await self._try_window(ticket)
            if wait <= 0:
                return
            waited = self._clock() - started
            if waited + wait > budget:
                if budget > 0 and not by_deadline:  # refused now, not after waiting the budget
                    why += (
                        f"; room again in {wait:.2f}s, longer than the {budget:.2f}s max_wait "
                        "allows"
                    )
                    budget = 0.0
                raise self._refused(why, wait, waited=budget, by_deadline=by_deadline)
            await self._sleep(wait)

    async def _try_window(self, ticket: Ticket) -> tuple[float, str]:
        """Take one request and the ticket's tokens from the windows; (seconds to wait, why) if
        either is full (nothing taken then)."""
        limits, tokens = self.limits, ticket.tokens
        ticket.counted_at = self._clock()
        if limits.rpm is not None:
            wait = (
                await self.store.window_acquire(
                    self._key("rpm"), 1.0, limit=limits.rpm, window=limits.window
                )
            ).wait
            if wait > 0:
                return wait, f"the rpm limit {limits.rpm} is reached"
        if limits.tpm is not None and tokens:
            wait = (
                await self.store.window_acquire(
                    self._key("tpm"), float(tokens), limit=limits.tpm, window=limits.window
                )
            ).wait
            if wait > 0:
                if limits.rpm is not None:
                    await self._force("rpm", -1.0, ticket)
                return wait, f"the tpm limit {limits.tpm} is reached"
        return 0.0, ""

    async def settle(self, ticket: Ticket, used_tokens: int) -> None:
        """Correct the token estimate to what the call really used; frees the slot (also when
        the store cannot take the correction)."""
        try:
            if not ticket.settled and self.limits.tpm is not None and used_tokens != ticket.tokens:
                await self._force("tpm", float(used_tokens - ticket.tokens), ticket)
        finally:
            ticket.settled = True
            self.release(ticket)

    def release(self, ticket: Ticket) -> None:
        """Free the request's concurrency slot (idempotent)."""
        if ticket.slot and self._slots is not None:
            ticket.slot = False
            self._slots.release()

    async def _force(self, kind: str, amount: float, ticket: Ticket) -> None:
        """Correct what `ticket` counted in the `kind` window by `amount` (`correct_estimate`)."""
        await correct_estimate(
            self.store,
            self._key(kind),
            amount,
            elapsed=self._clock() - ticket.counted_at,
            window=self.limits.window,
        )

    def _key(self, kind: str) -> str:
        return f"ratelimit:{self.scope}:{kind}"

    def _refused(
        self,
        why: str,
        retry_after: float | None,
        *,
        waited: float = 0.0,
        by_deadline: bool = False,
        retryable: bool = True,
    ) -> RateLimitedError:
        if by_deadline:
            tail = f"; waiting longer would pass the request's deadline ({waited:.2f}s left)"
        elif waited:
            tail = f"; waited the allowed {waited:.2f}s"
        else:
            tail = ""
        return RateLimitedError(
            f"client-side limit of {self.scope}: {why}{tail}",
            code=CLIENT_RATE_LIMIT,
            retry_after=retry_after,
            retryable=retryable,
        )


def estimated_tokens(request: ChatRequest, max_output_tokens: int) -> int:
    """Tokens a request may use at most: its prompt, estimated, plus its output allowance."""
    output = (request.max_tokens or max_output_tokens) * max(1, request.n)
    return estimate_input_tokens(request) + output


class RateLimitModel(Wrapper):
    """Admits calls to the inner Model through its limiters, in order (provider, model).

    `learner` is the limiter that holds requests when the provider answers 429 with a
    Retry-After: the model's own, since providers count most limits per model.
    """

    def __init__(
        self, inner: Model, limiters: Sequence[Limiter], *, learner: Limiter | None = None
    ) -> None:
        super().__init__(inner)
        self.limiters = tuple(limiters)
        self.learner = learner

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        limited = []
        for limiter in self.limiters:
            values = [
                f"{name}={value}"
                for name in ("rpm", "tpm", "max_concurrency")
                if (value := getattr(limiter.limits, name)) is not None
            ]
            if values:
                limited.append(f"{limiter.scope.split(':')[0]} {' '.join(values)}")
        if limited:
            out["limits"] = "; ".join(limited)
        return out

    async def _admit(self, request: ChatRequest) -> list[Ticket]:
        tokens = estimated_tokens(request, self.info.capabilities.max_output_tokens)
        tickets: list[Ticket] = []
        try:
            for limiter in self.limiters:
                tickets.append(await limiter.acquire(request, tokens))
        except RateLimitedError as exc:
            await self._settle(tickets, 0)
            exc.model = self.name
            exc.provider = self.info.provider
            # Never sent: the ledger counts it as refused, not as a request the model served.
            raise exc.with_decision(
                Decision(
                    node=self.name,
                    kind="model",
                    reason="refused by the client-side rate limit; not sent",
                    error=f"{exc.kind}: {exc}",
                    details={REFUSED: CLIENT_RATE_LIMIT},
                )
            ) from None
        except BaseException:
            await self._settle(tickets, 0)
            raise
        return tickets

    async def _settle(self, tickets: list[Ticket], used: int) -> None:
        for ticket in tickets:
            await after_the_call(
                ticket.limiter.settle(ticket, used), f"the tokens used under {ticket.limiter.scope}"
            )

    def _learn(self, exc: ModelError) -> None:
        if (
            self.learner is not None
            and isinstance(exc, RateLimitedError)
            and exc.code != CLIENT_RATE_LIMIT
            and exc.retry_after
        ):
            why = f"the provider asked to retry after {exc.retry_after:g}s"
            self.learner.hold(exc.retry_after, why, exact=True)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        tickets = await self._admit(request)
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            self._learn(exc)
            await self._settle(tickets, 0)
            raise
        except BaseException:
            for ticket in tickets:
                ticket.limiter.release(ticket)
            raise
        await self._settle(tickets, response.usage.total_tokens)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        tickets = await self._admit(request)
        used = 0
        try:
            async with closing(self.inner.stream(request)) as stream:
                async for chunk in stream:
                    if chunk.response is not None:
                        used = chunk.response.usage.total_tokens
                    yield chunk
        except ModelError as exc:
            self._learn(exc)
            raise
        finally:
            await self._settle(tickets, used)
