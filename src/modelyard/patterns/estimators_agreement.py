"""Cascade confidence estimators that read agreement: among k samples of the stage
(`SamplesEstimator`, whose answer is the majority sample) or between the stage and other Models
(`AgreementEstimator`, asked together or in turn).

The base `Estimator` and those that score one answer are in `estimators.py`; the arithmetic
(`majority`, `agreement`) lives in `confidence.py`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import replace

from modelyard.errors import ModelError
from modelyard.model import Model
from modelyard.patterns.confidence import agreement, majority
from modelyard.patterns.estimators import Estimate, Estimator
from modelyard.patterns.normalise import Normaliser
from modelyard.patterns.records import answered, failed, restamp
from modelyard.types import ChatRequest, ChatResponse


class SamplesEstimator(Estimator):
    """Agreement among k samples of the stage; the answer is the majority sample."""

    kind = "samples"

    def __init__(
        self, k: int, normalise: Normaliser, *, via: str = "calls", temperature: float | None
    ) -> None:
        self.k = k
        self.normalise = normalise
        self.via = via
        self.temperature = temperature

    def describe(self) -> str:
        return f"agreement of {self.k} samples ({self.via})"

    def worst_case_cost(self, model: Model, request: ChatRequest) -> float:
        from modelyard.cost.bounds import cost_bound

        return self.k * cost_bound(model, request)  # k calls, or one call of k choices

    def _sampling(self, request: ChatRequest) -> ChatRequest:
        if self.temperature is None or request.temperature is not None:
            return request
        return replace(request, temperature=self.temperature)

    async def run(self, model: Model, request: ChatRequest) -> Estimate:
        if self.via == "n":
            return await self._one_call(model, replace(self._sampling(request), n=self.k))
        sampling = self._sampling(request)
        results = await asyncio.gather(*(_attempt(model, sampling) for _ in range(self.k)))
        responses = [r for r in results if isinstance(r, ChatResponse)]
        cost = sum(r.cost for r in results)
        children = tuple(
            answered(model, r) if isinstance(r, ChatResponse) else failed(model, r) for r in results
        )
        if not responses:
            first = next(r for r in results if isinstance(r, ModelError))
            return Estimate(None, first, None, f"all {self.k} samples failed", cost, children)
        keys = [self.normalise(r.text) if isinstance(r, ChatResponse) else None for r in results]
        winner, share = majority(keys)
        chosen = next(
            (r for r, k in zip(results, keys, strict=True) if k == winner and k is not None),
            responses[0],
        )
        assert isinstance(chosen, ChatResponse)
        reason = _sample_reason(winner, share, self.k)
        return Estimate(chosen, None, share, reason, cost, children)

    async def _one_call(self, model: Model, request: ChatRequest) -> Estimate:
        try:
            response = await model.complete(request)
        except ModelError as exc:
            return Estimate(
                None, exc, None, f"failed ({exc.kind})", exc.cost, (failed(model, exc),)
            )
        keys = [self.normalise(c.message.text) for c in response.choices]
        keys += [None] * max(0, self.k - len(keys))
        winner, share = majority(keys)
        index = next((i for i, k in enumerate(keys) if k == winner and k is not None), 0)
        choice = replace(response.choices[index], index=0)
        chosen = restamp(
            response, cost=response.cost, decision=answered(model, response), choices=(choice,)
        )
        reason = _sample_reason(winner, share, self.k)
        return Estimate(chosen, None, share, reason, response.cost, (answered(model, response),))


def _sample_reason(winner: str | None, share: float, k: int) -> str:
    if winner is None:
        return f"none of {k} samples could be read"
    return f"{round(share * k)} of {k} samples agree on {winner[:30]!r}"


class AgreementEstimator(Estimator):
    """The share of Models (the stage and `others`) giving the stage's answer.

    Asked together by default. With `in_turn_until` (the stage's threshold) the others are
    asked one at a time, in order, and asking stops once the share clears that threshold or
    can no longer reach it: the decision is the same, and the calls not made are not paid
    for. The confidence then counts the Models not asked as disagreeing (a lower bound).
    """

    kind = "agreement"

    def __init__(
        self,
        others: Sequence[Model],
        normalise: Normaliser,
        *,
        in_turn_until: float | None = None,
    ) -> None:
        self.others = tuple(others)
        self.normalise = normalise
        self.in_turn_until = in_turn_until

    def describe(self) -> str:
        names = ", ".join(m.name for m in self.others)
        in_turn = " (asked in turn)" if self.in_turn_until is not None else ""
        return f"agreement with {names}{in_turn}"

    def models(self) -> Sequence[Model]:
        return self.others

    def contenders(self) -> Sequence[Model]:
        return self.others

    async def run(self, model: Model, request: ChatRequest) -> Estimate:
        if self.in_turn_until is not None:
            return await self._in_turn(model, request, self.in_turn_until)
        everyone = (model, *self.others)
        results = await asyncio.gather(*(_attempt(m, request) for m in everyone))
        cost = sum(r.cost for r in results)
        children = tuple(
            answered(m, r) if isinstance(r, ChatResponse) else failed(m, r)
            for m, r in zip(everyone, results, strict=True)
        )
        own = results[0]
        if isinstance(own, ModelError):
            return Estimate(None, own, None, f"failed ({own.kind})", cost, children)
        keys = [self.normalise(r.text) if isinstance(r, ChatResponse) else None for r in results]
        share = agreement(keys, keys[0])
        agreeing = sum(1 for k in keys if k is not None and k == keys[0])
        reason = f"{agreeing} of {len(keys)} models agree"
        return Estimate(own, None, share, reason, cost, children)

    async def _in_turn(self, model: Model, request: ChatRequest, until: float) -> Estimate:
        own = await _attempt(model, request)
        if isinstance(own, ModelError):
            return Estimate(
                None, own, None, f"failed ({own.kind})", own.cost, (failed(model, own),)
            )
        total = 1 + len(self.others)
        key = self.normalise(own.text)
        cost, children = own.cost, [answered(model, own)]
        if key is None:  # nothing can agree with an answer that cannot be read
            reason = f"the answer could not be read; none of {len(self.others)} others asked"
            return Estimate(own, None, 0.0, reason, cost, tuple(children))
        agreeing = 1
        for asked, other in enumerate(self.others):
            if agreeing / total >= until or (agreeing + len(self.others) - asked) / total < until:
                break
            result = await _attempt(other, request)
            cost += result.cost
            if isinstance(result, ModelError):
                children.append(failed(other, result))
                continue
            children.append(answered(other, result))
            agreeing += self.normalise(result.text) == key
        reason = f"{agreeing} of {total} models agree ({len(children)} asked in turn)"
        return Estimate(own, None, agreeing / total, reason, cost, tuple(children))


async def _attempt(model: Model, request: ChatRequest) -> ChatResponse | ModelError:
    try:
        return await model.complete(request)
    except ModelError as exc:
        return exc
