"""The router's policies that call something: a classifier Model, an embedder for semantic
routes, an embedder plus a trained predictor for learned cost-quality routing.

Each returns a `RouteChoice`: the route (or None for "not decided: use the default"), every
candidate's score, the threshold that decided, the reason in words, and what it spent.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.cost.metering import embed, embed_one
from modelyard.cost.prices import Price, estimate_input_tokens
from modelyard.errors import ModelError
from modelyard.loops import Slots
from modelyard.model import Embedder, Model
from modelyard.patterns.learned import Array, OutOfFold, Predictor, predict_vector, utilities
from modelyard.patterns.normalise import LabelReader
from modelyard.patterns.records import ScoreVector, answered, failed, since_ms
from modelyard.patterns.semantic import Match, SemanticIndex
from modelyard.patterns.signals import SignalSet
from modelyard.types import ChatRequest, Decision, EmbeddingRequest, Usage

_NO_SCORES: Mapping[str, float] = {}


@dataclass(frozen=True, slots=True)
class RouteChoice:
    """What a routing policy decided, and why."""

    route: str | None
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    threshold: float | None = None
    cost: float = 0.0
    children: tuple[Decision, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)


class RoutePolicy(abc.ABC):
    """Picks a route for a request, or declines (route None) so the default answers."""

    kind: str

    @abc.abstractmethod
    async def choose(self, request: ChatRequest) -> RouteChoice:
        """The route for `request`, with scores and the reason."""

    @abc.abstractmethod
    def describe(self) -> dict[str, object]:
        """Settings worth showing in `modelyard check`."""

    def models(self) -> Sequence[Model]:
        """Models the policy calls (shown as children of the router)."""
        return ()


class ClassifierPolicy(RoutePolicy):
    """Route to the label a classifier Model answers with, when it is confident enough."""

    kind = "classifier"

    def __init__(self, model: Model, routes: Sequence[str], min_confidence: float) -> None:
        self.model = model
        self.reader = LabelReader(routes)
        self.min_confidence = min_confidence

    def models(self) -> Sequence[Model]:
        return (self.model,)

    def describe(self) -> dict[str, object]:
        return {"classifier": self.model.name, "min_confidence": self.min_confidence}

    async def choose(self, request: ChatRequest) -> RouteChoice:
        try:
            response = await self.model.complete(request)
        except ModelError as exc:
            return RouteChoice(
                route=None,
                reason=f"classifier {self.model.name} failed ({exc.kind})",
                cost=exc.cost,
                children=(failed(self.model, exc),),
            )
        children = (answered(self.model, response),)
        label = self.reader.read(response.text)
        confidence = response.confidence
        said = response.text.strip()[:60]
        if label is None:
            return RouteChoice(
                route=None,
                reason=f"classifier answered {said!r}, which names no route",
                cost=response.cost,
                children=children,
            )
        scores = {label: confidence} if confidence is not None else _NO_SCORES
        verdict = confidence_verdict(confidence, self.min_confidence)
        return RouteChoice(
            route=label if verdict.accepted else None,
            reason=f"classifier said {label!r}; {verdict.words}",
            scores=scores,
            threshold=self.min_confidence,
            cost=response.cost,
            children=children,
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    """Whether a confidence clears a threshold, and the comparison in words."""

    accepted: bool
    words: str


def confidence_verdict(confidence: float | None, threshold: float) -> Verdict:
    """Compare a (possibly missing) confidence with a threshold; missing passes only 0."""
    if confidence is None:
        if threshold <= 0:
            return Verdict(True, "no confidence given, none required")
        return Verdict(False, f"no confidence given, {threshold:g} required")
    if confidence >= threshold:
        return Verdict(True, f"confidence {confidence:.3f} >= {threshold:g}")
    return Verdict(False, f"confidence {confidence:.3f} < {threshold:g}")


@dataclass(frozen=True, slots=True)
class TrainedPredictor:
    """An artifact's predictor behind its embedder: P(success) per candidate for one text."""

    embedder: Embedder
    predictor: Predictor
    dimensions: int | None = None
    out_of_fold: OutOfFold | None = None
    signals: SignalSet | None = None
    """Answer signals the predictor reads after the embedding (a learned check's)."""

    @property
    def folds(self) -> int:
        """How many folds the artifact was cross-fitted in (0: not cross-fitted)."""
        return self.out_of_fold.folds if self.out_of_fold is not None else 0

    async def predict(
        self,
        request: ChatRequest,
        text: str,
        *,
        what: str = "the last user message",
        answer: str = "",
    ) -> tuple[Array | str, Decision]:
        """P(success) per candidate (or why there is none: the embedder's vectors do not fit
        the artifact) and the record of how it was got; `answer` is what the signals read. A
        text the artifact was cross-fitted on is answered out of fold, without embedding it.
        Raises ModelError when the embedder fails."""
        if self.out_of_fold is not None:
            known = self.out_of_fold.lookup(text)
            if known is not None:
                return known, Decision(
                    node=self.embedder.name,
                    kind="embedder",
                    reason=f"out-of-fold prediction: {what} is a training text "
                    f"(predicted by the fit of the {self.folds - 1} folds without it)",
                    details={"out_of_fold": True},
                )
        # Counted when cross-fitted, so a report shows the share predicted out of fold.
        details = {"out_of_fold": False} if self.out_of_fold is not None else None
        vector, embedded = await embed_one(self.embedder, request, text, what=what, details=details)
        signals = self.signals(answer) if self.signals is not None else ()
        try:
            return predict_vector(self.predictor, vector, self.dimensions, signals), embedded
        except ValueError as exc:
            return str(exc), embedded


def embedder_failed(embedder: Embedder, exc: ModelError) -> Decision:
    """The decision record of an embedding call that failed."""
    return Decision(
        node=embedder.name,
        kind="embedder",
        reason="failed",
        error=f"{exc.kind}: {exc}",
        cost=exc.cost,
    )


def _embedder_failed(embedder: Embedder, exc: ModelError) -> RouteChoice:
    return RouteChoice(
        route=None,
        reason=f"embedder {embedder.name} failed ({exc.kind})",
        cost=exc.cost,
        children=(embedder_failed(embedder, exc),),
    )


class SemanticPolicy(RoutePolicy):
    """Route to the route whose example utterances are most similar, above a threshold."""

    kind = "semantic"

    def __init__(
        self,
        embedder: Embedder,
        index: SemanticIndex | None,
        threshold: float,
        *,
        examples: Mapping[str, Sequence[str]] | None = None,
        match: Match = "nearest",
    ) -> None:
        if index is None and not examples:
            raise ValueError("give the example matrix, or the examples to embed at first use")
        self.embedder = embedder
        self.index = index
        self.threshold = threshold
        self.examples = examples
        self.match: Match = index.match if index is not None else match
        self._lock = Slots(1)  # its callers may run on several event loops (threads)
        self._index_of = {route: i for i, route in enumerate(index.routes)} if index else {}

    def describe(self) -> dict[str, object]:
        routes = self.index.routes if self.index is not None else tuple(self.examples or ())
        return {
            "embedder": self.embedder.name,
            "threshold": self.threshold,
            "match": self.match,
            "routes": ", ".join(routes),
        }

    async def _ready(self) -> tuple[SemanticIndex, Decision | None]:
        """The example matrix, embedded on first use when it could not be at build, and the
        record of that embedding when this call made it: the request that needed it pays for
        it, as a classifier's or a retriever's first request pays for its examples."""
        if self.index is not None:
            return self.index, None
        async with self._lock:
            if self.index is not None:  # another request embedded them meanwhile
                return self.index, None
            assert self.examples is not None
            started = time.perf_counter()
            routes = list(self.examples)
            matrices = []
            cost = 0.0
            for route in routes:
                response = await embed(
                    self.embedder, EmbeddingRequest(inputs=tuple(self.examples[route]))
                )
                cost += response.cost
                matrices.append(np.asarray(response.vectors, dtype=np.float64))
            self.index = SemanticIndex(routes, matrices, self.match)
            self._index_of = {route: i for i, route in enumerate(routes)}
        count = sum(len(texts) for texts in self.examples.values())
        built = Decision(
            node=self.embedder.name,
            kind="embedder",
            reason=f"embedded the routes' {count} examples (first use)",
            latency_ms=since_ms(started),
            cost=cost,
        )
        return self.index, built

    async def choose(self, request: ChatRequest) -> RouteChoice:
        try:
            vector, embedded = await embed_one(self.embedder, request, request.last_user_text)
        except ModelError as exc:
            return _embedder_failed(self.embedder, exc)
        try:
            index, built = await self._ready()
        except ModelError as exc:
            return _embedder_failed(self.embedder, exc)
        children = (embedded,) if built is None else (built, embedded)
        cost = sum(child.cost for child in children)
        if len(vector) != index.dimensions:
            return RouteChoice(
                route=None,
                reason=f"embedder gave {len(vector)} dimensions, the examples have "
                f"{index.dimensions}",
                cost=cost,
                children=children,
            )
        i, best, scores = index.best(vector)
        route = index.routes[i]
        vector_scores = ScoreVector(index.routes, scores, self._index_of)
        if best >= self.threshold:
            reason = f"most similar to {route!r}: {best:.3f} >= threshold {self.threshold:g}"
            chosen: str | None = route
        else:
            reason = f"best similarity {best:.3f} ({route!r}) < threshold {self.threshold:g}"
            chosen = None
        return RouteChoice(
            route=chosen,
            reason=reason,
            scores=vector_scores,
            threshold=self.threshold,
            cost=cost,
            children=children,
        )


@dataclass(frozen=True, slots=True)
class CandidateCosts:
    """Per-candidate cost estimates: recorded means where known, else the price table's
    estimate for this request's input and an expected output length."""

    recorded: np.ndarray
    missing: np.ndarray
    prices: Sequence[Price]
    expected_output_tokens: int

    def for_request(self, request: ChatRequest) -> np.ndarray:
        """USD per candidate for `request` (a long prompt at its long-context rates)."""
        if not self.missing.any():
            return self.recorded
        usage = Usage(
            input_tokens=estimate_input_tokens(request),
            output_tokens=self.expected_output_tokens,
            estimated=True,
        )
        estimate = np.array([price.cost(usage) for price in self.prices])
        return np.where(self.missing, estimate, self.recorded)


class LearnedPolicy(RoutePolicy):
    """Route to the argmax of predicted P(success) − λ·cost over the candidates."""

    kind = "learned"

    def __init__(
        self,
        trained: TrainedPredictor,
        candidates: Sequence[str],
        costs: CandidateCosts,
        cost_weight: float,
        method: str,
    ) -> None:
        self.trained = trained
        self.embedder = trained.embedder
        self.candidates = tuple(candidates)
        self.costs = costs
        self.cost_weight = cost_weight
        self.method = method
        self._index_of = {c: i for i, c in enumerate(self.candidates)}

    def describe(self) -> dict[str, object]:
        return {
            "embedder": self.embedder.name,
            "method": self.method,
            "lambda": self.cost_weight,
            "candidates": len(self.candidates),
            **({"cross_fitted": self.trained.folds} if self.trained.folds else {}),
        }

    async def choose(self, request: ChatRequest) -> RouteChoice:
        try:
            p, embedded = await self.trained.predict(request, request.last_user_text)
        except ModelError as exc:
            return _embedder_failed(self.embedder, exc)
        if isinstance(p, str):
            return RouteChoice(route=None, reason=p, children=(embedded,))
        cost = self.costs.for_request(request)
        scores = utilities(p, cost, self.cost_weight)
        i = int(np.argmax(scores))
        route = self.candidates[i]
        top = float(cost.max())
        relative = float(cost[i] / top) if top > 0 else 0.0
        reason = (
            f"highest P(success) - lambda*cost: {route!r} "
            f"{float(p[i]):.3f} - {self.cost_weight:g}*{relative:.3f} = {float(scores[i]):.3f}"
        )
        names, index = self.candidates, self._index_of
        return RouteChoice(
            route=route,
            reason=reason,
            scores=ScoreVector(names, scores, index),
            cost=embedded.cost,
            children=(embedded,),
            details={
                "p_success": ScoreVector(names, p, index),
                "cost_usd": ScoreVector(names, cost, index),
                "lambda": self.cost_weight,
            },
        )
