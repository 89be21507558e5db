"""Serving chat and embedding requests: from the parsed wire request to the model graph and back,
with the caller's scopes and limits applied and every outcome logged and counted."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

from modelyard.config.gateway import CaptureSpec
from modelyard.cost import scope as request_scope
from modelyard.cost.budgets import (
    Budget,
    BudgetBook,
    Hold,
    cost_bound,
    partial_cost,
    settle_shielded,
)
from modelyard.errors import BadResponseError, ClientClosedError, ModelError, NotFoundError
from modelyard.gateway import anthropic_api, openai_api, responses_api
from modelyard.gateway.auth import KeyRing, caller
from modelyard.gateway.errors import ApiError, bad_request, from_model_error
from modelyard.gateway.exchange import JSON, SSE, Call
from modelyard.gateway.keys import VirtualKey
from modelyard.gateway.live import LiveConfig
from modelyard.gateway.renderers import (
    AnthropicRenderer,
    OpenAIRenderer,
    Renderer,
    ResponsesRenderer,
)
from modelyard.gateway.stalled import SendWatch
from modelyard.model import Embedder, Model
from modelyard.observability.decision_log import DecisionLog, Exchange, RequestRecord
from modelyard.observability.metrics import Metrics
from modelyard.observability.propagation import continued
from modelyard.state.base import StateStore
from modelyard.state.memory import MemoryStore
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
)
from modelyard.yard import Yard

log = logging.getLogger("modelyard.gateway")


class ChatEndpoints:
    """POST /v1/chat/completions, /v1/responses, /v1/messages and /v1/embeddings."""

    def __init__(
        self,
        live: LiveConfig,
        *,
        keys: KeyRing,
        decisions: DecisionLog,
        metrics: Metrics,
        max_body_bytes: int,
        max_messages: int,
        capture: CaptureSpec | None = None,
        stalled_client_timeout: float = 60.0,
    ) -> None:
        self.live = live
        self.keys = keys
        self.decisions = decisions
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.max_messages = max_messages
        self.capture = capture
        self.stalled_client_timeout = stalled_client_timeout
        """Seconds one send of a stream may wait on a client that takes nothing."""
        self.limits: StateStore = MemoryStore()
        """Per-key request rates; a shared backend makes them hold across replicas."""
        self.spend: StateStore = self.limits
        """Each key's own budget (spend, persisted with the embedded default)."""
        self._book: BudgetBook | None = None
        self._per_key: dict[str, int] = {}

    async def chat_completions(self, call: Call) -> None:
        """OpenAI Chat Completions."""
        # The key before the body: a stranger gets a 401, never a parse of up to
        # max_body_bytes (the same in every endpoint below).
        key = caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = openai_api.parse_chat(body, max_messages=self.max_messages)
        renderer = OpenAIRenderer(call.id, parsed.target, parsed.include_usage)
        await self._serve(
            call, key, parsed.target, parsed.request, parsed.stream, "openai", renderer
        )

    async def responses(self, call: Call) -> None:
        """OpenAI Responses, stateless (the conversation comes whole in `input`)."""
        key = caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = responses_api.parse_responses(body, max_messages=self.max_messages)
        renderer = ResponsesRenderer(call.id, parsed)
        await self._serve(
            call, key, parsed.target, parsed.request, parsed.stream, "responses", renderer
        )

    async def messages(self, call: Call) -> None:
        """Anthropic Messages."""
        key = caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = anthropic_api.parse_messages(body, max_messages=self.max_messages)
        renderer = AnthropicRenderer(call.id, parsed.target)
        await self._serve(
            call, key, parsed.target, parsed.request, parsed.stream, "anthropic", renderer
        )

    async def embeddings(self, call: Call) -> None:
        """OpenAI Embeddings: the key's limits, the budgets, the ledger, the request log and
        the metrics hold here as they do for chat (a hosted embedder is billed)."""
        key = caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = openai_api.parse_embeddings(body)
        with self.live.serving() as yard:
            # Its own `api` in the request log: an embeddings call is told apart from a chat one.
            outcome = _Outcome(self, call, parsed.target, "embeddings", False, yard.version)
            try:
                await self._embed_on(yard, outcome, key, parsed)
            except ApiError as error:
                if not error.counted:  # refused before the embedder ran
                    outcome.refused(error)
                raise

    async def _embed_on(
        self, yard: Yard, outcome: _Outcome, key: VirtualKey, parsed: openai_api.EmbeddingCall
    ) -> None:
        call, target = outcome.call, outcome.target
        embedder = _embedder(yard, target, key)
        timeout = call.header(b"x-modelyard-timeout")
        tags = call.header(b"x-modelyard-tags")
        request = EmbeddingRequest(
            inputs=parsed.inputs,
            dimensions=parsed.dimensions,
            key_id=key.id,
            tags=_tags(tags) if tags else (),
            deadline=_deadline(timeout) if timeout is not None else None,
            request_id=call.id,
        ).with_budget(yard.loaded.config.default_deadline)
        if key.rpm is not None:
            await self._check_rate(key)
        self._occupy(key)
        try:
            if key.budget is not None:
                bound = embedder.info.price.worst_case_embedding(request)
                outcome.holds = await self._reserve(key, request, target, bound)
            try:
                with _caller_trace(call, yard):
                    response = await embedder.embed(request)
            except ModelError as exc:
                raise outcome.failed(exc) from None
            body = openai_api.render_embeddings(response, target, packed=parsed.base64)
            await call.respond(200, body, [*JSON, *_answer_headers(response, outcome.version)])
            outcome.embedded(response, embedder.info.provider or "local")
        finally:
            self._release(key)
            if outcome.holds:
                await settle_shielded(self.book, outcome.holds, outcome.spent)

    # --- the chat path ---------------------------------------------------------------------------

    async def _serve(
        self,
        call: Call,
        key: VirtualKey,
        target: str,
        request: ChatRequest,
        stream: bool,
        api: str,
        renderer: Renderer,
    ) -> None:
        # The whole request runs on the config it started with, which stays open until it ends.
        with self.live.serving() as yard:
            outcome = _Outcome(self, call, target, api, stream, yard.version)
            try:
                await self._serve_on(yard, outcome, key, request, renderer)
            except ApiError as error:
                if not error.counted:  # refused: no system ran (or answered) to record it
                    outcome.refused(error)
                raise

    async def _serve_on(
        self,
        yard: Yard,
        outcome: _Outcome,
        key: VirtualKey,
        request: ChatRequest,
        renderer: Renderer,
    ) -> None:
        call, target = outcome.call, outcome.target
        model = _target(yard, target, key)
        request = _prepare(call, request, key, yard)
        if key.rpm is not None:
            await self._check_rate(key)
        self._occupy(key)
        if self._captures(target, request):
            outcome.captured = request
        try:  # from here on, the key's slot and budget hold are given back however it ends
            if key.budget is not None:
                outcome.holds = await self._reserve(
                    key, request, target, cost_bound(model, request)
                )
            with _caller_trace(call, yard), request_scope.entered(outcome.scope):
                if outcome.stream:
                    await self._stream(call, model, request, renderer, outcome)
                else:
                    await self._complete(call, model, request, renderer, outcome)
        finally:
            self._release(key)
            if outcome.holds:  # most requests hold nothing: no coroutine for them
                await settle_shielded(self.book, outcome.holds, outcome.spent)

    @property
    def book(self) -> BudgetBook:
        """The ledger of each key's own monthly budget, on the shared state store."""
        if self._book is None or self._book.store is not self.spend:
            self._book = BudgetBook(self.spend)
        return self._book

    def _captures(self, target: str, request: ChatRequest) -> bool:
        """Whether to keep this request's exchange: capture is on, covers the target, the
        sample draws it, and the conversation is plain text a labelled set can hold (no tools
        offered, no tool calls or results, no images: replayed without them it would mean
        something else)."""
        capture = self.capture
        if capture is None or (capture.targets is not None and target not in capture.targets):
            return False
        if request.tools or (capture.sample < 1.0 and random.random() >= capture.sample):
            return False
        return all(
            m.role in ("system", "user", "assistant") and not m.tool_calls and not m.has_image
            for m in request.messages
        )

    def _occupy(self, key: VirtualKey) -> None:
        """Take one of the key's concurrent slots (`_release` gives it back); 429 when none is
        free."""
        limit = key.max_concurrency
        if limit is None:
            return
        if self._per_key.get(key.id, 0) >= limit:
            raise ApiError(
                429,
                f"more than {limit} concurrent requests for this key",
                "rate_limit_error",
                "concurrency_limit",
            )
        self._per_key[key.id] = self._per_key.get(key.id, 0) + 1

    def _release(self, key: VirtualKey) -> None:
        if key.max_concurrency is not None:
            self._per_key[key.id] -= 1

    async def _reserve(
        self,
        key: VirtualKey,
        request: ChatRequest | EmbeddingRequest,
        target: str,
        worst_case: float,
    ) -> list[Hold]:
        """Reserve the request's worst case against the key's own budget (`keys create
        --budget`), like any configured budget: refused only if it could really pass it."""
        assert key.budget is not None
        budget = Budget(
            name="virtual-key", scope="key", selector=key.id, window="month", limit=key.budget
        )
        holds = self.book.holds([budget], request, target, worst_case)
        try:
            refusal = await self.book.reserve(
                holds, embedding=isinstance(request, EmbeddingRequest)
            )
        except ModelError as exc:  # the shared store is down: a 503 saying so, not a 500
            raise from_model_error(exc) from None
        if refusal is not None:
            raise from_model_error(refusal.error(target))
        return holds

    async def _check_rate(self, key: VirtualKey) -> None:
        assert key.rpm is not None
        try:
            wait = await self.limits.window_acquire(
                f"key-rpm:{key.id}", 1, limit=key.rpm, window=60
            )
        except ModelError as exc:  # the shared store is down: a 503 saying so, not a 500
            raise from_model_error(exc) from None
        if wait > 0:
            raise ApiError(
                429,
                f"this key's limit of {key.rpm} requests per minute is reached",
                "rate_limit_error",
                "key_rate_limited",
                headers={"retry-after": str(max(1, round(wait)))},
            )

    async def _complete(
        self, call: Call, model: Model, request: ChatRequest, renderer: Renderer, outcome: _Outcome
    ) -> None:
        try:
            response = await model.complete(request)
        except ModelError as exc:
            raise outcome.failed(exc) from None
        headers = [*JSON, *_answer_headers(response, outcome.version)]
        await call.respond(200, renderer.response(response), headers)
        outcome.answered(response)

    async def _stream(
        self, call: Call, model: Model, request: ChatRequest, renderer: Renderer, outcome: _Outcome
    ) -> None:
        chunks = model.stream(request)
        try:
            # Headers wait for the first chunk: until then a failure is a plain HTTP error
            # (and the fallbacks below may still have failed over without the caller noticing),
            # and by then the model answering is known, so they can name it. They go out with
            # the first chunk, so the wait adds nothing to the time to first byte.
            try:
                first = await anext(chunks)
            except ModelError as exc:
                raise outcome.failed(exc) from None
            except StopAsyncIteration:
                raise ApiError(
                    502,
                    "the model's stream ended before it began",
                    "upstream_error",
                    "empty_stream",
                ) from None
            head = [
                *SSE,
                (b"x-request-id", call.id.encode()),
                (b"x-modelyard-config-version", outcome.version.encode()),
            ]
            answering = first.model or (first.response.model if first.response else None)
            if answering is not None:  # the first chunk fixed it; the cost comes at the end
                head.append((b"x-modelyard-model", answering.encode()))
            await call.send({"type": "http.response.start", "status": 200, "headers": head})
            disconnected = asyncio.ensure_future(call.receive())
            watch = SendWatch(self.stalled_client_timeout)
            try:
                left_after = await _relay(
                    call, first, chunks, renderer, disconnected, outcome, watch
                )
            except asyncio.CancelledError:
                # Ours: the client stopped reading. Served no further, recorded as one that left.
                # A cancel from outside too (the server shutting down) still ends the task.
                if not watch.fired or asyncio.current_task().uncancel():  # type: ignore[union-attr]
                    raise
                log.warning(
                    "request %s: the client took nothing for %gs mid-stream; stream cut",
                    call.id,
                    self.stalled_client_timeout,
                )
                left_after = watch.streamed
            finally:
                watch.close()
                disconnected.cancel()
            if left_after is not None:  # a cache replay cut short cost nothing
                if outcome.scope.cache_hit:
                    cut = 0.0
                elif watch.response is not None:  # all of it generated, the last bytes unread
                    cut = watch.response.cost
                else:
                    cut = partial_cost(model, request, left_after)
                outcome.abandoned(cut)
        finally:
            close = getattr(chunks, "aclose", None)  # stop the generator and its upstream call
            if close is not None:
                await close()


async def _relay(
    call: Call,
    first: Chunk,
    chunks: AsyncIterator[Chunk],
    renderer: Renderer,
    disconnected: asyncio.Future[Any],
    outcome: _Outcome,
    watch: SendWatch,
) -> int | None:
    """Send chunks as they come; a broken stream ends with an error event, never a normal end.
    Returns how many characters were streamed when the client left before the end, else
    None."""
    send = call.send
    chunk: Chunk | None = first
    try:
        while chunk is not None:
            watch.streamed += chunk.chars
            frame = renderer.chunk(chunk)
            if chunk.response is not None:
                watch.response = chunk.response
            if frame:
                watch.since = time.monotonic()
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                watch.since = None
            if chunk.response is not None:
                watch.since = time.monotonic()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                watch.since = None
                outcome.answered(chunk.response)
                return None
            if disconnected.done():
                log.info("client left request %s mid-stream; stopping the model", call.id)
                return watch.streamed
            chunk = await anext(chunks, None)
        raise BadResponseError("the model's stream ended without its final response")
    except ModelError as exc:
        error = outcome.failed(exc)
        await send(
            {"type": "http.response.body", "body": renderer.error(error), "more_body": False}
        )
        return None


class _Outcome:
    """Records how one chat request ended: the request log, the metrics, what it spent."""

    __slots__ = (
        "api",
        "call",
        "captured",
        "endpoints",
        "holds",
        "scope",
        "spent",
        "stream",
        "target",
        "version",
    )

    def __init__(
        self,
        endpoints: ChatEndpoints,
        call: Call,
        target: str,
        api: str,
        stream: bool,
        version: str,
    ) -> None:
        self.endpoints = endpoints
        self.call = call
        self.target = target
        self.api = api
        self.stream = stream
        self.version = version
        self.holds: list[Hold] = []
        self.spent = 0.0
        self.captured: ChatRequest | None = None
        """The request, when its exchange is to be kept (`gateway.capture`)."""
        self.scope = request_scope.RequestScope(entry=target)
        """What the cost wrappers learn while serving it (a cache hit, say)."""

    def answered(self, response: ChatResponse) -> None:
        self.spent = response.cost
        latency = self._record(200, response, None, response.decision)
        provider, saved = _provider_of(response)
        self.endpoints.metrics.answered(self.target, response, provider, latency, saved=saved)

    def embedded(self, response: EmbeddingResponse, provider: str) -> None:
        """An embeddings call answered: logged and counted as an answered chat request is."""
        self.spent = response.cost
        latency = self._record(200, response, None, None)
        self.endpoints.metrics.answered(self.target, response, provider, latency)

    def abandoned(self, estimate: float) -> None:
        """The client left mid-stream: recorded as 499 with the cost the provider likely bills
        (the input and the output generated so far), which the key's budget is settled to."""
        error = ClientClosedError("the client closed the stream before the answer ended")
        error.cost = self.spent = estimate
        latency = self._record(ClientClosedError.status_default, None, error, error.decision)
        self.endpoints.metrics.failed(self.target, error.kind, error.status or 499, latency)

    def failed(self, exc: ModelError) -> ApiError:
        self.spent = exc.cost
        error = from_model_error(exc)
        latency = self._record(error.status, None, exc, exc.decision)
        self.endpoints.metrics.failed(self.target, exc.kind, error.status, latency)
        return replace(error, counted=True)

    def refused(self, error: ApiError) -> None:
        """The gateway refused the request itself (a key's limit, an unknown system, a store
        that is down): recorded with its status and reason; the metrics count it apart."""
        self._record(error.status, None, None, None, refusal=error)

    def _record(
        self,
        status: int,
        response: ChatResponse | EmbeddingResponse | None,
        error: ModelError | None,
        decision: Decision | None,
        *,
        refusal: ApiError | None = None,
    ) -> float:
        call = self.call
        seconds = time.perf_counter() - call.started
        usage = response.usage if response is not None else None
        exchange = None
        if self.captured is not None and isinstance(response, ChatResponse):
            request = self.captured
            system = (("system", request.system),) if request.system else ()
            asked = (*system, *((m.role, m.text) for m in request.messages))
            exchange = Exchange(messages=asked, answer=response.text)
        reason = None
        if error is not None:
            reason = f"{error.kind}: {error}"
        elif refusal is not None:
            reason = f"{refusal.code or refusal.type}: {refusal.message}"
        self.endpoints.decisions.record(
            RequestRecord(
                id=call.id,
                at=time.time(),
                key_id=call.key.id if call.key else None,
                target=self.target,
                api=self.api,
                stream=self.stream,
                config_version=self.version,
                status=status,
                model=response.model if response else (error.model if error else None),
                provider_model=response.provider_model if response else None,
                latency_ms=seconds * 1000,
                cost=response.cost if response else (error.cost if error else 0.0),
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=usage.output_tokens if usage else 0,
                error=reason,
                decision=decision,
                exchange=exchange,
            )
        )
        return seconds


def _caller_trace(call: Call, yard: Yard) -> contextlib.AbstractContextManager[None]:
    """The caller's trace (W3C `traceparent`), continued by this request's spans when the
    config traces; nothing to do otherwise."""
    parent = call.header(b"traceparent") if yard.loaded.config.tracing is not None else None
    if parent is None:
        return contextlib.nullcontext()
    carrier = {"traceparent": parent}
    state = call.header(b"tracestate")
    if state is not None:
        carrier["tracestate"] = state
    return continued(carrier)


def _check_scope(key: VirtualKey, name: str) -> None:
    if not key.allows(name):
        raise ApiError(
            403, f"this key may not use {name!r}", "permission_error", "model_not_allowed", "model"
        )


def _target(yard: Yard, name: str, key: VirtualKey) -> Model:
    _check_scope(key, name)
    try:
        return yard.get(name)
    except NotFoundError:
        available = [n for n in yard.available() if key.allows(n)]
        raise openai_api.not_found(name, available) from None


def _embedder(yard: Yard, name: str, key: VirtualKey) -> Embedder:
    _check_scope(key, name)
    try:
        return yard.embedder(name)
    except NotFoundError:
        raise openai_api.not_found(name, [n for n in yard.embedders if key.allows(n)]) from None


def _tags(header: str) -> tuple[str, ...]:
    """The tags of an `x-modelyard-tags` header (comma-separated): what tag budgets charge."""
    return tuple(t.strip() for t in header.split(",") if t.strip())


def _deadline(timeout: str) -> float:
    """The deadline an `x-modelyard-timeout` header sets: that many seconds from now (the
    config's `default_deadline` tightens it)."""
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:  # NaN, too: it would switch the deadline off
        raise bad_request(
            f"x-modelyard-timeout: expected a positive number of seconds, got {timeout[:40]!r}"
        )
    return time.monotonic() + seconds


def _prepare(call: Call, request: ChatRequest, key: VirtualKey, yard: Yard) -> ChatRequest:
    """The request with the caller's key, tags and deadline (header, else config default)."""
    timeout = call.header(b"x-modelyard-timeout")
    tags = call.header(b"x-modelyard-tags")
    request = replace(
        request,
        key_id=key.id,
        request_id=call.id,
        # Most requests have neither header: no call for them.
        deadline=_deadline(timeout) if timeout is not None else None,
        tags=_tags(tags) if tags else (),
    )
    return request.with_budget(yard.loaded.config.default_deadline)


def _answer_headers(
    response: ChatResponse | EmbeddingResponse, version: str
) -> list[tuple[bytes, bytes]]:
    return [
        (b"x-modelyard-model", response.model.encode()),
        (b"x-modelyard-provider-model", response.provider_model.encode("latin-1", "replace")),
        (b"x-modelyard-cost", f"{response.cost:.8f}".encode()),
        (b"x-modelyard-config-version", version.encode()),
    ]


def _provider_of(response: ChatResponse) -> tuple[str, float]:
    """The provider that answered, and the USD a cache hit saved (0 otherwise)."""
    decision = response.decision
    while decision is not None:
        if decision.kind == "cache":  # a hit called no provider, whoever wrote the answer first
            return "cache", float(decision.details.get("saved", 0.0))
        provider = decision.details.get("provider") if decision.details else None
        if provider:
            return str(provider), 0.0
        decision = decision.children[-1] if decision.children else None
    return "local", 0.0
