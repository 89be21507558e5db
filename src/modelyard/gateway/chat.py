"""Serving chat and embedding requests: from the parsed wire request to the model graph and back,
streamed or whole, with the caller's scopes and limits applied.

What a request's headers ask and an answer's headers tell is `headers.py`; a key's rate, slots
and budget are `key_limits.py`; sending the answer, whole or streamed, is `deliver.py`; how each
request ended is logged and counted by `outcome.py`."""

from __future__ import annotations

import asyncio
import contextlib
import random

from modelyard.config.gateway import CaptureSpec
from modelyard.cost import scope as request_scope
from modelyard.cost.accounting import cut_short
from modelyard.cost.bounds import cost_bound
from modelyard.cost.prices import estimate_embedding_tokens
from modelyard.errors import BudgetExceededError, ModelError, NotFoundError, UnavailableError
from modelyard.gateway import anthropic_api, deliver, openai_api, responses_api
from modelyard.gateway.auth import KeyRing, caller
from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import JSON, Call
from modelyard.gateway.headers import (
    answer_headers,
    caller_trace,
    deadline,
    prepare,
    request_tags,
    upstream_quota_headers,
)
from modelyard.gateway.key_limits import KeyAnswered, KeyLimits, token_estimate
from modelyard.gateway.keys import VirtualKey
from modelyard.gateway.outcome import Outcome
from modelyard.gateway.renderers import (
    AnthropicRenderer,
    OpenAIRenderer,
    Renderer,
    ResponsesRenderer,
)
from modelyard.gateway.stalled import respond_watched
from modelyard.live import LiveConfig
from modelyard.model import Embedder, Model
from modelyard.observability.decision_log import DecisionLog
from modelyard.observability.metrics import Metrics
from modelyard.providers import upstream_quota
from modelyard.suggest import did_you_mean
from modelyard.types import ChatRequest, EmbeddingRequest
from modelyard.yard import Yard


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
        """Seconds one send of a stream, or a whole answer's, may wait on a client that takes
        nothing."""
        self.leave_watch_after = 1.0
        """Seconds a whole answer may take before the gateway listens for its client hanging
        up (`LeaveWatch`)."""
        self.key_limits = KeyLimits()
        """Each key's rate, concurrent slots and own budget, on their state stores."""

    async def chat_completions(self, call: Call) -> None:
        """OpenAI Chat Completions."""
        # The key before the body: a stranger gets a 401, never a parse of up to
        # max_body_bytes (the same in every endpoint below).
        key = await caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = openai_api.parse_chat(body, max_messages=self.max_messages)
        renderer = OpenAIRenderer(call.id, parsed.target, parsed.include_usage)
        await self._serve(
            call, key, parsed.target, parsed.request, parsed.stream, "openai", renderer
        )

    async def responses(self, call: Call) -> None:
        """OpenAI Responses, stateless (the conversation comes whole in `input`)."""
        key = await caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = responses_api.parse_responses(body, max_messages=self.max_messages)
        renderer = ResponsesRenderer(call.id, parsed)
        await self._serve(
            call, key, parsed.target, parsed.request, parsed.stream, "responses", renderer
        )

    async def messages(self, call: Call) -> None:
        """Anthropic Messages."""
        key = await caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = anthropic_api.parse_messages(body, max_messages=self.max_messages)
        renderer = AnthropicRenderer(call.id, parsed.target)
        await self._serve(
            call, key, parsed.target, parsed.request, parsed.stream, "anthropic", renderer
        )

    async def embeddings(self, call: Call) -> None:
        """OpenAI Embeddings: the key's limits, the budgets, the ledger, the request log and
        the metrics hold here as they do for chat (a hosted embedder is billed)."""
        key = await caller(self.keys, call)
        body = await call.json(self.max_body_bytes)
        parsed = openai_api.parse_embeddings(body)
        with self.live.serving() as yard:
            # Its own `api` in the request log: an embeddings call is told apart from a chat one.
            outcome = Outcome(
                self.decisions, self.metrics, call, parsed.target, "embeddings", False, yard.version
            )
            try:
                await self._embed_on(yard, outcome, key, parsed)
            except ApiError as error:
                if not (error.counted or outcome.recorded):  # refused before the embedder ran
                    outcome.refused(error)
                raise

    async def _embed_on(
        self, yard: Yard, outcome: Outcome, key: VirtualKey, parsed: openai_api.EmbeddingCall
    ) -> None:
        call, target = outcome.call, outcome.target
        embedder = _embedder(yard, target, key)
        timeout = call.header(b"x-modelyard-timeout")
        tags = call.header(b"x-modelyard-tags")
        request = EmbeddingRequest(
            inputs=parsed.inputs,
            dimensions=parsed.dimensions,
            key_id=key.id,
            tags=request_tags(tags) if tags else (),
            deadline=deadline(timeout) if timeout is not None else None,
            request_id=call.id,
        ).with_budget(yard.loaded.config.default_deadline)
        counted = None
        if key.paced:
            tokens = estimate_embedding_tokens(request) if key.tpm is not None else 0
            counted = await self.key_limits.admit(key, call, tokens)
        try:
            if key.budget is not None:
                bound = embedder.info.price.worst_case_embedding(request)
                try:
                    outcome.holds = await self.key_limits.reserve(
                        key, request, target, bound, yard.built.alerts
                    )
                except BudgetExceededError as exc:
                    raise outcome.over_budget(exc, request, yard.built.ledger) from None
            try:
                with caller_trace(call, yard), self.quota_watch(key) as outcome.quota:
                    response = await embedder.embed(request)
            except ModelError as exc:
                raise outcome.failed(exc) from None
            if counted is not None:  # corrected before the answer is sent, as `KeyAnswered` does
                await self.key_limits.settle_tokens(key, counted, response.usage.total_tokens)
                counted = None
            if call.slot:  # and a shared slot given back (the next request may follow)
                await self.key_limits.release(key, call)
            body = openai_api.render_embeddings(response, target, packed=parsed.base64)
            headers = [
                *JSON,
                *answer_headers(response, outcome.version),
                *upstream_quota_headers(outcome.quota),
            ]
            if await respond_watched(call, body, headers, self.stalled_client_timeout):
                outcome.embedded(response, embedder.info.provider or "local")
            else:
                outcome.abandoned(response)
        finally:
            if key.max_concurrency is not None or outcome.holds or counted is not None:
                await self.key_limits.finish(
                    key, call, outcome.holds, outcome.spent, counted, outcome.tokens
                )

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
            built = yard.built  # a property: read once
            version = built.loaded.version
            outcome = Outcome(self.decisions, self.metrics, call, target, api, stream, version)
            outcome.cached = target in built.cached
            try:
                await self._serve_on(yard, outcome, key, request, renderer)
            except ApiError as error:
                # refused: no system ran (or answered) to record it
                if not (error.counted or outcome.recorded):
                    outcome.refused(error)
                raise

    async def _serve_on(
        self,
        yard: Yard,
        outcome: Outcome,
        key: VirtualKey,
        request: ChatRequest,
        renderer: Renderer,
    ) -> None:
        call, target = outcome.call, outcome.target
        model = outcome.model = target_for(yard, target, key)
        request = prepare(call, request, key, yard)
        served, metered = model, None
        if key.paced:
            tokens = token_estimate(model, request) if key.tpm is not None else 0
            counted = await self.key_limits.admit(key, call, tokens)
            # its answer corrects the count and gives a shared slot back before it is sent
            if counted is not None or call.slot:
                served = metered = KeyAnswered(model, self.key_limits, key, counted, call)
        if self._captures(target, request):
            outcome.captured = request
        try:  # from here on, the key's slot and budget hold are given back however it ends
            if key.budget is not None:
                try:
                    outcome.holds = await self.key_limits.reserve(
                        key, request, target, cost_bound(model, request), yard.built.alerts
                    )
                except BudgetExceededError as exc:
                    raise outcome.over_budget(exc, request, yard.built.ledger) from None
            with (
                caller_trace(call, yard),
                request_scope.entered(outcome.scope),
                self.quota_watch(key) as outcome.quota,  # None: not shown to this caller
            ):
                if outcome.stream:
                    await deliver.streamed(
                        call,
                        served,
                        request,
                        renderer,
                        outcome,
                        stalled_after=self.stalled_client_timeout,
                    )
                else:
                    await deliver.whole(
                        call,
                        served,
                        request,
                        renderer,
                        outcome,
                        stalled_after=self.stalled_client_timeout,
                        leave_watch_after=self.leave_watch_after,
                    )
        except asyncio.CancelledError:
            if not outcome.recorded:  # the server gave up on it: see `_shut_down`
                # Billed as the ledger and the budgets count it: its input, once sent, and
                # the calls that had finished.
                shut = cut_short(_shut_down(), model, request, outcome.scope)
                refused = outcome.failed(shut)
                if not call.responded:
                    await call.fail(refused, api=_wire_of(outcome.api))
            raise
        finally:
            # A failure or a client gone leaves the token count to correct here.
            counted = metered.counted if metered is not None and not metered.settled else None
            # Most requests hold nothing: no coroutine for them.
            if key.max_concurrency is not None or outcome.holds or counted is not None:
                await self.key_limits.finish(
                    key, call, outcome.holds, outcome.spent, counted, outcome.tokens
                )

    def quota_watch(
        self, key: VirtualKey
    ) -> contextlib.AbstractContextManager[upstream_quota.QuotaSeen | None]:
        """Keeps the upstream quota headers for a caller who may see them: the admin key, or
        anyone on a gateway with no key at all (one operator's own); never a virtual key, whose
        holder should not read the account's limits and what the other keys use of them."""
        if key.admin or self.keys.unguarded:
            return upstream_quota.watching()
        return contextlib.nullcontext()

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


def _shut_down() -> UnavailableError:
    """What a request the server cancels gets: only a shutdown does that, once requests have
    run past `gateway.drain_timeout`. A 503 the caller can send again to a replica still
    serving, and a record of it, rather than the server's bare 500."""
    return UnavailableError(
        "the gateway shut down before this request ended (gateway.drain_timeout passed); "
        "send it again",
        code="shutting_down",
    )


def _wire_of(api: str) -> str:
    """The error shape a caller of `api` reads (`Call.fail`)."""
    return "anthropic" if api == "anthropic" else "openai"


def _check_scope(key: VirtualKey, name: str) -> None:
    if not key.allows(name):
        # Said alike whether the config has the name or not (the key's model list hides the
        # others); a typo is told the name it meant among the key's own.
        meant = did_you_mean(name, key.systems, listed=None) or ";"
        raise ApiError(
            403,
            f"this key may not use {name!r}{meant} it may use {', '.join(key.systems)}",
            "permission_error",
            "model_not_allowed",
            "model",
        )


def target_for(yard: Yard, name: str, key: VirtualKey) -> Model:
    """The system or model `name` as `key` may reach it: a 403 outside its scope, a 404 listing
    what it may use if there is no such name."""
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
