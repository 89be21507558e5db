"""What Gemini's failures mean in modelyard's error tree.

Gemini reports errors as Google RPC statuses: `{"error": {"code", "message", "status",
"details": [...]}}` (Vertex wraps it in a list). The status name decides the class; details
refine it: `google.rpc.RetryInfo.retryDelay` is the wait for a rate limit, and
`google.rpc.ErrorInfo.reason == API_KEY_INVALID` is a bad key although the status says 400, and
`google.rpc.BadRequest.fieldViolations` names the field at fault (the error's `param`). A 503
is the model overloaded only when its error object's message says so (Gemini's own `The model
is overloaded.`); a bare 503, a proxy's page, is an outage as on every wire.
Answers can fail too: a prompt blocked before any candidate (`promptFeedback.blockReason`) is
a ContentFilteredError naming `prompt` as its param (Azure OpenAI's 400 `content_filter` for a
filtered prompt has that shape), and a candidate's `finishReason` that blames the request
(`LANGUAGE`) or is a broken answer (`MALFORMED_FUNCTION_CALL`, `OTHER`, ...) fails the call. A
candidate a content policy stopped (`FILTERED`) is no error: it ends an answer with finish
reason `content_filter` (`gemini_answers`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import orjson

from modelyard.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
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
from modelyard.providers.headers import parse_duration, parse_retry_after
from modelyard.providers.wire import body_excerpt

FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
        "ESCALATION",
    }
)
"""finishReasons that mean the provider's content policy cut the answer: the google-genai
SDK's SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY and the image
generation ones, with Vertex's MODEL_ARMOR and ESCALATION."""

_REFUSED: dict[str, type[ModelError]] = {
    "LANGUAGE": BadRequestError,
    "MISSING_THOUGHT_SIGNATURE": BadRequestError,
    "PUP_LIMITED_DISABLED": PermissionDeniedError,
}
"""finishReasons that blame the request or the account: repeating it cannot help."""

_BY_STATUS_NAME: dict[str, type[ModelError]] = {
    "INVALID_ARGUMENT": BadRequestError,
    "FAILED_PRECONDITION": BadRequestError,
    "OUT_OF_RANGE": BadRequestError,
    "UNIMPLEMENTED": BadRequestError,
    "UNAUTHENTICATED": AuthenticationError,
    "PERMISSION_DENIED": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "RESOURCE_EXHAUSTED": RateLimitedError,
    "DEADLINE_EXCEEDED": ModelTimeoutError,
    "INTERNAL": UnavailableError,
    "UNAVAILABLE": UnavailableError,
    "UNKNOWN": UnavailableError,
    "ABORTED": UnavailableError,
    "CANCELLED": UnavailableError,
}

_BAD_KEY_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED", "API_KEY_NOT_FOUND"})
_TOO_LONG = re.compile(
    r"(?i)input token count.{0,200}exceeds|exceeds the maximum number of tokens|"
    r"too many (input )?tokens|context (length|window)|prompt is too long"
)
_OVERLOADED = re.compile(r"(?i)overload")


def _by_status(status: int) -> type[ModelError]:
    """The class a status means whatever the body says. A 503 is an outage, as on every wire:
    only an error object whose message says so (`api_error`) makes it an overload, never a
    bare 503 (a proxy's page)."""
    if status == 413:
        return ContextLengthError  # Gemini's "request too large" is the prompt's length
    if status == 402:
        return BadRequestError
    return class_for_status(status)


def _details(error: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    details = error.get("details")
    return [d for d in details if isinstance(d, dict)] if isinstance(details, list) else []


def _detail(error: Mapping[str, Any], kind: str, field: str) -> str | None:
    for detail in _details(error):
        if str(detail.get("@type", "")).endswith(kind) and isinstance(detail.get(field), str):
            value: str = detail[field]
            return value
    return None


def api_error(status: int, error: Mapping[str, Any], headers: Mapping[str, str]) -> ModelError:
    """The error a Gemini `error` object means."""
    name = str(error.get("status") or "")
    message = str(error.get("message") or "")
    reason = _detail(error, "google.rpc.ErrorInfo", "reason")
    cls = _BY_STATUS_NAME.get(name) or _by_status(status)
    if reason in _BAD_KEY_REASONS:
        cls = AuthenticationError
    elif cls is BadRequestError and _TOO_LONG.search(message):
        cls = ContextLengthError
    elif cls is UnavailableError and (status == 503 or name == "UNAVAILABLE"):
        cls = OverloadedError if _OVERLOADED.search(message) else UnavailableError
    retry_after = parse_duration(_detail(error, "google.rpc.RetryInfo", "retryDelay"))
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    label = name or f"HTTP {status}"
    if reason and reason not in message:
        label += f" ({reason})"
    return cls(
        f"Gemini {label}: {message}" if message else f"Gemini {label}",
        status=status,
        code=reason if cls is AuthenticationError and reason else name or None,
        provider_message=message or None,
        retry_after=retry_after,
        param=_field(error) if issubclass(cls, BadRequestError) else None,
    )


def _field(error: Mapping[str, Any]) -> str | None:
    """The first field a `google.rpc.BadRequest` detail names (`fieldViolations[].field`)."""
    for detail in _details(error):
        violations = detail.get("fieldViolations")
        if str(detail.get("@type", "")).endswith("google.rpc.BadRequest") and isinstance(
            violations, list
        ):
            fields = [v.get("field") for v in violations if isinstance(v, dict)]
            return next((f for f in fields if isinstance(f, str) and f), None)
    return None


def error_from_wire(status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
    """The error an HTTP error response from Gemini means."""
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        payload = None
    if isinstance(payload, list) and payload:
        payload = payload[0]
    error = payload.get("error") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        return api_error(status, error, headers)
    cls = _by_status(status)
    return cls(
        f"HTTP {status} with a body that is not Gemini's error JSON; "
        f"body starts: {body_excerpt(body)!r}",
        status=status,
        code="bad_error_body",
        retry_after=parse_retry_after(headers),
    )


def _ratings(holder: Mapping[str, Any]) -> str:
    ratings = holder.get("safetyRatings")
    if not isinstance(ratings, list):
        return ""
    shown = []
    for rating in ratings:
        if not isinstance(rating, dict):
            continue
        probability = rating.get("probability", "?")
        if probability in ("NEGLIGIBLE", "HARM_PROBABILITY_UNSPECIFIED") and not rating.get(
            "blocked"
        ):
            continue
        text = f"{rating.get('category', '?')}={probability}"
        shown.append(text + " (blocked)" if rating.get("blocked") else text)
    return f"; safety ratings: {', '.join(shown)}" if shown else ""


def blocked_error(feedback: Mapping[str, Any]) -> ContentFilteredError:
    """A prompt blocked before any answer began (`promptFeedback`), naming `prompt`."""
    reason = str(feedback.get("blockReason"))
    detail = feedback.get("blockReasonMessage")
    message = f"Gemini blocked the prompt (blockReason {reason})" + _ratings(feedback)
    return ContentFilteredError(
        message + (f": {detail}" if detail else ""),
        code=reason,
        provider_message=str(detail) if detail else None,
        param="prompt",
    )


def finish_error(reason: Any, candidate: Mapping[str, Any]) -> ModelError:
    """The error for a finishReason that is neither a normal end nor a filter. One that blames
    the request or the account is theirs (`_REFUSED`); any other (a broken function call,
    OTHER, NO_IMAGE, an unspecified or unknown one) is a BadResponseError, a 502: the reply is
    not an answer the caller could use, it says nothing the caller did wrong, and a retry or
    another model may well answer, as for any broken upstream reply."""
    detail = candidate.get("finishMessage")
    suffix = f": {detail}" if detail else ""
    if reason in _REFUSED:
        return _REFUSED[reason](
            f"Gemini refused to answer (finishReason {reason}){suffix}", code=str(reason)
        )
    if reason is None:
        return BadResponseError("a Gemini candidate has no finishReason in a finished response")
    known = reason in {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}
    what = "a broken function call" if known else "an unexpected finishReason"
    return BadResponseError(
        f"Gemini ended the answer with {what}: finishReason {reason}{suffix}",
        code=str(reason),
        provider_message=str(detail) if detail else None,
    )
