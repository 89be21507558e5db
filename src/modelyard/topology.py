"""A system's graph as data, for trees (`modelyard check`) and diagrams (`modelyard demo`).

The graph is what `Model.children` says; this module adds the role each child plays for its
parent (a route's name, a specialist's label, a cascade stage's place, a pipeline stage's name)
and folds away wrappers that keep their model's name (retry, breaker, limits), so a model and
its resilience layers are one node. A child a parent reaches in several roles (one specialist
for four labels) is one edge whose role lists them all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from modelyard.cost.decoration import Decoration
from modelyard.model import Model


@dataclass(frozen=True, slots=True)
class Edge:
    """A child of a node and the role(s) it plays there."""

    child: Model
    role: str


def ordinal(n: int) -> str:
    """1st, 2nd, 3rd, 4th, ..."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def unwrap(model: Model) -> Model:
    """The node under wrappers that keep its name (retry, breaker, limits, deadline, meter)."""
    inner = model
    while len(inner.children) == 1 and inner.children[0].name == inner.name:
        inner = inner.children[0]
    return inner


def _roles(model: Model) -> Iterator[tuple[Model, str]]:
    """(child, role) for the patterns whose children have roles; nothing for the others.
    A decorated pattern (a cache, a budget guard) shows its pattern's children: their roles
    are the pattern's."""
    from modelyard.patterns.balance import BalanceModel
    from modelyard.patterns.cascade import CascadeModel
    from modelyard.patterns.ensemble import EnsembleModel
    from modelyard.patterns.pipeline import PipelineModel
    from modelyard.patterns.router import RouterModel
    from modelyard.patterns.specialist import SpecialistModel
    from modelyard.resilience.fallback import FallbackModel

    while isinstance(model, Decoration):
        model = model.inner
    if isinstance(model, RouterModel):
        if model.policy is not None:
            for policy_model in model.policy.models():
                yield policy_model, model.policy.kind
        for route, target in model.routes.items():
            yield target, route
    elif isinstance(model, SpecialistModel):
        yield model.classifier, "classifier"
        for label, target in model.specialists.items():
            yield target, label
        yield model.generalist, "generalist"
    elif isinstance(model, CascadeModel):
        for i, stage in enumerate(model.stages, start=1):
            bar = f" (≥ {stage.threshold:g})" if stage.threshold is not None else ""
            yield stage.model, ordinal(i) + bar
            if stage.estimator is not None:
                for judge in stage.estimator.models():
                    yield judge, f"checks the {ordinal(i)}"
    elif isinstance(model, FallbackModel):
        for i, member in enumerate(model.chain, start=1):
            yield member, ordinal(i)
        for kinds, action in model.rules.items():  # tried instead, on these errors only
            if isinstance(action, tuple):
                for member in action:
                    yield member, f"on {kinds}"
    elif isinstance(model, PipelineModel):
        for step in model.stages:
            yield step.model, step.name
            for gate in step.gates:
                for checker in gate.models():
                    yield checker, f"checks {step.name}"
            if step.escalate is not None:
                yield step.escalate, f"{step.name} escalation"
    elif isinstance(model, EnsembleModel):
        # A member listed twice is asked twice and votes twice: its one edge says so.
        times = Counter(id(member) for member in model.members)
        for member in model.members:
            count = times[id(member)]
            yield member, "member" if count == 1 else f"member ×{count}"
        if model.combiner is not None:
            yield model.combiner, "judge" if model.combine == "judge" else "fuser"
    elif isinstance(model, BalanceModel):
        weights = model.weights
        for i, member in enumerate(model.members):
            yield member, "member" if weights is None else f"weight {weights[i]:g}"


def tries_in_turn(model: Model) -> bool:
    """Whether `model` is a fallback (a fallback system, a model with `fallbacks:`): a child
    after its first is asked only when the ones before it failed."""
    from modelyard.resilience.fallback import FallbackModel

    while isinstance(model, Decoration):
        model = model.inner
    return isinstance(model, FallbackModel)


def edges(model: Model) -> list[Edge]:
    """The children of `model` (wrappers folded away), each once, with its role(s)."""
    node = unwrap(model)
    roles: dict[int, list[str]] = {}
    for child, role in _roles(node):
        known = roles.setdefault(id(child), [])
        if role not in known:
            known.append(role)
    out: list[Edge] = []
    seen: set[int] = set()
    for child in node.children:
        if id(child) in seen:
            continue
        seen.add(id(child))
        out.append(Edge(child=child, role=" | ".join(roles.get(id(child), []))))
    return out


def reachable(model: Model) -> Iterator[Model]:
    """Every node under `model` (wrappers folded away), each once, `model` first."""
    stack = [model]
    seen: set[int] = set()
    while stack:
        node = unwrap(stack.pop())
        if id(node) in seen:
            continue
        seen.add(id(node))
        yield node
        stack.extend(edge.child for edge in reversed(edges(node)))


def entry_points(systems: Mapping[str, Model]) -> list[str]:
    """The systems no other system uses (sorted): the graphs worth drawing on their own."""
    inner: set[int] = set()
    for system in systems.values():
        for edge in edges(system):
            inner.update(id(node) for node in reachable(edge.child))
    return sorted(name for name, system in systems.items() if id(unwrap(system)) not in inner)
