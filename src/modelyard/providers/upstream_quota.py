"""The rate-limit headers a request's provider calls were answered with, kept for the gateway
to show the callers it trusts with them (`gateway.headers.upstream_quota`).

Held in a `ContextVar` the gateway sets for one request only when its caller may see them, so
it follows the request into the tasks its patterns spawn and never leaks into another; every
other call pays one lookup. Each reply overwrites the last: what is shown is the quota of the
provider that answered last (the answering model, for a fallback or a cascade).
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass

PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
"""OpenAI's (and most OpenAI-compatible servers') quota headers, and Anthropic's."""


@dataclass(slots=True)
class QuotaSeen:
    """The quota headers of the last provider reply of one request, names lower-cased."""

    headers: tuple[tuple[str, str], ...] = ()


CURRENT: ContextVar[QuotaSeen | None] = ContextVar("modelyard_upstream_quota", default=None)


def noted(headers: Mapping[str, str]) -> None:
    """Keep a provider reply's quota headers, if the request being served wants them."""
    seen = CURRENT.get()
    if seen is None:
        return
    quota = tuple((k.lower(), v) for k, v in headers.items() if k.lower().startswith(PREFIXES))
    if quota:  # a reply without any (a proxy's error page) leaves the last ones standing
        seen.headers = quota


class watching:  # used as a function: `with watching() as seen:`
    """Keep the quota headers of the calls made in the body, in the `QuotaSeen` it gives."""

    __slots__ = ("_seen", "_token")

    def __init__(self) -> None:
        self._seen = QuotaSeen()

    def __enter__(self) -> QuotaSeen:
        self._token = CURRENT.set(self._seen)
        return self._seen

    def __exit__(self, *exc_info: object) -> None:
        CURRENT.reset(self._token)
