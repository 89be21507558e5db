"""A scripted Model for tests, docs and dry runs: known answers, errors and latencies, no network.

Shipped in the library (not only the tests) so users can try a system's shape before they have
keys, and so `modelyard drill` can stand in for a provider.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field, replace

from modelyard.cost.dispatch import mark_sent
from modelyard.cost.prices import CHARS_PER_TOKEN, estimate_input_tokens, estimate_tokens
from modelyard.errors import ERROR_KINDS, ModelError, ModelTimeoutError, UnavailableError
from modelyard.model import Model, ModelInfo, elapsed_ms
from modelyard.streaming import reasoning_chunks
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Choice,
    Chunk,
    Decision,
    FinishReason,
    Message,
    Reasoning,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """One scripted outcome: an answer (with optional confidence and logprob), or an error."""

    text: str = ""
    error: str | None = None
    """An error kind from `errors.ERROR_KINDS` (e.g. "rate_limited") to raise instead."""
    retry_after: float | None = None
    latency: float = 0.0
    confidence: float | None = None
    logprob: float | None = None
    """Mean log-probability per token to report when the request asks for logprobs."""
    tool_calls: tuple[ToolCall, ...] = ()
    finish_reason: FinishReason | None = None
    usage: Usage | None = None
    cut_after: int | None = None
    """When streaming, break the connection after this many chunks."""
    thinking: tuple[Reasoning, ...] = ()
    """Reasoning blocks to answer with before the text (streamed first)."""


@dataclass(slots=True)
class ScriptedModel(Model):
    """Answers from a script: a reply per known prompt, then the script in order, then a default.

    `calls` keeps every request it saw, so tests can assert what reached it.
    """

    info: ModelInfo
    answers: Mapping[str, Reply] = field(default_factory=dict)
    script: Sequence[Reply] = ()
    default: Reply = field(default_factory=lambda: Reply(text="ok"))
    chunk_words: int = 1
    calls: list[ChatRequest] = field(default_factory=list)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def _next(self, request: ChatRequest, started: float) -> Reply:
        left = request.remaining()
        if left is not None and left <= 0:  # as a provider's adapter, it sends none then
            late = ModelTimeoutError(
                "the request's deadline passed before the request was sent",
                model=self.name,
                code="deadline",
                retryable=False,
            )
            raise self._failed(late, started)
        mark_sent()  # a scripted provider receives every call at once
        position = len(self.calls)
        self.calls.append(request)
        reply = self.answers.get(request.last_user_text.strip())
        if reply is None:
            reply = self.script[position] if position < len(self.script) else self.default
        return self._capped(request, reply)

    def _capped(self, request: ChatRequest, reply: Reply) -> Reply:
        """The reply cut at `max_tokens` (or the model's maximum), as a provider cuts: a
        scripted answer must not cost more than any real one could (budgets rely on it)."""
        most = request.max_tokens or self.info.capabilities.max_output_tokens
        if (
            reply.error is not None
            or reply.usage is not None
            or estimate_tokens(reply.text) <= most
        ):
            return reply
        cut = reply.text[: int(most * CHARS_PER_TOKEN)]
        return replace(reply, text=cut, finish_reason=FinishReason.LENGTH)

    def _error(self, reply: Reply, started: float) -> ModelError:
        kind = reply.error or "error"
        cls = ERROR_KINDS.get(kind, ModelError)
        exc = cls(
            f"scripted {kind}",
            model=self.name,
            provider=self.info.provider,
            code=kind,
            retry_after=reply.retry_after,
        )
        return self._failed(exc, started)

    def _failed(self, exc: ModelError, started: float) -> ModelError:
        decision = Decision(
            node=self.name,
            kind="model",
            reason="failed",
            latency_ms=elapsed_ms(started),
            cost=exc.cost,
            error=f"{exc.kind}: {exc.message}",
            usage=exc.usage,
        )
        return exc.with_decision(decision)

    def _bill(self, exc: ModelError, request: ChatRequest, sent: str) -> None:
        """`exc` (a call the provider had and never finished) carrying what it would bill:
        the input, and the `sent` text of a stream cut part-way (scripted refusals and errors
        are free, as a provider's are)."""
        exc.usage = Usage(
            input_tokens=estimate_input_tokens(request),
            output_tokens=estimate_tokens(sent),
            estimated=True,
        )
        exc.cost = self.info.price.cost(exc.usage)

    def _usage(self, request: ChatRequest, reply: Reply) -> Usage:
        if reply.usage is not None:
            return reply.usage
        return Usage(
            input_tokens=estimate_input_tokens(request),
            output_tokens=estimate_tokens(reply.text) * max(1, request.n),
        )

    def _logprobs(self, request: ChatRequest, reply: Reply) -> tuple[TokenLogprob, ...] | None:
        if not request.logprobs or reply.logprob is None:
            return None
        return tuple(TokenLogprob(token=w, logprob=reply.logprob) for w in reply.text.split())

    def _response(self, request: ChatRequest, reply: Reply, started: float) -> ChatResponse:
        usage = self._usage(request, reply)
        cost = self.info.price.cost(usage)
        finish = reply.finish_reason or (
            FinishReason.TOOL_CALLS if reply.tool_calls else FinishReason.STOP
        )
        message = Message(
            role="assistant",
            content=reply.text,
            tool_calls=reply.tool_calls,
            thinking=reply.thinking,
        )
        logprobs = self._logprobs(request, reply)
        choices = tuple(
            Choice(index=i, message=message, finish_reason=finish, logprobs=logprobs)
            for i in range(max(1, request.n))
        )
        decision = Decision(
            node=self.name,
            kind="model",
            chosen=self.info.model_id or self.name,
            reason="answered",
            latency_ms=elapsed_ms(started),
            cost=cost,
            usage=usage,
        )
        return ChatResponse(
            id=f"fake-{next(self._ids)}",
            model=self.name,
            provider_model=self.info.model_id or self.name,
            choices=choices,
            usage=usage,
            cost=cost,
            created=int(time.time()),
            decision=decision,
            confidence=reply.confidence,
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        reply = self._next(request, started)
        if reply.latency:
            await self._sleep_within(reply.latency, request, started)
        if reply.error is not None:
            raise self._error(reply, started)
        return self._response(request, reply, started)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        reply = self._next(request, started)
        if reply.latency:
            await self._sleep_within(reply.latency, request, started)
        if reply.error is not None:
            raise self._error(reply, started)
        words = reply.text.split(" ")
        pieces = [
            " ".join(words[i : i + self.chunk_words])
            + (" " if i + self.chunk_words < len(words) else "")
            for i in range(0, len(words), self.chunk_words)
        ]
        name: str | None = self.name  # on the first chunk only
        for chunk in reasoning_chunks(reply.thinking):
            yield replace(chunk, model=name)
            name = None
        for number, piece in enumerate(pieces):
            if reply.cut_after is not None and number >= reply.cut_after:
                cut = UnavailableError(
                    "scripted connection cut mid-stream", model=self.name, code="stream_broken"
                )
                # Billed as a provider bills a stream that broke: its input and what it sent.
                self._bill(cut, request, "".join(pieces[:number]))
                raise self._failed(cut, started)
            yield Chunk(text=piece, model=None if number else name)
            await asyncio.sleep(0)
        for i, call in enumerate(reply.tool_calls):
            yield Chunk(
                tool_calls=(
                    ToolCallDelta(index=i, id=call.id, name=call.name, arguments=call.arguments),
                )
            )
        response = self._response(request, reply, started)
        yield Chunk(finish_reason=response.finish_reason)
        yield Chunk(response=response)

    async def _sleep_within(self, seconds: float, request: ChatRequest, started: float) -> None:
        """Sleep like a slow provider would, but never past the request's deadline."""
        left = request.remaining()
        if left is not None and left < seconds:
            await asyncio.sleep(max(0.0, left))
            timeout = ModelTimeoutError(
                f"no answer before the request's deadline ({seconds:.3f}s needed)",
                model=self.name,
                code="deadline",
                retryable=False,
            )
            self._bill(timeout, request, "")  # a provider bills the input of a request it had
            raise self._failed(timeout, started)
        await asyncio.sleep(seconds)


def constant_logprob(probability: float) -> float:
    """The per-token logprob that makes a reply's mean token probability `probability`."""
    return math.log(max(probability, 1e-12))
