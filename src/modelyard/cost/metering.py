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

Where a branch is abandoned, its record costs what its `Dispatch` counted plus that estimate.
A cache hit calls nothing and counts nothing; a graph built by hand without `Metered` counts
nothing and is billed as it reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from modelyard.cost.dispatch import charge
from modelyard.errors import ModelError
from modelyard.model import Embedder, Wrapper
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    EmbeddingRequest,
    EmbeddingResponse,
)


class Metered(Wrapper):
    """A configured model whose every call is counted on the meter as it finishes: the one
    place a leaf's cost is fixed (its response, or its error)."""

    def describe(self) -> dict[str, object]:
        return self.inner.describe()

    async def complete(self, request: ChatRequest) -> ChatResponse:
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            charge(exc.cost)
            raise
        charge(response.cost)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        try:
            async for chunk in self.inner.stream(request):
                if chunk.response is not None:
                    charge(chunk.response.cost)
                yield chunk
        except ModelError as exc:
            charge(exc.cost)
            raise


async def embed(embedder: Embedder, request: EmbeddingRequest) -> EmbeddingResponse:
    """`embedder`'s answer to `request`, for a node that adds its cost to its own record: the
    cost is counted on the meter, failed or not."""
    try:
        response = await embedder.embed(request)
    except ModelError as exc:
        charge(exc.cost)
        raise
    charge(response.cost)
    return response
