"""Anthropic's error responses and in-stream error events, mapped into modelyard's error tree.

The body is `{"type": "error", "error": {"type": ..., "message": ...}, "request_id": ...}`. The
error's `type` decides the class when it is known (it is the API's own meaning); otherwise the
HTTP status does. Anthropic's `x-should-retry` header, when present, overrides `retryable`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from modelyard.errors import (
    AuthenticationError,
    BadRequestError,
    ContentFilteredError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
    class_for_status,
)
from modelyard.providers.headers import anthropic_rate_limits, parse_retry_after
from modelyard.providers.wire import body_excerpt

_BY_TYPE: dict[str, type[ModelError]] = {
    "invalid_request_error": BadRequestError,
    "authentication_error": AuthenticationError,
    "billing_error": PermissionDeniedError,
    "permission_error": PermissionDeniedError,
    "not_found_error": NotFoundError,
    "request_too_large": BadRequestError,
    "rate_limit_error": RateLimitedError,
    "timeout_error": ModelTimeoutError,
    "api_error": UnavailableError,
    "overloaded_error": OverloadedError,
}

_HINTS: dict[type[ModelError], str] = {
    AuthenticationError: "; check the provider's api_key (ANTHROPIC_API_KEY)",
    PermissionDeniedError: "; the key's organisation may not use this model (or is out of credit)",
    NotFoundError: "; check the model id in the config",
    OverloadedError: "; Anthropic asks clients to back off",
}

_CONTEXT_PHRASES = ("prompt is too long", "exceed context limit", "context window")
_FILTER_PHRASES = ("content filtering policy", "content policy")


ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    504: "timeout_error",
    529: "overloaded_error",
}
"""Anthropic's documented error type of each status it gives one. A 503 has none: the API sends
an overload as 529 `overloaded_error`, and any other server error is an `api_error`."""


def error_to_wire(error: ModelError) -> tuple[int, dict[str, Any]]:
    """The status and body the Messages API would answer `error` with, for serving that API
    (the gateway's /v1/messages): the error's own status, overloads as 529."""
    status = 529 if isinstance(error, OverloadedError) else (error.status or 500)
    kind = ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")
    return status, {"type": "error", "error": {"type": kind, "message": error.message}}


def error_from_wire(status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
    """The error an HTTP error response from the Messages API means."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    detail = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(detail, dict):
        cls = class_for_status(status)
        error = cls(
            f"HTTP {status} without Anthropic's error JSON; body starts: {body_excerpt(body)!r}",
            status=status,
            code=f"http_{status}",
        )
    else:
        error = error_from_payload(detail, status=status)
    _apply_headers(error, status, headers)
    return error


def error_from_payload(detail: Mapping[str, Any], *, status: int | None) -> ModelError:
    """The error an `{"type": ..., "message": ...}` error object means (HTTP body or stream
    `error` event; the latter has no status)."""
    kind = detail.get("type")
    kind = kind if isinstance(kind, str) else "unknown_error"
    message = detail.get("message")
    message = message if isinstance(message, str) else ""
    cls = _BY_TYPE.get(kind) or (class_for_status(status) if status else UnavailableError)
    lowered = message.lower()
    if cls is BadRequestError and any(p in lowered for p in _CONTEXT_PHRASES):
        cls = ContextLengthError
    elif cls is BadRequestError and any(p in lowered for p in _FILTER_PHRASES):
        cls = ContentFilteredError
    text = f"{kind}: {message}" if message else kind
    return cls(
        text + _HINTS.get(cls, ""),
        status=status,
        code=kind,
        provider_message=message or None,
        param=_param(message) if kind == "invalid_request_error" else None,
    )


_PARAM = re.compile(r"([a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*): ")
"""A field path leading a message: `max_tokens: 100000 > 64000, ...`, `messages.1.content.0.text:
...` (a prose message, `prompt is too long: ...`, has none)."""


def _param(message: str) -> str | None:
    """The request field an invalid_request_error's message names first, if it does: Anthropic's
    error object has no `param`, its messages lead with the field's path instead."""
    match = _PARAM.match(message)
    return match.group(1) if match else None


def _apply_headers(error: ModelError, status: int, headers: Mapping[str, str]) -> None:
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        error.retryable = should_retry == "true"
    if not error.retryable:
        return
    error.retry_after = parse_retry_after(headers)
    if error.retry_after is None and isinstance(error, RateLimitedError):
        error.retry_after = _quota_reset(headers)


def _quota_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds until an exhausted quota refills, from the `anthropic-ratelimit-*` headers."""
    info = anthropic_rate_limits(headers)
    exhausted = [
        reset
        for remaining, reset in (
            (info.remaining_requests, info.reset_requests_s),
            (info.remaining_tokens, info.reset_tokens_s),
        )
        if remaining == 0 and reset is not None
    ]
    if exhausted:
        return max(exhausted)
    known = [r for r in (info.reset_requests_s, info.reset_tokens_s) if r is not None]
    return min(known) if known else None
