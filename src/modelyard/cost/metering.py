"""Every call a request pays for, counted once as it finishes, so that what a cancelled branch
had spent is not lost with it.

Costs roll up: each pattern adds up its children's, and the wrappers at the top bill what the
answer (or the error) says. A branch cancelled before it reported (an ensemble's straggler once
the quorum is reached, a fallback member given up on for showing nothing within its share of
the time, anything cut at a deadline) takes the record of its finished calls with it. So each
billed call is also counted on a meter as it finishes (`cost.dispatch.charge`): the request's
scope (`RequestScope.spent`) and every `Dispatch` the call runs under (`Dispatch.spent`).
What is counted, once each:

- every call of a configured model, answered or failed with a cost: `Metered`, the innermost
  layer of each model's stack (inside retries, so each attempt is counted once);
- each embedding a node pays for itself (a semantic router, a learned estimator, a semantic
  cache): `embed`. A local model that embeds reports that in its own answer's cost instead;
- the estimate of a call cut in flight, by the code that cuts it and puts the estimate in its
  record (`resilience.deadline`, `patterns.ensemble_members`, `resilience.fallback`).

Where a branch is abandoned, its record costs what its `Dispatch` counted plus that estimate,
and shows it per model (`cost.bounds.abandoned_calls`): `charge` names the model each billed
call was of, and `Metered` marks each call in flight until it answers or fails, so the estimate
goes to the model the cut call was waiting for rather than to the branch's name.
Any loss that is not handled there is caught at the top: `Accounted` bills the meter's total
when it exceeds what the record reports and says so in the record (`ABANDONED`), and a budget
guard settles the same way from its own `Dispatch`. A cache hit calls nothing and counts
nothing; a graph built by hand without `Metered` counts nothing and is billed as it reports.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import replace
from typing import Any

from modelyard.cost.dispatch import charge, landed, take_off
from modelyard.errors import BadResponseError, ModelError
from modelyard.model import Embedder, Wrapper, elapsed_ms
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    Decision,
    EmbeddingRequest,
    EmbeddingResponse,
)

ABANDONED = "abandoned_spend"
"""The detail of a top record whose total includes spend its children do not show: calls a
branch had finished before it was cancelled or given up on."""


class Metered(Wrapper):
    """A configured model whose every call is counted on the meter as it finishes: the one
    place a leaf's cost is fixed (its response, or its error)."""

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        name = self.info.name
        flight = take_off(name)  # None outside any watched call: nothing to land
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            if flight is not None:
                landed(flight, name)
            charge(exc.cost, name, exc.usage)
            raise
        if flight is not None:
            landed(flight, name)
        charge(response.cost, name, response.usage)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        name = self.info.name
        flight = take_off(name)
        try:
            async for chunk in self.inner.stream(request):
                if chunk.response is not None:
                    if flight is not None:
                        landed(flight, name)
                        flight = None
                    charge(chunk.response.cost, name, chunk.response.usage)
                yield chunk
        except ModelError as exc:
            if flight is not None:
                landed(flight, name)
            charge(exc.cost, name, exc.usage)
            raise


async def embed(embedder: Embedder, request: EmbeddingRequest) -> EmbeddingResponse:
    """`embedder`'s answer to `request`, for a node that adds its cost to its own record: the
    cost is counted on the meter, failed or not."""
    try:
        response = await embedder.embed(request)
    except ModelError as exc:
        charge(exc.cost, embedder.name, exc.usage)
        raise
    charge(response.cost, embedder.name, response.usage)
    return response


async def embed_one(
    embedder: Embedder,
    request: ChatRequest,
    text: str,
    *,
    what: str = "the last user message",
    details: Mapping[str, Any] | None = None,
) -> tuple[Any, Decision]:
    """One text's vector for a node embedding it inside `request` (a semantic router or cache,
    a learned estimator), and the call's decision record (with `details`): a leaf the spend
    ledger and the metrics bill to the embedder."""
    started = time.perf_counter()
    response = await embed(
        embedder,
        EmbeddingRequest(
            inputs=(text,), key_id=request.key_id, tags=request.tags, deadline=request.deadline
        ),
    )
    if len(response.vectors) != 1:
        raise BadResponseError(
            f"embedder returned {len(response.vectors)} vectors for 1 text", model=embedder.name
        )
    decision = Decision(
        node=embedder.name,
        kind="embedder",
        reason=f"embedded {what}",
        latency_ms=elapsed_ms(started),
        cost=response.cost,
        details=details or {},
        usage=response.usage,
    )
    return response.vectors[0], decision


def unreported(reported: float, spent: float) -> float:
    """What the meter counted (`spent`) beyond what a record `reported`, or 0.0 when the two
    agree up to rounding (they add the same figures in another order)."""
    missing = spent - reported
    return missing if missing > 1e-12 + 1e-9 * spent else 0.0


def billed(reported: float, spent: float) -> float:
    """What to bill for a call whose record says `reported` and under which the meter counted
    `spent`: the larger."""
    return reported + unreported(reported, spent)


def billed_response(response: ChatResponse, spent: float) -> ChatResponse:
    """`response` costing what the meter counted (`spent`) when that is more than it reports,
    its record saying how much of it no child shows."""
    if spent <= response.cost:  # nearly always: nothing was lost
        return response
    missing = unreported(response.cost, spent)
    if not missing:
        return response
    return replace(
        response, cost=response.cost + missing, decision=_noted(response.decision, missing)
    )


def billed_error(error: ModelError, spent: float) -> ModelError:
    """`error` costing what the meter counted (`spent`) when that is more than it reports, its
    record saying how much of it no child shows."""
    missing = unreported(error.cost, spent)
    if missing:
        error.cost += missing
        error.decision = _noted(error.decision, missing)
    return error


def _noted(decision: Decision | None, missing: float) -> Decision | None:
    if decision is None:
        return None
    details = {**decision.details, ABANDONED: decision.details.get(ABANDONED, 0.0) + missing}
    return replace(decision, cost=decision.cost + missing, details=details)
