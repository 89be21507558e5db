"""The HTTP transport every remote adapter shares: pooled aiohttp, timeouts, SSE with a watchdog.

aiohttp, not httpx: measured here it is about 20x faster at concurrency 50
(../shared/research/ecosystem.md §2a). The transport knows nothing of any provider's JSON; it
moves bytes, enforces time limits and turns socket failures into the error tree. It says when a
request has its connection, past any wait for one from the pool, and is written
(`cost.dispatch`): a call abandoned before then was never sent, and costs nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin

import aiohttp
from aiohttp.client_reqrep import ClientRequest
from aiohttp.connector import Connection
from aiohttp.tracing import Trace

from modelyard.cost.dispatch import mark_sent, watching
from modelyard.errors import (
    BadResponseError,
    ModelTimeoutError,
    NotFoundError,
    UnavailableError,
    url_origin,
)
from modelyard.loops import PerLoop
from modelyard.observability.propagation import with_trace
from modelyard.providers.sse import Event, EventParser


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Seconds allowed for each phase of a call; the request's deadline can only shorten them."""

    connect: float = 10.0
    total: float = 120.0
    """A whole non-streamed answer."""
    first_token: float = 30.0
    """A stream's first event."""
    stall: float = 30.0
    """The longest silence between two events of a stream."""


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A complete HTTP response."""

    status: int
    headers: Mapping[str, str]
    body: bytes


MAX_EVENT_BYTES = 64 * 2**20
"""The most a stream's event (or one line of it) may hold: past it the stream is dropped, where
the line was held in memory without end. Far above any event an API sends (a Gemini image
arrives whole in one event, a few MiB)."""

MAX_BODY_BYTES = MAX_EVENT_BYTES
"""The most a whole body (a non-streamed answer, an error's body) may hold once decompressed:
past it the call fails unread, where the body was held in memory without end (a proxy or a
broken upstream sending gigabytes, a small gzip body that inflates to them). Far above any
answer an API sends, as for one stream event."""

_HEAD = 200
"""Bytes of a stream's body kept to show in an error when it held no events."""

_TRAILER_WAIT = 0.05
"""Seconds to wait for a stream's body to end after its terminal event."""


def _bounded(limit: float, remaining: float | None) -> float:
    if remaining is None:
        return limit
    return max(0.001, min(limit, remaining))


def _timed_out(
    limit: float, remaining: float | None, what: str, code: str, *, sent: bool
) -> ModelTimeoutError:
    """The timeout error; when the request's deadline was the tighter limit it says so."""
    if remaining is not None and remaining <= limit:
        error = ModelTimeoutError(
            f"{what} before the request's deadline ({limit:.2f}s)", code="deadline"
        )
    else:
        error = ModelTimeoutError(f"{what} within {limit:.1f}s", code=code)
    error.request_sent = sent
    return error


def _cannot_connect(exc: aiohttp.ClientConnectorError) -> UnavailableError:
    """A connection that could not be made, naming the host and port tried (never the URL's
    path, query or credentials), so a wrong `base_url` or an unresolvable host shows as such."""
    return UnavailableError(
        f"cannot connect to {exc.host}:{exc.port}: {exc.os_error}", code="connect"
    )


def _too_late(deadline_left: float | None) -> None:
    """Refuse a request whose deadline has passed before sending it: sent with no time to
    answer, it would only be billed (its input) and time out all the same."""
    if deadline_left is not None and deadline_left <= 0:
        raise ModelTimeoutError(
            "the request's deadline passed before the request was sent", code="deadline"
        )


def _not_sent(exc: Exception) -> UnavailableError:
    """The error for anything else the client raises (aiohttp refusing to build the request,
    say): inside the error tree, so fallbacks move on; repeating the call cannot help."""
    return UnavailableError(
        f"request failed in the HTTP client: {type(exc).__name__}",
        code="client_error",
        retryable=False,
    )


def _redirected(status: int, headers: Mapping[str, str], url: str) -> NotFoundError:
    """The error for a redirect of `url`, which is never followed: it would carry the request's
    key headers (`x-api-key`, `api-key`, ...) to whatever address the answer names."""
    location = headers.get("location")
    where = "another address"
    # A Location may be relative to the URL asked (`/v2/...`), or one no URL parser takes (a
    # port out of range): that is a redirect all the same.
    if location:
        with contextlib.suppress(ValueError):
            where = url_origin(urljoin(url, location))
    return NotFoundError(
        f"the provider answered {status}, a redirect to {where}; redirects are not followed (they "
        "would carry the API key there): set the provider's base_url to the address it names",
        status=status,
        code="redirect",
    )


class StreamReply:
    """An open streaming response: status and headers now, the body as events."""

    def __init__(self, response: aiohttp.ClientResponse, timeouts: Timeouts) -> None:
        self._response = response
        self._timeouts = timeouts
        self.status = response.status
        self.headers: Mapping[str, str] = response.headers
        self.head = b""
        """The body's first bytes (up to `_HEAD` of them), to show when it held no events."""
        self.settle: float | None = None
        """Once set (the answer is whole, only trailing events are due), the longest wait for
        another event before the caller may give up on them."""

    async def body(self, within: float) -> bytes:
        """The whole body (for error responses), read within `within` seconds; BadResponseError
        past `MAX_BODY_BYTES`."""
        async with asyncio.timeout(within):
            return await _whole_body(self._response)

    async def events(self, deadline_left: float | None = None) -> AsyncIterator[Event]:
        """The body's SSE events; raises ModelTimeoutError if the first event or any later one is
        late or the deadline passes, UnavailableError if the connection breaks.

        Reads whatever bytes have arrived and splits them into lines here: one read (and one
        timer) per network packet rather than per line, which halves a stream's CPU cost.
        """
        parser = EventParser()
        content = self._response.content
        deadline = None if deadline_left is None else time.monotonic() + deadline_left
        limit = self._timeouts.first_token
        phase = "first token"
        held: list[bytes] = []
        """The pieces of a line still arriving: joined once, when its end comes (joining each
        packet to the ones before took time quadratic in the line's length: 8 s for 32 MB)."""
        held_bytes = 0
        while True:
            wait = limit if self.settle is None else min(limit, self.settle)
            left = None if deadline is None else deadline - time.monotonic()
            try:
                async with asyncio.timeout(_bounded(wait, left)):
                    data = await content.readany()
            except TimeoutError:
                if left is not None and left < wait:
                    error = ModelTimeoutError(
                        f"the request's deadline passed waiting for the {phase}", code="deadline"
                    )
                else:
                    error = ModelTimeoutError(
                        f"stream silent for {wait:.1f}s waiting for the {phase}",
                        code="first_token_timeout" if phase == "first token" else "stream_stalled",
                    )
                error.request_sent = True  # its response headers came back
                raise error from None
            except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError, OSError) as exc:
                raise UnavailableError(
                    f"connection broke mid-stream: {type(exc).__name__}", code="stream_broken"
                ) from None
            if len(self.head) < _HEAD:
                self.head += data[: _HEAD - len(self.head)]
            if not data:
                last = b"".join(held)
                for event in (parser.feed(last) if last else None, parser.flush()):
                    if event is not None:
                        yield event
                return
            if b"\n" not in data:
                held.append(data)
                held_bytes += len(data)
                if held_bytes + parser.size > MAX_EVENT_BYTES:
                    raise _too_large()
                continue
            if held:
                held.append(data)
                data = b"".join(held)
                held.clear()
            lines = data.split(b"\n")
            tail = lines.pop()
            held_bytes = len(tail)
            if tail:
                held.append(tail)
            for line in lines:
                event = parser.feed(line)
                if event is not None:
                    if phase == "first token":
                        phase = "next chunk"
                        limit = self._timeouts.stall
                    yield event
            if parser.size > MAX_EVENT_BYTES:
                raise _too_large()


async def _whole_body(response: aiohttp.ClientResponse) -> bytes:
    """The response's whole body, decompressed; BadResponseError as soon as it is known to pass
    `MAX_BODY_BYTES`: from its Content-Length when it has one, else (chunked, or compressed,
    where Content-Length counts the compressed bytes) by counting what arrives.

    What `ClientResponse.read` does, with the count: a loop of `readany` as aiohttp's own.
    """
    limit = MAX_BODY_BYTES
    declared = response.content_length
    if declared is not None and declared > limit:
        raise _body_too_large(response.status, limit)
    content = response.content
    blocks: list[bytes] = []
    size = 0
    while block := await content.readany():
        size += len(block)
        if size > limit:
            raise _body_too_large(response.status, limit)
        blocks.append(block)
    return blocks[0] if len(blocks) == 1 else b"".join(blocks)


def _body_too_large(status: int, limit: int) -> BadResponseError:
    return BadResponseError(
        f"the upstream's body (HTTP {status}) went past {limit // 2**20} MiB; it was not "
        "read to its end",
        code="body_too_large",
    )


def _too_large() -> BadResponseError:
    return BadResponseError(
        f"a stream event or line went past {MAX_EVENT_BYTES // 2**20} MiB without ending; "
        "the stream was dropped",
        code="event_too_large",
    )


class _Connector(aiohttp.TCPConnector):
    """The pool, saying when a request has its connection: aiohttp writes the request on it
    at once, so from then on it counts as sent. (Here rather than with aiohttp's
    `on_request_headers_sent` trace signal: a trace config sends half a dozen signals per
    request, measured at 17 us of the 150 us a loopback POST takes; this adds about none.)"""

    async def connect(
        self,
        req: ClientRequest,
        traces: list[Trace],
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 (aiohttp's signature)
    ) -> Connection:
        connection = await super().connect(req, traces, timeout)
        mark_sent()
        return connection


class HttpClient:
    """One provider's connection pools: one per event loop using it (an aiohttp pool serves
    only the loop it was made on), each made lazily on its loop's first call."""

    def __init__(self, *, max_connections: int = 100, timeouts: Timeouts | None = None) -> None:
        self.timeouts = timeouts or Timeouts()
        self._max_connections = max_connections
        self._sessions: PerLoop[aiohttp.ClientSession] = PerLoop()

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            connector = _Connector(
                limit=self._max_connections, ttl_dns_cache=300, enable_cleanup_closed=True
            )
            session = self._sessions.put(
                loop,
                aiohttp.ClientSession(
                    connector=connector,
                    timeout=aiohttp.ClientTimeout(total=None, sock_connect=self.timeouts.connect),
                    auto_decompress=True,
                    skip_auto_headers=("User-Agent",),
                ),
            )
        return session

    async def post(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        deadline_left: float | None = None,
    ) -> HttpReply:
        """POST `body` and read the whole response within the total timeout and the deadline."""
        _too_late(deadline_left)
        limit = _bounded(self.timeouts.total, deadline_left)
        session = self._get_session()
        headers = with_trace(headers)
        watched = watching()  # whether the request went out, should the time run out
        try:
            with watched:
                async with asyncio.timeout(limit):
                    async with session.post(
                        url, data=body, headers=headers, allow_redirects=False
                    ) as response:
                        if not 300 <= response.status < 400:
                            payload = await _whole_body(response)
                            return HttpReply(response.status, response.headers, payload)
                        redirect = _redirected(response.status, response.headers, url)
        except TimeoutError:
            sent = watched.dispatch.sent
            raise _timed_out(
                limit, deadline_left, "no complete answer", "timeout", sent=sent
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise _cannot_connect(exc) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UnavailableError(
                f"connection failed: {type(exc).__name__}", code="connection"
            ) from None
        except BadResponseError:
            raise  # a body past MAX_BODY_BYTES
        except Exception as exc:
            raise _not_sent(exc) from exc
        raise redirect

    @contextlib.asynccontextmanager
    async def stream(
        self,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes,
        deadline_left: float | None = None,
    ) -> AsyncIterator[StreamReply]:
        """POST `body` and hold the response open for streaming; headers must arrive within the
        first-token limit."""
        _too_late(deadline_left)
        limit = _bounded(self.timeouts.first_token, deadline_left)
        session = self._get_session()
        headers = with_trace(headers)
        watched = watching()
        try:
            with watched:
                async with asyncio.timeout(limit):
                    response = await session.post(
                        url, data=body, headers=headers, allow_redirects=False
                    )
        except TimeoutError:
            sent = watched.dispatch.sent
            raise _timed_out(
                limit, deadline_left, "no response headers", "first_token_timeout", sent=sent
            ) from None
        except aiohttp.ClientConnectorError as exc:
            raise _cannot_connect(exc) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise UnavailableError(
                f"connection failed: {type(exc).__name__}", code="connection"
            ) from None
        except Exception as exc:
            raise _not_sent(exc) from exc
        if 300 <= response.status < 400:
            response.close()
            raise _redirected(response.status, response.headers, url)
        try:
            yield StreamReply(response, self.timeouts)
            # The caller stopped at the API's terminal event; the body's own end normally
            # follows at once. Reading it hands the connection back to the pool.
            if not response.content.at_eof():
                with contextlib.suppress(TimeoutError, aiohttp.ClientError, OSError):
                    async with asyncio.timeout(_TRAILER_WAIT):
                        while await response.content.readany():
                            pass
        finally:
            # A fully read body hands the connection back to the pool; anything else drops it.
            if response.content.at_eof():
                response.release()
            else:
                response.close()

    async def leave_loop(self) -> None:
        """Close the running loop's pool (the loop is ending); the pools of other loops, which
        may have calls in flight, are theirs to close. The next call here makes a new one."""
        await self._sessions.leave(aiohttp.ClientSession.close)

    async def aclose(self) -> None:
        """Close every loop's pool, each on its own loop (another thread's loop is asked to,
        and waited for a few seconds); a pool whose loop is closed is only forgotten."""
        await self._sessions.close_all(aiohttp.ClientSession.close)
