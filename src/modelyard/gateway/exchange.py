"""One HTTP exchange in raw ASGI terms: reading a JSON body within limits, sending a response.

The gateway's handlers take a `Call` and nothing else from the server; everything here is the
plumbing a framework would otherwise provide, at a fraction of its cost per request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from modelyard.gateway import anthropic_render, openai_render
from modelyard.gateway.errors import ApiError, bad_request
from modelyard.gateway.keys import VirtualKey

log = logging.getLogger("modelyard.gateway")

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]
RateHeaders = tuple[tuple[bytes, bytes], ...]
"""Headers made once and shared by many responses (so never a list a sender could change)."""

JSON: Headers = [(b"content-type", b"application/json")]
SSE: Headers = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


@dataclass(slots=True)
class Call:
    """One HTTP request being served."""

    scope: Scope
    receive: Receive
    send: Send
    id: str
    started: float
    headers: dict[bytes, bytes]
    key: VirtualKey | None = None
    rate: RateHeaders = ()
    """What the caller's key has left of its own rate limit, in its API's headers (none for a
    key without one): sent with every response once the request was counted against it."""
    slot: str | None = None
    """The lease of this request's slot in its key's count of requests in flight, when that
    count is shared by several processes (`KeyLimits.admit`); "" once given back, None when
    the count is this process's own (or the key has none)."""
    responded: bool = False
    """Whether the response has begun (its status and headers are sent)."""
    anthropic: bool = False
    """Whether the caller speaks Anthropic's API: a `/v1/messages` route, or the model list
    asked with an `anthropic-version` header."""

    @property
    def id_headers(self) -> Headers:
        """This request's id where the caller's SDK reads it: OpenAI's look at `x-request-id`,
        Anthropic's at `request-id` (both get the first, which the docs name)."""
        value = self.id.encode()
        if self.anthropic:
            return [(b"x-request-id", value), (b"request-id", value)]
        return [(b"x-request-id", value)]

    def header(self, name: bytes) -> str | None:
        """A request header by lower-case name."""
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    @property
    def from_loopback(self) -> bool:
        """Whether the caller is on this machine."""
        client = self.scope.get("client") or ("", 0)
        return client[0] in ("127.0.0.1", "::1")

    async def json(self, max_bytes: int) -> Any:
        """The request body as JSON; 413 when over `max_bytes`, 400 when not JSON."""
        declared = self.headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            raise _too_large(max_bytes)
        chunks = []
        size = 0
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ApiError(499, "client disconnected", code="client_closed")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > max_bytes:
                raise _too_large(max_bytes)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        raw = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        if not raw:
            raise bad_request("empty request body: expected JSON")
        try:
            return orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise bad_request(f"request body is not valid JSON: {exc}") from None

    async def begin(self, status: int, headers: Headers) -> None:
        """Send the status and headers; the body follows in `http.response.body` messages."""
        self.responded = True
        await self.send({"type": "http.response.start", "status": status, "headers": headers})

    async def respond(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        """Send a whole response, with this request's id."""
        out = [
            *(headers or JSON),
            (b"content-length", str(len(body)).encode()),
            *self.id_headers,
            *self.rate,
        ]
        # `begin`, inline: one coroutine fewer for every whole answer.
        self.responded = True
        await self.send({"type": "http.response.start", "status": status, "headers": out})
        await self.send({"type": "http.response.body", "body": body})

    async def fail(self, error: ApiError, *, api: str = "openai") -> None:
        """Send `error` in the shape of `api` ("openai" or "anthropic")."""
        body = (
            anthropic_render.error_body(error)
            if api == "anthropic"
            else openai_render.error_body(error)
        )
        headers = [*JSON, *((k.encode(), v.encode()) for k, v in error.headers.items())]
        try:
            await self.respond(error.status, orjson.dumps(body), headers)
        except Exception:  # the client is gone; nothing more to tell it
            log.debug("could not send the error for %s", self.id)


def _too_large(max_bytes: int) -> ApiError:
    return ApiError(413, f"request body over {max_bytes} bytes", code="body_too_large")
