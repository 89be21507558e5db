"""Response caching: exact (the full request) and semantic (a close enough question), opt-in.

`Cached` wraps a system or model. The exact cache serves a stored answer only to a request whose
every answer-changing field, tenant and answering identity match (`cache_keys`). The semantic
cache, when a system opts in, embeds the last user message and serves the answer to the most
similar cached question at or above `threshold`, within the same scope (everything but that
message's text must match exactly); it stays off for tool calls, multi-turn conversations and
non-zero (or unset) temperature unless allowed, and never matches questions whose numbers,
codes or negations differ (`cache_keys.details`). Errors, cut streams and content-filtered
answers are never stored. A hit costs nothing (except the embedding, for semantic lookups) and
records the USD it saved in its decision. A semantic lookup's embedding is a node of the record,
hit or miss (`CACHE_MISS`), so the ledger and the metrics bill it to its embedder.

A request may refuse the cache (`ChatRequest.response_cache`: `refresh` is answered afresh and
stored, `bypass` neither), and a cache built with `sampled=False` leaves sampled requests
(`sampled`) alone entirely.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import numpy as np

from modelyard.cost import cache_codec
from modelyard.cost import scope as request_scope
from modelyard.cost.bounds import cost_bound
from modelyard.cost.budgets import downgraded
from modelyard.cost.cache_codec import UnreadableEntry, VectorEntry, pack_vector, unpack_vector
from modelyard.cost.cache_keys import details, exact_key, semantic_scope
from modelyard.cost.cache_store import CacheBackend
from modelyard.cost.decoration import Decoration
from modelyard.cost.metering import embed_one
from modelyard.errors import ModelError
from modelyard.model import Embedder, Model, elapsed_ms
from modelyard.streaming import response_chunks
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    Decision,
    FinishReason,
    Usage,
)

log = logging.getLogger("modelyard.cache")

CACHE_MISS = "cache_miss"
"""The kind of a semantic lookup's record when it found nothing close enough (a hit's is
`cache`): the embedding it paid for, then what answered."""


def sampled(request: ChatRequest) -> bool:
    """Whether `request` asks for a sampled answer: a temperature above 0, or none (providers
    default to 1). top_p is not looked at: at temperature 0 the choice is greedy whatever top_p,
    and above 0 a top_p below 1 narrows the choice but still samples."""
    return request.temperature != 0


@dataclass(frozen=True, slots=True, kw_only=True)
class SemanticPolicy:
    """How a system uses the semantic cache."""

    embedder: Embedder
    threshold: float = 0.95
    allow_tools: bool = False
    allow_multi_turn: bool = False
    allow_nonzero_temperature: bool = False
    space: str = ""
    """Which embedder's vectors this policy stores (its version): a scope never compares vectors
    of another embedder, whose similarities would mean nothing (or whose sizes differ)."""

    def refuses(self, request: ChatRequest) -> str | None:
        """Why `request` may not use the semantic cache, or None if it may."""
        if not request.messages or request.messages[-1].role != "user":
            return "does not end with a user message"
        if request.messages[-1].has_image:
            return "has an image"
        if request.tools and not self.allow_tools:
            return "has tools"
        if len(request.messages) > 1 and not self.allow_multi_turn:
            return "is multi-turn"
        if not self.allow_nonzero_temperature and sampled(request):
            return "temperature is not 0"
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class Hit:
    """A cached answer found for a request."""

    response: ChatResponse
    key: str
    similarity: float | None = None
    matched: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _Looked:
    """What a semantic lookup that served nothing paid and found: its embedding's record, and
    the similarity of the nearest question in scope (None when there was none)."""

    embedded: Decision
    nearest: float | None


class ResponseCache:
    """Looks up and stores responses in a backend; shared by every `Cached` of a config."""

    def __init__(
        self,
        backend: CacheBackend,
        *,
        ttl: float = 3600.0,
        max_entry_bytes: int = 1_000_000,
        exact: bool = True,
        sampled: bool = True,
    ) -> None:
        self.backend = backend
        self.ttl = ttl
        self.max_entry_bytes = max_entry_bytes
        self.exact = exact
        self.sampled = sampled
        """Whether sampled requests (`sampled`) are served and stored like any other."""
        self._told_unreadable = False

    def _unreadable(self, what: str, error: UnreadableEntry) -> None:
        """An entry that does not decode is a miss (answered again and stored over), said once:
        naming the backend and the error's kind, never the entry's content."""
        if not self._told_unreadable:
            self._told_unreadable = True
            log.warning(
                "cache %s: a stored %s could not be read (%s); served as a miss and stored "
                "again when answered (said once)",
                self.backend.name,
                what,
                error,
            )

    def _decoded(self, blob: bytes) -> ChatResponse | None:
        try:
            return cache_codec.decode(blob)
        except UnreadableEntry as error:
            self._unreadable("answer", error)
            return None

    def _candidates(self, rows: list[tuple[str, bytes]]) -> list[VectorEntry]:
        found = []
        for key, blob in rows:
            try:
                found.append(unpack_vector(key, blob))
            except UnreadableEntry as error:
                self._unreadable("question vector", error)
        return found

    def uses(self, request: ChatRequest) -> tuple[bool, bool]:
        """Whether the cache may serve `request`, and whether it may store its answer."""
        use = request.response_cache
        if use == "bypass" or (not self.sampled and sampled(request)):
            return False, False
        return use == "use", True

    async def exact_hit(self, key: str) -> Hit | None:
        """The entry stored under `key`."""
        blob = await self.backend.get(key)
        response = None if blob is None else self._decoded(blob)
        return None if response is None else Hit(response=response, key=key)

    async def semantic_hit(
        self, scope: str, question: str, vector: np.ndarray, threshold: float
    ) -> tuple[Hit | None, float | None]:
        """The most similar live question in `scope` at or above `threshold`, and the
        similarity of the nearest question there (a miss's record tells it)."""
        candidates = self._candidates(await self.backend.vectors(scope))
        wanted = details(question)
        ranked = sorted(
            # A vector of another size (a corrupted one) is no candidate, not an error.
            (
                (float(np.dot(vector, c.vector)), c)
                for c in candidates
                if c.vector.shape == vector.shape
            ),
            key=lambda p: -p[0],
        )
        nearest = ranked[0][0] if ranked else None
        for similarity, candidate in ranked:
            if similarity < threshold:
                break
            if details(candidate.text) != wanted:
                continue
            blob = await self.backend.get(candidate.key)
            response = None if blob is None else self._decoded(blob)
            if response is not None:
                hit = Hit(
                    response=response,
                    key=candidate.key,
                    similarity=similarity,
                    matched=candidate.text,
                )
                return hit, nearest
        return None, nearest

    def storable(self, response: ChatResponse) -> bytes | None:
        """The bytes to store, or None when this response must not be cached."""
        if any(c.finish_reason == FinishReason.CONTENT_FILTER for c in response.choices):
            return None
        if downgraded(response):
            # A cheaper node answered while a budget was spent: stored under this node's
            # identity, it would still be served once the budget recovers. The node it went to
            # caches it under its own identity, if that node is cached.
            return None
        blob = cache_codec.encode(response)
        return None if len(blob) > self.max_entry_bytes else blob

    async def leave_loop(self) -> None:
        """The running event loop is ending: the backend closes its connections on it."""
        await self.backend.leave_loop()

    async def aclose(self) -> None:
        """Close the backend."""
        await self.backend.aclose()


class Cached(Decoration):
    """Serves `inner`'s answers from the cache when the request allows it."""

    def __init__(
        self,
        inner: Model,
        *,
        cache: ResponseCache,
        who: str,
        semantic: SemanticPolicy | None = None,
    ) -> None:
        super().__init__(inner)
        self.cache = cache
        self.who = who
        """The identity of what answers (`cache_keys.identity`): part of every key."""
        self.semantic = semantic

    def worst_case_cost(self, request: ChatRequest) -> float:
        """The inner node's bound (a hit only lowers it)."""
        return cost_bound(self.inner, request)

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        out["cache"] = "exact+semantic" if self.semantic else "exact"
        return out

    async def _embed(self, request: ChatRequest) -> tuple[np.ndarray, Decision]:
        assert self.semantic is not None
        vector, embedded = await embed_one(
            self.semantic.embedder, request, request.last_user_text, what="the question to look up"
        )
        unit = np.asarray(vector, dtype=np.float32)
        return unit / (float(np.linalg.norm(unit)) or 1.0), embedded

    async def _lookup(
        self, request: ChatRequest, serve: bool
    ) -> tuple[str, Hit | None, tuple[str, np.ndarray] | None, _Looked | None]:
        """The exact key, a hit if any (when it may `serve` one), the semantic (scope, vector)
        to store under, and what a semantic lookup paid and found."""
        key = exact_key(request, self.who)
        if not serve:
            # Answered afresh and stored over the exact entry; a question vector already
            # pointing at it finds the new answer, and no embedding is paid for.
            return key, None, None, None
        if self.cache.exact:
            hit = await self.cache.exact_hit(key)
            if hit is not None:
                return key, hit, None, None
        if self.semantic is None or self.semantic.refuses(request) is not None:
            return key, None, None, None
        vector, embedded = await self._embed(request)
        scope = semantic_scope(request, self.who, self.semantic.space)
        hit, nearest = await self.cache.semantic_hit(
            scope, request.last_user_text, vector, self.semantic.threshold
        )
        return key, hit, (scope, vector), _Looked(embedded=embedded, nearest=nearest)

    def _served(self, hit: Hit, looked: _Looked | None, started: float) -> ChatResponse:
        original = hit.response
        embedded = looked.embedded if looked is not None else None
        cost = embedded.cost if embedded is not None else 0.0
        kind = "exact" if hit.similarity is None else "semantic"
        reason = f"{kind} cache hit"
        details: dict[str, object] = {
            "hit": True,
            "match": kind,
            "saved": original.cost,
            "cached_id": original.id,
            "key": hit.key[:16],
        }
        if hit.similarity is not None:
            reason += f" (similarity {hit.similarity:.3f})"
            details["similarity"] = round(hit.similarity, 4)
            details["matched"] = hit.matched
        log.info(
            "%s: %s, saved $%.6f (answer of %s)", self.name, reason, original.cost, original.model
        )
        decision = Decision(
            node=self.name,
            kind="cache",
            chosen=original.model,
            reason=reason,
            latency_ms=elapsed_ms(started),
            cost=cost,
            # The lookup's embedding, billed to its embedder (a hit called no model).
            children=(embedded,) if embedded is not None else (),
            details=details,
        )
        return replace(
            original,
            id=f"cache-{uuid.uuid4().hex[:20]}",
            usage=Usage(),
            cost=cost,
            created=int(time.time()),
            decision=decision,
        )

    def _missed(
        self,
        inner: Decision | None,
        looked: _Looked,
        started: float,
        *,
        cost: float,
        chosen: str | None = None,
        error: str | None = None,
    ) -> Decision:
        """The record of a semantic lookup that found nothing close enough: its embedding, then
        what `inner` did, so the spend ledger and the metrics bill the embedding to its
        embedder, not to the model that answered."""
        assert self.semantic is not None
        threshold = self.semantic.threshold
        embedded = looked.embedded
        reason = f"semantic cache miss: no question at similarity >= {threshold:g}"
        details: dict[str, object] = {"hit": False, "match": "semantic"}
        if looked.nearest is None:
            reason += " (none stored in scope yet)"
        else:
            # How near the nearest came: what tuning the threshold on real traffic needs.
            reason += f"; the nearest was at {looked.nearest:.3f}"
            details["nearest"] = round(looked.nearest, 4)
        return Decision(
            node=self.name,
            kind=CACHE_MISS,
            chosen=chosen,
            reason=reason,
            latency_ms=elapsed_ms(started),
            cost=cost,
            error=error,
            children=(embedded,) if inner is None else (embedded, inner),
            details=details,
        )

    def _answered(self, response: ChatResponse, looked: _Looked, started: float) -> ChatResponse:
        """`response` after a semantic miss, costing its embedding too, and recording it."""
        cost = response.cost + looked.embedded.cost
        decision = self._missed(
            response.decision, looked, started, cost=cost, chosen=response.model
        )
        return replace(response, cost=cost, decision=decision)

    def _failed(self, error: ModelError, looked: _Looked, started: float) -> None:
        """Make `error`, raised after a semantic miss, cost its embedding too, and record it."""
        error.cost += looked.embedded.cost
        error.decision = self._missed(
            error.decision, looked, started, cost=error.cost, error=f"{error.kind}: {error}"
        )

    async def _store(
        self,
        key: str,
        semantic: tuple[str, np.ndarray] | None,
        request: ChatRequest,
        response: ChatResponse,
    ) -> None:
        blob = self.cache.storable(response)
        if blob is None:
            return
        await self.cache.backend.put(key, blob, self.cache.ttl)
        if semantic is not None:
            scope, vector = semantic
            packed = pack_vector(request.last_user_text, vector)
            await self.cache.backend.add_vector(scope, key, packed, self.cache.ttl)

    async def _counted(self, hit: Hit | None) -> None:
        """Count a lookup in the cache's stats, and tell the request's scope what the first
        lookup found (`RequestScope.cache_found`)."""
        scope = request_scope.current()
        if scope is not None and scope.cache_found is None:
            scope.cache_found = (hit is not None, hit.similarity if hit else None)
        await self.cache.backend.count(hit=hit is not None, saved=hit.response.cost if hit else 0)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        serve, store = self.cache.uses(request)
        if not store:
            return await self.inner.complete(request)
        key, hit, semantic, looked = await self._lookup(request, serve)
        if serve:
            await self._counted(hit)
        if hit is not None:
            return self._served(hit, looked, started)
        if looked is None:
            response = await self.inner.complete(request)
            await self._store(key, semantic, request, response)
            return response
        try:
            response = await self.inner.complete(request)
        except ModelError as exc:
            self._failed(exc, looked, started)
            raise
        await self._store(key, semantic, request, response)
        return self._answered(response, looked, started)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        serve, store = self.cache.uses(request)
        if not store:
            async for chunk in self.inner.stream(request):
                yield chunk
            return
        key, hit, semantic, looked = await self._lookup(request, serve)
        if serve:
            await self._counted(hit)
        if hit is not None:
            scope = request_scope.current()
            if scope is not None:
                scope.cache_hit = True  # a replay cut short cost nothing (see Accounted)
            for chunk in response_chunks(self._served(hit, looked, started)):
                yield chunk
            return
        try:
            async for chunk in self.inner.stream(request):
                if chunk.response is not None:
                    # Only a stream that finished whole reaches here: a cut one raised instead.
                    await self._store(key, semantic, request, chunk.response)
                    if looked is not None:
                        response = self._answered(chunk.response, looked, started)
                        chunk = replace(chunk, response=response)
                yield chunk
        except ModelError as exc:
            if looked is not None:
                self._failed(exc, looked, started)
            raise
