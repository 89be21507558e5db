"""Config for systems: each is a graph of nodes, and a node is a model or system name, or a
pattern that holds nodes. The `type` key picks the pattern.

Every pattern spec lists the nodes it holds in `child_nodes()`, so references, cycles and the
build see judges, verifiers, checkers and classifiers as well as members and stages.

This module holds the fallback, pipeline, ensemble and specialist patterns and the union of all
of them (`NodeSpec`); the router's config is `router_nodes.py`, the cascade's `cascade_nodes.py`,
the balancer's `balance_nodes.py`, what they all share `node_base.py`. Their specs name
`NodeSpec`, resolved here once it exists.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    PositiveFloat,
    PositiveInt,
    field_validator,
    model_validator,
)

from modelyard.config.balance_nodes import BalanceSpec
from modelyard.config.base import AtLeast, Spec
from modelyard.config.cascade_nodes import (
    AgreementEstimatorSpec,
    CascadeSpec,
    CascadeStageSpec,
    VerifierEstimatorSpec,
)
from modelyard.config.node_base import (
    ChildNodes,
    FunctionName,
    NodeBase,
    NormaliserName,
    Probability,
    prompt_template,
)
from modelyard.config.router_nodes import ClassifierRoutingSpec, RouterSpec
from modelyard.errors import ERROR_KINDS
from modelyard.suggest import did_you_mean

FallbackAction = Literal["next", "propagate", "larger_window"]


class FallbackSpec(NodeBase):
    """Try each node in order until one answers; `on_error` says what each error class does.

    `on_error` keys are error kinds (`errors.ERROR_KINDS`), several joined with `|`; values are
    `next` (the next member), `propagate` (stop: the caller gets this error),
    `larger_window` (the next members with a larger context window), or a list of nodes to
    try instead. Unlisted kinds keep the defaults of `resilience/fallback.py`.
    """

    type: Literal["fallback"]
    chain: Annotated[
        list[NodeSpec],
        AtLeast(1, "a fallback needs at least one model or system in its chain, tried in order"),
    ]
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
                    hint = did_you_mean(kind.strip(), ERROR_KINDS, listed="expected one of")
                    raise ValueError(f"unknown error kind {kind.strip()!r} in rule {key!r}{hint}")
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

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, prompt: str | None) -> str | None:
        return prompt_template(prompt, ("input", "output"), "output")


class CallableGateSpec(Spec):
    """A Python function `(output: str, response) -> bool` (sync ones run in a worker thread)
    decides; one still running at the request's deadline is abandoned then (no verdict: a
    timeout)."""

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
    share: float | None = Field(default=None, gt=0, le=1)
    """Under a deadline, the share of the time left when the stage starts that it may use
    (tries and gates), holding the rest back for the later stages; a try cut at it goes on to
    `escalate`, which gets the same share of the time then left. Default: all of it (a cut
    fails the request; see docs/patterns.md). Not on the last stage."""


class PipelineSpec(NodeBase):
    """Run stages in order, each reading earlier outputs; gates between them."""

    type: Literal["pipeline"]
    stages: Annotated[
        list[StageSpec], AtLeast(1, "a pipeline needs at least one stage, each a model or system")
    ]

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
        if self.stages[-1].share is not None:
            raise ValueError(
                f"stages[{len(self.stages) - 1}] is the last stage, which gets all the time "
                "left: drop its share"
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
    members: Annotated[
        list[NodeSpec],
        AtLeast(
            2,
            "an ensemble needs at least two members to combine; for one model alone, name it "
            "instead of an ensemble",
        ),
    ]
    combine: Literal["vote", "weighted_vote", "judge", "fuse"] = "vote"
    normalise: NormaliserName = "exact"
    judge: NodeSpec | None = None
    fuser: NodeSpec | None = None
    prompt: str | None = None
    """The judge's or fuser's prompt: a template with {question} and {candidates}."""

    @field_validator("prompt")
    @classmethod
    def _placeholders(cls, prompt: str | None) -> str | None:
        return prompt_template(prompt, ("question", "candidates"), "candidates")

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
    combiner_share: float | None = Field(default=None, gt=0, lt=1)
    """Under a deadline, the share of the time left the judge or fuser keeps (default 0.25):
    members still out at the rest are cut there once `quorum` have answered (else they run on
    until it has), so it has time to read what arrived."""

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
        if self.combiner_share is not None and self.combine not in ("judge", "fuse"):
            raise ValueError(
                f"combiner_share is the time a judge or fuser keeps, and combine is "
                f"{self.combine!r}; drop combiner_share or combine with a judge or fuser"
            )
        return self

    def child_nodes(self) -> ChildNodes:
        for i, member in enumerate(self.members):
            yield member, ("members", i)
        if self.judge is not None:
            yield self.judge, ("judge",)
        if self.fuser is not None:
            yield self.fuser, ("fuser",)


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
    FallbackSpec
    | RouterSpec
    | PipelineSpec
    | EnsembleSpec
    | CascadeSpec
    | SpecialistSpec
    | BalanceSpec,
    Field(discriminator="type"),
]
NodeSpec = str | PatternSpec
"""A model or system name, or an inline pattern."""

# Every spec that names NodeSpec, here or in router_nodes and cascade_nodes, is completed here,
# where NodeSpec now exists (those modules cannot import it: this one imports them).
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
    BalanceSpec,
):
    _spec.model_rebuild()
