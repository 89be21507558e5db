"""The machinery every fake upstream shares: a real HTTP server on 127.0.0.1 in its own thread,
a record of what it was sent, and faults injected per request.

An API-specific fake (OpenAI, Anthropic, Gemini) subclasses `FakeUpstream` and supplies its
normal answers, its stream events and its error bodies; the faults work the same for all.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import zlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web


@dataclass(frozen=True, kw_only=True)
class Fault:
    """What to do wrong for one request (all fields optional; the default is no fault)."""

    status: int | None = None
    """Answer with this HTTP status and the API's own error body for it."""
    error_type: str | None = None
    """The API's error code/type to put in that body (e.g. context_length_exceeded)."""
    message: str | None = None
    body: bytes | None = None
    """A raw body instead (HTML, truncated JSON); with status 200 unless `status` is set."""
    content_type: str = "application/json"
    chunked: bool = False
    """Send `body` chunked, with no Content-Length (its size known only once it has all come)."""
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds before the response headers."""
    after_requests: int | None = None
    """Answer only once this many requests have arrived in all (so requests sent at the same
    time are all at the server before this one is answered)."""
    reset: bool = False
    """Drop the connection before any response."""
    hang: bool = False
    """Never answer (keep the connection open)."""
    first_token_delay: float = 0.0
    """Streams: seconds between the headers and the first event."""
    chunk_delay: float = 0.0
    cut_after: int | None = None
    """Streams: drop the connection after this many events."""
    stall_after: int | None = None
    """Streams: go silent after this many events, connection left open."""
    malformed_at: int | None = None
    """Streams: send a garbage event in place of event number N."""
    no_final: bool = False
    """Streams: leave out the terminal event(s)."""
    error_at: int | None = None
    """Streams: send the API's in-band error event (`error_event`) in place of event number N,
    then end the body."""
    half_at: int | None = None
    """Streams: send the first half of event number N, then end the body cleanly (a proxy that
    gave up mid-event)."""
    huge_line: int | None = None
    """Streams: open with a line of this many bytes (an SSE comment, no newline until its end)."""
    packet: int | None = None
    """Streams: write the body in pieces of this many bytes, each flushed on its own (so the
    client reads lines, and UTF-8 characters, cut across packets)."""
    encoding: str | None = None
    """`gzip` or `deflate`: compress the body with that Content-Encoding (a stream flushed
    event by event, as a compressing proxy in front of the provider does)."""
    close: bool = False
    """Answer with `Connection: close` and close the connection after this response."""
    unstreamed: bool = False
    """Streams: ignore the request's `stream: true` and send the whole JSON answer (as some
    vLLM, Ollama and proxy setups do)."""


@dataclass(frozen=True)
class Recorded:
    """One request the fake received."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    json: Any
    at: float


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class FakeUpstream:
    """Base of the fake API servers. Subclasses implement `routes`, `answer`, `events` and
    `error_body`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.faults: deque[Fault] = deque()
        self.standing: Fault | None = None
        self.requests: list[Recorded] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._lock = threading.Lock()

    # --- what subclasses supply -------------------------------------------------------------

    def routes(self) -> list[web.RouteDef]:
        """The API's routes; each handler should call `self.handle(request, kind)`."""
        raise NotImplementedError

    def answer(self, kind: str, request: web.Request, body: Any) -> dict[str, Any]:
        """The normal JSON answer for a request of `kind`."""
        raise NotImplementedError

    def events(self, kind: str, request: web.Request, body: Any) -> tuple[list[bytes], list[bytes]]:
        """A normal stream as (content events, terminal events), each already SSE-framed."""
        raise NotImplementedError

    def error_body(
        self, status: int, error_type: str | None, message: str | None
    ) -> dict[str, Any]:
        """The API's own error JSON for `status`."""
        raise NotImplementedError

    def error_event(self) -> bytes:
        """The API's in-band error event for a stream that fails part-way (`Fault.error_at`)."""
        raise NotImplementedError

    def is_stream(self, kind: str, request: web.Request, body: Any) -> bool:
        """Whether this request asks for a stream."""
        return bool(isinstance(body, dict) and body.get("stream"))

    def reject(
        self, kind: str, request: web.Request, body: Any
    ) -> tuple[int, dict[str, Any]] | None:
        """The (status, error JSON) the real API would answer a bad request with (wrong key,
        invalid body), or None to serve it. Faults take precedence."""
        return None

    def response_headers(self, kind: str, status: int) -> dict[str, str]:
        """Headers the API sends on every response of `kind` with `status` (request ids,
        rate-limit counters); a fault's own headers override them."""
        return {}

    # --- faults ------------------------------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Apply these faults to the next requests, one each, in order."""
        with self._lock:
            self.faults.extend(faults)

    def always(self, fault: Fault | None) -> None:
        """Apply `fault` to every request once the queue is empty (None to stop)."""
        self.standing = fault

    def _next_fault(self) -> Fault | None:
        with self._lock:
            if self.faults:
                return self.faults.popleft()
        return self.standing

    # --- serving -----------------------------------------------------------------------------

    async def handle(self, request: web.Request, kind: str) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                query=dict(request.query),
                headers=dict(request.headers),
                json=body,
                at=time.monotonic(),
            )
        )
        fault = self._next_fault() or Fault()
        if fault.after_requests is not None:
            for _ in range(2000):  # 10 s at most: a test waiting longer has failed anyway
                if len(self.requests) >= fault.after_requests:
                    break
                await asyncio.sleep(0.005)
        if fault.delay:
            await asyncio.sleep(fault.delay)
        if fault.reset:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError
        if fault.hang:
            await asyncio.sleep(3600)
        if fault.body is not None:
            status = fault.status or 200
            if fault.chunked:
                return await _chunked(
                    request, status, {**self.response_headers(kind, status), **fault.headers}, fault
                )
            return _whole(
                status,
                fault.body,
                fault.content_type.split(";")[0],
                {**self.response_headers(kind, status), **fault.headers},
                fault,
            )
        if fault.status is not None:
            payload = self.error_body(fault.status, fault.error_type, fault.message)
            return self._json(
                fault.status,
                payload,
                {**self.response_headers(kind, fault.status), **fault.headers},
                fault,
            )
        rejected = self.reject(kind, request, body)
        if rejected is not None:
            status, payload = rejected
            return self._json(
                status, payload, {**self.response_headers(kind, status), **fault.headers}
            )
        if self.is_stream(kind, request, body) and not fault.unstreamed:
            return await self._stream(kind, request, body, fault)
        return self._json(
            200,
            self.answer(kind, request, body),
            {**self.response_headers(kind, 200), **fault.headers},
            fault,
        )

    @staticmethod
    def _json(
        status: int, payload: Any, headers: dict[str, str], fault: Fault | None = None
    ) -> web.Response:
        return _whole(status, orjson.dumps(payload), "application/json", headers, fault or Fault())

    async def _stream(
        self, kind: str, request: web.Request, body: Any, fault: Fault
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self.response_headers(kind, 200),
                **fault.headers,
                **({"Content-Encoding": fault.encoding} if fault.encoding else {}),
            }
        )
        if fault.close:
            response.force_close()
        await response.prepare(request)
        content, final = self.events(kind, request, body)
        events = content if fault.no_final else content + final
        if fault.error_at is not None:
            events = [*events[: fault.error_at], self.error_event()]
        if fault.first_token_delay:
            await asyncio.sleep(fault.first_token_delay)
        send = _Sender(response, fault)
        if fault.huge_line is not None:
            await send(b":" + b"x" * fault.huge_line + b"\n")
        for number, event in enumerate(events):
            if fault.cut_after is not None and number >= fault.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            if fault.stall_after is not None and number >= fault.stall_after:
                await asyncio.sleep(3600)
            if fault.malformed_at is not None and number == fault.malformed_at:
                event = b"data: {this is not json\n\n"
            if fault.half_at is not None and number == fault.half_at:
                await send(event[: len(event) // 2])
                break
            await send(event)
            if fault.chunk_delay:
                await asyncio.sleep(fault.chunk_delay)
        await send.end()
        return response

    @property
    def url(self) -> str:
        """http://127.0.0.1:<port>"""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeUpstream:
        """Serve in a background thread until `stop`."""
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake upstream did not start")
        return self

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.add_routes(self.routes())
        self._runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=0.1)
        loop.run_until_complete(self._runner.setup())
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        loop.run_until_complete(site.start())
        self._ready.set()
        loop.run_forever()
        loop.run_until_complete(self._runner.cleanup())
        loop.run_until_complete(_cancel_leftovers())
        loop.close()

    def stop(self) -> None:
        """Stop serving."""
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def reset(self) -> None:
        """Forget recorded requests and queued faults."""
        with self._lock:
            self.faults.clear()
        self.standing = None
        self.requests.clear()

    @contextlib.contextmanager
    def running(self) -> Iterator[FakeUpstream]:
        """`with fake.running(): ...`"""
        self.start()
        try:
            yield self
        finally:
            self.stop()


def _compressor(encoding: str) -> Any:
    """A zlib stream in the format a Content-Encoding of `encoding` names."""
    return zlib.compressobj(wbits=31 if encoding == "gzip" else 15)


def _whole(
    status: int, body: bytes, content_type: str, headers: dict[str, str], fault: Fault
) -> web.Response:
    """A whole response, compressed and closing the connection as `fault` says."""
    if fault.encoding:
        packer = _compressor(fault.encoding)
        body = packer.compress(body) + packer.flush()
        headers = {**headers, "Content-Encoding": fault.encoding}
    response = web.Response(status=status, body=body, content_type=content_type, headers=headers)
    if fault.close:
        response.force_close()
    return response


async def _chunked(
    request: web.Request, status: int, headers: dict[str, str], fault: Fault
) -> web.StreamResponse:
    """`fault.body` sent chunked, in pieces of 64 KiB, with no Content-Length."""
    assert fault.body is not None
    response = web.StreamResponse(
        status=status, headers={**headers, "Content-Type": fault.content_type}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    body = fault.body
    with contextlib.suppress(ConnectionError):  # a client that stops reading hangs up
        for start in range(0, len(body), 2**16):
            await response.write(body[start : start + 2**16])
        await response.write_eof()
    return response


class _Sender:
    """Writes a stream's bytes as a fault says: compressed, and in packets of a given size."""

    def __init__(self, response: web.StreamResponse, fault: Fault) -> None:
        self.response = response
        self.packet = fault.packet
        self.packer = _compressor(fault.encoding) if fault.encoding else None

    async def __call__(self, data: bytes) -> None:
        if self.packer is not None:
            data = self.packer.compress(data) + self.packer.flush(zlib.Z_SYNC_FLUSH)
        size = self.packet or len(data) or 1
        for start in range(0, len(data), size):
            await self.response.write(data[start : start + size])
            if self.packet:
                await asyncio.sleep(0.002)  # so each piece leaves in a packet of its own

    async def end(self) -> None:
        if self.packer is not None:
            await self.response.write(self.packer.flush())
        await self.response.write_eof()


async def _cancel_leftovers() -> None:
    """Cancel handlers still hanging or stalled (faults), which would be destroyed pending."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame with JSON data (or raw text when `data` is a str)."""
    payload = data if isinstance(data, str) else orjson.dumps(data).decode()
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {payload}\n\n".encode()
