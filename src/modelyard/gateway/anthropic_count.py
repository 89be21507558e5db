"""Anthropic's token counting as the gateway serves it: `POST /v1/messages/count_tokens`.

The body is read as /v1/messages reads one (`anthropic_api.prompt_request`), less what only an
answer needs: `model`, `messages`, `system`, `tools`, `tool_choice`, `thinking`,
`output_config` and `context_management`; any other field is a 400 naming it. The caller's
key, its scopes and its rate limits hold as for a Messages call, and an unknown `model` is
the same 404.

The count is exact when the named system or model reaches one hosted model through wrappers
alone (no router, fallback or other pattern decides who answers) and that model's API counts
tokens (Anthropic's does): its provider counts the body the adapter would send, with the
adapter's own key, and its errors reach the caller as a Messages call's would, but for a 404
or 405 (a proxy in front of the provider without the endpoint), estimated instead and logged
once. Otherwise it is the estimate budgets and replay use (`cost.prices.estimate_input_tokens`).
The response header `x-modelyard-token-count` says which: `exact` or `estimated`.

A count costs nothing: no budget hold, no ledger row, and no chat request in the metrics (a
refused or failed count is counted under its route, as every route's refusals are). The request
log keeps a record of it, `api: count_tokens`, with the count as its input tokens.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from typing import Any

import orjson

from modelyard.cost.prices import estimate_input_tokens
from modelyard.errors import ModelError
from modelyard.gateway.anthropic_api import prompt_request
from modelyard.gateway.auth import caller
from modelyard.gateway.chat import ChatEndpoints, target_for
from modelyard.gateway.errors import ApiError, from_model_error
from modelyard.gateway.exchange import JSON, Call
from modelyard.gateway.fields import expect_object, expect_str, reject_unknown
from modelyard.gateway.headers import prepare, upstream_quota_fields, upstream_quota_headers
from modelyard.gateway.keys import VirtualKey
from modelyard.model import Model, Wrapper
from modelyard.observability.decision_log import RequestRecord
from modelyard.providers.anthropic_count import COUNTED
from modelyard.providers.remote import RemoteModel
from modelyard.types import ChatRequest
from modelyard.yard import Yard

log = logging.getLogger("modelyard.gateway")

COUNT_HEADER = b"x-modelyard-token-count"
"""Says whether a count is `exact` (the provider's) or `estimated` (modelyard's)."""

_NEUTRAL: dict[str, Any] = {}
NOT_SERVED = frozenset({404, 405})
"""Statuses of a server that does not serve the count endpoint (a 404 may also be a model id
it does not know: the model's calls then fail with it, loudly)."""


@dataclass(frozen=True, slots=True)
class CountCall:
    """A parsed count_tokens call."""

    target: str
    request: ChatRequest


@dataclass(frozen=True, slots=True, kw_only=True)
class Count:
    """A prompt's input tokens, and who counted them."""

    tokens: int
    exact: bool
    model: str | None = None
    """The model whose provider counted (exact counts only)."""
    unserved: str | None = None
    """Why the provider's count was not had (its endpoint is not served where the provider's
    `base_url` points, say a proxy), when this is the estimate instead."""


def parse_count(body: Any, *, max_messages: int) -> CountCall:
    """A count_tokens request body as a CountCall; 400 naming the field otherwise."""
    body = expect_object(body, "body")
    reject_unknown(body, COUNTED, _NEUTRAL)  # what Anthropic's endpoint takes
    target = expect_str(body.get("model"), "model")
    return CountCall(target=target, request=prompt_request(body, max_messages=max_messages))


def counter(model: Model) -> RemoteModel | None:
    """The hosted model `model` reaches through wrappers alone, if its API counts tokens."""
    while isinstance(model, Wrapper):  # retries, breakers, budgets, caches: not who answers
        model = model.inner
    return model if isinstance(model, RemoteModel) and model.counts_tokens else None


async def count(model: Model, request: ChatRequest) -> Count:
    """`request`'s input tokens for `model`: its provider's count when it gives one, else the
    estimate. ApiError when the provider refuses or fails."""
    leaf = counter(model)
    if leaf is None:
        return Count(tokens=estimate_input_tokens(request), exact=False)
    try:
        tokens = await leaf.count_tokens(request)
    except ModelError as exc:
        if exc.status not in NOT_SERVED:
            raise from_model_error(exc, api="anthropic") from None
        # A proxy in front of the provider that lacks the endpoint: a count is still owed,
        # and the estimate is what every other system gets.
        why = f"{leaf.name}'s provider does not serve count_tokens (HTTP {exc.status})"
        return Count(tokens=estimate_input_tokens(request), exact=False, unserved=why)
    return Count(tokens=tokens, exact=True, model=leaf.name)


class TokenCounting:
    """POST /v1/messages/count_tokens, under the chat endpoints' keys, limits and request log."""

    def __init__(self, chat: ChatEndpoints) -> None:
        self.chat = chat
        self._told: set[str] = set()
        """The reasons a count was estimated that were logged (once each)."""

    async def count_tokens(self, call: Call) -> None:
        """Anthropic's count_tokens: `{"input_tokens": N}`."""
        chat = self.chat
        key = await caller(chat.keys, call)  # before the body, as on every model route
        body = await call.json(chat.max_body_bytes)
        parsed = parse_count(body, max_messages=chat.max_messages)
        # The provider's quota headers, for the callers who may see them, as on a chat call.
        with chat.live.serving() as yard, chat.quota_watch(key) as quota:
            try:
                counted = await self._count_on(yard, call, key, parsed)
            except ApiError as error:
                reason = f"{error.code or error.type}: {error.message}"
                self._record(call, parsed.target, yard.version, error.status, error=reason)
                quota_headers = upstream_quota_fields(quota)
                raise replace(error, headers={**error.headers, **quota_headers}) from None
            headers = [
                *JSON,
                (COUNT_HEADER, b"exact" if counted.exact else b"estimated"),
                (b"x-modelyard-config-version", yard.version.encode()),
                *upstream_quota_headers(quota),
            ]
            if counted.model is not None:
                headers.append((b"x-modelyard-model", counted.model.encode()))
            if counted.unserved is not None and counted.unserved not in self._told:
                self._told.add(counted.unserved)
                log.warning("%s: token counts are estimated", counted.unserved)
            await call.respond(200, orjson.dumps({"input_tokens": counted.tokens}), headers)
            self._record(call, parsed.target, yard.version, 200, counted=counted)

    async def _count_on(self, yard: Yard, call: Call, key: VirtualKey, parsed: CountCall) -> Count:
        # The same admission as a Messages call (scope, unknown system, deadline header, the
        # key's rate and concurrency limits), shared with it rather than copied.
        chat = self.chat
        model = target_for(yard, parsed.target, key)
        request = prepare(call, parsed.request, key, yard)
        await chat.key_limits.admit(key, call)  # a count uses no tokens: told, not counted
        try:
            return await count(model, request)
        finally:
            if key.max_concurrency is not None:
                await chat.key_limits.release(key, call)

    def _record(
        self,
        call: Call,
        target: str,
        version: str,
        status: int,
        *,
        counted: Count | None = None,
        error: str | None = None,
    ) -> None:
        self.chat.decisions.record(
            RequestRecord(
                id=call.id,
                at=time.time(),
                key_id=call.key.id if call.key else None,
                target=target,
                api="count_tokens",
                stream=False,
                config_version=version,
                status=status,
                model=counted.model if counted else None,
                latency_ms=(time.perf_counter() - call.started) * 1000,
                input_tokens=counted.tokens if counted else 0,
                error=error,
            )
        )
