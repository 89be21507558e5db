"""A fake Anthropic Messages API: `POST /v1/messages` and `POST /v1/messages/count_tokens` on a
real socket, faithful to the wire.

This module is the server: auth and headers, refusals and faults with the API's own error
bodies, and the answers' order (scripted `Turn`s first). What it checks of a body is in
`anthropic_request.py`, what it answers (default text, tool calls, limits, usage, stream events)
in `anthropic_reply.py`, thinking in `anthropic_thinking.py` and the prompt cache in
`anthropic_cache.py`; their public names are importable from here. Answers, stream events and
error bodies have the exact shapes of the API, which the tests check against the SDK's response
types. Prompt tokens are counted one way for both (`input_tokens`), so a count agrees with the
usage of a call.

Requests are checked the way the API checks them: auth, `anthropic-version`, the body against
the official SDK's own request types, turn rules. With `thinking` on (or a `Turn` that scripts
it), the answer opens with a signed thinking block, streamed as `thinking_delta` and
`signature_delta`; thinking blocks sent back must carry the signature the fake gave them.

Beta-aware, as the API is: `context_management` is an extra input unless `anthropic-beta` names
context-management-2025-06-27, and then it is checked against the SDK's beta type. A
`{"role": "system"}` message (mid-conversation system) must come right after a user turn.

Version-aware, as the API is: with `anthropic-version: 2023-06-01` (what modelyard sends) the
legacy sampling fields `temperature`, `top_p` and `top_k` are accepted; with a later version
(what the official SDK sends) they are refused, as the API does since 2026-10-21.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import Any

from aiohttp import web

from tests.fakes import anthropic_reply
from tests.fakes.anthropic_cache import CacheUse, PromptCache
from tests.fakes.anthropic_reply import Plan, ToolUse, Turn, input_tokens, sample
from tests.fakes.anthropic_request import (
    BETA_FIELDS,
    LEGACY_FIELDS,
    LEGACY_VERSION,
    validate_request,
)
from tests.fakes.server import FakeUpstream, Fault, sse

__all__ = [
    "BETA_FIELDS",
    "ERROR_TYPES",
    "LEGACY_FIELDS",
    "LEGACY_VERSION",
    "FakeAnthropic",
    "ToolUse",
    "Turn",
    "input_tokens",
    "overloaded",
    "prompt_too_long",
    "quota_headers",
    "rate_limited",
    "sample",
    "validate_request",
]

ERROR_TYPES = {
    400: ("invalid_request_error", "Invalid request."),
    401: ("authentication_error", "invalid x-api-key"),
    402: ("billing_error", "Your credit balance is too low to access the Anthropic API."),
    403: (
        "permission_error",
        "Your API key does not have permission to use the specified resource.",
    ),
    404: ("not_found_error", "The requested resource could not be found."),
    413: ("request_too_large", "Request exceeds the maximum allowed number of bytes."),
    429: ("rate_limit_error", "Number of request tokens has exceeded your per-minute rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    504: ("timeout_error", "Request timed out."),
    529: ("overloaded_error", "Overloaded"),
}


class FakeAnthropic(FakeUpstream):
    """The Anthropic Messages API, faithfully shaped, with scripted answers and faults."""

    def __init__(self, *, api_key: str | None = None) -> None:
        super().__init__()
        self.api_key = api_key
        """When set, any other key is refused with 401."""
        self.turns: deque[Turn] = deque()
        self.cache_read_tokens = 0
        """Prompt tokens to report as read from the prompt cache (with the two below: when all
        are 0, the request's `cache_control` breakpoints decide, through `prompt_cache`)."""
        self.cache_creation_tokens = 0
        self.cache_creation_1h_tokens = 0
        """The part of `cache_creation_tokens` written to the 1-hour cache."""
        self.prompt_cache = PromptCache()
        """The prefixes earlier requests' breakpoints wrote."""
        self.final_events = 1
        """How many trailing stream events `Fault(no_final=True)` leaves out: 1 drops
        message_stop; 2 drops message_delta too (so the stop reason never arrives)."""
        self._ids = itertools.count(1)

    def script(self, *turns: Turn) -> None:
        """Answer the next requests with these turns, one each."""
        self.turns.extend(turns)

    def routes(self) -> list[web.RouteDef]:
        async def messages(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "messages")

        async def count_tokens(request: web.Request) -> web.StreamResponse:
            return await self.handle(request, "count_tokens")

        return [
            web.post("/v1/messages", messages),
            web.post("/v1/messages/count_tokens", count_tokens),
        ]

    def reject(
        self, kind: str, request: web.Request, body: Any
    ) -> tuple[int, dict[str, Any]] | None:
        refusal = self.check(request, body, kind)
        if refusal is None:
            return None
        status, error_type, message = refusal
        return status, self.error_body(status, error_type, message)

    def check(
        self, request: web.Request, body: Any, kind: str = "messages"
    ) -> tuple[int, str, str] | None:
        """Why the real API would refuse this request: (status, error type, message)."""
        key = request.headers.get("x-api-key")
        bearer = request.headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            key = key or bearer[7:]
        if not key:
            return 401, "authentication_error", "x-api-key header is required"
        if self.api_key is not None and key != self.api_key:
            return 401, "authentication_error", "invalid x-api-key"
        version = request.headers.get("anthropic-version")
        if not version:
            return 400, "invalid_request_error", "anthropic-version: header is required"
        betas = frozenset(
            name.strip() for name in request.headers.get("anthropic-beta", "").split(",")
        )
        problem = validate_request(body, version=version, kind=kind, betas=betas)
        if problem is not None:
            return 400, "invalid_request_error", problem
        return None

    def response_headers(self, kind: str, status: int) -> dict[str, str]:
        headers = {"request-id": f"req_fake{next(self._ids):06d}"}
        if status < 400:
            headers.update(quota_headers(remaining=49, tokens_remaining=39000))
        return headers

    def error_body(
        self, status: int, error_type: str | None, message: str | None
    ) -> dict[str, Any]:
        default_type, default_message = ERROR_TYPES.get(status, ERROR_TYPES[500])
        return {
            "type": "error",
            "error": {"type": error_type or default_type, "message": message or default_message},
            "request_id": f"req_fake{next(self._ids):06d}",
        }

    def error_event(self) -> bytes:
        """`event: error` with an overloaded_error, as the API ends a stream it gave up on."""
        return sse(self.error_body(529, None, None), "error")

    # --- answers -----------------------------------------------------------------------------

    def answer(self, kind: str, request: web.Request, body: Any) -> dict[str, Any]:
        if kind == "count_tokens":
            return {"input_tokens": input_tokens(body)}
        return anthropic_reply.message(self._plan(body), body["model"])

    def events(self, kind: str, request: web.Request, body: Any) -> tuple[list[bytes], list[bytes]]:
        plan = self._plan(body)
        out = anthropic_reply.stream(plan, body["model"])
        if plan.turn is not None and plan.turn.error_after is not None:
            error = {
                "type": "error",
                "error": {
                    "type": plan.turn.error_type,
                    "message": ERROR_TYPES[529][1]
                    if plan.turn.error_type == "overloaded_error"
                    else "stream failed",
                },
            }
            return [*out[: plan.turn.error_after], sse(error, "error")], []
        split = len(out) - self.final_events
        return out[:split], out[split:]

    def _plan(self, body: dict[str, Any]) -> Plan:
        turn = self.turns.popleft() if self.turns else None
        use = CacheUse(
            read=self.cache_read_tokens,
            written=self.cache_creation_tokens,
            written_1h=self.cache_creation_1h_tokens,
        )
        if use == CacheUse():
            use = self.prompt_cache.use(body)
        return anthropic_reply.plan(body, turn, cache=use, ids=self._ids)


def quota_headers(
    *, remaining: int, tokens_remaining: int, reset_in: float = 1.0
) -> dict[str, str]:
    """`anthropic-ratelimit-*` headers as the API sends them (resets are RFC 3339 instants)."""
    import datetime as dt

    reset = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=reset_in)).strftime(
        "%Y-%m-%dT%H:%M:%SZ"
    )
    return {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": str(remaining),
        "anthropic-ratelimit-requests-reset": reset,
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": str(tokens_remaining),
        "anthropic-ratelimit-tokens-reset": reset,
    }


def rate_limited(retry_after: float | None = 1.0) -> Fault:
    """A 429 as the API sends it: quota headers at zero and, unless None, `retry-after`."""
    headers = quota_headers(remaining=0, tokens_remaining=0, reset_in=retry_after or 1.0)
    if retry_after is not None:
        headers["retry-after"] = f"{retry_after:g}"
    return Fault(status=429, headers=headers)


def overloaded() -> Fault:
    """A 529 overloaded_error."""
    return Fault(status=529)


def prompt_too_long(tokens: int = 210_000, limit: int = 200_000) -> Fault:
    """The 400 the API answers a prompt that does not fit."""
    return Fault(
        status=400,
        error_type="invalid_request_error",
        message=f"prompt is too long: {tokens} tokens > {limit} maximum",
    )
