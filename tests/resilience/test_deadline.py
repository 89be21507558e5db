"""Deadlines: a node's budget tightens the request and abandons an inner Model that ignores it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from modelyard.cost.bounds import partial_cost
from modelyard.cost.dispatch import mark_sent
from modelyard.cost.prices import Price
from modelyard.errors import ModelTimeoutError
from modelyard.model import Model, ModelInfo
from modelyard.providers.fake import Reply
from modelyard.resilience.deadline import DeadlineModel, within
from modelyard.resilience.fallback import FallbackModel
from modelyard.streaming import collect
from modelyard.types import ChatRequest, ChatResponse, Chunk, user
from tests.resilience.scripted import scripted


class Deaf(Model):
    """Sleeps `seconds` whatever the request's deadline says."""

    def __init__(self, seconds: float) -> None:
        self.info = ModelInfo(name="deaf", kind="fake")
        self.seconds = seconds

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(self.seconds)
        raise AssertionError("should have been abandoned")

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        yield Chunk(text="first ")
        await asyncio.sleep(self.seconds)
        yield Chunk(text="too late")


class Waiting(Model):
    """Priced at $1 an input token; never answers, having sent its request (`sends`) or still
    waiting to send it (for a slot, say)."""

    def __init__(self, *, sends: bool) -> None:
        self.info = ModelInfo(name="waiting", kind="fake", price=Price(input=1e6, output=0))
        self.sends = sends

    async def complete(self, request: ChatRequest) -> ChatResponse:
        if self.sends:
            mark_sent()
        await asyncio.Event().wait()
        raise AssertionError("should have been abandoned")


@pytest.mark.parametrize("sends", [True, False])
async def test_an_abandoned_call_costs_its_input_only_if_its_request_was_sent(sends: bool) -> None:
    model = Waiting(sends=sends)
    request = user("how much?")
    with pytest.raises(ModelTimeoutError) as caught:
        await DeadlineModel(model, 0.05).complete(request)
    expected = partial_cost(model, request) if sends else 0.0
    assert expected != 0.0 or not sends
    assert caught.value.cost == pytest.approx(expected)


async def test_an_abandoned_call_s_record_carries_what_it_cost() -> None:
    # The record said $0 while the error carried the input's cost: a pattern's children did
    # not add up to its total, and the ledger put the cut call's cost on another model.
    with pytest.raises(ModelTimeoutError) as caught:
        await DeadlineModel(Waiting(sends=True), 0.05).complete(user("how much?"))
    assert caught.value.cost > 0
    assert caught.value.decision is not None
    assert caught.value.decision.cost == caught.value.cost


async def test_the_inner_model_sees_the_tighter_of_both_deadlines() -> None:
    inner = scripted("m")
    model = DeadlineModel(inner, 0.5)
    await model.complete(user("x", deadline=time.monotonic() + 10))
    await model.complete(user("x", deadline=time.monotonic() + 0.2))
    first, second = (call.remaining() for call in inner.calls)
    assert first is not None and 0.4 < first <= 0.5
    assert second is not None and second <= 0.2


async def test_a_model_that_ignores_the_deadline_is_abandoned() -> None:
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as caught:
        await DeadlineModel(Deaf(5.0), 0.05).complete(user("x"))
    assert time.monotonic() - started < 0.2
    assert caught.value.code == "deadline" and "deadline" in str(caught.value)


async def test_an_abandoned_model_is_recorded_with_its_kind_and_the_time_until_then() -> None:
    with pytest.raises(ModelTimeoutError) as caught:
        await DeadlineModel(Deaf(5.0), 0.1).complete(user("x", deadline=time.monotonic() + 10))
    assert "node deaf's deadline (0.1s) passed" in str(caught.value)
    decision = caught.value.decision
    assert decision is not None and decision.kind == "fake"
    # Its deadline and the grace (150 ms), not the 5 s; a loaded machine is late, never early.
    assert 110 <= decision.latency_ms < 1000


async def test_a_fallback_under_its_own_deadline_keeps_its_record_and_names_that_deadline() -> None:
    slow = scripted("slow", default=Reply(text="late", latency=5.0))
    wrapper = DeadlineModel(FallbackModel("wrapper", [slow]), 0.1)
    with pytest.raises(ModelTimeoutError) as caught:
        await wrapper.complete(user("x", deadline=time.monotonic() + 10))
    assert "node wrapper's deadline (0.1s) passed" in str(caught.value)
    decision = caught.value.decision
    assert decision is not None and decision.kind == "fallback"
    assert (decision.error or "").endswith("node wrapper's deadline (0.1s) passed")
    [cut] = decision.children
    assert cut.node == "slow"
    assert 60 <= cut.latency_ms < 1000  # the deadline (100 ms), not the 5 s


class AnswersLate(Model):
    """Answers at once when it runs, whatever the request's deadline says."""

    info = ModelInfo(name="late", kind="fake")

    async def complete(self, request: ChatRequest) -> ChatResponse:
        await asyncio.sleep(0)
        return await scripted("late").complete(user("x"))  # no deadline for it to see


async def test_a_call_started_late_is_still_cut_at_the_deadline() -> None:
    # The cut's timer was the time left when `within` was called, started when the call
    # started: a call that began past its deadline (its event loop busy with another task
    # meanwhile) had all that time again, and its late answer was taken.
    request = user("x", deadline=time.monotonic() + 0.3)
    model = AnswersLate()
    call = within(model.complete(request), request, model, grace=0.0)
    await asyncio.sleep(0.35)  # the call starts past the deadline (the loop busy elsewhere)
    with pytest.raises(ModelTimeoutError):
        await call


async def test_a_call_timing_itself_out_at_the_deadline_is_recorded_by_the_cut_every_time() -> None:
    # A provider's adapter stops at the deadline itself, and an ensemble cuts its member
    # there too (no grace): the cut, due at the deadline, was due later when its call started
    # later than it measured the time left, and the call's own timeout was then recorded
    # instead (the kind of the record and the wording differed from run to run).
    request = user("x", deadline=time.monotonic() + 0.3)
    model = scripted("m", default=Reply(text="late", latency=5.0))
    call = within(model.complete(request), request, model, grace=0.0)
    await asyncio.sleep(0.1)  # the call starts 0.1 s after the time left was measured
    with pytest.raises(ModelTimeoutError) as caught:
        await call
    assert "the time it was given passed while waiting for an answer" in str(caught.value)
    assert caught.value.decision is not None and caught.value.decision.kind == "fake"


async def test_a_stream_that_outlives_the_deadline_is_stopped() -> None:
    received: list[str] = []
    with pytest.raises(ModelTimeoutError):
        async for chunk in DeadlineModel(Deaf(5.0), 0.05).stream(user("x")):
            received.append(chunk.text)
    assert received == ["first "]


async def test_a_passed_deadline_fails_before_calling() -> None:
    inner = scripted("m")
    with pytest.raises(ModelTimeoutError):
        await collect(DeadlineModel(inner, 1.0).stream(user("x", deadline=time.monotonic())))
    assert inner.calls == []
