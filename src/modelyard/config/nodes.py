"""Config for systems: each is a graph of nodes, and a node is a model or system name, or a
pattern that holds nodes. The `type` key picks the pattern.

Every pattern spec lists the nodes it holds in `child_nodes()`, so references, cycles and the
build see judges, verifiers, checkers and classifiers as well as members and stages.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from modelyard.config.base import Spec
from modelyard.errors import ERROR_KINDS

Probability = Annotated[float, Field(ge=0, le=1)]
"""A threshold, score or confidence: a number from 0 to 1."""
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
"""A Python callable as `package.module:function`."""
NormaliserName = Annotated[str, Field(pattern=r"^(exact|choice|number|json:[^\s.][^\s]*)$")]
"""How answers are compared: exact, choice (letter A–J), number, or json:<field path>."""

ChildNodes = Iterator[tuple["NodeSpec", tuple[str | int, ...]]]


class NodeBase(Spec):
    """What every pattern node may set."""

    name: str | None = None
    """What decisions and logs call this node (default: its place in the config)."""
    deadline: PositiveFloat | None = None
    """Seconds this node may take; tightens, never loosens, the request's own deadline."""

    def child_nodes(self) -> ChildNodes:
        """Each node this one holds, with its place relative to this one (for errors)."""
        raise NotImplementedError


FallbackAction = Literal["next", "propagate", "larger_window"]


class FallbackSpec(NodeBase):
    """Try each node in order until one answers; `on_error` says what each error class does.

    `on_error` keys are error kinds (`errors.ERROR_KINDS`), several joined with `|`; values are
    `next` (the next member), `propagate` (stop: the caller gets this error),
    `larger_window` (the next members with a larger context window), or a list of nodes to
    try instead. Unlisted kinds keep the defaults of `resilience/fallback.py`.
    """

    type: Literal["fallback"]
    chain: list[NodeSpec] = Field(min_length=1)
    on_error: dict[str, FallbackAction | list[NodeSpec]] = Field(default_factory=dict)
    continue_streams: bool = False
    """After part of a stream reached the caller, let a fallback that supports assistant
    prefill continue it from the partial text (otherwise the stream ends with an error)."""
    member_share: float = Field(default=0.5, gt=0, le=1)
    """Share of the request's remaining time a member may use while others wait their turn
    (a stream: until its first content), so a silent member cannot eat the whole deadline."""

    @field_validator("on_error")
    @classmethod
    def _known_kinds(
        cls, rules: dict[str, FallbackAction | list[NodeSpec]]
    ) -> dict[str, FallbackAction | list[NodeSpec]]:
        for key, action in rules.items():
            for kind in key.split("|"):
                if kind.strip() not in ERROR_KINDS:
                    raise ValueError(
                        f"unknown error kind {kind.strip()!r} in rule {key!r}; "
                        f"expected one of {', '.join(ERROR_KINDS)}"
                    )
            if isinstance(action, list) and not action:
                raise ValueError(f"rule {key!r} lists no nodes; use 'propagate' to stop")
        return rules

    def child_nodes(self) -> ChildNodes:
        for i, node in enumerate(self.chain):
            yield node, ("chain", i)
        for key, action in self.on_error.items():
            if isinstance(action, list):
                for i, node in enumerate(action):
                    yield node, ("on_error", key, i)


# --- router ---------------------------------------------------------------------------------


class RuleSpec(Spec):
    """A routing rule: all its conditions must hold; the first rule that holds wins."""

    route: str
    regex: str | None = None
    """Searched for in the last user message."""
    keywords: list[str] = Field(default_factory=list)
    """Any of these, as whole words, case-blind, in the last user message."""
    min_tokens: PositiveInt | None = None
    """The prompt's estimated tokens (system, messages and tools) at least this."""
    max_tokens: PositiveInt | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    """Every pair must equal the request's metadata."""
    tags: list[str] = Field(default_factory=list)
    """Every tag must be on the request."""
    tools: bool | None = None
    """Whether the request offers tools."""
    images: bool | None = None
    """Whether any message holds an image."""
    language: list[str] = Field(default_factory=list)
    """Any of these ISO 639-1 codes, detected in the last user message."""
    min_language_score: Probability = 0.0

    @model_validator(mode="after")
    def _has_a_condition(self) -> RuleSpec:
        conditions = (
            self.regex,
            self.keywords,
            self.min_tokens,
            self.max_tokens,
            self.metadata,
            self.tags,
            self.tools is not None,
            self.images is not None,
            self.language,
        )
        if not any(conditions):
            raise ValueError(
                "a rule needs at least one condition (regex, keywords, min_tokens, max_tokens, "
                "metadata, tags, tools, images or language); use the router's default instead"
            )
        if self.regex is not None:
            try:
                re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex {self.regex!r}: {exc}") from None
        if self.min_tokens and self.max_tokens and self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens is larger than max_tokens: no request could match")
        return self


class ClassifierRoutingSpec(Spec):
    """Route by the label a classifier Model answers with."""

    model: NodeSpec
    min_confidence: Probability = 0.0
    """Below this `response.confidence`, go to the default route (no confidence counts as
    below any threshold above 0)."""
    labels: list[str] | None = None
    """The labels the classifier can give; each must have a route."""


class SemanticRoutingSpec(Spec):
    """Route by embedding similarity to example utterances of each route."""

    embedder: str
    examples: dict[str, list[str]] = Field(min_length=1)
    """Example utterances per route name."""
    threshold: Probability = 0.5
    """The best cosine similarity must reach this, else the default route."""
    match: Literal["nearest", "centroid"] = "nearest"

    @model_validator(mode="after")
    def _examples(self) -> SemanticRoutingSpec:
        empty = [route for route, texts in self.examples.items() if not texts]
        if empty:
            raise ValueError(f"route {empty[0]!r} has no example utterances")
        return self


class LearnedRoutingSpec(Spec):
    """Route by predicted P(success) − λ·cost, from an artifact `modelyard train` wrote."""

    artifact: str
    """Path of the .npz artifact, relative to this file."""
    embedder: str
    """The embedder the artifact was trained with (must have the same dimensions)."""
    cost_weight: NonNegativeFloat = Field(default=0.0, alias="lambda")
    """λ: how much P(success) one is willing to give up to go from the dearest candidate to a
    free one (costs are relative to the dearest candidate, so λ does not depend on prices)."""
    expected_output_tokens: PositiveInt = 256
    """For a price-table cost estimate where the artifact recorded no cost for a candidate."""


class RouterSpec(NodeBase):
    """Send each request to one route: rules first, then a classifier, semantic or learned
    policy, else the default."""

    type: Literal["router"]
    routes: dict[str, NodeSpec] = Field(min_length=1)
    default: str | None = None
    rules: list[RuleSpec] = Field(default_factory=list)
    classifier: ClassifierRoutingSpec | None = None
    semantic: SemanticRoutingSpec | None = None
    learned: LearnedRoutingSpec | None = None
    language_detector: FunctionName | None = None
    """A `module:function` (text -> (code, score)) for language rules; by default the local
    fastText detector (the `local` extra)."""

    @model_validator(mode="after")
    def _routes_exist(self) -> RouterSpec:
        known = ", ".join(self.routes)
        if self.default is None:
            raise ValueError(
                f"a router needs a default route for requests no rule or policy decides; "
                f"add default: <one of {known}>"
            )
        if self.default not in self.routes:
            raise ValueError(f"default {self.default!r} is not a route; routes: {known}")
        policies = [p for p in (self.classifier, self.semantic, self.learned) if p is not None]
        if len(policies) > 1:
            raise ValueError("give at most one of classifier, semantic and learned")
        if not policies and not self.rules:
            raise ValueError("a router needs rules, or a classifier, semantic or learned policy")
        for i, rule in enumerate(self.rules):
            if rule.route not in self.routes:
                raise ValueError(
                    f"rules[{i}] sends to {rule.route!r}, which is not a route: {known}"
                )
        if self.classifier is not None and self.classifier.labels is not None:
            missing = [label for label in self.classifier.labels if label not in self.routes]
            if missing:
                raise ValueError(
                    f"classifier label {missing[0]!r} has no route; add routes.{missing[0]} "
                    "or remove it from classifier.labels"
                )
        if self.semantic is not None:
            stray = [route for route in self.semantic.examples if route not in self.routes]
            if stray:
                raise ValueError(f"semantic examples for {stray[0]!r}, which is not a route")
        return self

    def child_nodes(self) -> ChildNodes:
        if self.classifier is not None:
            yield self.classifier.model, ("classifier", "model")
        for route, node in self.routes.items():
            yield node, ("routes", route)


# --- pipeline -------------------------------------------------------------------------------


class JsonSchemaGateSpec(Spec):
    """The stage's output must be JSON valid against a schema."""

    type: Literal["json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    schema_file: str | None = None

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaGateSpec:
        if (self.schema_ is None) == (self.schema_file is None):
            raise ValueError("give either schema (inline) or schema_file")
        return self


class RegexGateSpec(Spec):
    """The stage's output must (or must not) match a regex."""

    type: Literal["regex"]
    name: str | None = None
    pattern: str
    must_match: bool = True

    @model_validator(mode="after")
    def _compiles(self) -> RegexGateSpec:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"invalid regex {self.pattern!r}: {exc}") from None
        return self


class ConfidenceGateSpec(Spec):
    """The stage's `response.confidence` must reach `min`."""

    type: Literal["confidence"]
    name: str | None = None
    min: Probability


class CheckerGateSpec(Spec):
    """A checker Model reads the output and answers yes/no or a score."""

    type: Literal["checker"]
    name: str | None = None
    model: NodeSpec
    min_score: Probability = 0.5
    prompt: str | None = None
    """Template with {input} (the stage's input) and {output}; a yes/no question by default."""


class CallableGateSpec(Spec):
    """A Python function `(output: str, response) -> bool` (sync or async) decides."""

    type: Literal["callable"]
    name: str | None = None
    function: FunctionName


GateSpec = Annotated[
    JsonSchemaGateSpec | RegexGateSpec | ConfidenceGateSpec | CheckerGateSpec | CallableGateSpec,
    Field(discriminator="type"),
]


class StageSpec(Spec):
    """One pipeline stage: a Model, what it reads, and the checks its output must pass."""

    name: str | None = None
    """Default: the model's name, or stage<N>."""
    model: NodeSpec
    input: str | None = None
    """Template: {input}, {previous}, {stages.<name>} and JSON fields of them ({previous.x}).
    Default: the request as it came for the first stage, {previous} after."""
    system: str | None = None
    """System prompt for this stage (default: the request's)."""
    gates: list[GateSpec] = Field(default_factory=list)
    retries: int = Field(default=0, ge=0, le=10)
    """Times to rerun the stage when a gate fails."""
    escalate: NodeSpec | None = None
    """A Model to try (once, gated the same way) when retries are used up."""


class PipelineSpec(NodeBase):
    """Run stages in order, each reading earlier outputs; gates between them."""

    type: Literal["pipeline"]
    stages: list[StageSpec] = Field(min_length=1)

    def stage_names(self) -> list[str]:
        """Each stage's name, defaults filled in."""
        return [
            stage.name or (stage.model if isinstance(stage.model, str) else f"stage{i + 1}")
            for i, stage in enumerate(self.stages)
        ]

    @model_validator(mode="after")
    def _unique_names(self) -> PipelineSpec:
        names = self.stage_names()
        for i, name in enumerate(names):
            if name in names[:i]:
                raise ValueError(
                    f"two stages are called {name!r}; give stages[{i}] a name of its own"
                )
        return self

    def child_nodes(self) -> ChildNodes:
        for i, stage in enumerate(self.stages):
            yield stage.model, ("stages", i, "model")
            for j, gate in enumerate(stage.gates):
                if isinstance(gate, CheckerGateSpec):
                    yield gate.model, ("stages", i, "gates", j, "model")
            if stage.escalate is not None:
                yield stage.escalate, ("stages", i, "escalate")


# --- ensemble -------------------------------------------------------------------------------


class EnsembleSpec(NodeBase):
    """Ask every member at once and combine: vote, weighted vote, a judge, or a fuser."""

    type: Literal["ensemble"]
    members: list[NodeSpec] = Field(min_length=2)
    combine: Literal["vote", "weighted_vote", "judge", "fuse"] = "vote"
    normalise: NormaliserName = "exact"
    judge: NodeSpec | None = None
    fuser: NodeSpec | None = None
    prompt: str | None = None
    """The judge's or fuser's prompt: a template with {question} and {candidates}."""
    quorum: PositiveInt = 1
    """Members that must answer (with a parsed answer, for votes), else NoAnswerError."""
    wait: Literal["all", "quorum", "in_turn"] = "all"
    """`quorum`: stop waiting and cancel the rest once the outcome can no longer change;
    `in_turn`: ask one member at a time in the listed order (cheapest first) and stop asking
    once the outcome can no longer change."""
    member_deadline: PositiveFloat | None = None
    """Seconds each member may take (a late member counts as failed)."""
    deadlines: dict[str, PositiveFloat] = Field(default_factory=dict)
    """Per-member seconds, by member name, overriding member_deadline."""

    @model_validator(mode="after")
    def _consistent(self) -> EnsembleSpec:
        count = len(self.members)
        if self.quorum > count:
            raise ValueError(
                f"quorum {self.quorum} is larger than the ensemble's {count} members; "
                f"lower quorum to at most {count} or add members"
            )
        if self.combine == "judge" and self.judge is None:
            raise ValueError("combine: judge needs a judge model (judge: <model>)")
        if self.combine == "fuse" and self.fuser is None:
            raise ValueError("combine: fuse needs a fuser model (fuser: <model>)")
        if self.judge is not None and self.combine != "judge":
            raise ValueError("judge is set but combine is not 'judge'")
        if self.fuser is not None and self.combine != "fuse":
            raise ValueError("fuser is set but combine is not 'fuse'")
        return self

    def child_nodes(self) -> ChildNodes:
        for i, member in enumerate(self.members):
            yield member, ("members", i)
        if self.judge is not None:
            yield self.judge, ("judge",)
        if self.fuser is not None:
            yield self.fuser, ("fuser",)


# --- cascade --------------------------------------------------------------------------------


class LogprobEstimatorSpec(Spec):
    """Confidence from token log-probabilities: the mean (or the least) token probability."""

    type: Literal["logprob"]
    reduce: Literal["mean", "min"] = "mean"


class SamplesEstimatorSpec(Spec):
    """Confidence = agreement among k samples of the stage; the answer is the majority."""

    type: Literal["samples"]
    k: int = Field(default=3, ge=2, le=20)
    via: Literal["calls", "n"] = "calls"
    """`n`: one request with n=k (cheaper where the provider supports it); `calls`: k calls."""
    normalise: NormaliserName = "exact"
    temperature: NonNegativeFloat | None = 0.7


class AgreementEstimatorSpec(Spec):
    """Confidence = share of other (cheap) Models that give the stage's answer, stage included."""

    type: Literal["agreement"]
    models: list[NodeSpec] = Field(min_length=1)
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


class OwnConfidenceEstimatorSpec(Spec):
    """Confidence = the answering Model's own `response.confidence` (a classifier's
    probability, a retriever's similarity, an ensemble's agreement)."""

    type: Literal["confidence"]


class CallableEstimatorSpec(Spec):
    """Confidence = a Python function `(request, response) -> float` (sync or async)."""

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
    stages: list[CascadeStageSpec] = Field(min_length=2)
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


# --- specialist-generalist ------------------------------------------------------------------


class SpecialistSpec(NodeBase):
    """A classifier names the request's type; its specialist answers, else the generalist."""

    type: Literal["specialist"]
    classifier: NodeSpec
    specialists: dict[str, NodeSpec] = Field(default_factory=dict)
    generalist: NodeSpec
    min_confidence: Probability = 0.0
    """Below this classifier confidence the generalist answers."""
    labels: list[str] | None = None
    """The labels the classifier can give (to warn about specialists it can never pick)."""

    def child_nodes(self) -> ChildNodes:
        yield self.classifier, ("classifier",)
        for label, node in self.specialists.items():
            yield node, ("specialists", label)
        yield self.generalist, ("generalist",)


PatternSpec = Annotated[
    FallbackSpec | RouterSpec | PipelineSpec | EnsembleSpec | CascadeSpec | SpecialistSpec,
    Field(discriminator="type"),
]
NodeSpec = str | PatternSpec
"""A model or system name, or an inline pattern."""

for _spec in (
    FallbackSpec,
    ClassifierRoutingSpec,
    RouterSpec,
    CheckerGateSpec,
    StageSpec,
    PipelineSpec,
    EnsembleSpec,
    AgreementEstimatorSpec,
    VerifierEstimatorSpec,
    CascadeStageSpec,
    CascadeSpec,
    SpecialistSpec,
):
    _spec.model_rebuild()
