"""A system's frontier against reference routers on one split: the single models (whose hull is
the random router), the oracle, AIQ for each, and RouteLLM's APGR and CPT against the weak and
strong models."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelyard.evaluation.frontier import (
    AIQ_UNDEFINED,
    Point,
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    oracle_curve,
    strong_share_curve,
    upper_hull,
)
from modelyard.evaluation.report import Tally


@dataclass(frozen=True, slots=True, kw_only=True)
class Curve:
    """One router's (cost per item, accuracy) points and the metrics of their frontier."""

    points: list[Point]
    aiq: float | None
    """None for a curve of one point (`AIQ_UNDEFINED`)."""
    apgr: float | None = None
    cpt50: float | None = None
    cpt80: float | None = None
    cost_at_target: float | None = None
    """Least cost per item on the hull reaching `target_fraction` of the strong model."""

    @property
    def aiq_reason(self) -> str | None:
        """Why the curve has no AIQ, or None when it has one."""
        return AIQ_UNDEFINED if self.aiq is None else None

    def aiq_text(self) -> str:
        """The AIQ as reports show it: four significant digits, or why there is none."""
        return AIQ_UNDEFINED if self.aiq is None else f"{self.aiq:.4g}"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "points": [list(p) for p in self.points],
            "hull": [list(p) for p in upper_hull(self.points)],
            "aiq": self.aiq,
            "aiq_reason": self.aiq_reason,
            "apgr": self.apgr,
            "cpt50": self.cpt50,
            "cpt80": self.cpt80,
            "cost_at_target": self.cost_at_target,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Frontier:
    """Curves of the system, the random router and the oracle on one split."""

    n: int
    weak: str
    strong: str
    singles: dict[str, Point]
    curves: dict[str, Curve]
    target_fraction: float
    max_cost: float
    extra: dict[str, Any] = field(default_factory=dict)

    def saving(self, curve: str) -> float | None:
        """Share of the strong model's cost saved at `target_fraction` of its accuracy."""
        cost = self.curves[curve].cost_at_target
        strong_cost = self.singles[self.strong][0]
        if cost is None or strong_cost <= 0:
            return None
        saved = 1.0 - cost / strong_cost
        return saved if abs(saved) > 1e-12 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "n": self.n,
            "weak": self.weak,
            "strong": self.strong,
            "singles": {k: list(v) for k, v in self.singles.items()},
            "target_fraction": self.target_fraction,
            "max_cost": self.max_cost,
            "curves": {k: v.to_dict() for k, v in self.curves.items()},
            "saving_at_target": {k: self.saving(k) for k in self.curves},
            **self.extra,
        }


def matrices(per_model: Mapping[str, Tally]) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per-model, per-item scores (unscored = 0) and costs, items aligned by id."""
    names = list(per_model)
    ids = per_model[names[0]].ids
    scores = np.zeros((len(names), len(ids)))
    costs = np.zeros((len(names), len(ids)))
    for row, name in enumerate(names):
        tally = per_model[name]
        by_id = {item: n for n, item in enumerate(tally.ids)}
        for column, item_id in enumerate(ids):
            scores[row, column] = tally.scores[by_id[item_id]]
            costs[row, column] = tally.costs[by_id[item_id]]
    return names, scores, costs


def _curve(
    points: list[Point],
    max_cost: float,
    weak: Point,
    strong: Point,
    target: float,
) -> Curve:
    share_ok = strong[0] > weak[0]
    share = strong_share_curve(points, weak[0], strong[0]) if share_ok else []
    return Curve(
        points=points,
        aiq=aiq(points, max_cost),
        apgr=apgr(share, weak[1], strong[1]) if share_ok else None,
        cpt50=cpt(share, weak[1], strong[1], 0.5) if share_ok else None,
        cpt80=cpt(share, weak[1], strong[1], 0.8) if share_ok else None,
        cost_at_target=cost_at_quality(points, target * strong[1]),
    )


def build_frontier(
    system_points: Mapping[str, list[Point]],
    per_model: Mapping[str, Tally],
    *,
    strong: str | None = None,
    weak: str | None = None,
    target_fraction: float = 0.95,
    with_singles: Sequence[str] = (),
) -> Frontier:
    """The frontier summary from systems' points and each single model's per-item results.

    `strong` defaults to the most accurate single model (the cheaper on ties), `weak` to the
    cheapest one. Each system curve named in `with_singles` is also reported joined with the
    single models ("NAME + singles"): a system that only spans costs above its cheapest model
    otherwise scores no area below them, though a deployment can always pick a model alone.
    """
    names, scores, costs = matrices(per_model)
    singles = {
        name: (float(costs[i].mean()), float(scores[i].mean())) for i, name in enumerate(names)
    }
    strong = strong or max(names, key=lambda n: (singles[n][1], -singles[n][0]))
    weak = weak or min(names, key=lambda n: (singles[n][0], -singles[n][1]))
    oracle = oracle_curve(scores, costs)
    joined = {f"{n} + singles": [*system_points[n], *singles.values()] for n in with_singles}
    curves_points = {
        **system_points,
        **joined,
        "random": list(singles.values()),
        "oracle": oracle,
    }
    max_cost = max(c for pts in curves_points.values() for c, _ in pts)
    curves = {
        name: _curve(points, max_cost, singles[weak], singles[strong], target_fraction)
        for name, points in curves_points.items()
    }
    return Frontier(
        n=scores.shape[1],
        weak=weak,
        strong=strong,
        singles=singles,
        curves=curves,
        target_fraction=target_fraction,
        max_cost=max_cost,
    )
