"""Summaries of an evaluation: accuracy with unparsed answers counted apart, cost, latency
percentiles, which model answered, and each deciding node's distribution of choices."""

from __future__ import annotations

import math
from array import array
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.evaluation.runner import FAILED, SCORED, ItemResult
from modelyard.evaluation.scorers import UNLABELLED, UNPARSED
from modelyard.types import Decision


@dataclass(frozen=True, slots=True, kw_only=True)
class NodeStats:
    """How one deciding node (router, cascade, ensemble, fallback) behaved over the set."""

    kind: str
    chosen: dict[str, int] = field(default_factory=dict)
    errors: int = 0
    details: dict[str, float] = field(default_factory=dict)
    """The mean of each numeric decision detail (agreement, scores) over the items."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "kind": self.kind,
            "chosen": self.chosen,
            "errors": self.errors,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class EvalReport:
    """The figures of one system over one labelled set.

    `accuracy` counts unparsed answers and failed calls as wrong and leaves unlabelled items
    out, answered or failed; `accuracy_scored` is over scored items only. Both are reported
    with the counts, so a scorer that cannot read answers shows up instead of skewing the
    number quietly.
    """

    system: str
    n: int
    scored: int
    unparsed: int
    unlabelled: int
    failed: int
    accuracy: float | None
    accuracy_scored: float | None
    total_cost: float
    cost_per_item: float
    scorer_cost: float
    latency_p50_ms: float
    latency_p95_ms: float
    answered_by: dict[str, int]
    nodes: dict[str, NodeStats]
    """Keyed by the node's path from the system (`main/math/vote`), not its name: a system
    used in two places, or inline nodes of two systems that share a name, stay apart."""
    drift: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "system": self.system,
            "n": self.n,
            "scored": self.scored,
            "unparsed": self.unparsed,
            "unlabelled": self.unlabelled,
            "failed": self.failed,
            "accuracy": self.accuracy,
            "accuracy_scored": self.accuracy_scored,
            "total_cost": self.total_cost,
            "cost_per_item": self.cost_per_item,
            "scorer_cost": self.scorer_cost,
            "latency_p50_ms": self.latency_p50_ms,
            "latency_p95_ms": self.latency_p95_ms,
            "answered_by": self.answered_by,
            "nodes": {name: stats.to_dict() for name, stats in self.nodes.items()},
            "drift": self.drift,
        }


def accuracy_unknown(report: EvalReport) -> str | None:
    """Why `report`'s accuracy means nothing to compare, or None when it can be compared."""
    if report.accuracy is None:
        return f"no item has a label the scorer can use ({report.unlabelled} of {report.n})"
    if not math.isfinite(report.accuracy):
        return f"its accuracy is {report.accuracy}"
    if not report.scored:
        return f"no answer was scored ({report.unparsed} unparsed, {report.failed} failed)"
    return None


def _node_paths(decision: Decision, parent: str = "") -> Iterator[tuple[str, Decision]]:
    """Each decision of the tree with its path of node names from the root, depth first."""
    path = f"{parent}/{decision.node}" if parent else decision.node
    yield path, decision
    for child in decision.children:
        yield from _node_paths(child, path)


class _NodeTally:
    """How each deciding node has chosen so far (`NodeStats` once summed up)."""

    def __init__(self) -> None:
        self.kinds: dict[str, str] = {}
        self.chosen: dict[str, Counter[str]] = defaultdict(Counter)
        self.errors: Counter[str] = Counter()
        self.numbers: dict[str, dict[str, array[float]]] = defaultdict(
            lambda: defaultdict(lambda: array("d"))
        )

    def add(self, decision: Decision) -> None:
        for path, node in _node_paths(decision):
            # Deciding nodes, and embedders that say how they predicted (out of fold or not).
            if not node.children and not (node.kind == "embedder" and node.details):
                continue
            self.kinds[path] = node.kind
            if node.error is not None:
                self.errors[path] += 1
            if node.chosen:
                self.chosen[path][node.chosen] += 1
            for key, value in node.details.items():
                if isinstance(value, bool | int | float):
                    self.numbers[path][key].append(float(value))

    def stats(self) -> dict[str, NodeStats]:
        return {
            node: NodeStats(
                kind=kind,
                chosen=dict(self.chosen[node].most_common()),
                errors=self.errors[node],
                details={k: float(np.mean(v)) for k, v in self.numbers[node].items()},
            )
            for node, kind in self.kinds.items()
        }


class Tally:
    """What an evaluation keeps of each item, added in item order: the counts and sums of the
    report, and per item only its id, score, cost and latency (and each numeric decision
    detail), so memory grows by tens of bytes an item, not by its answer and decision tree.
    """

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.scores = array("d")
        """Each item's score, failed and unparsed items 0 (as `accuracy` counts them)."""
        self.costs = array("d")
        self.latencies = array("d")
        self.statuses: Counter[str] = Counter()
        self.judged = 0
        self.total_score = 0.0
        self.cost = 0.0
        self.scorer_cost = 0.0
        self.answered_by: Counter[str] = Counter()
        self.drift: Counter[str] = Counter()
        self.drift_by_model: Counter[str] = Counter()
        """`model: drift` -> items."""
        self.provider_models: dict[str, set[str]] = {}
        """Model name -> the model ids its provider reported."""
        self.failed_unlabelled = 0
        self.first_failure: tuple[str, str] | None = None
        """The first failed item's id and error."""
        self.first_unparsed: tuple[str, str] | None = None
        """The first unparsed item the scorer said why of, and what it said."""
        self.nodes = _NodeTally()

    @classmethod
    def of(cls, results: Iterable[ItemResult]) -> Tally:
        """The tally of `results` (in item order)."""
        tally = cls()
        for result in results:
            tally.add(result)
        return tally

    def add(self, r: ItemResult) -> None:
        """Count the next item's result."""
        self.ids.append(r.id)
        self.scores.append(r.score or 0.0)
        self.costs.append(r.cost)
        self.latencies.append(r.latency_ms)
        self.statuses[r.status] += 1
        if r.status != UNLABELLED and r.labelled:
            self.judged += 1
        if r.status == SCORED:
            self.total_score += r.score or 0.0
        self.cost += r.cost
        self.scorer_cost += r.scorer_cost
        if r.model:
            self.answered_by[r.model] += 1
            if r.provider_model:
                self.provider_models.setdefault(r.model, set()).add(r.provider_model)
        if r.drift:
            self.drift[r.drift] += 1
            self.drift_by_model[f"{r.model}: {r.drift}"] += 1
        if r.status == FAILED:
            self.failed_unlabelled += not r.labelled
            if self.first_failure is None:
                self.first_failure = (r.id, r.error or "no error recorded")
        if r.status == UNPARSED and r.parsed and self.first_unparsed is None:
            self.first_unparsed = (r.id, r.parsed)
        if r.decision is not None:
            self.nodes.add(r.decision)

    def report(self, system: str) -> EvalReport:
        """The report of the items added so far."""
        n = len(self.ids)
        scored = self.statuses[SCORED]
        latencies = np.frombuffer(self.latencies) if n else np.zeros(1)
        return EvalReport(
            system=system,
            n=n,
            scored=scored,
            unparsed=self.statuses[UNPARSED],
            unlabelled=self.statuses[UNLABELLED],
            failed=self.statuses[FAILED],
            accuracy=self.total_score / self.judged if self.judged else None,
            accuracy_scored=self.total_score / scored if scored else None,
            total_cost=self.cost,
            cost_per_item=self.cost / n if n else 0.0,
            scorer_cost=self.scorer_cost,
            latency_p50_ms=float(np.percentile(latencies, 50)),
            latency_p95_ms=float(np.percentile(latencies, 95)),
            answered_by=dict(self.answered_by.most_common()),
            nodes=self.nodes.stats(),
            drift=dict(self.drift),
        )


def summarize(system: str, results: Iterable[ItemResult]) -> EvalReport:
    """The report of `results` (from `run_items`, in item order)."""
    return Tally.of(results).report(system)
