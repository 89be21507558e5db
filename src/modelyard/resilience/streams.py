"""What retry and fallback need to know about a stream: has any of it reached the caller yet?

Before the first byte of an answer reaches the caller, a failed stream can be replaced by
another attempt and nobody notices. After it, replacing it would splice two answers, so the
stream must end with `StreamInterruptedError`. `GuardedStream` draws that line: it holds back
chunks that carry nothing (a role announcement, an empty delta) until the first real content,
so an attempt that dies before saying anything is still invisible.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

from modelyard.errors import BadResponseError, ModelError, StreamInterruptedError
from modelyard.streaming import StreamAssembler
from modelyard.types import ChatResponse, Chunk


@asynccontextmanager
async def closing(stream: AsyncIterator[Chunk]) -> AsyncIterator[AsyncIterator[Chunk]]:
    """Use an inner stream and close it when done, even when the caller stops early (an
    abandoned generator would otherwise hold its connection until garbage collection)."""
    try:
        yield stream
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()


def has_content(chunk: Chunk) -> bool:
    """Whether a chunk carries anything a caller would see."""
    return bool(
        chunk.text
        or chunk.tool_calls
        or chunk.finish_reason
        or chunk.logprobs
        or chunk.reasoning is not None
    )


class GuardedStream:
    """One streamed attempt: passes content through, remembers what was sent, keeps the final
    response apart (the wrapper re-issues it with its own accounting)."""

    __slots__ = (
        "_stream",
        "assembler",
        "committed",
        "other_choices",
        "reasoned",
        "response",
        "tool_calls",
    )

    def __init__(self, stream: AsyncIterator[Chunk]) -> None:
        self._stream = stream
        self.assembler = StreamAssembler()
        self.committed = False
        """Whether any content has been passed on to the caller."""
        self.response: ChatResponse | None = None
        self.tool_calls = False
        self.other_choices = False
        self.reasoned = False

    async def chunks(self) -> AsyncIterator[Chunk]:
        """The attempt's delta chunks; the final response lands in `response` instead."""
        pending: list[Chunk] = []
        async with closing(self._stream) as stream:
            async for chunk in stream:
                if chunk.response is not None:
                    self.response = chunk.response
                    continue
                if not self.committed and not has_content(chunk):
                    pending.append(chunk)
                    continue
                if not self.committed:
                    self.committed = True
                    for held in pending:
                        yield self._sent(held)
                    pending.clear()
                yield self._sent(chunk)
        if self.response is None:
            raise BadResponseError("stream ended without its final response", code="no_final")
        for held in pending:
            yield self._sent(held)

    def _sent(self, chunk: Chunk) -> Chunk:
        self.assembler.add(chunk)
        if chunk.tool_calls:
            self.tool_calls = True
        if chunk.index != 0:
            self.other_choices = True
        if chunk.reasoning is not None:
            self.reasoned = True
        return chunk

    @property
    def continuable(self) -> bool:
        """Whether the partial answer is plain text of one choice, which a model that takes an
        assistant prefill could carry on (not after reasoning: a prefill cannot carry it, and
        Anthropic refuses a prefill with thinking on)."""
        return not self.tool_calls and not self.other_choices and not self.reasoned


def interrupted(exc: ModelError, *, model: str, sent_chars: int) -> StreamInterruptedError:
    """The error for a stream that broke after `sent_chars` characters reached the caller,
    with the original as its `__cause__` (an inner wrapper's StreamInterruptedError is kept as
    it is, cause and all); cost, usage, decision and path carry over."""
    if isinstance(exc, StreamInterruptedError):
        return exc
    error = StreamInterruptedError(
        f"stream broke after {sent_chars} characters had been sent, so the answer is "
        f"incomplete ({exc.kind}: {exc.message})",
        model=exc.model or model,
        provider=exc.provider,
        code=exc.code or exc.kind,
        provider_message=exc.provider_message,
    )
    error.cost, error.usage = exc.cost, exc.usage
    error.decision, error.path = exc.decision, exc.path
    error.__cause__ = exc
    return error


def annotate(exc: ModelError, note: str, *, record: bool = False) -> ModelError:
    """Add why nothing more was tried to an error's message (once), and return it; `record`:
    to its decision record's error too, when the note corrects what the record says."""
    if note not in exc.message:
        exc.message = f"{exc.message}; {note}"
        exc.args = (exc.message,)
        if record and exc.decision is not None and exc.decision.error is not None:
            exc.decision = replace(exc.decision, error=f"{exc.decision.error}; {note}")
    return exc
