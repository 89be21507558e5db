"""Cost-quality frontiers and the metrics the routing literature reports on them.

- **AIQ** (RouterBench, `evaluation/AIQ.py` of withmartian/routerbench): the area under the
  non-decreasing upper convex hull of a router's (cost, quality) points, the hull carried flat
  to the largest cost among the curves compared, divided by that cost. Not defined for a curve
  of one point (a single calibrated setting), nor for points that all cost the largest cost
  compared (every model at one price): reported as None, not as RouterBench's 0.
- **PGR** (RouteLLM): (q - q_weak) / (q_strong - q_weak). **APGR**: PGR averaged over the share
  of strong-model cost from 0 to 1 (the area under the PGR curve). **CPT(x)**: the smallest
  share of strong cost at which PGR reaches x. Here the curve is the non-decreasing hull of the
  points plus the always-weak (0, q_weak) and always-strong (1, q_strong) ends: every point on
  it is reachable by choosing between two settings at random per request. The share is the
  cost normalised between the weak and the strong model's costs, for a binary router too: that
  is RouteLLM's share of strong calls only when every item costs the same (a router sending
  the longer prompts to the strong model spends a larger share of its cost than of its calls).

Reference routers: a **random** router mixes the single models at random, so its frontier is
the hull of the single models' points; the **oracle** knows every model's score on every item
and, for each trade-off λ, picks per item the model maximising score - λ·cost.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

Point = tuple[float, float]
"""(cost, quality)."""


def upper_hull(points: Sequence[Point]) -> list[Point]:
    """The non-decreasing upper convex hull: from the cheapest point up to the best one."""
    if not points:
        return []
    best: dict[float, float] = {}
    for cost, quality in points:
        best[cost] = max(quality, best.get(cost, -np.inf))
    ordered = sorted(best.items())
    hull: list[Point] = []
    for point in ordered:
        while len(hull) >= 2 and _turns_up(hull[-2], hull[-1], point):
            hull.pop()
        hull.append(point)
    peak = max(range(len(hull)), key=lambda i: (hull[i][1], -i))
    return hull[: peak + 1]


def _turns_up(a: Point, b: Point, c: Point) -> bool:
    """Whether b lies on or below the segment a-c (so it is not on the upper hull)."""
    cross = (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])
    return cross >= 0


AIQ_UNDEFINED = "n/a: one point has no area"
"""Why a curve of one point has no AIQ: carried flat, its area is 0 when it is the costliest
point compared and otherwise a rectangle saying where the point lies, not how a router trades
cost for quality."""


def aiq(points: Sequence[Point], max_cost: float | None = None) -> float | None:
    """RouterBench's AIQ of `points`, normalised by `max_cost` (default: their largest cost);
    None for a single point (`AIQ_UNDEFINED`)."""
    if not points:
        raise ValueError("AIQ of an empty set of points")
    if len(set(points)) < 2:
        return None
    hull = upper_hull(points)
    top = max(max_cost if max_cost is not None else 0.0, hull[-1][0])
    if top <= 0:
        return hull[-1][1]
    if len(hull) == 1 and hull[0][0] >= top:
        # Points at one cost, the largest compared (models of one price, as RouterDC's):
        # their area is 0 whatever their quality, as a single point's would be.
        return None
    if hull[-1][0] < top:
        hull.append((top, hull[-1][1]))
    xs = np.array([p[0] for p in hull])
    ys = np.array([p[1] for p in hull])
    return float(np.trapezoid(ys, xs) / top) if len(hull) > 1 else 0.0


def interpolate_quality(hull: Sequence[Point], cost: float) -> float:
    """Quality on a (non-decreasing) hull at `cost`; flat past its ends."""
    xs = [p[0] for p in hull]
    ys = [p[1] for p in hull]
    return float(np.interp(cost, xs, ys))


def cost_at_quality(points: Sequence[Point], quality: float) -> float | None:
    """The least cost on the hull of `points` whose quality reaches `quality`, or None."""
    hull = upper_hull(points)
    if not hull or hull[-1][1] < quality:
        return None
    if hull[0][1] >= quality:
        return hull[0][0]
    for (c0, q0), (c1, q1) in itertools.pairwise(hull):
        if q1 >= quality:
            return c0 + (quality - q0) / (q1 - q0) * (c1 - c0)
    return None  # pragma: no cover - the check above makes this unreachable


def pgr(quality: float, weak: float, strong: float) -> float:
    """Performance gap recovered: 0 at the weak model's quality, 1 at the strong one's."""
    gap = strong - weak
    if abs(gap) < 1e-12:
        return 1.0 if quality >= strong else 0.0
    return (quality - weak) / gap


def strong_share_curve(
    points: Sequence[Point], weak_cost: float, strong_cost: float
) -> list[Point]:
    """Points re-expressed as (share of the strong model's cost in [0, 1], quality)."""
    span = strong_cost - weak_cost
    if span <= 0:
        raise ValueError("the strong model must cost more than the weak one")
    return [(min(1.0, max(0.0, (c - weak_cost) / span)), q) for c, q in points]


def _share_hull(curve: Sequence[Point], weak: float, strong: float) -> list[Point]:
    hull = upper_hull([*curve, (0.0, weak), (1.0, strong)])
    if hull[-1][0] < 1.0:
        hull.append((1.0, hull[-1][1]))
    return hull


def apgr(curve: Sequence[Point], weak: float, strong: float) -> float:
    """RouteLLM's APGR of `curve` ((strong share, quality) points)."""
    hull = _share_hull(curve, weak, strong)
    xs = np.array([p[0] for p in hull])
    ys = np.array([pgr(p[1], weak, strong) for p in hull])
    return float(np.trapezoid(ys, xs))


def cpt(curve: Sequence[Point], weak: float, strong: float, target: float) -> float | None:
    """RouteLLM's CPT(target): the least strong share at which PGR reaches `target`."""
    hull = _share_hull(curve, weak, strong)
    return cost_at_quality(hull, weak + target * (strong - weak))


def oracle_curve(scores: np.ndarray, costs: np.ndarray, steps: int = 200) -> list[Point]:
    """The oracle's frontier from per-model, per-item scores and costs (shape models × items):
    for each λ, every item goes to the model maximising score - λ·cost (ties: the cheaper)."""
    if scores.shape != costs.shape or scores.ndim != 2 or scores.shape[1] == 0:
        raise ValueError("scores and costs must have the same (models, items) shape")
    spread = float(np.max(costs) - np.min(costs)) or 1.0
    lambdas = [0.0, *np.geomspace(1e-4 / spread, 1e4 / spread, steps), np.inf]
    points: list[Point] = []
    columns = np.arange(scores.shape[1])
    for lam in lambdas:
        value = -costs if np.isinf(lam) else scores - lam * costs - 1e-09 * costs / spread
        pick = np.argmax(value, axis=0)
        points.append((float(costs[pick, columns].mean()), float(scores[pick, columns].mean())))
    return sorted(set(points))
