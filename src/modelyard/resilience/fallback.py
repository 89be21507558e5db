"""Fallback: try the members of a chain in order, choosing the next by the class of the error.

Rules map error kinds (`errors.ERROR_KINDS`) to an action; the most specific kind wins, rules
from the config before the defaults:

    bad_request     propagate        the request itself is wrong; another model would refuse it
    content_filter  propagate        the caller gets the provider's reason (or set a list of
                                     alternatives, e.g. a model with another policy)
    context_length  larger_window    the next members whose context window is larger
    anything else   next             outages, overload, timeouts, rate limits, auth, ...

An action is `next`, `propagate`, `larger_window`, or a list of Models to try instead. Each
member is tried at most once per request, and none once the request's deadline has passed.

A silent member must not eat the whole deadline: while other members wait their turn, a
member may use only `share` (default half) of the time left — a plain call gets a tightened
deadline, a stream must show its first content within it — so a fallback always keeps time
to answer. The last member gets all that is left. A member cut at its share costs what it had
spent: the calls under it that finished, and the input of the one cut if it was sent.

The caller gets the real error: the first member's, never a later fallback's unrelated error
masking it — except when every member tried was rate limited, when the caller gets one
`RateLimitedError` with the soonest `retry_after`, so it knows when to come back.

Streams fail over transparently until content reaches the caller. After that, the stream ends
with `StreamInterruptedError`, never a normal finish — unless `continue_streams` is on and a
next member supports assistant prefill (`capabilities.prefill`): it then continues the answer
from the partial text. Nothing else is ever spliced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from modelyard.cost.dispatch import Dispatch, charge, watching
from modelyard.cost.dispatch import current as current_dispatch
from modelyard.errors import ERROR_KINDS, ModelError, ModelTimeoutError, RateLimitedError
from modelyard.model import Model, ModelInfo, elapsed_ms
from modelyard.resilience.deadline import DEADLINE, within
from modelyard.resilience.streams import GuardedStream, annotate, closing, interrupted
from modelyard.types import ChatRequest, ChatResponse, Choice, Chunk, Decision, Message, Usage

Action = Literal["next", "propagate", "larger_window"] | tuple[Model, ...]

DEFAULT_RULES: Mapping[str, Action] = {
    "bad_request": "propagate",
    "content_filter": "propagate",
    "context_length": "larger_window",
}


_KINDS: Mapping[type, str] = {cls: kind for kind, cls in ERROR_KINDS.items()}


@dataclass(frozen=True, slots=True)
class Ordering:
    """Why the members run in the order given for one request (a balancer's pick): the record
    is then of `kind`, leads with `reason`, and carries `scores` and `details`."""

    kind: str
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    details: Mapping[str, Any] = field(default_factory=dict)


def rule_for(exc: ModelError, rules: Mapping[str, Action]) -> Action:
    """The action for `exc`: the most specific kind in `rules`, then in the defaults."""
    kinds = [_KINDS[cls] for cls in type(exc).__mro__ if cls in _KINDS]
    for table in (rules, DEFAULT_RULES):
        for kind in kinds:
            if kind in table:
                return table[kind]
    return "next"


def next_members(action: Action, failed: Model, queue: Sequence[Model]) -> list[Model]:
    """Who of `queue` may be tried, in order, after `failed` failed with an error whose rule
    is `action` (not `propagate`)."""
    if action == "next":
        return list(queue)
    if action == "larger_window":
        window = failed.info.capabilities.context_window
        if window is None:
            return list(queue)
        return [
            m
            for m in queue
            if m.info.capabilities.context_window is None
            or m.info.capabilities.context_window > window
        ]
    assert isinstance(action, tuple)
    return list(action)


def moves_on(exc: ModelError, failed: Model, to: Model) -> bool:
    """Whether a fallback by the default rules moves on from `failed`, which failed with
    `exc`, to `to`: for an outage, a rate limit, a timeout, a 5xx or a rejected key, not for
    the caller's own errors (a bad request, a content filter), and for a context too long
    only to a larger window. A pipeline stage's escalation follows it too."""
    action = rule_for(exc, {})
    return action != "propagate" and any(m is to for m in next_members(action, failed, [to]))


class FallbackModel(Model):
    """Answers with the first member of `chain` that succeeds, by the rules above."""

    def __init__(
        self,
        name: str,
        chain: Sequence[Model],
        *,
        rules: Mapping[str, Action] | None = None,
        continue_streams: bool = False,
        share: float = 0.5,
        fail_over_on_429: bool = False,
        info: ModelInfo | None = None,
    ) -> None:
        self.chain = tuple(chain)
        self.fail_over_on_429 = fail_over_on_429
        """A balance's: a member tried while others wait gets its request marked
        `fails_over_on_429`, so its own retries do not hold a 429 on the same deployment."""
        self.rules: Mapping[str, Action] = dict(rules or {})
        self.continue_streams = continue_streams
        self.share = share
        first = self.chain[0].info
        self.info = info or ModelInfo(
            name=name, kind="fallback", capabilities=first.capabilities, price=first.price
        )

    @property
    def children(self) -> Sequence[Model]:
        extra = [
            m
            for action in self.rules.values()
            if isinstance(action, tuple)
            for m in action
            if m not in self.chain
        ]
        return (*self.chain, *extra)

    def describe(self) -> dict[str, object]:
        out = dict(self.chain[0].describe()) if self.info.kind != "fallback" else {}
        out["kind"] = self.info.kind
        out["fallbacks"] = " > ".join(m.name for m in self.chain[1:]) or "none"
        if self.rules:
            out["on_error"] = "; ".join(
                f"{kind}: {_shown(action)}" for kind, action in self.rules.items()
            )
        if self.continue_streams:
            out["continue_streams"] = True
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return await self.complete_over(request, self.chain)

    def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        return self.stream_over(request, self.chain)

    async def complete_over(
        self, request: ChatRequest, members: Sequence[Model], ordering: Ordering | None = None
    ) -> ChatResponse:
        """`complete` over `members` in that order instead of the chain: a balancer orders its
        members afresh for each request, says why in `ordering`, and fails over among them by
        these rules."""
        run = _Run(self, ordering)
        queue = list(members)
        while queue:
            member = queue.pop(0)
            if id(member) in run.tried:
                continue
            if not run.may_try(member, request):
                break
            share = run.share(request, queue)
            tightened = self._marked(request.with_budget(share), run, queue)
            whose = "the time it was given" if share is None else _share_of(share)
            try:
                response = await within(member.complete(tightened), tightened, member, whose=whose)
            except ModelError as exc:
                if share is not None and exc.code == DEADLINE and "share" not in exc.message:
                    # The member saw only its share as "the request's deadline": say whose.
                    annotate(exc, f"{whose} passed", record=True)
                run.failed(member, exc)
                action = rule_for(exc, self.rules)
                if action == "propagate":
                    run.stop = f"{exc.kind} is propagated"
                    break
                queue = next_members(action, member, queue)
                continue
            return run.answered(member, response)
        raise run.exhausted()

    async def stream_over(
        self, request: ChatRequest, members: Sequence[Model], ordering: Ordering | None = None
    ) -> AsyncIterator[Chunk]:
        """`stream` over `members` in that order instead of the chain (see `complete_over`)."""
        run = _Run(self, ordering)
        queue = list(members)
        sent = ""
        """Text that already reached the caller from members that then broke."""
        current = request
        while queue:
            member = queue.pop(0)
            if id(member) in run.tried:
                continue
            if not run.may_try(member, current):
                break
            attempt = GuardedStream(member.stream(self._marked(current, run, queue)))
            try:
                share = run.share(current, queue)
                async for chunk in _first_content_within(attempt, share, member, current):
                    yield chunk
            except ModelError as exc:
                run.failed(member, exc)
                action = rule_for(exc, self.rules)
                if attempt.committed or sent:
                    sent += attempt.assembler.text
                    follower = self._follower(action, member, queue, attempt)
                    if follower is None:
                        raise run.interrupted(exc, len(sent))  # noqa: B904 (its cause is set)
                    queue = [follower, *(m for m in queue if m is not follower)]
                    current = _continuation(request, sent)
                    continue
                if action == "propagate":
                    run.stop = f"{exc.kind} is propagated"
                    break
                queue = next_members(action, member, queue)
                continue
            assert attempt.response is not None
            response = _joined(attempt.response, sent) if sent else attempt.response
            yield Chunk(response=run.answered(member, response, continued_from=len(sent)))
            return
        raise run.exhausted()

    def _marked(self, request: ChatRequest, run: _Run, queue: list[Model]) -> ChatRequest:
        """`request` as the member about to be tried gets it: marked `fails_over_on_429` when
        this moves on at once from a 429 (a balance) and another member waits its turn; the
        last one left retries as usual."""
        if not self.fail_over_on_429 or request.fails_over_on_429 or not run.others_wait(queue):
            return request
        return replace(request, fails_over_on_429=True)

    def _follower(
        self, action: Action, failed: Model, queue: list[Model], attempt: GuardedStream
    ) -> Model | None:
        """The member that may continue a broken stream, if continuation is allowed at all."""
        if not self.continue_streams or action == "propagate" or not attempt.continuable:
            return None
        for member in next_members(action, failed, queue):
            if member.info.capabilities.prefill:
                return member
        return None


def _shown(action: Action) -> str:
    return action if isinstance(action, str) else " > ".join(m.name for m in action)


async def _first_content_within(
    attempt: GuardedStream, seconds: float | None, member: Model, request: ChatRequest
) -> AsyncIterator[Chunk]:
    """The attempt's chunks; a ModelTimeoutError if no content came within `seconds` (after
    the first content the stream has all the time the request has), costing what the member
    had spent: its calls that finished (a cascade's first stage), and the input of the one cut
    if it was sent, as a plain call cut at its share costs (`within`)."""
    from modelyard.cost.bounds import charge_partial, waited_for  # resilience uses cost
    from modelyard.patterns.records import failed  # at import, a cycle through patterns

    async with closing(attempt.chunks()) as chunks:
        iterator = aiter(chunks)
        until = None if seconds is None else time.monotonic() + seconds
        whose = "" if seconds is None else _share_of(seconds)  # never cut without a share
        dispatch = Dispatch(current_dispatch())
        while True:
            try:
                if until is None or attempt.committed:
                    chunk = await anext(iterator)
                else:
                    with watching(dispatch):
                        async with asyncio.timeout(max(until - time.monotonic(), 0.0)):
                            chunk = await anext(iterator)
            except StopAsyncIteration:
                return
            except TimeoutError:
                error = ModelTimeoutError(
                    f"no content within {whose}; the rest is kept for the next fallback",
                    code="fallback_share",
                )
                # Its record, of the member's kind, shows per model what it had been billed.
                error.decision = replace(failed(member, error), kind=member.info.kind)
                charge_partial(
                    error,
                    member,
                    request,
                    sent=dispatch.sent,
                    spent=dispatch.spent,
                    dispatch=dispatch,
                )
                # the estimate; the meter has the rest
                charge(error.cost - dispatch.spent, waited_for(member, dispatch), error.usage)
                raise error from None
            yield chunk


def _continuation(request: ChatRequest, sent: str) -> ChatRequest:
    """The request that asks a prefill-capable model to carry on from `sent`."""
    prefill = Message(role="assistant", content=sent)
    return replace(request, messages=(*request.messages, prefill))


def _joined(response: ChatResponse, sent: str) -> ChatResponse:
    """A continuation's response with the text sent before it put back in front."""
    first = response.choices[0]
    message = replace(first.message, content=sent + first.message.text)
    choice: Choice = replace(first, message=message)
    return replace(response, choices=(choice, *response.choices[1:]))


def _share_of(seconds: float) -> str:
    """Whose deadline a member given a share of the time missed, in its error: to the
    millisecond, as a share computed from the clock carries the microseconds spent reaching it."""
    return f"its {round(seconds, 3):g}s share of the request's time"


class _Run:
    """One request through a fallback chain: who was tried, what it cost, why it stopped."""

    __slots__ = (
        "attempts",
        "errors",
        "model",
        "ordering",
        "spent",
        "started",
        "stop",
        "tried",
        "used",
    )

    def __init__(self, model: FallbackModel, ordering: Ordering | None = None) -> None:
        self.model = model
        self.ordering = ordering
        self.started = time.perf_counter()
        self.attempts: list[Decision] = []
        self.errors: list[ModelError] = []
        self.spent = 0.0
        self.used: Usage | None = None
        """The estimated tokens behind `spent` (`ModelError.usage`), if any member was billed."""
        self.tried: set[int] = set()
        self.stop = ""

    def may_try(self, member: Model, request: ChatRequest) -> bool:
        """Whether there is time to try `member` (the first is always tried: it reports the
        deadline itself); marks it tried."""
        left = request.remaining()
        if self.errors and left is not None and left <= 0:
            self.stop = f"the request's deadline passed before {member.name} was tried"
            return False
        self.tried.add(id(member))
        return True

    def share(self, request: ChatRequest, queue: list[Model]) -> float | None:
        """Seconds the member about to be tried may use while untried members wait their turn
        (None: all that is left)."""
        if not self.others_wait(queue):
            return None
        return request.share_of_remaining(self.model.share)

    def others_wait(self, queue: list[Model]) -> bool:
        """Whether a member of `queue` not tried yet waits its turn."""
        return not all(id(m) in self.tried for m in queue)

    def failed(self, member: Model, exc: ModelError) -> None:
        from modelyard.patterns.records import failed  # at import, a cycle through patterns

        self.attempts.append(failed(member, exc))
        self.errors.append(exc)
        self.spent += exc.cost
        if exc.usage is not None:
            self.used = exc.usage if self.used is None else self.used + exc.usage

    def answered(
        self, member: Model, response: ChatResponse, *, continued_from: int = 0
    ) -> ChatResponse:
        # at import, a cycle through patterns
        from modelyard.patterns.records import answered, restamp

        self.attempts.append(answered(member, response))
        cost = self.spent + response.cost
        if len(self.attempts) == 1:
            reason = "first member answered" if self.ordering is None else ""
        else:
            reason = f"{len(self.attempts) - 1} member(s) failed before {member.name} answered"
        details: dict[str, object] = {}
        if continued_from:
            reason += f", continuing a broken stream after {continued_from} characters"
            details["continued_from_chars"] = continued_from
        decision = self._record(reason, cost, chosen=member.name, details=details)
        return restamp(response, cost=cost, decision=decision)  # `replace` costs µs a call

    def _decision(self, reason: str, error: ModelError) -> Decision:
        return self._record(reason, self.spent, error=f"{error.kind}: {error.message}")

    def _record(
        self,
        reason: str,
        cost: float,
        *,
        chosen: str | None = None,
        error: str | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> Decision:
        """This run's decision: a fallback's, or of the kind and reason the ordering gives."""
        kind: str = "fallback"
        scores: Mapping[str, float] = {}
        ordering = self.ordering
        if ordering is not None:
            kind, scores = ordering.kind, ordering.scores
            reason = f"{ordering.reason}; {reason}" if reason else ordering.reason
            details = {**ordering.details, **details} if details else ordering.details
        return Decision(
            node=self.model.name,
            kind=kind,
            chosen=chosen,
            reason=reason,
            scores=scores,
            latency_ms=elapsed_ms(self.started),
            cost=cost,
            error=error,
            children=tuple(self.attempts),
            details=details or {},
        )

    def exhausted(self) -> ModelError:
        names = ", ".join(d.node for d in self.attempts)
        assert self.errors, "the first member is always tried"
        if all(isinstance(e, RateLimitedError) for e in self.errors) and len(self.errors) > 1:
            error: ModelError = _all_rate_limited(self.model.name, self.errors, names)
            reason = f"every member tried ({names}) was rate limited"
        else:
            error = self.errors[0]
            if self.stop:
                annotate(error, f"gave up on the fallbacks: {self.stop}")
            reason = (
                f"{len(self.errors)} member(s) failed ({names}); "
                f"{self.stop or 'no member left'}; reporting the first error"
            )
        error.cost, error.usage = self.spent, self.used
        error.came_through(self.model.name)
        return error.with_decision(self._decision(reason, error))

    def interrupted(self, exc: ModelError, sent_chars: int) -> ModelError:
        error = interrupted(exc, model=self.model.name, sent_chars=sent_chars)
        error.cost, error.usage = self.spent, self.used
        reason = f"stream broke after {sent_chars} characters reached the caller; not spliced"
        error.came_through(self.model.name)
        return error.with_decision(self._decision(reason, error))


def _all_rate_limited(name: str, errors: list[ModelError], names: str) -> RateLimitedError:
    waits = [e.retry_after for e in errors if e.retry_after is not None]
    soonest = min(waits) if waits else None
    when = f"; the soonest may be retried in {soonest:g}s" if soonest is not None else ""
    error = RateLimitedError(
        f"every member of {name} is rate limited ({names}){when}",
        model=name,
        code="all_rate_limited",
        retry_after=soonest,
    )
    error.__cause__ = errors[0]
    return error
