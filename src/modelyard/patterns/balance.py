"""Balance: spread requests over equivalent members (several keys, regions, deployments or
replicas of one model) by a strategy (`balancing.py`), and fail over among them.

For each request the balancer leaves out the members that cannot take it: one whose circuit
is open (read from its breaker's state, at most once a second per member, and not again before
its probe is due; the breaker is not called, so no probe is spent) and one resting, in this
process, as its `Cooldown` says: after a 429 for its Retry-After (without one, the cooldown's
seconds), and after failures of its own in a row when the cooldown counts them; a lone member
rests only for a Retry-After, as no other could take its requests. The strategy orders the rest;
the first is asked, and a failure a fallback moves on for (an outage, a rate limit, a timeout,
a 5xx, a bad key) moves on to the next in that order, each member at most once, within the
deadline and with the time shares of a fallback (`resilience/fallback.py`), whose rules, error
reporting and streaming failover before the first content it uses. A bad request or a content
filter is the caller's and propagates; a context too long moves on only to a member with a
larger (or undeclared) context window. A 429 moves on at once: a member tried while another
waits its turn gets the request marked `fails_over_on_429`, so its own retry layer hands the
429 back rather than retrying the same deployment; the last member left retries as usual.

The record (kind "balance") names the member chosen, the strategy and what it went by (in
`scores`: weights, requests in flight, or latency estimates in ms), the members skipped and
why, and each attempt.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from modelyard.errors import ModelError, RateLimitedError, UnavailableError
from modelyard.model import Model, ModelInfo, Wrapper
from modelyard.patterns.balancing import (
    AFTER_429,
    DEFAULT_EXPLORE,
    Balancer,
    Cooldown,
    MemberRecord,
    Pick,
    Strategy,
)
from modelyard.patterns.records import common_capabilities, since_ms
from modelyard.resilience.breaker import counts_as_failure, guarding
from modelyard.resilience.fallback import FallbackModel, Ordering
from modelyard.resilience.ratelimit import CLIENT_RATE_LIMIT
from modelyard.resilience.streams import closing
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

CIRCUIT_READ_EVERY = 1.0
"""Seconds a member's closed circuit is taken as read: on a shared store each read is a round
trip, and a circuit that opened meanwhile only costs one call that fails at once (its breaker
refuses it, `circuit_open`) and moves on."""


@dataclass(frozen=True, slots=True)
class _CircuitView:
    """What the balancer last read of a member's circuits, until `due` (monotonic): the
    scope of an open one (`due` is then its next probe), or None when they let calls through."""

    due: float = 0.0
    open: str | None = None


class BalanceModel(Model):
    """Sends each request to one of `members` by `strategy`, failing over to the others."""

    def __init__(
        self,
        name: str,
        members: Sequence[Model],
        *,
        strategy: Strategy = "weighted",
        weights: Sequence[float] | None = None,
        explore: float = DEFAULT_EXPLORE,
        seed: int | None = None,
        share: float = 0.5,
        cooldown: Cooldown | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not members:
            raise ValueError(f"balance {name!r} has no members")
        self.members = tuple(members)
        self.balancer = Balancer(
            [m.name for m in self.members], strategy, weights=weights, explore=explore, seed=seed
        )
        self.info = ModelInfo(
            name=name, kind="balance", capabilities=common_capabilities(self.members)
        )
        self.cooldown = cooldown = cooldown or Cooldown()
        self._clock = clock
        records = self.balancer.records
        # A lone member rests only for a Retry-After: no other could take its requests.
        rests = cooldown if len(self.members) > 1 else _NO_REST
        self._tracked = tuple(
            _Tracked(m, record, rests, clock)
            for m, record in zip(self.members, records, strict=True)
        )
        self._circuits = tuple(guarding(m) for m in self.members)
        self._views = [_CircuitView() for _ in self.members]
        self._failover = FallbackModel(
            name, self._tracked, share=share, fail_over_on_429=True, info=self.info
        )

    @property
    def children(self) -> Sequence[Model]:
        return self.members

    @property
    def weights(self) -> tuple[float, ...] | None:
        """The members' weights, when they matter: strategy weighted, and not all equal."""
        weights = self.balancer.weights
        if self.balancer.strategy == "weighted" and len(set(weights)) > 1:
            return weights
        return None

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"kind": "balance", "strategy": self.balancer.strategy}
        if self.weights is not None:
            out["weights"] = ", ".join(
                f"{m.name} {w:g}" for m, w in zip(self.members, self.weights, strict=True)
            )
        return out

    async def pick(self) -> tuple[Pick, dict[str, str]]:
        """This request's order over the members that may take it, and those left out (by
        name, with why); no member is called."""
        now = self._clock()
        eligible: list[int] = []
        skipped: dict[str, str] = {}
        for i, member in enumerate(self.members):
            why = await self._unavailable(i, now)
            if why is None:
                eligible.append(i)
            else:
                skipped[member.name] = why
        if not eligible:
            return Pick((), "no member can take the request"), skipped
        return self.balancer.order(eligible), skipped

    async def _unavailable(self, i: int, now: float) -> str | None:
        record = self.balancer.records[i]
        cooling = record.cool_until - now
        if cooling > 0:
            return f"cooling down for {cooling:.1f}s after {record.cooled_after}"
        if not self._circuits[i]:
            return None
        view = self._views[i]
        if now >= view.due:
            view = self._views[i] = await self._read_circuits(i, now)
        if view.open is None:
            return None
        return f"circuit {view.open} is open (next probe in {max(view.due - now, 0.0):.1f}s)"

    async def _read_circuits(self, i: int, now: float) -> _CircuitView:
        for circuit in self._circuits[i]:
            wait = await circuit.refusing_for()
            if wait is not None:
                return _CircuitView(due=now + wait, open=circuit.scope)
        return _CircuitView(due=now + CIRCUIT_READ_EVERY)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        pick, skipped = await self.pick()
        if not pick.order:
            raise self._none_left(skipped, started)
        members = [self._tracked[i] for i in pick.order]
        return await self._failover.complete_over(request, members, self._ordering(pick, skipped))

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        pick, skipped = await self.pick()
        if not pick.order:
            raise self._none_left(skipped, started)
        members = [self._tracked[i] for i in pick.order]
        ordering = self._ordering(pick, skipped)
        async with closing(self._failover.stream_over(request, members, ordering)) as chunks:
            async for chunk in chunks:
                yield chunk

    def _ordering(self, pick: Pick, skipped: dict[str, str]) -> Ordering:
        details: dict[str, object] = {"strategy": self.balancer.strategy}
        if skipped:
            details["skipped"] = skipped
        return Ordering("balance", pick.reason, pick.scores, details)

    def _none_left(self, skipped: dict[str, str], started: float) -> ModelError:
        """Every member was left out: fail now rather than wake a cooling or broken one."""
        why = "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
        now = self._clock()
        cooling = [
            r.cool_until - now
            for r in self.balancer.records
            if r.cool_until > now and r.cooled_after == AFTER_429
        ]
        error: ModelError
        if len(cooling) == len(self.members):
            soonest = min(cooling)
            error = RateLimitedError(
                f"every member of {self.name} is cooling down after a 429 ({why})",
                model=self.name,
                code="all_cooling_down",
                retry_after=soonest,
            )
        else:
            error = UnavailableError(
                f"no member of {self.name} can take the request ({why})",
                model=self.name,
                code="no_member_available",
                retryable=False,
            )
        decision = Decision(
            node=self.name,
            kind="balance",
            reason="every member was left out",
            latency_ms=since_ms(started),
            error=f"{error.kind}: {error.message}",
            details={"strategy": self.balancer.strategy, "skipped": skipped},
        )
        return error.came_through(self.name).with_decision(decision)


_NO_REST = Cooldown(seconds=0)
"""Rest only for a Retry-After."""


class _Tracked(Wrapper):
    """A member as its balancer calls it: keeps its record (in flight, latency, rests)."""

    def __init__(
        self, inner: Model, record: MemberRecord, cooldown: Cooldown, clock: Callable[[], float]
    ) -> None:
        super().__init__(inner)
        self.record = record
        self.cooldown = cooldown
        self.clock = clock

    async def complete(self, request: ChatRequest) -> ChatResponse:
        record = self.record
        record.in_flight += 1
        started = self.clock()
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            self._failed(exc, started)
            raise
        finally:
            record.in_flight -= 1
        record.observe(self.clock() - started)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        record = self.record
        record.in_flight += 1
        started = self.clock()
        try:
            async with closing(self.inner.stream(request)) as chunks:
                async for chunk in chunks:
                    if chunk.response is not None:
                        record.observe(self.clock() - started)
                    yield chunk
        except ModelError as exc:
            self._failed(exc, started)
            raise
        finally:
            record.in_flight -= 1

    def _failed(self, exc: ModelError, started: float) -> None:
        now = self.clock()
        if isinstance(exc, RateLimitedError):  # its latency says nothing of its speed
            # The gateway's own limit is no provider's 429: it says when it has room, if it
            # knows (a busy slot does not: the next call to end frees it); the cooldown's
            # guess would leave a member that is only busy out for seconds.
            rests = _NO_REST if exc.code == CLIENT_RATE_LIMIT else self.cooldown
            self.record.rate_limited(now, exc.retry_after, rests)
        elif counts_as_failure(exc):
            self.record.failed(now - started)
            self.record.failed_again(now, self.cooldown)
