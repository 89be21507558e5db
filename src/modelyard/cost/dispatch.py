"""What a call did so far: whether it was sent, and what the calls under it that finished were
billed. Together they decide the cost of a call abandoned before its answer.

A provider bills the input of a request it received, answered or not; a request still waiting
for a rate-limit slot, a concurrency slot, a pooled connection or a local model's worker was
never received and costs nothing. The code that knows (the HTTP transport once the request is
written, a local model once its job starts) calls `mark_sent()`. It marks every `Dispatch` the
call runs under — the innermost a wrapper opened with `watching()`, then each one around it —
and the request's scope, so a budget guard, a deadline or an ensemble that abandons a call asks
its own `Dispatch` whether to charge the estimate (`cost.bounds.partial_cost`) or nothing.

A call that abandons is often a pattern whose own calls have finished (a cascade past its first
stage): what those were billed is `Dispatch.spent`, which `charge()` adds to as each billed call
finishes (`cost.metering`), so the abandoned call costs that plus the estimate.

Held in a `ContextVar`, like the request scope: it follows a call into the tasks its patterns
spawn (an ensemble's members), and a stream's step sees it when its consumer re-enters it.
"""

from __future__ import annotations

from contextvars import Context, ContextVar
from typing import TYPE_CHECKING

from modelyard.cost import scope as request_scope

if TYPE_CHECKING:
    from modelyard.types import Usage


class Dispatch:
    """One watched call: `sent` once any model call under it reached its provider, `spent` what
    those that finished were billed, and `by_model` that per model, where it was known."""

    __slots__ = ("by_model", "flying", "outer", "sent", "spent", "used_by_model")

    def __init__(self, outer: Dispatch | None = None) -> None:
        self.sent = False
        self.spent = 0.0
        self.by_model: dict[str, float] = {}
        """`spent` by the model billed (the ledger's model column): what a record of the
        call, abandoned, shows per model rather than under the abandoned node's name."""
        self.used_by_model: dict[str, Usage] = {}
        """The tokens those calls were billed for, by the same model: shown beside their cost."""
        self.flying: list[str] = []
        """The models whose calls under it started and neither answered nor failed: the one
        a call abandoned was waiting for, which its estimate is billed to."""
        self.outer = outer
        """The call this one runs inside, marked with it."""


_CURRENT: ContextVar[Dispatch | None] = ContextVar("modelyard_dispatch", default=None)


def current() -> Dispatch | None:
    """The innermost call watched in this context, if any."""
    return _CURRENT.get()


class Sender:
    """Marks the calls current where it was made as sent, when called (from any thread: a
    local model's worker calls it as its job starts)."""

    __slots__ = ("_dispatch", "_scope")

    def __init__(self) -> None:
        self._dispatch = _CURRENT.get()
        self._scope = request_scope.current()

    def __call__(self) -> None:
        dispatch = self._dispatch
        while dispatch is not None and not dispatch.sent:
            dispatch.sent = True
            dispatch = dispatch.outer
        if self._scope is not None:
            self._scope.sent = True


def mark_sent() -> None:
    """The request of the call being made now was handed to its provider."""
    Sender()()


def charge(cost: float, model: str | None = None, usage: Usage | None = None) -> None:
    """A call made now (of `model`, when known) finished and was billed `cost` for `usage`:
    counted on the request's scope and on every `Dispatch` it runs under. Once per billed call
    (see `cost.metering` for who calls it), in the context the call was made in."""
    if not cost:
        return
    scope = request_scope.CURRENT.get()
    if scope is not None:
        scope.spent += cost
        scope.billed.append((cost, model, usage))
    dispatch = _CURRENT.get()
    while dispatch is not None:
        dispatch.spent += cost
        if model is not None:
            by_model = dispatch.by_model
            by_model[model] = by_model.get(model, 0.0) + cost
            if usage is not None:
                used = dispatch.used_by_model
                before = used.get(model)
                used[model] = usage if before is None else before + usage
        dispatch = dispatch.outer


def finished(scope: request_scope.RequestScope) -> Dispatch:
    """The calls of `scope`'s request that finished (`RequestScope.billed`), as a `Dispatch`
    watching the whole request: what a record of the request cut short bills per model, with
    their tokens (`cost.bounds.abandoned_calls`). Which call was in flight is not kept per
    request (a cost on every call), so the estimate of the one cut goes to the node's name."""
    dispatch = Dispatch()
    dispatch.sent = scope.sent
    # `charge` itself, into this dispatch alone: a fresh context holds no scope nor any other
    # dispatch.
    Context().run(_recount, dispatch, scope.billed)
    return dispatch


def _recount(dispatch: Dispatch, billed: list[tuple[float, str | None, Usage | None]]) -> None:
    with watching(dispatch):
        for cost, model, usage in billed:
            charge(cost, model, usage)


def take_off(model: str) -> Dispatch | None:
    """A call of `model` starts now: it is in flight in every `Dispatch` it runs under, until
    `landed`. The innermost, to hand to `landed`."""
    dispatch = inner = _CURRENT.get()
    while dispatch is not None:
        dispatch.flying.append(model)
        dispatch = dispatch.outer
    return inner


def landed(dispatch: Dispatch | None, model: str) -> None:
    """The call of `model` that `take_off` returned `dispatch` for answered or failed. (A call
    cancelled never lands: it was in flight when its caller gave up on it.)"""
    while dispatch is not None:
        dispatch.flying.remove(model)
        dispatch = dispatch.outer


class watching:  # used as a function: `with watching() as dispatch:`
    """Watch the calls made in the body with a new `Dispatch` (inside the current one), or
    re-enter `dispatch` (one step of a stream). A class, not a `@contextmanager` generator: a
    budget guard enters it at every step of every stream."""

    __slots__ = ("_token", "dispatch")

    def __init__(self, dispatch: Dispatch | None = None) -> None:
        self.dispatch = dispatch if dispatch is not None else Dispatch(_CURRENT.get())

    def __enter__(self) -> Dispatch:
        self._token = _CURRENT.set(self.dispatch)
        return self.dispatch

    def __exit__(self, *exc_info: object) -> None:
        _CURRENT.reset(self._token)
