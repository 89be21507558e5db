"""The outermost wrapper of a system or model: opens the request's cost scope, and records what
the request spent in the ledger and the anomaly detector once it is over.

What it spent is what the answer or the error reports, or what the request's meter counted
when that is more (`cost.metering`: a branch cancelled before it reported had spent it): the
answer then costs the meter's total, and its record says how much of that no child shows, so
the caller, the ledger and the budgets all see one figure.

Only the first `Accounted` a request meets does anything; those it meets deeper in the graph
(a system used inside another) pass straight through, so a request is recorded once, under the
name it was sent to.
"""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

from modelyard.cost import scope as request_scope
from modelyard.cost.anomaly import AnomalyDetector
from modelyard.cost.budget_counters import BUDGET
from modelyard.cost.decoration import Decoration
from modelyard.cost.ledger import Ledger, SpendRow
from modelyard.cost.metering import billed_error, billed_response
from modelyard.errors import ClientClosedError, ModelError
from modelyard.model import Model
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision, Usage

E = TypeVar("E", bound=ModelError)

NO_MODEL = "(none)"
"""The model column of a request refused before any model ran."""

REFUSED = "refused"
"""The decision detail of a call the gateway refused itself before it left (its value says
what refused it: the client-side rate limit's code); its ledger row is marked `refused`."""


def spend_rows(
    system: str,
    request: ChatRequest,
    response: ChatResponse | None,
    error: ModelError | None,
    *,
    now: float | None = None,
) -> list[SpendRow]:
    """One row per model the request used, costs and tokens from its decision tree (each call's
    record carries both); the answering model's row also carries any difference between the
    tree's cost and the total."""
    at = time.time() if now is None else now
    day = utc_day(int(at))
    # Without the gateway's id (a library or CLI call), a fresh one: an answer's id is no
    # request's (a cache hit repeats it; a local model numbers from 0 in each process).
    request_id = request.request_id or uuid.uuid4().hex
    decision: Decision | None = response.decision if response is not None else error.decision  # type: ignore[union-attr]
    total = response.cost if response is not None else (error.cost if error else 0.0)
    answered_by = response.model if response is not None else None
    # A failure's tokens are the estimate its cost was worked out from, if it was billed.
    usage = response.usage if response is not None else error.usage if error else None
    cache_hit = _cache_hit(decision)
    base = {
        "at": at,
        "day": day,
        "request_id": request_id,
        "system": system,
        "key_id": request.key_id,
        "tags": request.tags,
        "error": error.kind if error is not None else None,
    }
    if cache_hit is not None:
        saved = float(cache_hit.details.get("saved", 0.0))
        model = str(cache_hit.chosen or answered_by or system)
        # A semantic hit's embedding is billed to its embedder, the model whose answer was
        # served to nothing (and no tokens: no call made it).
        billed = billed_models(cache_hit, total, model)
        served = SpendRow(
            model=model,
            cost=max(0.0, billed.costs.pop(model)),
            saved=saved,
            cached=True,
            answered=True,
            **base,  # type: ignore[arg-type]
        )
        lookups = [
            _row(name, cost, billed.tokens.get(name), base)
            for name, cost in billed.costs.items()
            if name != cache_hit.node
        ]
        return [served, *lookups]
    billed = billed_models(decision, total, answered_by, usage=usage)
    main = billed.main
    return [
        _row(
            model,
            cost,
            billed.tokens.get(model),
            base,
            answered=model == main and response is not None,
            refused=model in billed.refused,
        )
        for model, cost in billed.costs.items()
    ]


def _row(
    model: str,
    cost: float,
    tokens: Usage | None,
    base: dict[str, Any],
    *,
    answered: bool = False,
    refused: bool = False,
) -> SpendRow:
    return SpendRow(
        model=model,
        cost=max(0.0, cost),
        answered=answered,
        refused=refused,
        input_tokens=tokens.input_tokens if tokens is not None else 0,
        output_tokens=tokens.output_tokens if tokens is not None else 0,
        tokens_estimated=tokens.estimated if tokens is not None else False,
        **base,
    )


@dataclass(frozen=True, slots=True)
class Billed:
    """How a request's spend splits by model (`billed_models`)."""

    main: str
    """The model the answer's (or the error's) own figures belong to: the one that answered,
    else the last one called, else `NO_MODEL`."""
    costs: dict[str, float]
    """What each model called cost, `main` also carrying what the tree does not show."""
    tokens: dict[str, Usage]
    """The tokens of each model's calls, for those that report any."""
    refused: frozenset[str] = frozenset()
    """The models none of whose calls left: the gateway refused each (its client-side rate
    limit), or, as `NO_MODEL`, no model was called (a budget refused the request)."""


def billed_models(
    decision: Decision | None,
    total: float,
    answered_by: str | None,
    default: str = NO_MODEL,
    *,
    usage: Usage | None = None,
) -> Billed:
    """The model a request's own figures belong to, and what each model it called cost and
    used, from its decision tree: the ledger's rows, and the metrics, split the request's
    `total` and its tokens this way.

    That model is the one that answered, else the last one called, else `default` (refused
    before any model ran: a budget, a rate limit); it also carries the part of `total` the
    tree does not show. Tokens are each call's record's (every call the request made, the
    answering one once), and `usage` (the answer's or the error's) is that model's when none
    of its records reports any (a node that records no tokens, or no record at all)."""
    leaves = [d for d in decision.walk() if called(d)] if decision is not None else []
    per_model: dict[str, float] = {}
    tokens: dict[str, Usage] = {}
    sent: set[str] = set()
    held: set[str] = set()  # models with a call the gateway refused before it left
    for leaf in leaves:
        node = leaf.node
        per_model[node] = per_model.get(node, 0.0) + leaf.cost
        (held if leaf.details.get(REFUSED) else sent).add(node)
        used = leaf.usage
        if used is not None:
            before = tokens.get(node)
            tokens[node] = used if before is None else before + used
    main = answered_by or (leaves[-1].node if leaves else default)
    per_model[main] = per_model.get(main, 0.0) + (total - sum(per_model.values()))
    if usage is not None and main not in tokens:
        tokens[main] = usage
    refused = held - sent
    if not leaves and main == NO_MODEL and total <= 0:
        refused.add(main)
    return Billed(main, per_model, tokens, frozenset(refused) - {answered_by})


def called(decision: Decision) -> bool:
    """Whether a record is a model call (a leaf), not a stage skipped or a member not asked."""
    # A stage that ran has its call below; a budget's record is a refusal or a downgrade.
    if decision.children or decision.kind == "stage" or decision.kind == BUDGET:
        return False
    return not decision.details.get("not_asked")


@functools.lru_cache(maxsize=4)
def utc_day(second: int) -> str:
    """The UTC date of a Unix second (cached: formatting a date is slow, seconds repeat)."""
    return datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%d")


def _cache_hit(decision: Decision | None) -> Decision | None:
    if decision is None:
        return None
    for node in decision.walk():
        if node.kind == "cache" and node.details.get("hit"):
            return node
    return None


def cut_short(
    error: E,
    model: Model,
    request: ChatRequest,
    scope: request_scope.RequestScope,
    output_chars: int = 0,
) -> E:
    """`error` for a request to `model` cut before its answer (its caller gave up, the client
    left, a shutdown), after `output_chars` characters of a stream: costing what the calls it
    made that finished were billed, plus the estimate of the one in flight (its input once
    sent, and what it wrote), as the budgets settle it; its record shows that per model with
    the calls' tokens (`cost.bounds.charge_partial`), so the ledger's rows and the metrics
    split it as they split an answer. A cached answer being replayed cost nothing."""
    from modelyard.cost.bounds import billed_node, charge_partial
    from modelyard.cost.dispatch import finished

    # Cut by its caller, not failed: the record names no error (the request's error says it).
    error.decision = Decision(node=billed_node(model), kind="model", reason=error.message)
    if not scope.cache_hit:
        sent, spent, calls = scope.sent, scope.spent, finished(scope)
        charge_partial(error, model, request, output_chars, sent=sent, spent=spent, dispatch=calls)
    return error


class Accounted(Decoration):
    """Records each request sent to `inner` (see the module docstring)."""

    def __init__(
        self,
        inner: Model,
        *,
        ledger: Ledger | None = None,
        anomaly: AnomalyDetector | None = None,
    ) -> None:
        super().__init__(inner)
        self.ledger = ledger
        self.anomaly = anomaly

    def worst_case_cost(self, request: ChatRequest) -> float:
        """The inner node's bound (recording spends nothing)."""
        from modelyard.cost.bounds import cost_bound

        return cost_bound(self.inner, request)

    def _abandoned(
        self,
        request: ChatRequest,
        streamed: int,
        scope: request_scope.RequestScope,
        *,
        cancelled: bool = False,
    ) -> ClientClosedError:
        error = ClientClosedError(
            "the call was cancelled before its answer; cost estimated"
            if cancelled
            else f"the stream ended without its final response after {streamed} characters"
            " (the caller stopped reading, or the upstream broke); cost estimated",
            model=self.name,
        )
        return cut_short(error, self.inner, request, scope, streamed)

    def _record(
        self, request: ChatRequest, response: ChatResponse | None, error: ModelError | None
    ) -> None:
        if self.ledger is not None:
            self.ledger.record(spend_rows(self.name, request, response, error))
        if self.anomaly is not None and response is not None:
            self.anomaly.observe(self.name, response.cost, response.model)

    def _scope(self) -> request_scope.RequestScope | None:
        """The request's scope, now accounted by this wrapper; None when an outer one records
        the request (this one then only passes it on)."""
        scope = request_scope.current()
        if scope is not None and scope.accounted:
            return None
        scope = scope or request_scope.RequestScope(entry=self.name)
        scope.accounted = True
        return scope

    async def complete(self, request: ChatRequest) -> ChatResponse:
        scope = self._scope()
        if scope is None:
            return await self.inner.complete(request)
        with request_scope.entered(scope):
            try:
                response = await self.inner.complete(request)
            except ModelError as exc:
                self._record(request, None, billed_error(exc, scope.spent))
                raise
            except asyncio.CancelledError:
                # The caller gave up (a timeout around it, a shutdown): the ledger gets what the
                # budgets are settled to, the input if the request had gone out, not nothing.
                self._record(request, None, self._abandoned(request, 0, scope, cancelled=True))
                raise
        response = billed_response(response, scope.spent)
        self._record(request, response, None)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        scope = self._scope()
        if scope is None:
            async for chunk in self.inner.stream(request):
                yield chunk
            return
        with request_scope.entered(scope):
            chunks = self.inner.stream(request)
        seen = 0  # characters streamed
        recorded = False
        try:
            while True:
                with request_scope.entered(scope):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                    except ModelError as exc:
                        recorded = True
                        self._record(request, None, billed_error(exc, scope.spent))
                        raise
                if chunk.response is not None:
                    recorded = True
                    response = billed_response(chunk.response, scope.spent)
                    if response is not chunk.response:
                        chunk = replace(chunk, response=response)
                    self._record(request, response, None)
                seen += chunk.chars
                yield chunk
        finally:
            if not recorded:
                # The caller stopped reading, or the stream ended without its final response:
                # the provider still bills the input and what it generated, so the ledger gets
                # an estimate, not nothing.
                self._record(request, None, self._abandoned(request, seen, scope))
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()
