"""An ensemble's members: asking them (at once, until the outcome is decided, or in turn, each
within its own deadline), what each did (`Outcome`), and what their answers add up to (the
agreement and turnout a decision reports)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from modelyard.cost.dispatch import Dispatch, charge, watching
from modelyard.cost.dispatch import current as current_dispatch
from modelyard.errors import ModelError, ModelTimeoutError
from modelyard.model import Model
from modelyard.patterns.normalise import Normaliser
from modelyard.patterns.records import answered, failed, since_ms
from modelyard.resilience.deadline import DEADLINE, within
from modelyard.types import ChatRequest, ChatResponse, Decision, Usage

Wait = Literal["all", "quorum", "in_turn"]
NO_CONFIDENCE_WEIGHT = 0.5
"""A member without a confidence counts half in a weighted vote: it says nothing either way."""


@dataclass(slots=True)
class Outcome:
    """What one member did."""

    index: int
    model: Model
    response: ChatResponse | None = None
    error: ModelError | None = None
    left_out: Literal["cancelled", "not asked"] | None = None
    """Why it has no outcome: the outcome was decided first (`wait: quorum` cancels it,
    `wait: in_turn` never asks it)."""
    latency_ms: float = 0.0
    key: str | None = None
    dispatch: Dispatch | None = None
    """Whether its request was sent, once asked (`cost.dispatch`)."""
    billed: float = 0.0
    """What a cancelled member likely cost: the input if its request was sent, which the
    provider bills, else nothing (what its budget guard settles, `cost.bounds.partial_cost`),
    and what its calls that had finished were billed (`Dispatch.spent`)."""
    calls: tuple[Decision, ...] = ()
    """The records of what a member that is a pattern, abandoned, was billed for, per model
    (`cost.bounds.abandoned_calls`)."""
    used: Usage | None = None
    """The tokens a cancelled member that is a configured model was billed for (estimated)."""
    past_share: bool = False
    """Still out when the members' share of the deadline passed with fewer than the quorum
    answered, so it ran on past it (a judge or fuser then has less time, or none)."""

    @property
    def weight(self) -> float:
        """Its weight in a confidence-weighted vote."""
        if self.response is None:
            return 0.0
        confidence = self.response.confidence
        return NO_CONFIDENCE_WEIGHT if confidence is None else confidence

    @property
    def cost(self) -> float:
        """What it spent."""
        if self.response is not None:
            return self.response.cost
        return self.error.cost if self.error is not None else self.billed

    def decision(self) -> Decision:
        """Its attempt record."""
        if self.response is not None:
            return answered(self.model, self.response)
        if self.error is not None:
            return failed(self.model, self.error, self.latency_ms)
        return Decision(
            node=self.model.name,
            kind="model" if not self.calls else self.model.info.kind,
            reason=f"{self.left_out}: the outcome was already decided",
            latency_ms=self.latency_ms,
            cost=self.billed,
            # The ledger counts calls: a member never asked was not one.
            details={"not_asked": True} if self.left_out == "not asked" else {},
            children=self.calls,
            usage=self.used,
        )

    def summary(self) -> dict[str, Any]:
        """Answer, confidence, latency and cost, for the decision's details."""
        out: dict[str, Any] = {
            "member": self.model.name,
            "latency_ms": round(self.latency_ms, 3),
            "cost": self.cost,
        }
        if self.response is not None:
            out["answer"] = self.key
            out["confidence"] = self.response.confidence
        elif self.error is not None:
            out["error"] = f"{self.error.kind}: {self.error}"
        elif self.left_out is not None:
            out[self.left_out.replace(" ", "_")] = True
        if self.past_share:
            out["past_share"] = True
        return out


Decided = Callable[[dict[int, Outcome], list[int]], bool]
"""Whether the members done (by index) settle the outcome whatever those outstanding say."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Members:
    """Asks an ensemble's members, each within its own deadline, and normalises their answers."""

    models: tuple[Model, ...]
    deadlines: tuple[float | None, ...]
    normalise: Normaliser
    wait: Wait
    share: float = 1.0
    """Of the time left, what the members have before those still out are cut, once the
    quorum has answered: a judge or fuser keeps the rest. Fewer than the quorum in by then,
    they run on (cut as soon as it is in, else at the deadline), as a request without an
    answer would fail."""
    share_name: str = "the members' share of the deadline"
    """The share in words, in the errors of the members cut at it."""

    def _outcome(self, i: int) -> Outcome:
        """Member `i`'s outcome, to be filled in as it is asked."""
        return Outcome(index=i, model=self.models[i], dispatch=Dispatch(current_dispatch()))

    async def _ask(self, outcome: Outcome, request: ChatRequest) -> Outcome:
        model = outcome.model
        seconds = self.deadlines[outcome.index]
        started = time.perf_counter()
        try:
            with watching(outcome.dispatch):
                if seconds is None:
                    # Cut at the deadline itself: the node's own deadline leaves GRACE to combine.
                    call = model.complete(request)
                    outcome.response = await within(call, request, model, grace=0.0)
                else:
                    async with asyncio.timeout(seconds):
                        outcome.response = await model.complete(request.with_budget(seconds))
        except ModelError as exc:
            outcome.error = exc
        except TimeoutError:
            message = f"no answer within the member deadline of {seconds:g}s"
            error = ModelTimeoutError(message, model=model.name)
            outcome.error = _abandoned(outcome, request, error, started)
        outcome.latency_ms = since_ms(started)
        if outcome.response is not None:
            outcome.key = self.normalise(outcome.response.text)
        return outcome

    async def gather(self, request: ChatRequest, decided: Decided) -> list[Outcome]:
        """Every member's outcome, in member order (stragglers cancelled under `wait: quorum`,
        members past the settling point not asked under `wait: in_turn`, and under a deadline
        those still out at the members' share cut once the quorum has answered)."""
        outcomes = [self._outcome(i) for i in range(len(self.models))]
        share = request.share_of_remaining(self.share)
        if self.wait == "in_turn":
            return await self._in_turn(outcomes, request, decided, share)
        if self.wait == "all" and share is None:
            return list(await asyncio.gather(*(self._ask(o, request) for o in outcomes)))
        return await self._at_once(outcomes, request, decided, share)

    async def _at_once(
        self,
        outcomes: list[Outcome],
        request: ChatRequest,
        decided: Decided,
        share: float | None,
    ) -> list[Outcome]:
        started = time.perf_counter()
        # The share's end, as a task, so that it is in the set waited on: at the instant the
        # share was measured from, not `share` from when the task first runs (after the
        # members' first steps, which a member doing work before its first wait delays).
        ends = None if share is None else time.monotonic() + share
        timer = asyncio.ensure_future(_until(ends)) if ends is not None else None
        tasks = {asyncio.ensure_future(self._ask(o, request)): o for o in outcomes}
        done: dict[int, Outcome] = {}
        cut: dict[int, Outcome] = {}
        pending = set(tasks)
        try:
            while pending:
                waited: set[asyncio.Future[Any]] = {*pending}
                if timer is not None and not timer.done():
                    waited.add(timer)
                finished, _ = await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
                for task in pending & finished:
                    done[tasks[task].index] = task.result()
                pending -= finished
                outstanding = [tasks[t].index for t in pending]
                if self.wait == "quorum" and decided(done, outstanding):
                    break  # cancelled below, and left out
                if timer is None or not timer.done():
                    continue
                if decided(done, outstanding):  # the quorum is in: cut the stragglers
                    cut = {tasks[t].index: self._cut(tasks[t], request, started) for t in pending}
                    break
                for task in pending:
                    tasks[task].past_share = True
        finally:
            for task in pending:
                task.cancel()
            if timer is not None:
                timer.cancel()
        return [done.get(o.index) or cut.get(o.index) or _cancelled(o, request) for o in outcomes]

    def _cut(self, asked: Outcome, request: ChatRequest, started: float) -> Outcome:
        """`asked`, still out once the members' share passed and the quorum answered: failed,
        so that the judge or fuser has the time it keeps."""
        doing = (
            "before the quorum answered; cut when it had"
            if asked.past_share
            else "while waiting for an answer"
        )
        message = f"{self.share_name} passed {doing}"
        error = ModelTimeoutError(message, model=asked.model.name, code=DEADLINE, retryable=False)
        return Outcome(
            index=asked.index,
            model=asked.model,
            error=_abandoned(asked, request, error, started),
            latency_ms=since_ms(started),
            past_share=asked.past_share,
        )

    async def _in_turn(
        self,
        outcomes: list[Outcome],
        request: ChatRequest,
        decided: Decided,
        share: float | None,
    ) -> list[Outcome]:
        # Asking stops once the quorum has answered, so nothing is left to cut at the share:
        # the members asked past it only say they ran on.
        ends = None if share is None else time.monotonic() + share
        done: dict[int, Outcome] = {}
        count = len(outcomes)
        for outcome in outcomes:
            done[outcome.index] = await self._ask(outcome, request)
            outcome.past_share = ends is not None and time.monotonic() > ends
            if decided(done, list(range(outcome.index + 1, count))):
                break
        return [
            done.get(o.index) or Outcome(index=o.index, model=o.model, left_out="not asked")
            for o in outcomes
        ]


async def _until(instant: float) -> None:
    """Return at `instant` (a `time.monotonic()` one)."""
    await asyncio.sleep(max(0.0, instant - time.monotonic()))


def _abandoned(
    asked: Outcome, request: ChatRequest, error: ModelTimeoutError, started: float
) -> ModelTimeoutError:
    """`error`, for a member abandoned before its answer, with what it cost and its record."""
    model = asked.model
    error.cost, calls, used = _abandoned_cost(asked, request)
    error.decision = Decision(
        node=model.name,
        kind=model.info.kind if calls else "model",
        reason="failed",
        latency_ms=since_ms(started),
        error=f"{error.kind}: {error}",
        cost=error.cost,
        children=calls,
        usage=used,
    )
    return error


def _cancelled(asked: Outcome, request: ChatRequest) -> Outcome:
    # A task cancelled runs no further step before it unwinds: what its dispatch says now
    # is final, and what the member's budget guard settles as it unwinds.
    billed, calls, used = _abandoned_cost(asked, request)
    return Outcome(
        index=asked.index,
        model=asked.model,
        left_out="cancelled",
        billed=billed,
        calls=calls,
        used=used,
    )


def _abandoned_cost(
    outcome: Outcome, request: ChatRequest
) -> tuple[float, tuple[Decision, ...], Usage | None]:
    """What a member abandoned before its answer cost: its input if the request was sent, and
    what the calls under it that finished were billed (a cascade's first stage, a pipeline's
    draft); with the records of those per model, for a member that is a pattern, else the
    tokens of its own call (`cost.bounds.with_finished`)."""
    from modelyard.cost.bounds import (  # cost below
        abandoned_calls,
        partial_cost,
        partial_usage,
        waited_for,
        with_finished,
    )

    dispatch = outcome.dispatch
    if dispatch is None:
        return 0.0, (), None
    model = outcome.model
    estimate = partial_cost(model, request, sent=dispatch.sent)
    usage = partial_usage(request, sent=dispatch.sent)
    # New spend: the meter counted the finished calls as they finished.
    charge(estimate, waited_for(model, dispatch), usage)
    calls = abandoned_calls(model, dispatch, estimate, usage)
    used = None if calls else with_finished(usage, dispatch)
    return estimate + dispatch.spent, calls, used


def agreement_on(outcomes: Sequence[Outcome], key: str | None) -> float:
    """The share of the members counted (cancelled or not asked ones aside) that gave `key`."""
    counted = [o for o in outcomes if o.left_out is None]
    if key is None or not counted:
        return 0.0
    return sum(1 for o in counted if o.key == key) / len(counted)


def turnout_for(counted: Sequence[Outcome], key: str | None) -> str:
    """How many members gave `key`, out of how many, and why the others gave no vote: the
    figures the agreement (`response.confidence`) is computed from."""
    agreeing = sum(1 for o in counted if o.key == key)
    out = f"{agreeing} of {len(counted)} members"
    failures = sum(1 for o in counted if o.error is not None)
    unreadable = sum(1 for o in counted if o.response is not None and o.key is None)
    if failures:
        out += f"; {failures} failed"
    if unreadable:
        out += f"; {unreadable} unreadable"
    return out


def past_share_note(outcomes: Sequence[Outcome], quorum: int) -> str:
    """What the decision's reason adds when members ran past their share of the deadline
    (fewer than the quorum had answered at it): which, and how many had answered."""
    late = [o.model.name for o in outcomes if o.past_share]
    if not late:
        return ""
    answered = sum(1 for o in outcomes if o.response is not None and not o.past_share)
    return (
        f"; {answered} of {len(outcomes)} members had answered at their share of the deadline"
        f" (quorum is {quorum}), so {', '.join(late)} ran past it"
    )


def problem_of(outcome: Outcome) -> str:
    """Why a member gave no usable answer."""
    if outcome.error is not None:
        return f"{outcome.model.name}: {outcome.error.kind} ({outcome.error.message})"
    if outcome.left_out is not None:
        return f"{outcome.model.name}: {outcome.left_out}"
    return f"{outcome.model.name}: answer not readable"
