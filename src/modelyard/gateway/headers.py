"""The gateway's own headers: what a request's `x-modelyard-*` headers (and the caller's trace)
ask of it, the `x-modelyard-*` headers an answer carries back, and a virtual key's own rate
limit in the headers each API's SDKs and agent frameworks read to pace themselves."""

from __future__ import annotations

import contextlib
import functools
import math
import time
from dataclasses import replace
from typing import Literal

from modelyard.cost.scope import RequestScope
from modelyard.gateway.errors import bad_request
from modelyard.gateway.exchange import SSE, Call, Headers, RateHeaders
from modelyard.gateway.keys import VirtualKey
from modelyard.observability.propagation import continued
from modelyard.providers.upstream_quota import QuotaSeen
from modelyard.state.base import WindowUse
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingResponse,
    ResponseCacheUse,
)
from modelyard.yard import Yard


def prepare(call: Call, request: ChatRequest, key: VirtualKey, yard: Yard) -> ChatRequest:
    """The request with the caller's key, tags, deadline (header, else config default) and
    what its `Cache-Control` lets the response cache do."""
    timeout = call.header(b"x-modelyard-timeout")
    tags = call.header(b"x-modelyard-tags")
    control = call.header(b"cache-control")
    request = replace(
        request,
        key_id=key.id,
        request_id=call.id,
        # Most requests have none of these headers: no call for them.
        deadline=deadline(timeout) if timeout is not None else None,
        tags=request_tags(tags) if tags else (),
        response_cache=cache_use(control) if control is not None else "use",
    )
    return request.with_budget(yard.loaded.config.default_deadline)


def cache_use(header: str) -> ResponseCacheUse:
    """What a `Cache-Control` request header lets the response cache do: `no-store` bypasses
    it, `no-cache` has the request answered afresh (and stored); other directives are ignored,
    as HTTP has a cache ignore those it does not act on."""
    directives = {d.split("=", 1)[0].strip().lower() for d in header.split(",")}
    if "no-store" in directives:
        return "bypass"
    return "refresh" if "no-cache" in directives else "use"


def request_tags(header: str) -> tuple[str, ...]:
    """The tags of an `x-modelyard-tags` header (comma-separated): what tag budgets charge."""
    return tuple(t.strip() for t in header.split(",") if t.strip())


def deadline(timeout: str) -> float:
    """The deadline an `x-modelyard-timeout` header sets: that many seconds from now (the
    config's `default_deadline` tightens it)."""
    try:
        seconds = float(timeout)
    except ValueError:
        seconds = math.nan
    if not 0 < seconds < math.inf:  # NaN, too: it would switch the deadline off
        raise bad_request(
            f"x-modelyard-timeout: expected a positive number of seconds, got {timeout[:40]!r}",
            "x-modelyard-timeout",
        )
    return time.monotonic() + seconds


def caller_trace(call: Call, yard: Yard) -> contextlib.AbstractContextManager[None]:
    """The caller's trace (W3C `traceparent`), continued by this request's spans when the
    config traces; nothing to do otherwise."""
    parent = call.header(b"traceparent") if yard.loaded.config.tracing is not None else None
    if parent is None:
        return contextlib.nullcontext()
    carrier = {"traceparent": parent}
    state = call.header(b"tracestate")
    if state is not None:
        carrier["tracestate"] = state
    return continued(carrier)


def answer_headers(response: ChatResponse | EmbeddingResponse, version: str) -> Headers:
    """The headers of a whole answer: the model that answered, what it cost, the config."""
    return [
        (b"x-modelyard-model", response.model.encode()),
        (b"x-modelyard-provider-model", response.provider_model.encode("latin-1", "replace")),
        (b"x-modelyard-cost", f"{response.cost:.8f}".encode()),
        (b"x-modelyard-config-version", version.encode()),
    ]


def stream_headers(call: Call, version: str, first: Chunk) -> Headers:
    """The headers of a stream, sent with its first chunk: the model answering when that chunk
    names it (the cost comes at the end, so is not among them)."""
    head = [
        *SSE,
        *call.id_headers,
        *call.rate,
        (b"x-modelyard-config-version", version.encode()),
    ]
    answering = first.model or (first.response.model if first.response else None)
    if answering is not None:
        head.append((b"x-modelyard-model", answering.encode()))
    return head


def cache_header(scope: RequestScope, request: ChatRequest) -> tuple[bytes, bytes]:
    """`x-modelyard-cache`, sent when the target's own answers are cached: `hit` (a semantic
    one with its similarity: `hit; similarity=0.973`) or `miss`, as the target's cache found;
    `refresh` for a request its `Cache-Control: no-cache` had answered afresh (and stored), and
    `bypass` for one the cache left alone (`no-store`, or a sampled request on a cache with
    `sampled: false`)."""
    found = scope.cache_found
    if found is None:
        verdict = b"refresh" if request.response_cache == "refresh" else b"bypass"
    elif not found[0]:
        verdict = b"miss"
    elif found[1] is None:
        verdict = b"hit"
    else:
        verdict = f"hit; similarity={found[1]:.3f}".encode()
    return b"x-modelyard-cache", verdict


UPSTREAM_PREFIX = "x-modelyard-upstream-"


def upstream_quota_headers(seen: QuotaSeen | None) -> Headers:
    """The tightest quota the request's provider replies reported (`providers.upstream_quota`),
    each header under its own name prefixed `x-modelyard-upstream-`
    (`x-modelyard-upstream-x-ratelimit-remaining-requests`): for the callers `ChatEndpoints`
    keeps them for; none for the others (`seen` None)."""
    if seen is None:
        return []
    return [
        ((UPSTREAM_PREFIX + name).encode(), value.encode("latin-1", "replace"))
        for name, value in seen.headers
    ]


def upstream_quota_fields(seen: QuotaSeen | None) -> dict[str, str]:
    """`upstream_quota_headers` as an `ApiError`'s headers hold them: a failed call shows the
    quota its provider answered with, as an answer does."""
    return {k.decode(): v.decode("latin-1") for k, v in upstream_quota_headers(seen)}


_RATE_NAMES = {
    (unit, anthropic): tuple(
        (
            f"anthropic-ratelimit-{unit}-{part}" if anthropic else f"x-ratelimit-{part}-{unit}"
        ).encode()
        for part in ("limit", "remaining", "reset")
    )
    for unit in ("requests", "tokens")
    for anthropic in (False, True)
}


def key_rate_headers(
    limit: int, use: WindowUse, *, anthropic: bool, unit: Literal["requests", "tokens"] = "requests"
) -> RateHeaders:
    """A key's requests (or `unit` "tokens") per minute as its API reports a rate limit:
    OpenAI's `x-ratelimit-{limit,remaining,reset}-requests` (reset a duration, `1m0s`), or
    Anthropic's `anthropic-ratelimit-requests-{limit,remaining,reset}` (reset an RFC 3339
    instant). Reset is when the window will have emptied: "fully replenished", as both define
    it. (A key's tokens are one limit, input and output together: Anthropic's `-tokens-`
    headers, never its `-input-tokens-`/`-output-tokens-` ones.)"""
    names = _RATE_NAMES[unit, anthropic]
    # Within [0, limit]: a correction to the usage reported may leave the window below 0.
    left = str(min(limit, max(0, int(limit - use.used)))).encode()
    reset = rfc3339(math.ceil(time.time() + use.reset)) if anthropic else duration(use.reset)
    return ((names[0], str(limit).encode()), (names[1], left), (names[2], reset))


# Cached: an admitted request's reset is always the whole window.
@functools.lru_cache(maxsize=64)
def duration(seconds: float) -> bytes:
    """`seconds` as OpenAI writes a reset (Go's duration format), rounded up to the
    millisecond so that a client waiting it out never comes back early: `250ms`, `1.5s`,
    `6m0s`, `1h0m0s`."""
    millis = math.ceil(seconds * 1000 - 1e-6)  # 60.0 s is 60000 ms, not 60001
    if millis < 1000:
        return f"{millis}ms".encode() if millis > 0 else b"0s"
    minutes, millis = divmod(millis, 60_000)
    hours, minutes = divmod(minutes, 60)
    out = f"{hours}h{minutes}m" if hours else f"{minutes}m" if minutes else ""
    whole, part = divmod(millis, 1000)
    return f"{out}{whole}{f'.{part:03d}'.rstrip('0') if part else ''}s".encode()


@functools.lru_cache(maxsize=4)  # the requests of one second share it
def rfc3339(second: int) -> bytes:
    """The Unix time `second` as an RFC 3339 instant in UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(second)).encode()
