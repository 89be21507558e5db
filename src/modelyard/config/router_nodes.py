"""Config for the router pattern: its rules, its classifier, semantic and learned routing, and
the routes they choose between."""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import (
    Field,
    NonNegativeFloat,
    PositiveInt,
    model_validator,
)

from modelyard.config.base import AtLeast, Spec
from modelyard.config.node_base import (
    ChildNodes,
    FunctionName,
    NodeBase,
    Probability,
)
from modelyard.suggest import did_you_mean

if TYPE_CHECKING:
    from modelyard.config.nodes import NodeSpec  # resolved by the rebuild in nodes.py


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
    examples: Annotated[
        dict[str, list[str]],
        AtLeast(1, "semantic routing needs example utterances for at least one route"),
    ]
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


def _not_a_route(field: str, name: str, routes: Collection[str]) -> str:
    """Why `name` is refused where a route is expected: routes are the keys of `routes`, and a
    model's or system's name there is the usual slip (a typo of a route, the other one)."""
    close = did_you_mean(name, routes, listed=None)
    return (
        f"{field} {name!r} is not a route{close + ' A' if close else ': a'} route is a key of "
        f"routes ({', '.join(routes)}), not a model's name; add routes.{name}: "
        "<model or system>, or name one of those"
    )


class RouterSpec(NodeBase):
    """Send each request to one route: rules first, then a classifier, semantic or learned
    policy, else the default."""

    type: Literal["router"]
    routes: Annotated[
        dict[str, NodeSpec],
        AtLeast(1, "a router needs at least one route: routes: {<route>: <model or system>}"),
    ]
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
            raise ValueError(_not_a_route("default", self.default, self.routes))
        policies = [p for p in (self.classifier, self.semantic, self.learned) if p is not None]
        if len(policies) > 1:
            raise ValueError("give at most one of classifier, semantic and learned")
        if not policies and not self.rules:
            raise ValueError("a router needs rules, or a classifier, semantic or learned policy")
        for i, rule in enumerate(self.rules):
            if rule.route not in self.routes:
                raise ValueError(_not_a_route(f"rules[{i}] route", rule.route, self.routes))
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
                raise ValueError(_not_a_route("semantic.examples key", stray[0], self.routes))
        return self

    def child_nodes(self) -> ChildNodes:
        if self.classifier is not None:
            yield self.classifier.model, ("classifier", "model")
        for route, node in self.routes.items():
            yield node, ("routes", route)
