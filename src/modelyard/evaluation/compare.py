"""A system against each of its models alone, side by side, on the same items."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from modelyard.evaluation.dataset import Item
from modelyard.evaluation.evaluate import Evaluation, evaluate, leaf_models
from modelyard.evaluation.report import EvalReport
from modelyard.evaluation.scorers import Scorer
from modelyard.yard import Yard


@dataclass(frozen=True, slots=True, kw_only=True)
class Row:
    """One contender: the system or one model alone."""

    name: str
    kind: str
    report: EvalReport
    first_failure: str | None = None
    """The first failed item and its error (`item ID: ERROR`), when any item failed."""

    @property
    def answered_none(self) -> bool:
        """Whether every item failed: a 0 % that measured nothing."""
        return bool(self.report.n) and self.report.failed == self.report.n

    @property
    def cost_per_point(self) -> float | None:
        """USD per item per accuracy point (cost per item / accuracy in %)."""
        accuracy = self.report.accuracy
        if not accuracy:
            return None
        return self.report.cost_per_item / (accuracy * 100)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "name": self.name,
            "kind": self.kind,
            "accuracy": self.report.accuracy,
            "cost_per_item": self.report.cost_per_item,
            "cost_per_point": self.cost_per_point,
            "latency_p50_ms": self.report.latency_p50_ms,
            "latency_p95_ms": self.report.latency_p95_ms,
            "unparsed": self.report.unparsed,
            "failed": self.report.failed,
            "report": self.report.to_dict(),
        }


async def compare(
    yard: Yard,
    systems: Sequence[str],
    items: Iterable[Item],
    scorer: Scorer,
    *,
    concurrency: int = 8,
    on_done: Callable[[str], None] | None = None,
) -> list[Row]:
    """Each system, then every model any of them uses, alone, over the same items (iterated
    once per contender: a list, or an `ItemSource` that reads its file again)."""
    rows: list[Row] = []
    models: list[str] = []
    for system in systems:
        models.extend(m for m in leaf_models(yard, system) if m not in models and m != system)
    plan = [(s, "system") for s in systems] + [(m, "model") for m in models]
    for name, kind in plan:
        evaluation: Evaluation = await evaluate(yard, name, items, scorer, concurrency=concurrency)
        failed = evaluation.tally.first_failure
        first = f"item {failed[0]}: {failed[1]}" if failed else None
        rows.append(Row(name=name, kind=kind, report=evaluation.report, first_failure=first))
        if on_done is not None:
            on_done(name)
    return rows
