"""What a wire format is: the pure translation a remote adapter needs, apart from the transport.

Each `*_wire.py` module implements this for one API (OpenAI Chat Completions, Anthropic
Messages, Gemini generateContent) as plain functions over dicts, tested without any I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from modelyard.errors import BadRequestError, BadResponseError, ModelError
from modelyard.providers.headers import RateLimitInfo
from modelyard.providers.sse import Event
from modelyard.types import ChatRequest, Choice, Chunk, EmbeddingRequest, Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedResponse:
    """A provider's answer, translated: what the adapter turns into a ChatResponse."""

    id: str
    provider_model: str
    choices: tuple[Choice, ...]
    usage: Usage
    created: int = 0
    system_fingerprint: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedEmbeddings:
    """A provider's embeddings, translated."""

    provider_model: str
    vectors: tuple[tuple[float, ...], ...]
    usage: Usage


class StreamDecoder(Protocol):
    """Turns one provider's stream events into chunks, keeping what arrives only once."""

    done: bool
    """Whether the stream's terminal event has arrived."""
    usage: Usage | None
    provider_model: str | None
    response_id: str | None
    stop_sequence: str | None
    """The stop sequence that ended the (first) choice, when the API names it."""

    def feed(self, event: Event) -> Sequence[Chunk]:
        """The chunks one event carries; raises ModelError for an in-band error event and
        BadResponseError for a malformed one."""
        ...


class WireFormat(Protocol):
    """One provider API's request and response shapes."""

    name: str
    requires_max_tokens: bool
    """Whether the API refuses a request without max_tokens (Anthropic); the adapter then
    sends the model's configured `max_output_tokens`."""
    unsent: frozenset[str]
    """The request fields this API has no place for, of those `request_fit` knows
    (`context_management`, Anthropic's context editing, and the hints `request_fit.HINTS`):
    `to_wire` leaves them out, and the answer's decision says so."""

    def url(self, base_url: str, model_id: str, *, stream: bool) -> str:
        """Where a chat request for `model_id` goes."""
        ...

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The headers that carry the API key, by this API's convention."""
        ...

    def default_headers(self) -> dict[str, str]:
        """Headers every request carries (API version, content type)."""
        ...

    def to_wire(self, request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
        """The JSON body for `request`."""
        ...

    def from_wire(self, body: Any) -> ParsedResponse:
        """The answer in a decoded JSON body; BadResponseError if it is not this API's shape."""
        ...

    def stream_decoder(self) -> StreamDecoder:
        """A fresh decoder for one stream."""
        ...

    def error_from_wire(self, status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
        """The error an HTTP error response means, in the error tree."""
        ...

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """The quota the response headers report."""
        ...


class EmbeddingWireFormat(Protocol):
    """One provider API's embedding request and response shapes."""

    def embeddings_url(self, base_url: str, model_id: str) -> str:
        """Where an embedding request goes."""
        ...

    def embeddings_to_wire(self, request: EmbeddingRequest, model_id: str) -> dict[str, Any]:
        """The JSON body for an embedding request."""
        ...

    def embeddings_from_wire(self, body: Any) -> ParsedEmbeddings:
        """The vectors in a decoded JSON body."""
        ...


@runtime_checkable
class BodyHeaders(Protocol):
    """A wire format whose requests need headers that depend on the body (Anthropic's
    `anthropic-beta` for the beta fields the body carries)."""

    def body_headers(self, body: Mapping[str, Any]) -> dict[str, str]:
        """The headers this body needs beyond the default ones."""
        ...


@runtime_checkable
class ArrayStream(Protocol):
    """A wire format whose stream may come as one JSON array of its events' objects rather than
    as SSE (Gemini's `streamGenerateContent` answered as if without `alt=sse`)."""

    def array_events(self, body: bytes) -> list[Event] | None:
        """The events a JSON answer to a stream request holds, one per element of the array,
        as SSE would have carried them; None when the body is no such array."""
        ...


@runtime_checkable
class AnswerCheck(Protocol):
    """A wire format that checks a whole answer against what its request asked (Anthropic's
    native JSON answers must parse), beyond what reading the answer checks."""

    def check_answer(self, request: ChatRequest, choices: Sequence[Choice]) -> None:
        """BadResponseError when the answer cannot be what `request` asked for."""
        ...


@runtime_checkable
class TokenCountWireFormat(Protocol):
    """One provider API's own count of a prompt's tokens (Anthropic's `count_tokens`)."""

    def count_tokens_url(self, base_url: str) -> str:
        """Where a count request goes."""
        ...

    def count_tokens_to_wire(self, request: ChatRequest, model_id: str) -> dict[str, Any]:
        """The JSON body counting `request`'s input."""
        ...

    def count_tokens_from_wire(self, body: Any) -> int:
        """The input tokens in a decoded JSON answer; BadResponseError if it is not one."""
        ...


def check_tool_choice(request: ChatRequest) -> None:
    """BadRequestError naming `tool_choice` when it demands a call no tool of the request can
    answer: `required` or a tool's name with no tools, or a name none of them has. Every API
    refuses these; a wire format that sends `tool_choice` only with tools would otherwise drop
    the demand without a word. `auto` and `none` ask nothing of a request without tools."""
    choice = request.tool_choice
    if choice is None or choice in ("auto", "none"):
        return
    names = [tool.name for tool in request.tools]
    if not names:
        raise BadRequestError(
            f"tool_choice={choice!r} but the request has no tools",
            code="invalid_tool_choice",
            param="tool_choice",
        )
    if choice != "required" and choice not in names:
        raise BadRequestError(
            f"tool_choice names {choice!r}, which is not among the request's tools "
            f"({', '.join(sorted(names))})",
            code="invalid_tool_choice",
            param="tool_choice",
        )


def check_logprobs(request: ChatRequest) -> None:
    """BadRequestError naming `top_logprobs` when it is asked without `logprobs`: OpenAI
    refuses it, and a wire format that sends it only with `logprobs` (Gemini's) or not at all
    (Anthropic's) would answer without the alternatives asked for, unsaid. The gateway's Chat
    Completions refuses it before any model runs; a library caller's request comes here."""
    if request.top_logprobs is not None and not request.logprobs:
        raise BadRequestError(
            "top_logprobs: only allowed when logprobs is true",
            code="invalid_parameter",
            param="top_logprobs",
        )


def body_excerpt(body: bytes, limit: int = 200) -> str:
    """The first bytes of a body, printable, for error messages."""
    text = body[:limit].decode("utf-8", errors="replace")
    text = " ".join(text.split())
    return text + ("..." if len(body) > limit else "")


def bad_body(status: int, body: bytes, why: str) -> BadResponseError:
    """The error for a body that is not the API's JSON: names the status and the first bytes."""
    return BadResponseError(
        f"{why}; HTTP {status}, body starts: {body_excerpt(body)!r}",
        status=502,
        code="bad_response",
    )


def require(mapping: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    """`mapping[key]`, checked to be of `kind`; BadResponseError naming the field otherwise."""
    if not isinstance(mapping, dict):
        raise BadResponseError(f"expected an object at {where}, got {type(mapping).__name__}")
    if key not in mapping:
        raise BadResponseError(f"missing field {where}.{key}")
    value = mapping[key]
    if not isinstance(value, kind):
        raise BadResponseError(
            f"field {where}.{key} has type {type(value).__name__}, expected {_names(kind)}"
        )
    return value


def _names(kind: type | tuple[type, ...]) -> str:
    if isinstance(kind, tuple):
        return " or ".join(k.__name__ for k in kind)
    return kind.__name__
