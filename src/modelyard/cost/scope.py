"""What the wrappers of one request share while it runs: whether its key, tag and total budgets
are already reserved, which systems it was downgraded through, what its cache saved, and what
its calls were billed.

Held in a `ContextVar`, so it follows the request into the tasks its patterns spawn (an
ensemble's members) and never leaks into another request. The outermost wrapper a request meets
(`cost.accounting.Accounted`, or a `BudgetGuard` used alone) opens it, unless the caller did: the
gateway opens it to learn afterwards what the wrappers knew (a stream the client left was a cache
replay, which cost nothing).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelyard.types import Usage


@dataclass(slots=True)
class RequestScope:
    """Per-request state the cost wrappers share."""

    entry: str
    """The system or model the request was sent to."""
    request_budgets_held: bool = False
    """Whether the key/tag/total budgets were reserved (by the outermost guard)."""
    downgraded: list[str] = field(default_factory=list)
    """Systems a budget sent this request away from, in order, so a loop is caught."""
    cache_hit: bool = False
    """Whether the cache is serving this request (a stream cut then cost nothing)."""
    cache_found: tuple[bool, float | None] | None = None
    """What its first response-cache lookup found: (a hit, a semantic hit's similarity); None
    when no cache looked. The outermost cache looks first, so on a cached system or model this
    is that one's (the gateway's `x-modelyard-cache` header)."""
    accounted: bool = False
    """Whether an `Accounted` wrapper records this request's spend (the outermost one does)."""
    sent: bool = False
    """Whether any model call of this request reached its provider (`cost.dispatch`): one
    abandoned before that cost nothing."""
    spent: float = 0.0
    """What the calls of this request that finished were billed, counted as each finished
    (`cost.metering`): with a branch cancelled on the way, more than its answer reports."""
    billed: list[tuple[float, str | None, Usage | None]] = field(default_factory=list)
    """Those calls, each as (cost, model, tokens), in the order they finished: read only when
    the request is cut short (`cost.dispatch.finished`), so its record bills each model and
    carries their tokens, as an answer's does."""


CURRENT: ContextVar[RequestScope | None] = ContextVar("modelyard_request_scope", default=None)
"""The scope of the request being served; read through `current()`, except where a call more
would be a third of the cost (`cost.dispatch.charge`, once per billed call)."""


def current() -> RequestScope | None:
    """The scope of the request being served in this context, if any."""
    return CURRENT.get()


class entered:  # used as a function: `with entered(scope):`
    """Make `scope` current for the body (one step of a stream, or a whole call). A class, not
    a `@contextmanager` generator: it runs at every step of every stream, and this costs a
    third as much."""

    __slots__ = ("_scope", "_token")

    def __init__(self, scope: RequestScope) -> None:
        self._scope = scope

    def __enter__(self) -> RequestScope:
        self._token = CURRENT.set(self._scope)
        return self._scope

    def __exit__(self, *exc_info: object) -> None:
        CURRENT.reset(self._token)
