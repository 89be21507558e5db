"""Cascade confidence estimators: each runs a stage's Model its own way (asking for logprobs,
sampling k answers, asking other Models too) and says how sure the answer is, in [0, 1].

A confidence of None means "unknown" and never clears a threshold: a stage whose answer cannot
be scored escalates, and the decision says why. The arithmetic lives in `confidence.py`. This
module holds the base and the estimators that score one answer; those that read agreement among
several (k samples of the stage, or other Models) are in `estimators_agreement.py`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from modelyard.errors import ModelError, ModelTimeoutError
from modelyard.functions import SHARED_THREADS, FunctionThreads, call_function, unit_value
from modelyard.model import Model
from modelyard.patterns.confidence import (
    mean_token_probability,
    min_token_probability,
    parse_verdict,
)
from modelyard.patterns.learned import answer_text
from modelyard.patterns.records import answered, derived, failed, fill, filled_size
from modelyard.patterns.routing import TrainedPredictor, embedder_failed
from modelyard.resilience.deadline import by_deadline
from modelyard.types import ChatRequest, ChatResponse, Decision

VERIFIER_PROMPT = (
    "Check an answer.\n\nRequest:\n{input}\n\nAnswer:\n{output}\n\n"
    "Is the answer correct and complete? Reply with yes or no, or a score from 0 to 1."
)


@dataclass(frozen=True, slots=True)
class Estimate:
    """A stage's answer (or its failure) with a confidence and what producing them cost."""

    response: ChatResponse | None
    error: ModelError | None
    confidence: float | None
    reason: str
    cost: float
    children: tuple[Decision, ...]


class Estimator(abc.ABC):
    """Runs a stage and scores its answer."""

    kind: str
    needs_logprobs = False

    def describe(self) -> str:
        """The estimator in a few words, for `modelyard check`."""
        return self.kind

    def models(self) -> Sequence[Model]:
        """Other Models this estimator calls."""
        return ()

    def contenders(self) -> Sequence[Model]:
        """Those of `models()` that answer the request itself (an agreement check's), not
        ones that read the stage's answer (a verifier)."""
        return ()

    def worst_case_cost(self, model: Model, request: ChatRequest) -> float:
        """The most the stage's call and this estimator's own calls can cost (budgets reserve
        it): each model once, on the request, unless the estimator says otherwise."""
        from modelyard.cost.bounds import cost_bound

        return cost_bound(model, request) + sum(cost_bound(m, request) for m in self.models())

    async def run(self, model: Model, request: ChatRequest) -> Estimate:
        """Ask `model` and estimate the confidence of its answer."""
        try:
            response = await model.complete(self.prepare(request))
        except ModelError as exc:
            return Estimate(
                None, exc, None, f"failed ({exc.kind})", exc.cost, (failed(model, exc),)
            )
        confidence, reason, cost, extra = await self.score(request, response)
        return Estimate(
            self.finish(request, response),
            None,
            confidence,
            reason,
            response.cost + cost,
            (answered(model, response), *extra),
        )

    def prepare(self, request: ChatRequest) -> ChatRequest:
        """The request as this estimator needs it sent."""
        return request

    def finish(self, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        """The answer as the caller should get it, without what only the estimator asked for."""
        return response

    async def score(
        self, request: ChatRequest, response: ChatResponse
    ) -> tuple[float | None, str, float, tuple[Decision, ...]]:
        """(confidence, reason, extra cost, extra attempt records) for an answer."""
        raise NotImplementedError


class LogprobEstimator(Estimator):
    """The mean (or least) probability of the answer's tokens; asks the stage for logprobs."""

    kind = "logprob"
    needs_logprobs = True

    def __init__(self, reduce: str = "mean") -> None:
        self.reduce = reduce
        self._reduce = mean_token_probability if reduce == "mean" else min_token_probability

    def describe(self) -> str:
        return f"logprob ({self.reduce} token probability)"

    def prepare(self, request: ChatRequest) -> ChatRequest:
        return request if request.logprobs else replace(request, logprobs=True)

    def finish(self, request: ChatRequest, response: ChatResponse) -> ChatResponse:
        if request.logprobs:
            return response
        choices = tuple(replace(choice, logprobs=None) for choice in response.choices)
        return replace(response, choices=choices)

    async def score(
        self, request: ChatRequest, response: ChatResponse
    ) -> tuple[float | None, str, float, tuple[Decision, ...]]:
        tokens = response.choices[0].logprobs
        value = self._reduce(tokens) if tokens else None
        if value is None:
            return None, "the answer came without token logprobs", 0.0, ()
        return value, f"{self.reduce} token probability {value:.3f}", 0.0, ()


class OwnConfidenceEstimator(Estimator):
    """The answering Model's own `response.confidence`."""

    kind = "confidence"

    def describe(self) -> str:
        return "the model's own confidence"

    async def score(
        self, request: ChatRequest, response: ChatResponse
    ) -> tuple[float | None, str, float, tuple[Decision, ...]]:
        value = response.confidence
        if value is None:
            return None, "the model gave no confidence", 0.0, ()
        return value, f"own confidence {value:.3f}", 0.0, ()


class VerifierEstimator(Estimator):
    """A verifier Model's verdict on the answer (yes/no or a score)."""

    kind = "verifier"

    def __init__(self, verifier: Model, prompt: str | None = None) -> None:
        self.verifier = verifier
        self.prompt = prompt or VERIFIER_PROMPT

    def describe(self) -> str:
        return f"verifier {self.verifier.name}"

    def models(self) -> Sequence[Model]:
        return (self.verifier,)

    def worst_case_cost(self, model: Model, request: ChatRequest) -> float:
        from modelyard.cost.bounds import cost_bound, output_bytes_bound, reading

        question = len(request.last_user_text.encode("utf-8"))
        sizes = {"input": question, "output": output_bytes_bound(model, request)}
        read = reading(request, filled_size(self.prompt, sizes), helper=True)  # reads the answer
        return cost_bound(model, request) + cost_bound(self.verifier, read)

    async def score(
        self, request: ChatRequest, response: ChatResponse
    ) -> tuple[float | None, str, float, tuple[Decision, ...]]:
        text = fill(self.prompt, {"input": request.last_user_text, "output": response.text})
        try:
            verdict = await self.verifier.complete(derived(request, text))
        except ModelError as exc:
            why = f"verifier {self.verifier.name} failed ({exc.kind})"
            return None, why, exc.cost, (failed(self.verifier, exc),)
        value = parse_verdict(verdict.text)
        record = (answered(self.verifier, verdict),)
        if value is None:
            said = verdict.text.strip()[:40]
            return None, f"verifier said {said!r}: no score", verdict.cost, record
        return value, f"verifier score {value:.3f}", verdict.cost, record


class CallableEstimator(Estimator):
    """A Python function `(request, response) -> float in [0, 1]` (sync or async)."""

    kind = "callable"

    def __init__(
        self, function: Callable[..., Any], label: str, *, threads: FunctionThreads = SHARED_THREADS
    ) -> None:
        self.function = function
        self.label = label
        self.threads = threads

    def describe(self) -> str:
        return f"callable {self.label}"

    async def score(
        self, request: ChatRequest, response: ChatResponse
    ) -> tuple[float | None, str, float, tuple[Decision, ...]]:
        try:
            call = call_function(self.function, request, response, threads=self.threads)
            value = await by_deadline(call, request, self.label, "before it gave a score")
        except ModelTimeoutError:  # cut, so the answer it was scoring is kept in the record
            return None, f"{self.label} gave no score before the deadline", 0.0, ()
        except Exception as exc:  # a user's function: any failure means "not sure"
            return None, f"{self.label} raised {type(exc).__name__}: {exc}", 0.0, ()
        score = unit_value(value, bools=False)
        if score is None:
            return None, f"{self.label} returned {value!r}, not a number in [0, 1]", 0.0, ()
        return score, f"{self.label} gave {score:.3f}", 0.0, ()


class LearnedEstimator(Estimator):
    """A predictor trained on recorded answers (`modelyard train --features answer`) gives
    P(correct) of the stage's answer from the embedded prompt and answer."""

    kind = "learned"

    def __init__(self, trained: TrainedPredictor, candidate: str, column: int) -> None:
        self.trained = trained
        self.embedder = trained.embedder
        self.candidate = candidate
        self.column = column

    def describe(self) -> str:
        folds = self.trained.folds
        crossed = f", cross-fitted in {folds} folds" if folds else ""
        signals = self.trained.signals
        read = f" + {signals.name} signals" if signals else ""
        return f"learned check of {self.candidate} ({self.embedder.name}{read}{crossed})"

    async def score(
        self, request: ChatRequest, response: ChatResponse
    ) -> tuple[float | None, str, float, tuple[Decision, ...]]:
        text = answer_text(request.last_user_text, response.text)
        try:
            predicted, embedded = await self.trained.predict(
                request, text, what="the answer", answer=response.text
            )
        except ModelError as exc:
            reason = f"embedder {self.embedder.name} failed ({exc.kind})"
            return None, reason, exc.cost, (embedder_failed(self.embedder, exc),)
        if isinstance(predicted, str):
            return None, predicted, embedded.cost, (embedded,)
        p = float(predicted[self.column])
        return p, f"learned P(correct) {p:.3f}", embedded.cost, (embedded,)
