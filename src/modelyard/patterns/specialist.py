"""Specialist-generalist: a classifier names the request's type; the specialist for that type
answers when there is one and the classifier is confident enough, otherwise the generalist.
Adding a specialist is a config change: a new key under `specialists`."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence

from modelyard.errors import ModelError
from modelyard.model import Model, ModelInfo
from modelyard.patterns.normalise import LabelReader
from modelyard.patterns.records import (
    answered,
    common_capabilities,
    failed,
    raise_with,
    restamp,
    since_ms,
)
from modelyard.patterns.routing import RouteChoice, confidence_verdict
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision


class SpecialistModel(Model):
    """Answers with `specialists[label]` when the classifier is sure enough, else `generalist`."""

    def __init__(
        self,
        name: str,
        classifier: Model,
        specialists: Mapping[str, Model],
        generalist: Model,
        *,
        min_confidence: float = 0.0,
        deadline: float | None = None,
    ) -> None:
        self.classifier = classifier
        self.specialists = dict(specialists)
        self.generalist = generalist
        self.min_confidence = min_confidence
        self.deadline = deadline
        self.reader = LabelReader(self.specialists)
        answerers = [*self.specialists.values(), generalist]
        self.info = ModelInfo(
            name=name, kind="specialist", capabilities=common_capabilities(answerers)
        )

    @property
    def children(self) -> Sequence[Model]:
        return (self.classifier, *self.contenders)

    @property
    def contenders(self) -> Sequence[Model]:
        return (*self.specialists.values(), self.generalist)

    def describe(self) -> dict[str, object]:
        return {
            "kind": "specialist",
            "classifier": self.classifier.name,
            "specialists": ", ".join(self.specialists) or "none",
            "generalist": self.generalist.name,
            "min_confidence": self.min_confidence,
        }

    async def pick(self, request: ChatRequest) -> tuple[str, RouteChoice]:
        """The label (or "generalist") chosen for `request`, with why and the classifier's cost."""
        try:
            response = await self.classifier.complete(request)
        except ModelError as exc:
            return "generalist", RouteChoice(
                route=None,
                reason=f"classifier {self.classifier.name} failed ({exc.kind}); generalist",
                cost=exc.cost,
                children=(failed(self.classifier, exc),),
            )
        children = (answered(self.classifier, response),)
        label = self.reader.read(response.text)
        confidence = response.confidence
        said = response.text.strip()[:60]
        if label is None:
            return "generalist", RouteChoice(
                route=None,
                reason=f"classifier said {said!r}: no specialist for it; generalist",
                scores={said: confidence} if confidence is not None else {},
                threshold=self.min_confidence,
                cost=response.cost,
                children=children,
            )
        verdict = confidence_verdict(confidence, self.min_confidence)
        scores = {label: confidence} if confidence is not None else {}
        return (label if verdict.accepted else "generalist"), RouteChoice(
            route=label if verdict.accepted else None,
            reason=f"classifier said {label!r}; {verdict.words}"
            + ("" if verdict.accepted else "; generalist"),
            scores=scores,
            threshold=self.min_confidence,
            cost=response.cost,
            children=children,
        )

    def _target(self, pick: str) -> Model:
        return self.generalist if pick == "generalist" else self.specialists[pick]

    def _decision(
        self,
        pick: str,
        choice: RouteChoice,
        attempt: Decision,
        cost: float,
        started: float,
        error: str | None = None,
    ) -> Decision:
        return Decision(
            node=self.name,
            kind="specialist",
            chosen=self._target(pick).name,
            reason=choice.reason,
            scores=choice.scores,
            threshold=choice.threshold,
            latency_ms=since_ms(started),
            cost=cost,
            error=error,
            children=(*choice.children, attempt),
            details={"label": pick},
        )

    async def complete(self, request: ChatRequest) -> ChatResponse:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        pick, choice = await self.pick(request)
        target = self._target(pick)
        try:
            response = await target.complete(request)
        except ModelError as exc:
            cost = choice.cost + exc.cost
            decision = self._decision(pick, choice, failed(target, exc), cost, started, str(exc))
            raise raise_with(exc, cost=cost, decision=decision) from None
        cost = choice.cost + response.cost
        decision = self._decision(pick, choice, answered(target, response), cost, started)
        return restamp(response, cost=cost, decision=decision)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        started = time.perf_counter()
        if self.deadline is not None:
            request = request.with_budget(self.deadline)
        pick, choice = await self.pick(request)
        target = self._target(pick)
        try:
            async for chunk in target.stream(request):
                if chunk.response is None:
                    yield chunk
                    continue
                response = chunk.response
                cost = choice.cost + response.cost
                decision = self._decision(pick, choice, answered(target, response), cost, started)
                yield Chunk(response=restamp(response, cost=cost, decision=decision))
        except ModelError as exc:
            cost = choice.cost + exc.cost
            decision = self._decision(pick, choice, failed(target, exc), cost, started, str(exc))
            raise raise_with(exc, cost=cost, decision=decision) from None
