"""Circuit breakers: stop calling a model (or a whole provider) that keeps failing, and find
out by probing when it is back.

closed ──(failure rate ≥ failure_rate over `window`, at least min_calls calls)──► open
open ──(open_for elapsed: one probe let through)──► half-open
half-open ──(`probes` successful probes in a row)──► closed;  ──(a probe fails)──► open

While open, calls fail at once with `UnavailableError(code="circuit_open")`, which is not
retryable, so a fallback moves on without waiting. The state lives in a `StateStore`, so
replicas sharing a store share their circuits: one replica's failures open the circuit for
all, and only one probe at a time goes out across them.

What counts as a failure: only what says the provider is unwell — 5xx and connection errors,
timeouts, malformed answers, broken streams, and 429s from the provider (one among successes
hardly moves the rate, but a provider that keeps refusing us is as good as down for our
traffic). Timeouts count even when the request's deadline was the tighter limit: a model that
cannot answer within the deadlines callers give it is better skipped for a while, and a
gateway with a default deadline would otherwise never open a circuit on a silent provider.
A 400, 401, 403, 404, context-length or content-filter error says nothing about the
provider's health and is not counted, nor are our own client-side limits and open circuits.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

import orjson

from modelyard.config.resilience import BreakerSpec
from modelyard.errors import (
    BadResponseError,
    ModelError,
    ModelTimeoutError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.model import Model, Wrapper
from modelyard.resilience.streams import closing
from modelyard.state.base import Claim, StateStore
from modelyard.state.policy import after_the_call
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

CIRCUIT_OPEN = "circuit_open"
CLIENT_CODES = frozenset({CIRCUIT_OPEN, "client_rate_limit"})
"""Error codes modelyard itself raises; they say nothing about the provider."""
_BUCKETS = 10


def counts_as_failure(exc: ModelError) -> bool:
    """Whether an error says the provider is unhealthy (see the module docstring)."""
    if exc.code in CLIENT_CODES:
        return False
    return isinstance(
        exc,
        UnavailableError
        | ModelTimeoutError
        | BadResponseError
        | StreamInterruptedError
        | RateLimitedError,
    )


class CircuitState(StrEnum):
    """Where a circuit is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerPolicy:
    """When a circuit opens and how it closes again."""

    failure_rate: float = 0.5
    min_calls: int = 5
    window: float = 30.0
    open_for: float = 15.0
    probes: int = 1

    @classmethod
    def from_spec(cls, spec: BreakerSpec, time_scale: float = 1.0) -> BreakerPolicy:
        """The policy a config section describes (durations times `time_scale`)."""
        return cls(
            failure_rate=spec.failure_rate,
            min_calls=spec.min_calls,
            window=spec.window * time_scale,
            open_for=spec.open_for * time_scale,
            probes=spec.probes,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BreakerHealth:
    """A circuit's state as the health registry reports it."""

    scope: str
    state: CircuitState
    failure_rate: float
    calls: int
    failures: int
    last_error: str | None = None
    opened_at: float | None = None
    """Wall-clock time (epoch seconds) the circuit last opened, while it is not closed."""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict."""
        return {
            "scope": self.scope,
            "state": str(self.state),
            "failure_rate": round(self.failure_rate, 4),
            "calls": self.calls,
            "failures": self.failures,
            "last_error": self.last_error,
            "opened_at": self.opened_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class _Stored:
    """What the store keeps for a circuit; `generation` renews the window and probe keys."""

    state: CircuitState = CircuitState.CLOSED
    generation: int = 0
    until: float = 0.0
    opened_at: float | None = None
    failure_rate: float = 0.0
    calls: int = 0
    last_error: str | None = None

    def dumps(self) -> bytes:
        return orjson.dumps(
            {
                "state": str(self.state),
                "generation": self.generation,
                "until": self.until,
                "opened_at": self.opened_at,
                "failure_rate": self.failure_rate,
                "calls": self.calls,
                "last_error": self.last_error,
            }
        )

    @classmethod
    def loads(cls, raw: bytes | None) -> _Stored:
        if raw is None:
            return cls()
        data = orjson.loads(raw)
        return cls(
            state=CircuitState(data["state"]),
            generation=int(data["generation"]),
            until=float(data["until"]),
            opened_at=data.get("opened_at"),
            failure_rate=float(data.get("failure_rate", 0.0)),
            calls=int(data.get("calls", 0)),
            last_error=data.get("last_error"),
        )


@dataclass(frozen=True, slots=True)
class Permit:
    """Leave to make one call; a probe's outcome decides the circuit."""

    breaker: CircuitBreaker
    generation: int
    probe: bool


class CircuitBreaker:
    """One circuit: a model's or a provider's, named by `scope`.

    `endpoint` (a digest of where the calls go and with which credentials) is part of the
    circuit's keys in the store: a reload that points the scope elsewhere, or gives it another
    key, starts a closed circuit instead of holding the old endpoint's failures against the new
    one, also for replicas still on the old config, which keep theirs."""

    def __init__(
        self,
        scope: str,
        policy: BreakerPolicy,
        store: StateStore,
        *,
        endpoint: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.scope = scope
        self.policy = policy
        self.store = store
        self.clock = clock
        self.last_error: str | None = None
        self._key = f"breaker:{scope}@{endpoint}" if endpoint else f"breaker:{scope}"
        self._bucket_width = policy.window / _BUCKETS

    async def _load(self, *, exact: bool = False) -> _Stored:
        """The circuit's state; a shared store may answer from a cache a fraction of a second
        old (`state.batched`) unless `exact`, which a change of state reads to compare
        generations: a late or stale caller's change is then dropped, not applied."""
        store = self.store.exact if exact else self.store
        return _Stored.loads(await store.get(f"{self._key}:state"))

    async def admit(self) -> Permit:
        """Leave for one call; raises UnavailableError(code="circuit_open") while open."""
        stored = await self._load()
        if stored.state is CircuitState.CLOSED:
            return Permit(self, stored.generation, False)
        now = self.clock()
        if stored.state is CircuitState.OPEN and now < stored.until:
            wait = stored.until - now
            raise self._open_error(stored, f"next probe in {wait:.1f}s", retry_after=wait)
        probe = Claim(
            key=f"{self._key}:probe:{stored.generation}",
            amount=1.0,
            limit=1.0,
            ttl=self.policy.open_for,
        )
        if await self.store.reserve([probe]) is None:
            return Permit(self, stored.generation, True)
        raise self._open_error(stored, "a probe is in flight")

    async def record(self, permit: Permit, error: ModelError | None) -> None:
        """Take a call's outcome into account (None: it succeeded)."""
        failed = error is not None and counts_as_failure(error)
        if failed:
            assert error is not None
            self.last_error = f"{error.kind}: {error.message}"[:300]
        if permit.probe:
            await self._probed(permit, error, failed)
            return
        bucket = int(self.clock() // self._bucket_width)
        prefix = f"{self._key}:{permit.generation}"
        ttl = self.policy.window * 2
        await self.store.add(f"{prefix}:calls:{bucket}", 1.0, ttl=ttl)
        if not failed:
            return
        await self.store.add(f"{prefix}:failures:{bucket}", 1.0, ttl=ttl)
        calls, failures = await self._window(permit.generation)
        if calls >= self.policy.min_calls and failures / calls >= self.policy.failure_rate:
            await self._open(permit.generation, failures / calls, calls)

    async def release(self, permit: Permit) -> None:
        """Give back a permit whose call ended without an outcome (cancelled, abandoned)."""
        if permit.probe:
            await self.store.delete(f"{self._key}:probe:{permit.generation}")

    async def _probed(self, permit: Permit, error: ModelError | None, failed: bool) -> None:
        if failed:
            await self._open(permit.generation, 1.0, 1)
            return
        await self.release(permit)
        if error is not None:
            return  # e.g. a 400: the probe says nothing either way; the next call probes again
        streak = await self.store.adjust(
            f"{self._key}:streak:{permit.generation}", 1.0, ttl=self.policy.window
        )
        if streak >= self.policy.probes and await self._current(permit.generation):
            closed = _Stored(state=CircuitState.CLOSED, generation=permit.generation + 1)
            await self.store.set(f"{self._key}:state", closed.dumps())

    async def _current(self, generation: int) -> bool:
        """Whether the circuit is still at `generation`: not when the outcome is late (of a call
        made before the circuit last changed), nor admitted on another process's state read
        before it changed."""
        return (await self._load(exact=True)).generation == generation

    async def _open(self, generation: int, rate: float, calls: int) -> None:
        if not await self._current(generation):
            return
        now = self.clock()
        opened = _Stored(
            state=CircuitState.OPEN,
            generation=generation + 1,
            until=now + self.policy.open_for,
            opened_at=now,
            failure_rate=rate,
            calls=calls,
            last_error=self.last_error,
        )
        await self.store.set(f"{self._key}:state", opened.dumps())

    async def _window(self, generation: int) -> tuple[int, int]:
        last = int(self.clock() // self._bucket_width)
        prefix = f"{self._key}:{generation}"
        calls = failures = 0.0
        for bucket in range(last - _BUCKETS + 1, last + 1):
            calls += await self.store.counter(f"{prefix}:calls:{bucket}")
            failures += await self.store.counter(f"{prefix}:failures:{bucket}")
        return int(calls), int(failures)

    def _open_error(
        self, stored: _Stored, when: str, retry_after: float | None = None
    ) -> UnavailableError:
        cause = f"; last error: {stored.last_error}" if stored.last_error else ""
        return UnavailableError(
            f"circuit {self.scope} is open: {stored.failure_rate:.0%} of the last "
            f"{stored.calls} calls failed{cause}; {when}",
            code=CIRCUIT_OPEN,
            retryable=False,
            retry_after=retry_after,  # the gateway's Retry-After: no use asking before the probe
        )

    async def refusing_for(self) -> float | None:
        """Seconds the circuit will still refuse calls (open, before its next probe), or None
        when it lets a call through: closed, or half-open (a probe may go, and must, for the
        circuit ever to close). One read of the store; no permit is taken."""
        stored = await self._load()
        if stored.state is not CircuitState.OPEN:
            return None
        wait = stored.until - self.clock()
        return wait if wait > 0 else None

    async def health(self) -> BreakerHealth:
        """The circuit's state now."""
        stored = await self._load()
        state = stored.state
        if state is CircuitState.OPEN and self.clock() >= stored.until:
            state = CircuitState.HALF_OPEN
        if state is CircuitState.CLOSED:
            calls, failures = await self._window(stored.generation)
            return BreakerHealth(
                scope=self.scope,
                state=state,
                failure_rate=failures / calls if calls else 0.0,
                calls=calls,
                failures=failures,
                last_error=self.last_error,
            )
        return BreakerHealth(
            scope=self.scope,
            state=state,
            failure_rate=stored.failure_rate,
            calls=stored.calls,
            failures=round(stored.failure_rate * stored.calls),
            last_error=stored.last_error,
            opened_at=stored.opened_at,
        )


class BreakerModel(Wrapper):
    """Guards the inner Model with circuits (its own, and its provider's when configured)."""

    def __init__(self, inner: Model, breakers: Sequence[CircuitBreaker]) -> None:
        super().__init__(inner)
        self.breakers = tuple(breakers)

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        out["breakers"] = ", ".join(b.scope for b in self.breakers)
        return out

    async def _admit(self) -> list[Permit]:
        permits: list[Permit] = []
        for breaker in self.breakers:
            try:
                permits.append(await breaker.admit())
            except UnavailableError as exc:
                for permit in permits:
                    await permit.breaker.release(permit)
                exc.model = self.name
                exc.provider = self.info.provider
                decision = Decision(
                    node=self.name,
                    kind="model",
                    reason="circuit open",
                    error=f"{exc.kind}: {exc.message}",  # led by its kind, as every call's
                )
                raise exc.with_decision(decision) from None
        return permits

    async def _record(self, permits: list[Permit], error: ModelError | None) -> None:
        for permit in permits:
            outcome = "a failure" if error is not None else "a success"
            await after_the_call(
                permit.breaker.record(permit, error), f"{outcome} of circuit {permit.breaker.scope}"
            )

    async def _release(self, permits: list[Permit]) -> None:
        for permit in permits:
            await after_the_call(
                permit.breaker.release(permit), f"the probe of circuit {permit.breaker.scope}"
            )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        permits = await self._admit()
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            await self._record(permits, exc)
            raise
        except BaseException:
            await self._release(permits)
            raise
        await self._record(permits, None)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        permits = await self._admit()
        outcome = False
        try:
            async with closing(self.inner.stream(request)) as stream:
                async for chunk in stream:
                    if chunk.response is not None:
                        outcome = True
                        await self._record(permits, None)
                    yield chunk
        except ModelError as exc:
            outcome = True
            await self._record(permits, exc)
            raise
        finally:
            if not outcome:
                await self._release(permits)


def guarding(model: Model) -> tuple[CircuitBreaker, ...]:
    """The circuits guarding `model` itself: those of the breaker wrappers under it that keep
    its name (as `topology.unwrap` folds them). None through a fallback chain or a pattern:
    their circuits do not say whether the node as a whole can answer."""
    found: list[CircuitBreaker] = []
    node = model
    while True:
        if isinstance(node, BreakerModel):
            found.extend(node.breakers)
        children = node.children
        if len(children) != 1 or children[0].name != node.name:
            return tuple(found)
        node = children[0]
