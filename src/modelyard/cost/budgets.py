"""Budgets that cannot be overspent: the guard that reserves the worst case before a call and
settles after it.

Before a call, `BudgetGuard` reserves the request's worst-case cost (`cost_bound`) against every
budget it touches, in one atomic `StateStore.reserve`: all fit, or none is charged and the
request is refused (or downgraded). After the call it settles each budget to the real cost and
releases the rest; on an error it settles `error.cost`, on cancellation or an abandoned stream
an estimate of what was used; each raised to what the meter counted under the guard
(`cost.metering`) when a branch cancelled inside it had spent more than its record shows.
Since nothing runs without its worst case held, concurrent requests — in one process or many
sharing Redis — can never push spend past a cap.

Where each scope is charged: model budgets by the guard around that model (so a fallback chain
can skip a model whose budget is spent), system budgets by the guard around that system, and
key, tag and total budgets once per request, by the outermost guard it meets, with the whole
system's worst case.

This module is that enforcement: `BudgetGuard` and the downgrade it decides. The worst case it
reserves is `cost.bounds`; what a budget caps and its counters, `cost.budget_counters`; the
ledger that reserves and settles them in the store, `cost.budget_book`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import replace

from modelyard.cost import scope as request_scope
from modelyard.cost.bounds import cost_bound, partial_cost
from modelyard.cost.budget_book import BudgetBook, settle_shielded
from modelyard.cost.budget_counters import BUDGET, Budget, Hold, Refusal
from modelyard.cost.decoration import Decoration
from modelyard.cost.dispatch import Dispatch, watching
from modelyard.cost.dispatch import current as current_dispatch
from modelyard.cost.metering import billed
from modelyard.cost.prices import usd
from modelyard.errors import ModelError
from modelyard.model import Model
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision

_BOUNDING: ContextVar[frozenset[str]] = ContextVar("modelyard_bounding", default=frozenset())
"""The guards whose downgrade targets are being bounded, so a downgrade cycle ends."""


class BudgetGuard(Decoration):
    """Enforces budgets around one system or model (see the module docstring)."""

    def __init__(
        self,
        inner: Model,
        *,
        book: BudgetBook,
        own: Sequence[Budget],
        per_request: Sequence[Budget],
        targets: Mapping[str, Model],
    ) -> None:
        super().__init__(inner)
        self.book = book
        self.own = tuple(own)
        self.per_request = tuple(per_request)
        self.targets = targets
        """Where downgrades go: the built systems and models, looked up at call time."""
        self._downgrades = tuple(
            {b.downgrade_to for b in self.own if b.action == "downgrade" and b.downgrade_to}
        )

    def worst_case_cost(self, request: ChatRequest) -> float:
        """The inner node's bound, or a downgrade target's where dearer: a budget that downgrades
        sends the request there instead (the guard itself spends nothing). An outer guard
        reserves this for the key, tag and total budgets."""
        bound = cost_bound(self.inner, request)
        if not self._downgrades:
            return bound
        bounding = _BOUNDING.get()
        if self.name in bounding:  # a downgrade cycle is refused at run time
            return bound
        token = _BOUNDING.set(bounding | {self.name})
        try:
            for name in self._downgrades:
                target = self.targets.get(name)
                if target is not None:
                    bound = max(bound, cost_bound(target, request))
        finally:
            _BOUNDING.reset(token)
        return bound

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        if self.own:
            out["budgets"] = ", ".join(b.name for b in self.own)
        return out

    def _holds(self, request: ChatRequest, scope: request_scope.RequestScope) -> list[Hold]:
        budgets = list(self.own)
        if not scope.request_budgets_held:
            budgets += self.per_request
        if not budgets:
            return []
        return self.book.holds(budgets, request, self.name, cost_bound(self.inner, request))

    async def _admit(
        self, request: ChatRequest, scope: request_scope.RequestScope
    ) -> tuple[list[Hold], Model | None, Refusal | None]:
        """Reserve; returns the holds, and the downgrade target and the refusal that sends us
        there when a budget does."""
        holds = self._holds(request, scope)
        refusal = await self.book.reserve(holds)
        if refusal is None:
            if any(h.budget.per_request for h in holds):
                scope.request_budgets_held = True
            return holds, None, None
        budget = refusal.hold.budget
        if budget.action != "downgrade" or budget.downgrade_to is None:
            raise refusal.error(self.name)
        target = budget.downgrade_to
        if target == self.name or target in scope.downgraded or target not in self.targets:
            raise refusal.error(self.name)
        scope.downgraded.append(self.name)
        return [], self.targets[target], refusal

    def _scope(self) -> tuple[request_scope.RequestScope, bool]:
        scope = request_scope.current()
        if scope is None:
            return request_scope.RequestScope(entry=self.name), True
        return scope, False

    async def complete(self, request: ChatRequest) -> ChatResponse:
        scope, _ = self._scope()
        with request_scope.entered(scope):
            holds, downgrade, why = await self._admit(request, scope)
            if downgrade is not None and why is not None:
                response = await downgrade.complete(request)
                return _downgraded(self.name, downgrade.name, why, response)
            call = watching()
            dispatch = call.dispatch
            try:
                with call:
                    response = await self.inner.complete(request)
            except ModelError as exc:
                await settle_shielded(self.book, holds, billed(exc.cost, dispatch.spent))
                raise
            except BaseException:
                # Cancelled: the provider bills the input only if the request reached it, and
                # the calls under it that had finished.
                used = partial_cost(self.inner, request, sent=dispatch.sent, spent=dispatch.spent)
                await settle_shielded(self.book, holds, used)
                raise
            await settle_shielded(self.book, holds, billed(response.cost, dispatch.spent))
            return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        scope, _ = self._scope()
        with request_scope.entered(scope):
            holds, downgrade, why = await self._admit(request, scope)
        source = downgrade if downgrade is not None else self.inner
        chunks = source.stream(request)
        seen = 0  # characters streamed: with whether it was sent, all an estimate needs
        settled = downgrade is not None
        dispatch = Dispatch(current_dispatch())
        try:
            while True:
                with request_scope.entered(scope), watching(dispatch):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                if chunk.response is not None and not settled:
                    used = billed(chunk.response.cost, dispatch.spent)
                    await settle_shielded(self.book, holds, used)
                    settled = True
                if chunk.response is not None and downgrade is not None and why is not None:
                    downgraded = _downgraded(self.name, downgrade.name, why, chunk.response)
                    chunk = Chunk(response=downgraded)
                seen += chunk.chars
                yield chunk
        except ModelError as exc:
            if not settled:
                settled = True
                used = billed(exc.cost, dispatch.spent)
                if not exc.cost and seen:
                    used = partial_cost(self.inner, request, seen, spent=dispatch.spent)
                await settle_shielded(self.book, holds, used)
            raise
        finally:
            if not settled:
                # Cancelled, or the consumer stopped reading: settle what was likely used.
                estimate = partial_cost(
                    self.inner, request, seen, sent=dispatch.sent, spent=dispatch.spent
                )
                await settle_shielded(self.book, holds, estimate)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()


DOWNGRADE = BUDGET
"""The decision kind of a node whose budget sent the request to another node."""


def downgraded(response: ChatResponse) -> bool:
    """Whether a budget downgrade, anywhere in the graph, had another node answer `response`."""
    decision = response.decision
    return decision is not None and any(d.kind == DOWNGRADE for d in decision.walk())


def _downgraded(node: str, target: str, why: Refusal, response: ChatResponse) -> ChatResponse:
    hold = why.hold
    decision = Decision(
        node=node,
        kind=DOWNGRADE,
        chosen=target,
        # Which budget, and by how much: what an auditor asks of an answer from another node.
        reason=f"{hold.describe()} reached: ${usd(why.used)} of ${usd(hold.budget.limit)} "
        f"spent or reserved, and this request may cost up to ${usd(hold.amount)}; "
        f"downgraded to {target}",
        threshold=hold.budget.limit,
        details={"budget": hold.budget.name, "used": why.used, "worst_case": hold.amount},
        latency_ms=response.decision.latency_ms if response.decision else 0.0,
        cost=response.cost,
        children=(response.decision,) if response.decision else (),
    )
    return replace(response, decision=decision)
