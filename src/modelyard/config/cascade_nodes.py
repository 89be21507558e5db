"""Config for the cascade pattern: its stages, and the confidence estimators that decide whether
a stage's answer is kept or the next stage is asked."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    field_validator,
    model_validator,
)

from modelyard.config.base import AtLeast, Spec
from modelyard.config.node_base import (
    ChildNodes,
    FunctionName,
    NodeBase,
    NormaliserName,
    Probability,
    prompt_template,
)

if TYPE_CHECKING:
    from modelyard.config.nodes import NodeSpec  # resolved by the rebuild in nodes.py


class LogprobEstimatorSpec(Spec):
    """Confidence from token log-probabilities: the mean (or the least) token probability."""

    type: Literal["logprob"]
    reduce: Literal["mean", "min"] = "mean"


class SamplesEstimatorSpec(Spec):
    """Confidence = agreement among k samples of the stage; the answer is the majority."""

    type: Literal["samples"]
    k: int = Field(default=3, ge=2, le=20)
    via: Literal["calls", "n"] = "calls"
    """`n`: one request with n=k (cheaper where the provider supports it; refused for a model
    that answers one choice per request, as Anthropic's do); `calls`: k calls."""
    normalise: NormaliserName = "exact"
    temperature: NonNegativeFloat | None = 0.7


class AgreementEstimatorSpec(Spec):
    """Confidence = share of other (cheap) Models that give the stage's answer, stage included."""

    type: Literal["agreement"]
    models: Annotated[
        list[NodeSpec],
        AtLeast(1, "an agreement estimator needs at least one model to compare answers with"),
    ]
    normalise: NormaliserName = "exact"
    ask: Literal["together", "in_turn"] = "together"
    """`in_turn`: one at a time, in the listed order (cheapest first), stopping once the
    stage's threshold is cleared or out of reach: fewer calls, more latency."""


class LearnedEstimatorSpec(Spec):
    """Confidence = P(correct) of the stage's answer from a predictor trained on recorded
    answers (`modelyard train --features answer`)."""

    type: Literal["learned"]
    artifact: str
    """Path of the .npz artifact, relative to this file."""
    embedder: str
    """The embedder the artifact was trained with."""
    candidate: str | None = None
    """The artifact's model this stage is (default: the stage's model name)."""


class VerifierEstimatorSpec(Spec):
    """Confidence = a verifier Model's score (yes/no or a number) for the answer."""

    type: Literal["verifier"]
    model: NodeSpec
    prompt: str | None = None
    """Template with {input} and {output}; a yes/no question by default."""

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, prompt: str | None) -> str | None:
        return prompt_template(prompt, ("input", "output"), "output")


class OwnConfidenceEstimatorSpec(Spec):
    """Confidence = the answering Model's own `response.confidence` (a classifier's
    probability, a retriever's similarity, an ensemble's agreement); a hosted model gives none,
    so it is refused there."""

    type: Literal["confidence"]


class CallableEstimatorSpec(Spec):
    """Confidence = a Python function `(request, response) -> float` (sync ones run in a worker
    thread); one still running at the deadline is abandoned then (no score: the stage
    escalates)."""

    type: Literal["callable"]
    function: FunctionName


EstimatorSpec = Annotated[
    LogprobEstimatorSpec
    | SamplesEstimatorSpec
    | AgreementEstimatorSpec
    | LearnedEstimatorSpec
    | VerifierEstimatorSpec
    | OwnConfidenceEstimatorSpec
    | CallableEstimatorSpec,
    Field(discriminator="type"),
]


class CascadeStageSpec(Spec):
    """One cascade stage: a Model, and (except for the last) when to accept its answer."""

    model: NodeSpec
    threshold: Probability | None = None
    estimator: EstimatorSpec | None = None
    expected_latency: PositiveFloat | None = None
    """Seconds this stage usually takes; it is skipped when less than that is left."""


class CascadeSpec(NodeBase):
    """Ask the cheapest stage first; escalate while the answer's confidence is too low."""

    type: Literal["cascade"]
    stages: Annotated[
        list[CascadeStageSpec],
        AtLeast(
            2,
            "a cascade needs at least two stages: a cheap one that answers when it is confident "
            "(a threshold and an estimator), and a last one that always answers; for one model "
            "alone, name it instead of a cascade",
        ),
    ]
    stage_share: float = Field(default=0.5, gt=0, le=1)
    """Share of the request's remaining time a stage before the last may use (a fallback's
    `member_share`), so a slow cheap stage cannot leave the last stage without time to answer."""

    @model_validator(mode="after")
    def _thresholds(self) -> CascadeSpec:
        for i, stage in enumerate(self.stages[:-1]):
            if stage.threshold is None or stage.estimator is None:
                raise ValueError(
                    f"stages[{i}] needs a threshold and an estimator (every stage but the last "
                    "decides whether to accept its answer)"
                )
        last = self.stages[-1]
        if last.threshold is not None or last.estimator is not None:
            raise ValueError(
                f"stages[{len(self.stages) - 1}] is the last stage, which always answers: its "
                "threshold and estimator would never be used; remove them (or add a stage after "
                "it)"
            )
        return self

    def child_nodes(self) -> ChildNodes:
        for i, stage in enumerate(self.stages):
            yield stage.model, ("stages", i, "model")
            estimator = stage.estimator
            if isinstance(estimator, VerifierEstimatorSpec):
                yield estimator.model, ("stages", i, "estimator", "model")
            elif isinstance(estimator, AgreementEstimatorSpec):
                for j, other in enumerate(estimator.models):
                    yield other, ("stages", i, "estimator", "models", j)
