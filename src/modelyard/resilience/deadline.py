"""Deadlines: a node's latency budget, enforced.

`DeadlineModel` tightens `request.deadline` to the node's `deadline:` (never loosens it), so
everything below — retries, queues, fallbacks, the transport's timeouts — sees what is left
through `request.remaining()`. It also abandons an inner Model that ignores the deadline
(a local function that hangs), so the caller never waits past it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from modelyard.errors import ModelTimeoutError
from modelyard.model import Model, Wrapper
from modelyard.resilience.streams import closing
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

DEADLINE = "deadline"
"""The error code of every timeout caused by the request's own deadline."""


def deadline_error(name: str, request: ChatRequest, doing: str) -> ModelTimeoutError:
    """The error for a request whose deadline passed while `doing` something."""
    error = ModelTimeoutError(
        f"the request's deadline passed {doing}", model=name, code=DEADLINE, retryable=False
    )
    error.decision = Decision(
        node=name, kind="deadline", reason="deadline passed", error=error.message
    )
    return error


class DeadlineModel(Wrapper):
    """Gives the inner Model at most `seconds` (and never more than the caller's deadline)."""

    def __init__(self, inner: Model, seconds: float) -> None:
        super().__init__(inner)
        self.seconds = seconds

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        out["deadline"] = f"{self.seconds:g}s"
        return out

    async def complete(self, request: ChatRequest) -> ChatResponse:
        request = request.with_budget(self.seconds)
        left = request.remaining()
        assert left is not None
        if left <= 0:
            raise deadline_error(self.name, request, "before the call started")
        try:
            async with asyncio.timeout(left):
                return await self.inner.complete(request)
        except TimeoutError:
            raise deadline_error(
                self.name, request, f"while waiting for an answer ({self.seconds:g}s allowed)"
            ) from None

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        request = request.with_budget(self.seconds)
        async with closing(self.inner.stream(request)) as stream:
            iterator = aiter(stream)
            while True:
                left = request.remaining()
                assert left is not None
                if left <= 0:
                    raise deadline_error(self.name, request, "while streaming")
                # The timeout covers waiting for the next chunk only, never the caller's own
                # time between chunks (it runs in the caller's task, outside this frame).
                try:
                    async with asyncio.timeout(left):
                        chunk = await anext(iterator)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    raise deadline_error(
                        self.name, request, f"while streaming ({self.seconds:g}s allowed)"
                    ) from None
                yield chunk
