"""Builders for the patterns: pipeline (with its gates), ensemble, cascade (with its estimators),
specialist-generalist, balance; the router's is in `build_router.py`, which shares `callable_at` and
`trained_artifact` from here.

Everything that can be wrong with a pattern and is knowable before the first request is a
ConfigError here, with the file, line and the fix: a callable that does not import, a logprob
estimator on a model without logprobs, an artifact trained for other models, a template that
reads a later stage.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import yaml

from modelyard.config.balance_nodes import BalanceSpec, CooldownSpec
from modelyard.config.build import BuildContext, node_builder
from modelyard.config.cascade_nodes import (
    AgreementEstimatorSpec,
    CallableEstimatorSpec,
    CascadeSpec,
    EstimatorSpec,
    LearnedEstimatorSpec,
    LogprobEstimatorSpec,
    OwnConfidenceEstimatorSpec,
    SamplesEstimatorSpec,
    VerifierEstimatorSpec,
)
from modelyard.config.loader import Loc
from modelyard.config.nodes import (
    CallableGateSpec,
    CheckerGateSpec,
    ConfidenceGateSpec,
    EnsembleSpec,
    GateSpec,
    JsonSchemaGateSpec,
    PipelineSpec,
    RegexGateSpec,
    SpecialistSpec,
    StageSpec,
)
from modelyard.errors import ConfigError
from modelyard.functions import import_function
from modelyard.model import Model
from modelyard.patterns.artifact import Artifact, ArtifactError
from modelyard.patterns.artifact import load as load_artifact
from modelyard.patterns.balance import BalanceModel
from modelyard.patterns.balancing import (
    DEFAULT_COOLDOWN,
    DEFAULT_EXPLORE,
    DEFAULT_FAILURE_WINDOW,
    Cooldown,
)
from modelyard.patterns.cascade import CascadeModel, Stage
from modelyard.patterns.ensemble import DEFAULT_COMBINER_SHARE, EnsembleModel
from modelyard.patterns.estimators import (
    CallableEstimator,
    Estimator,
    LearnedEstimator,
    LogprobEstimator,
    OwnConfidenceEstimator,
    VerifierEstimator,
)
from modelyard.patterns.estimators_agreement import AgreementEstimator, SamplesEstimator
from modelyard.patterns.gates import (
    CallableGate,
    CheckerGate,
    ConfidenceGate,
    Gate,
    JsonSchemaGate,
    RegexGate,
)
from modelyard.patterns.learned import Features
from modelyard.patterns.normalise import normaliser
from modelyard.patterns.pipeline import PipelineModel, PipelineStage
from modelyard.patterns.routing import TrainedPredictor
from modelyard.patterns.specialist import SpecialistModel
from modelyard.patterns.templates import TemplateError, parse_template
from modelyard.providers.local_basic import DisabledModel
from modelyard.providers.registry import WIRES


def callable_at(context: BuildContext, loc: Loc, dotted: str, what: str) -> Callable[..., Any]:
    """The function `dotted` (module:function) names, or a ConfigError at `loc` saying why not."""
    try:
        return import_function(dotted)
    except ConfigError as exc:
        raise context.error(loc, f"{what}: {exc.message}") from None


_WHAT_READS = {
    "prompt": "a router needs one trained on prompts (a check's reads answers)",
    "answer": "a cascade check needs one trained on answers (a router's reads prompts only)",
}


def trained_artifact(
    artifact_path: str, embedder: str, features: Features, context: BuildContext, loc: Loc
) -> Artifact:
    """The artifact `modelyard train` wrote, checked for what it reads and its embedder."""
    try:
        artifact = load_artifact(context.path(artifact_path))
    except ArtifactError as exc:
        raise context.error((*loc, "artifact"), str(exc)) from None
    trained_on = artifact.meta.get("features", "prompt")
    if trained_on != features:
        raise context.error(
            (*loc, "artifact"),
            f"the artifact was trained with --features {trained_on}; {_WHAT_READS[features]}: "
            f"modelyard train --features {features}",
        )
    if artifact.embedder != embedder:
        raise context.error(
            (*loc, "embedder"),
            f"the artifact was trained with embedder {artifact.embedder!r}, not "
            f"{embedder!r}; its predictions only hold for that embedder's vectors",
        )
    return artifact


# --- pipeline -------------------------------------------------------------------------------


def _schema(spec: JsonSchemaGateSpec, context: BuildContext, loc: Loc) -> dict[str, Any]:
    if spec.schema_ is not None:
        return spec.schema_
    assert spec.schema_file is not None
    path = context.path(spec.schema_file)
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise context.error((*loc, "schema_file"), f"cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise context.error((*loc, "schema_file"), f"{path} is not JSON or YAML: {exc}") from None
    if not isinstance(loaded, dict):
        raise context.error((*loc, "schema_file"), f"{path} does not hold a JSON Schema object")
    return loaded


def _gate(spec: GateSpec, context: BuildContext, loc: Loc) -> Gate:
    if isinstance(spec, JsonSchemaGateSpec):
        from jsonschema.exceptions import SchemaError

        schema = _schema(spec, context, loc)
        try:
            return JsonSchemaGate(schema, name=spec.name or "json_schema")
        except SchemaError as exc:
            raise context.error(loc, f"invalid JSON Schema: {exc.message}") from None
    if isinstance(spec, RegexGateSpec):
        return RegexGate(spec.pattern, spec.must_match, spec.name)
    if isinstance(spec, ConfidenceGateSpec):
        return ConfidenceGate(spec.min, spec.name)
    if isinstance(spec, CheckerGateSpec):
        model = context.node(spec.model, (*loc, "model"))
        return CheckerGate(model, spec.min_score, spec.prompt, spec.name)
    assert isinstance(spec, CallableGateSpec)
    label = spec.name or f"callable {spec.function}"
    function = callable_at(context, (*loc, "function"), spec.function, f"gate {label!r}")
    return CallableGate(function, label, threads=context.function_threads())


def _check_confidence_gates(
    stage: StageSpec,
    answerers: tuple[Model, Model | None],
    context: BuildContext,
    where: Loc,
    stage_name: str,
) -> None:
    """Refuse a confidence gate on a stage (or escalation) whose answers carry no confidence:
    it would fail every answer, after paying for it."""
    for j, gate in enumerate(stage.gates):
        if not isinstance(gate, ConfidenceGateSpec):
            continue
        for role, model in zip(("", "its escalation's "), answerers, strict=True):
            unsure = None if model is None else no_confidence(model)
            if unsure is not None:
                raise context.error(
                    (*where, "gates", j),
                    f"stage {stage_name!r}: {role}{unsure}, so a confidence gate would fail "
                    "every answer; use a checker, json_schema, regex or callable gate",
                )


@node_builder(PipelineSpec)
def _build_pipeline(spec: PipelineSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    names = spec.stage_names()
    stages = []
    for i, (stage_name, stage) in enumerate(zip(names, spec.stages, strict=True)):
        where = (*loc, "stages", i)
        text = stage.input if stage.input is not None else (None if i == 0 else "{previous}")
        template = None
        if text is not None:
            try:
                template = parse_template(text)
            except TemplateError as exc:
                raise context.error((*where, "input"), str(exc)) from None
            for ref in template.stages:
                if ref not in names[:i]:
                    later = "a later stage" if ref in names else "no stage"
                    raise context.error(
                        (*where, "input"),
                        f"{{stages.{ref}}} names {later}; a stage can read only the stages "
                        f"before it: {', '.join(names[:i]) or 'none'}",
                    )
        model = context.node(stage.model, (*where, "model"))
        escalate = (
            context.node(stage.escalate, (*where, "escalate"))
            if stage.escalate is not None
            else None
        )
        _check_confidence_gates(stage, (model, escalate), context, where, stage_name)
        if isinstance(model, DisabledModel) and not (
            escalate is not None and not isinstance(escalate, DisabledModel)
        ):
            context.notes.append(
                f"pipeline {name}: stage {stage_name} is disabled ({model.reason}); it cannot "
                "answer"
            )
        stages.append(
            PipelineStage(
                name=stage_name,
                model=model,
                template=template,
                system=stage.system,
                gates=tuple(
                    _gate(gate, context, (*where, "gates", j)) for j, gate in enumerate(stage.gates)
                ),
                retries=stage.retries,
                share=stage.share,
                escalate=escalate,
            )
        )
    return PipelineModel(name, stages, deadline=spec.deadline)


# --- ensemble -------------------------------------------------------------------------------


@node_builder(EnsembleSpec)
def _build_ensemble(spec: EnsembleSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    members = [context.node(m, (*loc, "members", i)) for i, m in enumerate(spec.members)]
    member_names = [m.name for m in members]
    for member in spec.deadlines:
        if member not in member_names:
            raise context.error(
                (*loc, "deadlines", member),
                f"no member called {member!r}; members: {', '.join(member_names)}",
            )
    disabled = [m for m in members if isinstance(m, DisabledModel)]
    if len(members) - len(disabled) < spec.quorum:
        context.notes.append(
            f"ensemble {name}: {len(disabled)} of its {len(members)} members disabled "
            f"({'; '.join(f'{m.name}: {m.reason}' for m in disabled)}) leave fewer than its "
            f"quorum of {spec.quorum}; it cannot answer"
        )
    combiner = None
    if spec.judge is not None:
        combiner = context.node(spec.judge, (*loc, "judge"))
    if spec.fuser is not None:
        combiner = context.node(spec.fuser, (*loc, "fuser"))
    return EnsembleModel(
        name,
        members,
        normalise=normaliser(spec.normalise),
        normalise_name=spec.normalise,
        combine=spec.combine,
        combiner=combiner,
        prompt=spec.prompt,
        quorum=spec.quorum,
        wait=spec.wait,
        member_deadlines=[spec.deadlines.get(n, spec.member_deadline) for n in member_names],
        deadline=spec.deadline,
        combiner_share=(
            DEFAULT_COMBINER_SHARE if spec.combiner_share is None else spec.combiner_share
        ),
    )


# --- cascade --------------------------------------------------------------------------------


def _learned_check(
    spec: LearnedEstimatorSpec, context: BuildContext, loc: Loc, stage: str
) -> LearnedEstimator:
    artifact = trained_artifact(spec.artifact, spec.embedder, "answer", context, loc)
    candidate = spec.candidate or stage
    if candidate not in artifact.models:
        raise context.error(
            (*loc, "candidate" if spec.candidate else "artifact"),
            f"the artifact has no model {candidate!r} (it has {sorted(artifact.models)}); "
            "set candidate: to the recorded model this stage is",
        )
    embedder = context.embedder(spec.embedder, (*loc, "embedder"))
    trained = TrainedPredictor(
        embedder, artifact.predictor, artifact.dimensions, artifact.out_of_fold, artifact.signals
    )
    return LearnedEstimator(trained, candidate, artifact.models.index(candidate))


def _estimator(
    spec: EstimatorSpec, context: BuildContext, loc: Loc, threshold: float | None, stage: str
) -> Estimator:
    if isinstance(spec, LogprobEstimatorSpec):
        return LogprobEstimator(spec.reduce)
    if isinstance(spec, SamplesEstimatorSpec):
        return SamplesEstimator(
            spec.k, normaliser(spec.normalise), via=spec.via, temperature=spec.temperature
        )
    if isinstance(spec, AgreementEstimatorSpec):
        others = [context.node(m, (*loc, "models", j)) for j, m in enumerate(spec.models)]
        until = threshold if spec.ask == "in_turn" else None
        return AgreementEstimator(others, normaliser(spec.normalise), in_turn_until=until)
    if isinstance(spec, LearnedEstimatorSpec):
        return _learned_check(spec, context, loc, stage)
    if isinstance(spec, VerifierEstimatorSpec):
        return VerifierEstimator(context.node(spec.model, (*loc, "model")), spec.prompt)
    if isinstance(spec, OwnConfidenceEstimatorSpec):
        return OwnConfidenceEstimator()
    assert isinstance(spec, CallableEstimatorSpec)
    function = callable_at(context, (*loc, "function"), spec.function, "estimator")
    return CallableEstimator(function, spec.function, threads=context.function_threads())


def _estimator_misfit(estimator: Estimator, model: Model, *, declared: bool) -> str | None:
    """Why `estimator` could never let `model`'s answers through, or None if it can.
    `declared`: `model` is one of the config's models (whose capabilities it may set)."""
    caps = model.info.capabilities
    if estimator.needs_logprobs and not caps.logprobs:
        if not declared:  # a pattern: its capabilities are what all its answerers share
            return (
                f"{model.name!r}, a pattern ({model.info.kind}), does not return token "
                "logprobs (not every model answering through it does), so a logprob estimator "
                "could never let it answer; use estimator type samples, agreement, verifier or "
                "confidence"
            )
        return (
            f"model {model.name!r} does not return token logprobs (capabilities.logprobs is "
            "false), so a logprob estimator could never let it answer; use estimator type "
            "samples, agreement, verifier or confidence, or set capabilities.logprobs: true if "
            "the model does return them"
        )
    if isinstance(estimator, SamplesEstimator) and estimator.via == "n" and not caps.choices:
        return (
            f"model {model.name!r} answers one choice per request, so samples via: n (one "
            f"request for {estimator.k} choices) would fail every time; use via: calls"
        )
    unsure = no_confidence(model)
    if isinstance(estimator, OwnConfidenceEstimator) and unsure is not None:
        return (
            f"{unsure}, so a confidence estimator could never let it answer; use estimator type "
            "samples, agreement or verifier (or logprob, where the model returns token logprobs)"
        )
    return None


def no_confidence(model: Model) -> str | None:
    """Why `model`'s answers never carry a `confidence`, or None if they may."""
    if model.info.kind not in WIRES:
        return None
    return (
        f"model {model.name!r} is a hosted model (provider {model.info.provider!r}), whose "
        "answers carry no confidence of their own"
    )


def check_classifier_confidence(
    classifier: Model, min_confidence: float, instead: str, context: BuildContext, loc: Loc
) -> None:
    """Refuse a `min_confidence` a classifier can never clear (it gives no confidence), which
    would send every request to `instead`."""
    unsure = no_confidence(classifier)
    if unsure is not None and min_confidence > 0:
        raise context.error(
            loc,
            f"the classifier's {unsure}, so min_confidence {min_confidence:g} would send every "
            f"request to the {instead}; drop min_confidence (any label it answers is taken) or "
            "use a classifier that reports one (a local classifier, a fake with confidences)",
        )


@node_builder(CascadeSpec)
def _build_cascade(spec: CascadeSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    stages: list[Stage] = []
    for i, stage_spec in enumerate(spec.stages):
        where = (*loc, "stages", i)
        model = context.node(stage_spec.model, (*where, "model"))
        stage_name = model.name
        if any(s.name == stage_name for s in stages):
            stage_name = f"{model.name}#{i}"
        estimator = None
        if stage_spec.estimator is not None:
            estimator = _estimator(
                stage_spec.estimator,
                context,
                (*where, "estimator"),
                stage_spec.threshold,
                model.name,
            )
            named = stage_spec.model if isinstance(stage_spec.model, str) else None
            declared = named in context.loaded.config.models
            problem = _estimator_misfit(estimator, model, declared=declared)
            if problem is not None:
                raise context.error((*where, "estimator"), f"stage {stage_name!r}: {problem}")
        slow, limit = stage_spec.expected_latency, spec.deadline
        if slow is not None and limit is not None and slow > limit:
            raise context.error(
                (*where, "expected_latency"),
                f"stage {stage_name!r} expects to take {slow:g}s, longer than the cascade's "
                f"deadline ({limit:g}s), so it would be skipped every time; lower "
                "expected_latency or raise the deadline",
            )
        disabled = model.reason if isinstance(model, DisabledModel) else None
        if disabled is not None:
            context.notes.append(f"cascade {name}: stage {stage_name} is skipped ({disabled})")
        stages.append(
            Stage(
                name=stage_name,
                model=model,
                threshold=stage_spec.threshold,
                estimator=estimator,
                expected_latency=stage_spec.expected_latency,
                disabled=disabled,
            )
        )
    if all(s.disabled is not None for s in stages):
        context.notes.append(f"cascade {name}: every stage is disabled; it cannot answer")
    return CascadeModel(name, stages, deadline=spec.deadline, stage_share=spec.stage_share)


# --- specialist-generalist ------------------------------------------------------------------


@node_builder(SpecialistSpec)
def _build_specialist(spec: SpecialistSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    classifier = context.node(spec.classifier, (*loc, "classifier"))
    specialists = {
        label: context.node(node, (*loc, "specialists", label))
        for label, node in spec.specialists.items()
    }
    generalist = context.node(spec.generalist, (*loc, "generalist"))
    where = (*loc, "min_confidence")
    check_classifier_confidence(classifier, spec.min_confidence, "generalist", context, where)
    labels = spec.labels
    if labels is None:
        declared = getattr(classifier, "labels", None)
        if isinstance(declared, list | tuple) and all(isinstance(x, str) for x in declared):
            labels = list(declared)
    if labels is not None:
        known = {label.casefold() for label in labels}
        for label in specialists:
            if label.casefold() not in known:
                context.notes.append(
                    f"{name}: specialist {label!r} can never be chosen: classifier "
                    f"{classifier.name} only gives {', '.join(labels)}"
                )
    return SpecialistModel(
        name,
        classifier,
        specialists,
        generalist,
        min_confidence=spec.min_confidence,
        deadline=spec.deadline,
    )


# --- balance --------------------------------------------------------------------------------


@node_builder(BalanceSpec)
def _build_balance(spec: BalanceSpec, context: BuildContext, loc: Loc, name: str) -> Model:
    for i, member in enumerate(spec.members):
        if isinstance(member, str) and spec.members.index(member) != i:
            raise context.error(
                (*loc, "members", i),
                f"{member!r} appears twice in the members; to send it more traffic give it a "
                "larger weight",
            )
    members = [context.node(m, (*loc, "members", i)) for i, m in enumerate(spec.members)]
    return BalanceModel(
        name,
        members,
        strategy=spec.strategy,
        weights=spec.weights,
        explore=DEFAULT_EXPLORE if spec.explore is None else spec.explore,
        seed=spec.seed,
        share=spec.member_share,
        cooldown=_cooldown(spec.cooldown),
    )


def _cooldown(spec: CooldownSpec | None) -> Cooldown:
    if spec is None:
        return Cooldown()
    return Cooldown(
        seconds=DEFAULT_COOLDOWN if spec.seconds is None else spec.seconds,
        failures=spec.failures,
        within=DEFAULT_FAILURE_WINDOW if spec.within is None else spec.within,
    )
