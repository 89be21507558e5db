"""OpenAI's error responses mapped onto the error tree: status, error body and headers.

The body is `{"error": {"message", "type", "param", "code"}}`. OpenAI-compatible servers vary
it (vLLM puts the fields at the top level with `object: "error"`, llama.cpp sends an integer
`code`, Azure adds `innererror`), so the reader accepts all of those and falls back to the
status alone for a body that is not JSON at all (an HTML page from a proxy).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
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
)
from modelyard.providers.headers import openai_rate_limits, parse_duration, parse_retry_after
from modelyard.providers.wire import body_excerpt

_CONTEXT_CODES = frozenset({"context_length_exceeded", "exceed_context_size_error"})
_CONTEXT_TEXT = re.compile(
    r"maximum context length|context length|context window|exceeds the available context size"
    r"|reduce the length of the messages",
    re.IGNORECASE,
)
_FILTER_CODES = frozenset(
    {"content_filter", "content_policy_violation", "invalid_prompt", "responsibleaipolicyviolation"}
)
_OVERLOADED = re.compile(r"overloaded|slow[ _]down|capacity", re.IGNORECASE)
_TRY_AGAIN = re.compile(r"try again in ((?:\d+(?:\.\d+)?(?:ms|h|m|s))+)")
_MESSAGE_LIMIT = 1000


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The fields of one error object, whichever variant of the shape it came in."""

    message: str
    type: str | None = None
    code: str | None = None
    param: str | None = None
    inner_code: str | None = None


def read_error(decoded: Any) -> ErrorInfo | None:
    """The error a decoded body describes, or None if it is not an error body."""
    if not isinstance(decoded, dict):
        return None
    inner = decoded.get("error")
    if isinstance(inner, str):
        return ErrorInfo(message=inner)
    if isinstance(inner, dict):
        decoded = inner
    elif decoded.get("object") != "error":
        return None
    message = decoded.get("message")
    innererror = decoded.get("innererror")
    inner_code = innererror.get("code") if isinstance(innererror, dict) else None
    return ErrorInfo(
        message=str(message) if message is not None else "",
        type=_text(decoded.get("type")),
        code=_text(decoded.get("code")),
        param=_text(decoded.get("param")),
        inner_code=_text(inner_code),
    )


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def error_from_wire(status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
    """The error an OpenAI-style HTTP error response means, in the error tree."""
    lowered = {k.lower(): v for k, v in headers.items()}
    try:
        info = read_error(orjson.loads(body)) if body else None
    except orjson.JSONDecodeError:
        info = None
    if info is None:
        excerpt = body_excerpt(body)
        cls, _ = _class_for(status, ErrorInfo(message=""))
        return cls(
            f"HTTP {status} with a body that is not an OpenAI error object; "
            f"body starts: {excerpt!r}",
            status=status,
            code=f"http_{status}",
            provider_message=excerpt,
            retry_after=parse_retry_after(lowered),
        )
    return error_from_info(status, info, lowered)


def error_from_info(
    status: int, info: ErrorInfo, headers: Mapping[str, str] | None = None
) -> ModelError:
    """The error for a parsed error object that came with `status` (lower-cased headers)."""
    headers = headers or {}
    cls, what = _class_for(status, info)
    provider_message = info.message[:_MESSAGE_LIMIT]
    message = f"{what}: {provider_message}" if provider_message else what
    if info.param:
        message += f" (param: {info.param})"
    retryable: bool | None = None
    retry_after = parse_retry_after(headers)
    if cls is RateLimitedError:
        if info.code == "insufficient_quota" or info.type == "insufficient_quota":
            retryable = False
            message = (
                "quota exhausted (insufficient_quota): retrying will not help until the "
                f"account's plan or billing is fixed: {provider_message}"
            )
        elif retry_after is None:
            # OpenAI's message names the wait for this request's own tokens; the reset headers
            # only say when whole limits refill, a guess for whichever limit this request hit.
            retry_after = _wait_in_message(info.message) or _reset_wait(headers)
    return cls(
        message,
        status=status,
        code=info.code or info.type,
        provider_message=provider_message,
        retryable=retryable,
        retry_after=retry_after,
        param=info.param,
    )


def stream_error(info: ErrorInfo) -> ModelError:
    """The error for an `{"error": ...}` event inside a stream, where no HTTP status applies."""
    return error_from_info(_status_of(info), info)


def _status_of(info: ErrorInfo) -> int:
    if info.code is not None and info.code.isdigit():
        return int(info.code)
    kind = (info.type or "").lower()
    code = (info.code or "").lower()
    if code in ("rate_limit_exceeded", "insufficient_quota") or kind in ("tokens", "requests"):
        return 429
    if code in _CONTEXT_CODES or code in _FILTER_CODES or kind == "invalid_request_error":
        return 400
    if code == "invalid_api_key" or kind == "authentication_error":
        return 401
    if _OVERLOADED.search(info.message) or kind == "overloaded_error":
        return 503
    return 500


def _class_for(status: int, info: ErrorInfo) -> tuple[type[ModelError], str]:
    if status in (400, 413, 422):
        if _is_content_filter(info):
            return ContentFilteredError, "the provider's content policy refused the request"
        if _is_context_length(info):
            return ContextLengthError, "the prompt does not fit the model's context window"
        return BadRequestError, "the provider rejected the request"
    if status == 401:
        return AuthenticationError, "the provider rejected the API key"
    if status == 403:
        return PermissionDeniedError, "the API key may not use this model or endpoint"
    if status == 404:
        return NotFoundError, "no such model, deployment or endpoint"
    if status == 429:
        return RateLimitedError, "rate limited"
    if status in (408, 504):
        return ModelTimeoutError, "the provider timed out"
    if status == 529 or (status == 503 and _is_overloaded(info)):
        return OverloadedError, "the provider is overloaded"
    if status >= 500 or status == 409:
        return UnavailableError, "the provider failed to answer"
    return BadRequestError, "the provider rejected the request"


def _is_content_filter(info: ErrorInfo) -> bool:
    codes = {(info.code or "").lower(), (info.inner_code or "").lower(), (info.type or "").lower()}
    return bool(codes & _FILTER_CODES) or "flagged as potentially violating" in info.message


def _is_context_length(info: ErrorInfo) -> bool:
    codes = {(info.code or "").lower(), (info.type or "").lower()}
    return bool(codes & _CONTEXT_CODES) or bool(_CONTEXT_TEXT.search(info.message))


def _is_overloaded(info: ErrorInfo) -> bool:
    return bool(_OVERLOADED.search(f"{info.message} {info.type or ''} {info.code or ''}"))


def _reset_wait(headers: Mapping[str, str]) -> float | None:
    """The wait the `x-ratelimit-reset-*` headers imply: for each exhausted limit (or every
    limit when none says it is exhausted), the time to its reset, shortened for requests to
    one request's share of it (reset / limit: quotas refill continuously, and the headers give
    the time to a *full* refill); the longest of those."""
    limits = openai_rate_limits(headers)
    request_reset = limits.reset_requests_s
    if request_reset is not None and limits.limit_requests:
        request_reset /= limits.limit_requests
    pairs = [
        (limits.remaining_requests, request_reset),
        (limits.remaining_tokens, limits.reset_tokens_s),
    ]
    exhausted = [reset for left, reset in pairs if left == 0 and reset is not None]
    resets = exhausted or [reset for _, reset in pairs if reset is not None]
    return max(resets) if resets else None


def _wait_in_message(message: str) -> float | None:
    match = _TRY_AGAIN.search(message)
    return parse_duration(match.group(1)) if match else None
