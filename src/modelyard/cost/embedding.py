"""An embedder as callers reach it by name (`Yard.embed`, the gateway's `/v1/embeddings`): its
calls charged to the configured budgets and recorded in the spend ledger, as a chat request sent
to a system or model is.

Budgets: the model budgets naming it (or `*`) and the key, tag and total budgets are reserved at
the call's worst case (`Price.worst_case_embedding`) in one atomic reservation and settled to
its cost (a call cancelled mid-way: its texts' estimated input if the provider had the request,
else nothing), with `BudgetGuard`'s book. A budget that would downgrade refuses instead: there
is no other embedder to send the texts to. Spend: one ledger row naming the embedder (as both system
and model) with its input tokens and cost, refusals and failures included, and the anomaly
detector's count, as `Accounted` records a chat request.

Only what callers reach is wrapped: an embedder a semantic cache, router or classifier calls
inside a chat request adds its cost to that request's answer, which is charged and recorded
there; charging it here too would count it twice.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence

from modelyard.cost.accounting import NO_MODEL, utc_day
from modelyard.cost.anomaly import AnomalyDetector
from modelyard.cost.budget_book import BudgetBook, settle_shielded
from modelyard.cost.budget_counters import Budget, Hold
from modelyard.cost.dispatch import watching
from modelyard.cost.ledger import Ledger, SpendRow
from modelyard.cost.prices import unanswered_embedding
from modelyard.errors import ClientClosedError, ModelError
from modelyard.model import Embedder
from modelyard.types import EmbeddingRequest, EmbeddingResponse


def embedding_row(
    embedder: str,
    request: EmbeddingRequest,
    response: EmbeddingResponse | None,
    error: ModelError | None,
    *,
    called: bool = True,
) -> SpendRow:
    """The ledger row of one embedding call (`called` False: refused before the embedder ran,
    so no model is named, as for a chat request refused by a budget)."""
    at = time.time()
    # A failure's tokens are the estimate its cost was worked out from, if it was billed.
    usage = response.usage if response is not None else error.usage if error else None
    return SpendRow(
        at=at,
        day=utc_day(int(at)),
        request_id=request.request_id or uuid.uuid4().hex,
        system=embedder,
        model=embedder if called else NO_MODEL,
        cost=response.cost if response is not None else (error.cost if error else 0.0),
        key_id=request.key_id,
        tags=request.tags,
        answered=response is not None,
        error=error.kind if error is not None else None,
        input_tokens=usage.input_tokens if usage is not None else 0,
        tokens_estimated=usage.estimated if usage is not None else False,
    )


class AccountedEmbedder(Embedder):
    """`inner` with its budgets enforced and its spend recorded (see the module docstring)."""

    def __init__(
        self,
        inner: Embedder,
        *,
        book: BudgetBook | None = None,
        budgets: Sequence[Budget] = (),
        ledger: Ledger | None = None,
        anomaly: AnomalyDetector | None = None,
    ) -> None:
        self.inner = inner
        self.info = inner.info
        self.book = book
        self.budgets = tuple(budgets)
        """The model budgets that name this embedder, and every key, tag and total budget."""
        self.ledger = ledger
        self.anomaly = anomaly

    async def embed(self, request: EmbeddingRequest) -> EmbeddingResponse:
        try:
            holds = await self._admit(request)
        except ModelError as exc:  # refused, or the state store is down: nothing ran
            self._record(request, None, exc, called=False)
            raise
        call = watching()
        try:
            with call:
                response = await self.inner.embed(request)
        except ModelError as exc:
            await self._settle(holds, exc.cost)
            self._record(request, None, exc)
            raise
        except BaseException:
            # Cancelled: the provider bills the texts only if the request reached it; the
            # ledger gets what the budgets are settled to.
            sent = call.dispatch.sent
            used = unanswered_embedding(request) if sent else None
            spent = self.info.price.cost(used) if used is not None else 0.0
            await self._settle(holds, spent)
            cancelled = ClientClosedError(
                "the call was cancelled before its answer; cost estimated", model=self.name
            )
            cancelled.cost, cancelled.usage = spent, used
            self._record(request, None, cancelled)
            raise
        await self._settle(holds, response.cost)
        self._record(request, response, None)
        return response

    async def _admit(self, request: EmbeddingRequest) -> list[Hold]:
        """Reserve the call's worst case against every budget it touches; the holds.
        BudgetExceededError when one of them would be passed."""
        if self.book is None or not self.budgets:
            return []
        bound = self.info.price.worst_case_embedding(request)
        holds = self.book.holds(self.budgets, request, self.name, bound)
        refusal = await self.book.reserve(holds, embedding=True)
        if refusal is not None:
            raise refusal.error(self.name)
        return holds

    async def _settle(self, holds: list[Hold], actual: float) -> None:
        if holds:
            assert self.book is not None
            await settle_shielded(self.book, holds, actual)

    def _record(
        self,
        request: EmbeddingRequest,
        response: EmbeddingResponse | None,
        error: ModelError | None,
        *,
        called: bool = True,
    ) -> None:
        if self.ledger is not None:
            self.ledger.record([embedding_row(self.name, request, response, error, called=called)])
        if self.anomaly is not None and response is not None:
            self.anomaly.observe(self.name, response.cost, response.model)
