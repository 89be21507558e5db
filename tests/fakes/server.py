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
            return web.Response(
                status=status,
                body=fault.body,
                content_type=fault.content_type.split(";")[0],
                headers={**self.response_headers(kind, status), **fault.headers},
            )
        if fault.status is not None:
            payload = self.error_body(fault.status, fault.error_type, fault.message)
            return self._json(
                fault.status,
                payload,
                {**self.response_headers(kind, fault.status), **fault.headers},
            )
        rejected = self.reject(kind, request, body)
        if rejected is not None:
            status, payload = rejected
            return self._json(
                status, payload, {**self.response_headers(kind, status), **fault.headers}
            )
        if self.is_stream(kind, request, body):
            return await self._stream(kind, request, body, fault)
        return self._json(
            200,
            self.answer(kind, request, body),
            {**self.response_headers(kind, 200), **fault.headers},
        )

    @staticmethod
    def _json(status: int, payload: Any, headers: dict[str, str]) -> web.Response:
        return web.Response(
            status=status,
            body=orjson.dumps(payload),
            content_type="application/json",
            headers=headers,
        )

    async def _stream(
        self, kind: str, request: web.Request, body: Any, fault: Fault
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                **self.response_headers(kind, 200),
                **fault.headers,
            }
        )
        await response.prepare(request)
        content, final = self.events(kind, request, body)
        events = content if fault.no_final else content + final
        if fault.first_token_delay:
            await asyncio.sleep(fault.first_token_delay)
        for number, event in enumerate(events):
            if fault.cut_after is not None and number >= fault.cut_after:
                assert request.transport is not None
                request.transport.abort()
                return response
            if fault.stall_after is not None and number >= fault.stall_after:
                await asyncio.sleep(3600)
            if fault.malformed_at is not None and number == fault.malformed_at:
                event = b"data: {this is not json\n\n"
            await response.write(event)
            if fault.chunk_delay:
                await asyncio.sleep(fault.chunk_delay)
        await response.write_eof()
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
