"""One error tree for everything modelyard raises.

    ModelyardError
    ├── ConfigError                  bad config: names the file, line, field and the fix
    ├── YardClosedError              a yard used after it was closed (also a RuntimeError)
    └── ModelError                   a call to a Model failed; carries model, provider, status,
        │                            the provider's code, message and field at fault
        │                            (`param`), and `retryable`
        ├── AuthenticationError      401: the key is missing, wrong or revoked
        ├── PermissionDeniedError    403: the key may not use this model or system
        ├── NotFoundError            404: no such model, deployment or system
        ├── BadRequestError          400/422: the request itself is wrong; retrying cannot help
        │   ├── ContextLengthError   the prompt does not fit the model's window
        │   └── ContentFilteredError the provider's safety system refused or cut the answer
        ├── RateLimitedError         429: with `retry_after` seconds when the provider said
        ├── ModelTimeoutError        no answer in time (connect, first token, stall, deadline)
        ├── UnavailableError         5xx, connection refused or reset, an open circuit
        │   └── OverloadedError      529 / 503 overloaded: the provider asks us to back off
        ├── BadResponseError         the upstream answered something that is not its API
        ├── StreamInterruptedError   a stream broke after its first byte reached the caller
        ├── BudgetExceededError      a budget would be passed by this request
        ├── QualityCheckError        a pipeline gate rejected a stage's output
        └── NoAnswerError            a pattern ran out of members (quorum not met, all failed)

`retryable` says whether the same call may succeed if repeated (rate limits, timeouts,
outages); fallbacks use the class to pick the next model. Messages never contain secrets:
adapters pass provider messages through `redact` before raising.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from pathlib import Path

    from modelyard.types import Decision, Usage


class ModelyardError(Exception):
    """Base of every error modelyard raises on purpose."""


class ConfigError(ModelyardError):
    """The configuration is invalid; the message names where and what was expected."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        super().__init__(where + message)
        self.message = message
        self.missing: tuple[Path, ...] = ()
        """The files the config names for its build to read that were not there when the build
        failed (set by `config.build.build`): a watching gateway tries again when one appears."""


class YardClosedError(ModelyardError, RuntimeError):
    """A yard (`modelyard.load`) was asked something after it was closed: load the config again."""


class ModelError(ModelyardError):
    """A Model call failed. Subclasses say how; the fields say where."""

    retryable_default = False
    status_default: int | None = None

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        provider: str | None = None,
        status: int | None = None,
        code: str | None = None,
        provider_message: str | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.model = model
        self.provider = provider
        self.status = status if status is not None else self.status_default
        self.code = code
        self.provider_message = provider_message
        self.retryable = self.retryable_default if retryable is None else retryable
        self.retry_after = retry_after
        self.param = param
        """The request field the provider named as at fault (OpenAI's `error.param`), if any:
        named in the provider's request, which the gateway's clients mostly share."""
        self.upstream_status: int | None = None
        """The HTTP status the provider answered with, when it answered with an error (set by
        the remote model): `status` is what the gateway answers, e.g. 504 for a timeout that
        got no reply at all."""
        self.decision: Decision | None = None
        self.cost = 0.0
        """USD already spent when the call failed (a stream cut part-way is still billed)."""
        self.usage: Usage | None = None
        """The tokens `cost` was worked out from, when it is an estimate of a call its provider
        received (marked `estimated`), so a record can show them beside it."""
        self.path: tuple[str, ...] = ()
        """The nodes of the graph this error came up through, outermost first, ending at the
        one where it arose (`came_through`): where in a system of nested patterns it failed."""

    def __str__(self) -> str:
        where = self.model or self.provider
        head = f"{where}: {self.message}" if where else self.message
        if self.status is not None:
            head += f" (HTTP {self.status})"
        return head

    @property
    def kind(self) -> str:
        """A short stable name for the error class, used in logs, metrics and fallback rules."""
        return _KIND_BY_CLASS.get(type(self), "error")

    def came_through(self, node: str) -> ModelError:
        """Note that `node` (a pattern) passed this error on to its caller, and return self."""
        path = self.path
        if not path:
            origin = self.decision.node if self.decision is not None else self.model
            path = (origin,) if origin else ()
        if not path or path[0] != node:
            path = (node, *path)
        self.path = path
        return self

    @property
    def where(self) -> str:
        """`path` in words (`router > cascade > model`), or "" when it arose where it was
        caught."""
        return " > ".join(self.path) if len(self.path) > 1 else ""

    def with_decision(self, decision: Decision) -> ModelError:
        """Attach the partial decision record of the node that failed, and return self."""
        self.decision = decision
        return self

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready description, free of secrets."""
        out: dict[str, Any] = {"type": self.kind, "message": self.message}
        for name in (
            "model",
            "provider",
            "status",
            "code",
            "param",
            "provider_message",
            "retry_after",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        out["retryable"] = self.retryable
        return out


class AuthenticationError(ModelError):
    """The provider rejected the credentials."""

    status_default = 401


class PermissionDeniedError(ModelError):
    """The credentials may not use this model or system."""

    status_default = 403


class NotFoundError(ModelError):
    """The model, deployment or system does not exist."""

    status_default = 404


class BadRequestError(ModelError):
    """The request is malformed or unsupported; repeating it cannot help."""

    status_default = 400


class ContextLengthError(BadRequestError):
    """The prompt plus the requested output does not fit the model's context window."""


class ContentFilteredError(BadRequestError):
    """The provider's content policy refused the prompt or cut the answer."""


class RateLimitedError(ModelError):
    """Too many requests or tokens; `retry_after` is the provider's wait in seconds, if given."""

    retryable_default = True
    status_default = 429


class ModelTimeoutError(ModelError):
    """No answer in time: connect, first token, a stalled stream, or the request's deadline."""

    retryable_default = True
    status_default = 504
    request_sent = False
    """Whether the request had reached the provider when the time ran out: it bills the input
    of a request it received, answered or not (one still waiting for a connection cost
    nothing)."""


class UnavailableError(ModelError):
    """The provider is down, erroring, unreachable, or its circuit is open."""

    retryable_default = True
    status_default = 503


class OverloadedError(UnavailableError):
    """The provider says it is overloaded (Anthropic 529, 503 overloaded)."""


class BadResponseError(ModelError):
    """The upstream answered with something that is not a valid response of its API."""

    retryable_default = True
    status_default = 502


class StreamInterruptedError(ModelError):
    """A stream broke after part of it reached the caller; the answer is incomplete."""

    status_default = 502


class ClientClosedError(ModelError):
    """The caller stopped reading (closed the stream or the connection) before the answer ended;
    `cost` is an estimate of what the provider bills for the part generated."""

    status_default = 499


class BudgetExceededError(ModelError):
    """Serving this request would pass a budget; `code` names the budget."""

    status_default = 429
    never_fits = False
    """Whether the request's worst case alone is above the budget's limit: no wait lets it
    through (`retry_after` is None, and the gateway tells clients not to retry)."""


class QualityCheckError(ModelError):
    """A pipeline's quality gate rejected a stage's output and the policy was to stop."""

    status_default = 422


class NoAnswerError(ModelError):
    """A pattern could not produce an answer: every member failed or the quorum was not met."""

    status_default = 503


_KIND_BY_CLASS: dict[type[ModelError], str] = {
    ModelError: "error",
    AuthenticationError: "authentication",
    PermissionDeniedError: "permission_denied",
    NotFoundError: "not_found",
    BadRequestError: "bad_request",
    ContextLengthError: "context_length",
    ContentFilteredError: "content_filter",
    RateLimitedError: "rate_limited",
    ModelTimeoutError: "timeout",
    UnavailableError: "unavailable",
    OverloadedError: "overloaded",
    BadResponseError: "bad_response",
    StreamInterruptedError: "stream_interrupted",
    ClientClosedError: "client_closed",
    BudgetExceededError: "budget_exceeded",
    QualityCheckError: "quality_check",
    NoAnswerError: "no_answer",
}

_BY_STATUS: dict[int, type[ModelError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    402: PermissionDeniedError,
    403: PermissionDeniedError,
    404: NotFoundError,
    408: ModelTimeoutError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitedError,
    504: ModelTimeoutError,
    529: OverloadedError,
}


def class_for_status(status: int) -> type[ModelError]:
    """The error class an HTTP status means when the body says nothing more specific; each wire
    format refines it with what its error bodies say."""
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    return UnavailableError if status >= 500 else BadRequestError


ERROR_KINDS: dict[str, type[ModelError]] = {kind: cls for cls, kind in _KIND_BY_CLASS.items()}
"""Error classes by their `kind`, for config (fallback rules name kinds)."""

_SECRET = re.compile(
    r"(?i)(bearer\s+|api[-_]?key[\"'=:\s]+|x-api-key[\"'=:\s]+|key=)[A-Za-z0-9._\-]{6,}"
    r"|\b(sk|pk|rk)-[A-Za-z0-9_\-]{8,}|\bAIza[0-9A-Za-z_\-]{20,}"
)


def url_origin(url: str) -> str:
    """`scheme://host[:port]` of `url`, for logs: webhook URLs carry their secret in the path,
    the query or the user part (Slack, Discord, `?token=`), so nothing else is shown."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    tail = "/…" if (parts.path.strip("/") or parts.query) else ""
    return f"{parts.scheme}://{host}{port}{tail}"


SECRET_PIECE = 12
"""Characters of a known secret that, quoted anywhere on their own, are scrubbed too."""


def redact(text: str, *secrets: str | None) -> str:
    """`text` with the given secrets, any long piece of them (a provider may quote a key
    without its prefix, or cut), and anything shaped like an API key replaced by `***`."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = text.replace(secret, "***")
        for start in range(len(secret) - SECRET_PIECE + 1):
            piece = secret[start : start + SECRET_PIECE]
            if piece in text:
                text = re.sub(re.escape(piece) + r"[^\s'\"]*", "***", text)
    return _SECRET.sub(lambda m: (m.group(1) or "") + "***", text)
