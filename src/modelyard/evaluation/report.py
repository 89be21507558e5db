"""Summaries of an evaluation: accuracy with unparsed answers counted apart, cost, latency
percentiles, which model answered, and each deciding node's distribution of choices."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
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


def _node_stats(results: Sequence[ItemResult]) -> dict[str, NodeStats]:
    kinds: dict[str, str] = {}
    chosen: dict[str, Counter[str]] = defaultdict(Counter)
    errors: Counter[str] = Counter()
    numbers: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for result in results:
        if result.decision is None:
            continue
        for path, decision in _node_paths(result.decision):
            # Deciding nodes, and embedders that say how they predicted (out of fold or not).
            if not decision.children and not (decision.kind == "embedder" and decision.details):
                continue
            kinds[path] = decision.kind
            if decision.error is not None:
                errors[path] += 1
            if decision.chosen:
                chosen[path][decision.chosen] += 1
            for key, value in decision.details.items():
                if isinstance(value, bool | int | float):
                    numbers[path][key].append(float(value))
    return {
        node: NodeStats(
            kind=kind,
            chosen=dict(chosen[node].most_common()),
            errors=errors[node],
            details={k: float(np.mean(v)) for k, v in numbers[node].items()},
        )
        for node, kind in kinds.items()
    }


def summarize(system: str, results: Sequence[ItemResult]) -> EvalReport:
    """The report of `results` (from `run_items`)."""
    statuses = Counter(r.status for r in results)
    judged = [r for r in results if r.status != UNLABELLED and r.labelled]
    scored = [r for r in results if r.status == SCORED]
    total = sum(r.score or 0.0 for r in scored)
    latencies = np.array([r.latency_ms for r in results]) if results else np.zeros(1)
    cost = sum(r.cost for r in results)
    drift: Counter[str] = Counter(r.drift for r in results if r.drift)
    return EvalReport(
        system=system,
        n=len(results),
        scored=statuses[SCORED],
        unparsed=statuses[UNPARSED],
        unlabelled=statuses[UNLABELLED],
        failed=statuses[FAILED],
        accuracy=total / len(judged) if judged else None,
        accuracy_scored=total / len(scored) if scored else None,
        total_cost=cost,
        cost_per_item=cost / len(results) if results else 0.0,
        scorer_cost=sum(r.scorer_cost for r in results),
        latency_p50_ms=float(np.percentile(latencies, 50)),
        latency_p95_ms=float(np.percentile(latencies, 95)),
        answered_by=dict(Counter(r.model for r in results if r.model).most_common()),
        nodes=_node_stats(results),
        drift=dict(drift),
    )
