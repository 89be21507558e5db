"""Deadlines: a node's latency budget, enforced.

`DeadlineModel` tightens `request.deadline` to the node's `deadline:` (never loosens it), so
everything below — retries, queues, fallbacks, the transport's timeouts — sees what is left
through `request.remaining()`. Those stop at the deadline by themselves and report what they
did, so the inner node's own record (its kind, its children and their latencies) is kept; a
timeout caused by this node's deadline rather than the caller's says so. An inner Model that
ignores the deadline (a local function that hangs) is abandoned `GRACE` seconds after it, so
the caller never waits much past it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

from modelyard.cost.dispatch import Dispatch, charge, watching
from modelyard.cost.dispatch import current as current_dispatch
from modelyard.errors import ModelError, ModelTimeoutError
from modelyard.model import Model, Wrapper, elapsed_ms
from modelyard.resilience.streams import annotate, closing
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

T = TypeVar("T")

DEADLINE = "deadline"
"""The error code of every timeout caused by the request's own deadline."""

GRACE = 0.05
"""Seconds past the deadline an inner Model has to report its own timeout before it is
abandoned: abandoning it at the deadline itself would race it and lose its record."""

REQUEST_DEADLINE = "the request's deadline"


def deadline_error(
    name: str,
    doing: str,
    *,
    whose: str = REQUEST_DEADLINE,
    kind: str = "deadline",
    started: float | None = None,
) -> ModelTimeoutError:
    """The error for a node whose deadline (`whose`) passed while `doing` something, with its
    record (of `kind`, timed from `started`)."""
    error = ModelTimeoutError(f"{whose} passed {doing}", model=name, code=DEADLINE, retryable=False)
    error.decision = Decision(
        node=name,
        kind=kind,
        reason="deadline passed",
        latency_ms=0.0 if started is None else elapsed_ms(started),
        error=f"{error.kind}: {error.message}",
    )
    return error


def within(
    call: Awaitable[T],
    request: ChatRequest,
    model: Model,
    *,
    grace: float = GRACE,
    whose: str = "the time it was given",
    metered: bool = False,
) -> Awaitable[T]:
    """`call` of `model`, made with `request`, abandoned `grace` seconds after the request's
    deadline (`whose` it is, in the error): a member given a share of the time (a cascade's
    early stage, a fallback's member) that ignores it (a local function that hangs) must not
    take the time the next one needs, nor an ensemble's member the time to combine what did
    arrive. Without a deadline, `call` itself (no extra coroutine on the common path).

    The cut is at that instant, not at the time left measured now from whenever the awaitable
    starts: a timer started later than its measure fires later than the deadline, so a call
    timing itself out at the same deadline (a provider's adapter, a node's own deadline)
    could be recorded by its own timer in one run and by the cut in another. At the instant,
    with no grace, the cut is due first and is what the record says every time.

    The estimate of a call it cuts is counted on the request's meter (`cost.metering`), unless
    `metered`: a model's own cut, inside its meter, which counts the error as it counts any."""
    if request.deadline is None:
        return call
    return _cut(call, request.deadline + grace, model, request, whose, metered)


async def _cut(
    call: Awaitable[T],
    ends: float,
    model: Model,
    request: ChatRequest,
    whose: str,
    metered: bool,
) -> T:
    from modelyard.cost.bounds import charge_partial, waited_for  # resilience uses cost

    started = time.perf_counter()
    watched = watching()
    try:
        with watched:
            # `ends` is a `time.monotonic()` instant, the clock of asyncio's loop (and of
            # uvloop's, to its millisecond).
            async with asyncio.timeout_at(ends):
                return await call
    except TimeoutError:
        error = deadline_error(
            model.name,
            "while waiting for an answer",
            whose=whose,
            kind=model.info.kind,
            started=started,
        )
        # A provider bills the input of a call it was sent (a local function's, nothing), as a
        # budget settles it and as an ensemble counts a cancelled member; one still waiting
        # for a rate-limit slot, say, was never sent and cost nothing. What the calls under it
        # had finished (a cascade's first stage) was billed all the same.
        dispatch = watched.dispatch
        charge_partial(
            error, model, request, sent=dispatch.sent, spent=dispatch.spent, dispatch=dispatch
        )
        if not metered:  # the estimate; the meter counted the rest
            charge(error.cost - dispatch.spent, waited_for(model, dispatch), error.usage)
        raise error from None


async def by_deadline(call: Awaitable[T], request: ChatRequest, name: str, doing: str) -> T:
    """`call`, a user's coroutine that cannot watch the clock (a pipeline gate's or a cascade
    estimator's function), abandoned at the request's deadline with `deadline_error(name,
    doing)`: it must not hold its pattern, and the caller, past it."""
    left = request.remaining()
    if left is None:
        return await call
    timeout = asyncio.timeout(max(left, 0.0))
    try:
        async with timeout:
            return await call
    except TimeoutError:
        if not timeout.expired():  # the function's own timeout, not the deadline
            raise
        raise deadline_error(name, doing) from None


class HeldToDeadline(Wrapper):
    """An inner Model that cannot watch the clock itself (a user's Python function) abandoned
    at the request's deadline, so a coroutine that hangs cannot hold its caller past it (a
    function that blocks the event loop cannot be cut from it). At the deadline itself, as a
    provider's adapter stops there: the patterns above, cut `GRACE` later, must have the time to
    report it with the record of what their other members did."""

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        call = self.inner.complete(request)
        # Part of a model's own stack (a callable's), inside its meter.
        return await within(call, request, self, grace=0.0, whose=REQUEST_DEADLINE, metered=True)

    stream = Model.stream  # answers in full through `complete`, so the stream is held too


class DeadlineModel(Wrapper):
    """Gives the inner Model at most `seconds` (and never more than the caller's deadline)."""

    def __init__(self, inner: Model, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds
        self._own = f"node {self.name}'s deadline ({seconds:g}s)"

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        out["deadline"] = f"{self.seconds:g}s"
        return out

    def _whose(self, request: ChatRequest, tightened: ChatRequest) -> str:
        """Which deadline `tightened` carries: this node's own, or the caller's."""
        assert tightened.deadline is not None
        if request.deadline is None or tightened.deadline < request.deadline:
            return self._own
        return REQUEST_DEADLINE

    def _passed(self, whose: str, doing: str, started: float) -> ModelTimeoutError:
        """The inner Model was abandoned (or never called): the record has its kind."""
        kind = self.inner.info.kind
        return deadline_error(self.name, doing, whose=whose, kind=kind, started=started)

    def _name_deadline(self, exc: ModelError, whose: str, tightened: ChatRequest) -> None:
        """Make an inner timeout caused by this node's deadline say so: the inner Model only
        saw a request whose deadline was near. One well before it (a pipeline stage's share, a
        model that knew it could not finish in time) was caused by a tighter one."""
        note = f"{whose} passed"
        if exc.code != DEADLINE or whose != self._own or note in exc.message:
            return
        left = tightened.remaining()
        if left is not None and left > GRACE:
            return
        annotate(exc, note, record=True)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        tightened = request.with_budget(self.seconds)
        whose = self._whose(request, tightened)
        left = tightened.remaining()
        assert left is not None
        if left <= 0:
            raise self._passed(whose, "before the call started", started)
        try:
            return await within(self.inner.complete(tightened), tightened, self, whose=whose)
        except ModelError as exc:
            self._name_deadline(exc, whose, tightened)
            raise

    def _cut_stream(
        self, whose: str, started: float, request: ChatRequest, seen: int, dispatch: Dispatch
    ) -> ModelTimeoutError:
        """The error for a stream abandoned at the deadline after `seen` characters: costing
        what a provider bills for it (the input if it was sent, and what it wrote), as a call
        cut at a deadline does (`within`), with what its finished calls were billed."""
        from modelyard.cost.bounds import charge_partial, waited_for  # resilience uses cost

        error = self._passed(whose, "while streaming", started)
        inner = self.inner
        charge_partial(
            error, inner, request, seen, sent=dispatch.sent, spent=dispatch.spent, dispatch=dispatch
        )
        # the estimate; the meter has the rest
        charge(error.cost - dispatch.spent, waited_for(inner, dispatch), error.usage)
        return error

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        tightened = request.with_budget(self.seconds)
        whose = self._whose(request, tightened)
        dispatch = Dispatch(current_dispatch())
        seen = 0  # characters streamed: what a cut stream's estimate counts as written
        try:
            async with closing(self.inner.stream(tightened)) as stream:
                iterator = aiter(stream)
                while True:
                    # Until GRACE after the deadline, not the deadline itself: an inner node
                    # that reports at it (a cascade answering with the answer it holds once its
                    # last stage is cut) streams that answer just after it.
                    left = tightened.remaining()
                    assert left is not None
                    if left + GRACE <= 0:
                        raise self._cut_stream(whose, started, tightened, seen, dispatch)
                    # The timeout covers waiting for the next chunk only, never the caller's
                    # own time between chunks (it runs in the caller's task, outside this frame).
                    try:
                        with watching(dispatch):
                            async with asyncio.timeout(left + GRACE):
                                chunk = await anext(iterator)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        cut = self._cut_stream(whose, started, tightened, seen, dispatch)
                        raise cut from None
                    seen += chunk.chars
                    yield chunk
        except ModelError as exc:
            self._name_deadline(exc, whose, tightened)
            raise
