"""Delivering a model's answer to the client, whole or streamed: the headers that go with it,
a stream's chunks as they come, and what is recorded when the client leaves or stops reading
before the end (`stalled.py` watches for that)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from modelyard.errors import BadResponseError, ModelError
from modelyard.gateway.errors import ApiError
from modelyard.gateway.exchange import JSON, Call
from modelyard.gateway.headers import (
    answer_headers,
    cache_header,
    stream_headers,
    upstream_quota_headers,
)
from modelyard.gateway.outcome import Outcome
from modelyard.gateway.renderers import Renderer
from modelyard.gateway.stalled import LeaveWatch, SendWatch, mark_cut, respond_watched
from modelyard.model import Model
from modelyard.types import ChatRequest, Chunk

log = logging.getLogger("modelyard.gateway")


async def whole(
    call: Call,
    model: Model,
    request: ChatRequest,
    renderer: Renderer,
    outcome: Outcome,
    *,
    stalled_after: float,
    leave_watch_after: float,
) -> None:
    """Answer in full: the model's whole answer, or its error; a client that hangs up before it
    (heard once the call has run `leave_watch_after` seconds) stops the call, and one that
    takes none of it in `stalled_after` seconds is recorded as gone."""
    watch = LeaveWatch(call, leave_watch_after)
    try:
        response = await model.complete(request)
    except ModelError as exc:
        raise outcome.failed(exc) from None
    except asyncio.CancelledError:
        # Ours: the client hung up. A cancel from outside too (a shutdown) still ends it.
        if not watch.fired or asyncio.current_task().uncancel():  # type: ignore[union-attr]
            raise
        log.info("client left request %s before its answer; model call stopped", call.id)
        outcome.left(model, request)
        return
    finally:
        watch.close()
    headers = [
        *JSON,
        *answer_headers(response, outcome.version),
        *upstream_quota_headers(outcome.quota),
    ]
    if outcome.cached:  # most systems have no cache: no call for them
        headers.append(cache_header(outcome.scope, request))
    if await respond_watched(call, renderer.response(response), headers, stalled_after):
        outcome.answered(response)
    else:  # generated and billed in full, the ledger and budgets already count it
        outcome.abandoned(response)


async def streamed(
    call: Call,
    model: Model,
    request: ChatRequest,
    renderer: Renderer,
    outcome: Outcome,
    *,
    stalled_after: float,
) -> None:
    """Answer as a stream: headers with the first chunk, then each chunk as it comes; a client
    that leaves, or takes nothing for `stalled_after` seconds, stops the model."""
    chunks = model.stream(request)
    try:
        # Headers wait for the first chunk: until then a failure is a plain HTTP error
        # (and the fallbacks below may still have failed over without the caller noticing),
        # and by then the model answering is known, so they can name it. They go out with
        # the first chunk, so the wait adds nothing to the time to first byte.
        try:
            first = await anext(chunks)
        except ModelError as exc:
            raise outcome.failed(exc) from None
        except StopAsyncIteration:
            raise ApiError(
                502,
                "the model's stream ended before it began",
                "upstream_error",
                "empty_stream",
            ) from None
        head = [
            *stream_headers(call, outcome.version, first),
            *upstream_quota_headers(outcome.quota),
        ]
        if outcome.cached:  # the lookup came before the first chunk
            head.append(cache_header(outcome.scope, request))
        await call.begin(200, head)
        disconnected = asyncio.ensure_future(call.receive())
        watch = SendWatch(stalled_after)
        try:
            left_after = await _relay(call, first, chunks, renderer, disconnected, outcome, watch)
        except asyncio.CancelledError:
            # Ours: the client stopped reading. Served no further, recorded as one that left.
            # A cancel from outside too (the server shutting down) still ends the task.
            if not watch.fired or asyncio.current_task().uncancel():  # type: ignore[union-attr]
                raise
            mark_cut()
            log.warning(
                "request %s: the client took nothing for %gs mid-stream; stream cut",
                call.id,
                stalled_after,
            )
            left_after = watch.streamed
        finally:
            watch.close()
            disconnected.cancel()
        if left_after is not None:
            if watch.response is not None:  # all of it generated, the last bytes unread
                outcome.abandoned(watch.response, began=True)
            else:  # a cache replay cut short cost nothing
                outcome.left(model, request, left_after)
    finally:
        close = getattr(chunks, "aclose", None)  # stop the generator and its upstream call
        if close is not None:
            await close()


async def _relay(
    call: Call,
    first: Chunk,
    chunks: AsyncIterator[Chunk],
    renderer: Renderer,
    disconnected: asyncio.Future[Any],
    outcome: Outcome,
    watch: SendWatch,
) -> int | None:
    """Send chunks as they come; a broken stream ends with an error event, never a normal end.
    Returns how many characters were streamed when the client left before the end, else
    None."""
    send = call.send
    chunk: Chunk | None = first
    try:
        while chunk is not None:
            watch.streamed += chunk.chars
            frame = renderer.chunk(chunk)
            if chunk.response is not None:
                watch.response = chunk.response
            if frame:
                watch.since = time.monotonic()
                await send({"type": "http.response.body", "body": frame, "more_body": True})
                watch.since = None
            if chunk.response is not None:
                watch.since = time.monotonic()
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                watch.since = None
                outcome.answered(chunk.response)
                return None
            if disconnected.done():
                log.info("client left request %s mid-stream; stopping the model", call.id)
                return watch.streamed
            chunk = await anext(chunks, None)
        raise BadResponseError("the model's stream ended without its final response")
    except ModelError as exc:
        error = outcome.failed(exc)
        await send(
            {"type": "http.response.body", "body": renderer.error(error), "more_body": False}
        )
        return None
