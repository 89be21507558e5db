"""The numbers of a demo run, read from the decision records: where each ticket went, which
model answered, how the cascades escalated, which fallbacks were taken, routing accuracy
against the labels, latency percentiles, and cost against one large model answering all.

A ticket's *route* is the last routing choice its request made: a router's route, or a
specialist-generalist's label (`generalist` when the generalist answered). It is routed right
when that route is its label, or the generalist for a label that has no route of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from modelyard.cost.prices import Price
from modelyard.demo.workload import Outcome
from modelyard.errors import ERROR_KINDS
from modelyard.model import Model
from modelyard.topology import reachable
from modelyard.types import Decision, Usage

GENERALIST = "generalist"
NO_ROUTE = "(no route)"


@dataclass(frozen=True, slots=True)
class StageStep:
    """What one cascade stage did for one request."""

    cascade: str
    stage: str
    outcome: str
    """answered, escalated, failed or skipped."""


@dataclass(frozen=True, slots=True)
class FallbackStep:
    """A fallback that moved past a member: from whom, to whom, and why."""

    fallback: str
    failed: str
    answered: str
    why: str

    @property
    def label(self) -> str:
        """`fallback: failed -> answered`."""
        return f"{self.fallback}: {self.failed} → {self.answered}"


@dataclass(frozen=True, slots=True)
class Trace:
    """What one request went through, read from its decision record."""

    routes: tuple[str, ...]
    stages: tuple[StageStep, ...]
    fallbacks: tuple[FallbackStep, ...]

    @property
    def route(self) -> str:
        """The last routing choice, or NO_ROUTE."""
        return self.routes[-1] if self.routes else NO_ROUTE


def _cascade_steps(node: Decision) -> Iterable[StageStep]:
    """Each stage of one cascade decision with what it did. The answering stage is the one
    that chose the cascade's answer, else (an answer held below its threshold and returned
    when later stages failed) the last stage named after the answering model."""
    steps = [step for step in node.children if step.kind == "stage"]
    answering = next((s for s in steps if s.chosen and s.chosen == node.chosen), None)
    if answering is None and node.chosen is not None:
        answering = next((s for s in reversed(steps) if s.node == node.chosen), None)
    for step in steps:
        if step is answering:
            outcome = "answered"
        elif step.reason.startswith("skipped"):
            outcome = "skipped"
        elif step.reason.startswith("escalated"):
            outcome = "escalated"
        else:
            outcome = "failed"
        yield StageStep(node.node, step.node, outcome)


def _why(attempt: Decision) -> str:
    error = attempt.error or attempt.reason
    kind, _, rest = error.partition(": ")
    return rest.strip() or kind if kind in ERROR_KINDS else error


def trace(decision: Decision | None) -> Trace:
    """The routes, cascade stages and fallbacks of one request's decision record."""
    routes: list[str] = []
    stages: list[StageStep] = []
    fallbacks: list[FallbackStep] = []
    for node in decision.walk() if decision is not None else ():
        if node.kind == "router" and node.chosen is not None:
            routes.append(node.chosen)
        elif node.kind == "specialist":
            label = node.details.get("label")
            if isinstance(label, str):
                routes.append(label)
        elif node.kind == "cascade":
            stages.extend(_cascade_steps(node))
        elif node.kind in ("fallback", "balance") and node.chosen is not None and node.children:
            first = node.children[0]
            if first.node != node.chosen:
                fallbacks.append(FallbackStep(node.node, first.node, node.chosen, _why(first)))
    return Trace(tuple(routes), tuple(stages), tuple(fallbacks))


def known_routes(system: Model) -> set[str]:
    """Every route name and specialist label under `system`."""
    from modelyard.patterns.router import RouterModel
    from modelyard.patterns.specialist import SpecialistModel

    names: set[str] = set()
    for node in reachable(system):
        if isinstance(node, RouterModel):
            names.update(node.routes)
        elif isinstance(node, SpecialistModel):
            names.update(node.specialists)
    return names


def cascade_stages(system: Model) -> dict[str, list[str]]:
    """The stage names of every cascade under `system`, in order."""
    from modelyard.patterns.cascade import CascadeModel

    return {
        node.name: [stage.name for stage in node.stages]
        for node in reachable(system)
        if isinstance(node, CascadeModel)
    }


def expected_route(label: str, routes: set[str]) -> str:
    """The route a ticket labelled `label` should take: its own, else the generalist."""
    return label if label in routes else GENERALIST


def largest_model(models: Mapping[str, Model]) -> tuple[str, Price] | None:
    """The model with the highest list price (input plus output per million tokens), if any
    model has a price at all."""
    priced = [(name, m.info.price) for name, m in models.items() if not m.info.price.is_free]
    if not priced:
        return None
    return max(priced, key=lambda item: (item[1].input + item[1].output, item[0]))


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation; 0 for no values."""
    return float(np.percentile(np.asarray(values, dtype=float), q)) if values else 0.0


@dataclass(slots=True)
class RouteCount:
    """Tickets that took one route."""

    tickets: int = 0
    correct: int = 0
    labelled: int = 0
    answered_by: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)


@dataclass(slots=True)
class LabelCount:
    """Tickets of one label, and where they went."""

    tickets: int = 0
    correct: int = 0
    routes: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class StageCount:
    """How often one cascade stage answered, escalated, failed or was skipped."""

    cascade: str
    stage: str
    answered: int = 0
    escalated: int = 0
    failed: int = 0
    skipped: int = 0

    @property
    def reached(self) -> int:
        """Requests that ran this stage."""
        return self.answered + self.escalated + self.failed


@dataclass(slots=True)
class Summary:
    """Everything `modelyard demo` prints and reports about a run."""

    outcomes: list[Outcome]
    traces: list[Trace]
    expected: list[str | None]
    """Each ticket's expected route (None without a label)."""
    routes: dict[str, RouteCount]
    labels: dict[str, LabelCount]
    stages: list[StageCount]
    answered_by: Counter[str]
    fallbacks: Counter[str]
    fallback_requests: int
    """Requests in which at least one fallback was taken."""
    errors: int
    cost: float
    baseline_model: str | None
    baseline_cost: float | None
    latency_p50: float
    latency_p95: float
    wall_time: float | None = None

    @property
    def tickets(self) -> int:
        """Tickets in the run."""
        return len(self.outcomes)

    @property
    def labelled(self) -> int:
        """Tickets that carry a label."""
        return sum(1 for e in self.expected if e is not None)

    @property
    def correct(self) -> int:
        """Labelled tickets that took their expected route."""
        return sum(count.correct for count in self.labels.values())

    @property
    def accuracy(self) -> float | None:
        """Share of labelled tickets routed right, or None without labels."""
        return self.correct / self.labelled if self.labelled else None

    def is_correct(self, index: int) -> bool | None:
        """Whether ticket `index` took its expected route (None without a label)."""
        expected = self.expected[index]
        return None if expected is None else self.traces[index].route == expected


def _stage_counts(traces: Iterable[Trace], order: Mapping[str, Sequence[str]]) -> list[StageCount]:
    """Counts per (cascade, stage), each cascade's stages in their order in `order`."""
    counts: dict[tuple[str, str], StageCount] = {}
    for item in traces:
        for step in item.stages:
            key = (step.cascade, step.stage)
            count = counts.setdefault(key, StageCount(step.cascade, step.stage))
            setattr(count, step.outcome, getattr(count, step.outcome) + 1)
    cascades = list(order)

    def place(count: StageCount) -> tuple[int, int, str]:
        stages = list(order.get(count.cascade, ()))
        first = cascades.index(count.cascade) if count.cascade in order else len(cascades)
        second = stages.index(count.stage) if count.stage in stages else len(stages)
        return first, second, count.stage

    return sorted(counts.values(), key=place)


def _baseline(outcomes: Sequence[Outcome], price: Price) -> float:
    total = 0.0
    for outcome in outcomes:
        output = outcome.response.usage.output_tokens if outcome.response is not None else 0
        total += price.cost(Usage(input_tokens=outcome.input_tokens, output_tokens=output))
    return total


def summarise(
    outcomes: Sequence[Outcome],
    *,
    routes: set[str],
    stages: Mapping[str, Sequence[str]] | None = None,
    baseline: tuple[str, Price] | None = None,
    wall_time: float | None = None,
) -> Summary:
    """The summary of a run: `routes` are the route names the system knows (`known_routes`),
    `stages` each cascade's stages in order (`cascade_stages`), `baseline` the model whose list
    prices the cost is compared with (`largest_model`)."""
    traces = [trace(o.decision) for o in outcomes]
    expected = [
        expected_route(o.ticket.label, routes) if o.ticket.label is not None else None
        for o in outcomes
    ]
    by_route: dict[str, RouteCount] = {}
    by_label: dict[str, LabelCount] = {}
    answered_by: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    for outcome, item, want in zip(outcomes, traces, expected, strict=True):
        model = outcome.response.model if outcome.response is not None else "(failed)"
        answered_by[model] += 1
        route = by_route.setdefault(item.route, RouteCount())
        route.tickets += 1
        route.answered_by[model] += 1
        route.latencies.append(outcome.latency)
        fallbacks.update(step.label for step in item.fallbacks)
        if want is None or outcome.ticket.label is None:
            continue
        right = item.route == want
        route.labelled += 1
        route.correct += right
        label = by_label.setdefault(outcome.ticket.label, LabelCount())
        label.tickets += 1
        label.correct += right
        label.routes[item.route] += 1
    latencies = [o.latency for o in outcomes]
    return Summary(
        outcomes=list(outcomes),
        traces=traces,
        expected=expected,
        routes=dict(sorted(by_route.items(), key=lambda kv: (-kv[1].tickets, kv[0]))),
        labels=dict(sorted(by_label.items())),
        stages=_stage_counts(traces, stages or {}),
        answered_by=answered_by,
        fallbacks=fallbacks,
        fallback_requests=sum(1 for item in traces if item.fallbacks),
        errors=sum(1 for o in outcomes if o.response is None),
        cost=sum(o.cost for o in outcomes),
        baseline_model=baseline[0] if baseline is not None else None,
        baseline_cost=_baseline(outcomes, baseline[1]) if baseline is not None else None,
        latency_p50=percentile(latencies, 50),
        latency_p95=percentile(latencies, 95),
        wall_time=wall_time,
    )
