"""Cutting a stream whose client has stopped reading (`gateway.stalled_client_timeout`)."""

from __future__ import annotations

import asyncio
import time

from modelyard.types import ChatResponse


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
