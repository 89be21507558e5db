"""Deadlines: a node's budget tightens the request and abandons an inner Model that ignores it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from modelyard.errors import ModelTimeoutError
from modelyard.model import Model, ModelInfo
from modelyard.resilience.deadline import DeadlineModel
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
