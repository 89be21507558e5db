"""How the gateway reports a failure: one status per error class, and the error an API's
clients expect, never a stack trace."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modelyard.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    BudgetExceededError,
    ContentFilteredError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
    NoAnswerError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    QualityCheckError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)


@dataclass(eq=False, slots=True)
class ApiError(Exception):
    """A failure to report to the client: HTTP status, error type and code, a clear message.

    Not frozen: Python sets an exception's `__traceback__` as it passes through a
    `@contextmanager` block, which a frozen dataclass refuses (the request then failed as a
    500). Compared and hashed by identity, as exceptions are."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    counted: bool = False
    """Already in the request metrics (a system's failure); else counted as refused."""

    def __str__(self) -> str:
        return self.message


def bad_request(message: str, param: str | None = None) -> ApiError:
    """A 400 naming the field at fault."""
    return ApiError(400, message, "invalid_request_error", "invalid_request", param)


def retry_after(seconds: float) -> dict[str, str]:
    """The headers that tell a client when to retry: `retry-after` in whole seconds, rounded up
    (rounded to nearest, a 2.5 s wait said 2 and the retry met the same 429), and the exact
    wait as `retry-after-ms`, which the OpenAI and Anthropic SDKs read first."""
    return {
        "retry-after": str(max(1, math.ceil(seconds))),
        "retry-after-ms": str(max(1, math.ceil(seconds * 1000))),
    }


def _where(exc: ModelError) -> str:
    """` (model X, provider P)`: the model that failed and the provider that served it (its
    name in the config, never its URL), as far as they are known."""
    named = [
        f"{what} {name}"
        for what, name in (("model", exc.model), ("provider", exc.provider))
        if name
    ]
    return f" ({', '.join(named)})" if named else ""


def from_model_error(exc: ModelError, *, api: str = "openai") -> ApiError:
    """The client-facing error for a failure inside a system, for a caller of `api`.

    Upstream authentication, permission and not-found failures are the operator's problem
    (a wrong provider key or model id), so the client sees a 502 that says so, not a 401, with
    `x-should-retry: false`, which the OpenAI and Anthropic SDKs obey. An overloaded
    provider is a 503, or for a Messages caller (`api` "anthropic") a 529, as Anthropic's own
    API sends it.
    """
    message = exc.message
    where = _where(exc)
    headers: dict[str, str] = {}
    # A 400 passes on the field the provider named (its own name for it, as sent upstream).
    if isinstance(exc, ContextLengthError):
        code = "context_length_exceeded"
        return ApiError(400, message, "invalid_request_error", code, exc.param)
    if isinstance(exc, ContentFilteredError):
        return ApiError(400, message, "invalid_request_error", "content_filter", exc.param)
    if isinstance(exc, BadRequestError):
        code = exc.code or "invalid_request"
        return ApiError(400, message, "invalid_request_error", code, exc.param)
    if isinstance(exc, BudgetExceededError):
        if exc.never_fits:  # no wait lets it through: name none, and no retry
            headers["x-should-retry"] = "false"
        elif exc.retry_after is not None:  # spent until the window ends: say when, and past a
            # minute tell the SDKs not to retry (they would, twice, into the same refusal)
            headers.update(retry_after(exc.retry_after))
            if exc.retry_after > 60:
                headers["x-should-retry"] = "false"
        code = exc.code or "budget_exceeded"
        return ApiError(429, message, "budget_exceeded", code, headers=headers)
    if isinstance(exc, RateLimitedError):
        if not exc.retryable:  # a request larger than a model's tpm: no wait lets it through
            headers["x-should-retry"] = "false"
        elif exc.retry_after is not None:
            headers.update(retry_after(exc.retry_after))
        return ApiError(429, message + where, "rate_limit_error", "rate_limited", headers=headers)
    # The SDKs retry a 5xx unless told not to; these stay until the operator fixes the config.
    final = {"x-should-retry": "false"}
    if isinstance(exc, AuthenticationError | PermissionDeniedError):
        message = f"upstream rejected the gateway's credentials{where}"
        return ApiError(502, message, "upstream_error", exc.kind, headers=final)
    if isinstance(exc, NotFoundError) and exc.provider is not None:
        message = f"upstream does not know the model{where}"
        return ApiError(502, message, "upstream_error", "not_found", headers=final)
    if isinstance(exc, NotFoundError):
        return ApiError(404, message, "invalid_request_error", exc.code or "model_not_found")
    if isinstance(exc, ModelTimeoutError):
        return ApiError(504, message + where, "timeout", "timeout")
    if isinstance(exc, QualityCheckError):
        return ApiError(422, message, "quality_check_failed", exc.code)
    if isinstance(exc, NoAnswerError | UnavailableError):
        if exc.retry_after is not None:
            headers.update(retry_after(exc.retry_after))
        status = 529 if api == "anthropic" and isinstance(exc, OverloadedError) else 503
        return ApiError(status, message + where, "unavailable", exc.code, headers=headers)
    if isinstance(exc, BadResponseError | StreamInterruptedError):
        return ApiError(502, message + where, "upstream_error", exc.kind)
    return ApiError(500, "internal error", "server_error", exc.kind)
