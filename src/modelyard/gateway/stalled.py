"""Cutting a response whose client has stopped reading (`gateway.stalled_client_timeout`):
a stream's sends (`SendWatch`) and a whole answer's (`respond_watched`); `quiet_server_on_cuts`
keeps the server from logging such a cut a second time, as an error of ours. And stopping the
making of a whole answer whose client has hung up (`LeaveWatch`)."""

from __future__ import annotations

import asyncio
import logging
import time
from contextvars import ContextVar
from typing import Any

from modelyard.gateway.exchange import Call, Headers
from modelyard.types import ChatResponse

log = logging.getLogger("modelyard.gateway")

_cut_here: ContextVar[bool] = ContextVar("modelyard_cut_here", default=False)
"""Set in the request's task when this module cut its response: the server logs from that task
once the app returns, so its filter can tell our cuts from an app that forgot to respond."""


def mark_cut() -> None:
    """Note that the response of the request this task serves was cut here (and logged)."""
    _cut_here.set(True)


class _CutAlreadyLogged(logging.Filter):
    """Drops uvicorn's error for a response never started or never completed when this
    gateway cut it itself: the cut was logged, with the request's id and why."""

    _SAID = frozenset(
        {
            "ASGI callable returned without starting response.",
            "ASGI callable returned without completing response.",
        }
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return not (_cut_here.get() and record.getMessage() in self._SAID)


def quiet_server_on_cuts() -> None:
    """Install the filter on uvicorn's error logger (once per process)."""
    server = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _CutAlreadyLogged) for f in server.filters):
        server.addFilter(_CutAlreadyLogged())


class SendWatch:
    """Cuts a stream whose client has stopped reading. Once the socket's buffers are full a
    send waits until the client takes more; one that never does would hold the upstream call,
    the key's slot and the config generation for good. When a send has waited `limit` seconds
    the serving task is cancelled (`fired`) and the stream is recorded as left. One timer per
    stream, re-armed every quarter limit, rather than one per send: streams send hundreds."""

    __slots__ = ("_handle", "_limit", "_task", "fired", "response", "since", "streamed")

    def __init__(self, limit: float) -> None:
        self.since: float | None = None
        """When the send under way began (None between sends)."""
        self.fired = False
        self.streamed = 0
        """Characters sent so far."""
        self.response: ChatResponse | None = None
        """The whole answer, once the stream carried it."""
        self._limit = limit
        self._task = asyncio.current_task()
        self._handle = asyncio.get_running_loop().call_later(limit / 4, self._check)

    def _check(self) -> None:
        since = self.since
        if since is not None and time.monotonic() - since >= self._limit and self._task:
            self.fired = True
            self._task.cancel()
            return
        self._handle = asyncio.get_running_loop().call_later(self._limit / 4, self._check)

    def close(self) -> None:
        """Stop watching."""
        self._handle.cancel()


class LeaveWatch:
    """Cancels the serving task when its client hangs up before a whole answer is made (an SDK
    that timed out, and will send the request again): the model call stops, the key's slot is
    free for the retry, and the request is recorded as left (`fired`), rather than generated
    for no one. Armed only once the answer has taken `after` seconds: listening for the hang-up
    costs a task (about 6 us on uvloop, measured), the timer under 1 us, and most answers come
    sooner."""

    __slots__ = ("_call", "_handle", "_listening", "_task", "fired")

    def __init__(self, call: Call, after: float) -> None:
        self.fired = False
        self._call = call
        self._task = asyncio.current_task()
        self._listening: asyncio.Future[Any] | None = None
        self._handle = asyncio.get_running_loop().call_later(after, self._listen)

    def _listen(self) -> None:
        self._listening = asyncio.ensure_future(self._call.receive())
        self._listening.add_done_callback(self._heard)

    def _heard(self, listening: asyncio.Future[Any]) -> None:
        if listening.cancelled() or listening.exception() is not None:
            return
        if listening.result().get("type") != "http.disconnect":
            self._listen()  # nothing the request is waiting for: listen on
        elif self._task is not None:
            self.fired = True
            self._task.cancel()

    def close(self) -> None:
        """Stop listening (before the answer is sent, which a listener would take for a
        hang-up)."""
        self._handle.cancel()
        if self._listening is not None:
            self._listening.cancel()


class _Cut:
    """The timer of one whole response's send: cancels the serving task when it fires."""

    __slots__ = ("fired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task
        self.fired = False

    def __call__(self) -> None:
        self.fired = True
        self.task.cancel()


async def respond_watched(call: Call, body: bytes, headers: Headers, limit: float) -> bool:
    """`call.respond` with a 200, cut when the client takes none of it for `limit` seconds:
    False then (the serving task is not left cancelled), True once it is sent. A server hands
    a response to its socket's buffer, so the send waits only on a client that is not reading
    (an earlier answer on the connection still unread, or this one larger than the buffers).
    One timer an answer (about 0.8 us): stepping the send by hand to arm it only when the send
    waits saved that, at the price of code few could read."""
    task = asyncio.current_task()
    assert task is not None  # the gateway serves each request in a task
    cut = _Cut(task)
    timer = asyncio.get_running_loop().call_later(limit, cut)
    try:
        await call.respond(200, body, headers)
    except asyncio.CancelledError:
        # Ours: served no further. A cancel from outside too (a shutdown) still ends the task.
        if not cut.fired or task.uncancel():
            raise
        mark_cut()
        log.warning(
            "request %s: the client took none of the answer for %gs; response cut", call.id, limit
        )
        return False
    finally:
        timer.cancel()
    return True
