"""AIQ, APGR, CPT and the oracle on small frontiers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest

from modelyard.evaluation.frontier import (
    aiq,
    apgr,
    cost_at_quality,
    cpt,
    oracle_curve,
    strong_share_curve,
    upper_hull,
)
from modelyard.evaluation.references import Curve, build_frontier
from modelyard.evaluation.report import Tally
from modelyard.evaluation.runner import ItemResult
from tests.evaluation.conftest import scored


def _result(item: str, score: float, cost: float) -> ItemResult:
    return scored(item, score=score, cost=cost)


def test_upper_hull_drops_points_under_the_hull_and_after_the_peak() -> None:
    points = [(0.0, 0.5), (1.0, 0.6), (1.5, 0.6), (2.0, 0.9), (3.0, 0.8)]
    assert upper_hull(points) == [(0.0, 0.5), (2.0, 0.9)]


def test_aiq_is_the_area_under_the_hull_carried_flat_to_the_max_cost() -> None:
    # hull (1, .5) -> (2, .9) -> flat to 4: 0.7 + 1.8 = 2.5; / 4
    assert aiq([(1.0, 0.5), (2.0, 0.9)], max_cost=4.0) == pytest.approx(0.625)


@pytest.mark.parametrize("max_cost", [2.0, 4.0])
def test_aiq_of_one_point_is_not_defined(max_cost: float) -> None:
    # Carried flat it would read 0 at the largest cost, else a rectangle: no curve either way.
    assert aiq([(2.0, 0.8)], max_cost=max_cost) is None
    assert aiq([(2.0, 0.8), (2.0, 0.8)], max_cost=max_cost) is None


def test_aiq_of_points_that_all_cost_the_same_is_not_defined() -> None:
    # RouterDC's models share one list price: every curve is a vertical line whose area is 0
    # (the oracle's included), which read as the worst possible AIQ.
    assert aiq([(2.0, 0.5), (2.0, 0.7)], max_cost=2.0) is None
    singles = {
        m: Tally.of([_result("1", s, 2.0), _result("2", 0.0, 2.0)]) for m, s in (("a", 1), ("b", 0))
    }
    frontier = build_frontier({"system": [(2.0, 0.5)]}, singles)
    assert frontier.curves["random"].aiq is None
    assert frontier.curves["oracle"].aiq is None
    # A curve costing less than the largest cost compared is still carried flat to it.
    assert aiq([(1.0, 0.5), (1.0, 0.7)], max_cost=2.0) == pytest.approx(0.35)


def test_a_curve_of_one_point_reports_its_aiq_as_not_defined() -> None:
    curve = Curve(points=[(2.0, 0.8)], aiq=aiq([(2.0, 0.8)], 4.0))
    assert curve.aiq is None and curve.aiq_text() == "n/a: one point has no area"
    assert curve.to_dict()["aiq"] is None
    assert curve.to_dict()["aiq_reason"] == "n/a: one point has no area"
    two = Curve(points=[(1.0, 0.5), (2.0, 0.9)], aiq=aiq([(1.0, 0.5), (2.0, 0.9)], 4.0))
    assert two.aiq == pytest.approx(0.625) and two.to_dict()["aiq_reason"] is None


def test_random_mixing_of_weak_and_strong_has_apgr_one_half() -> None:
    assert apgr([], weak=0.6, strong=0.8) == pytest.approx(0.5)


def test_apgr_of_a_router_reaching_the_strong_quality_at_half_cost() -> None:
    # PGR hull: (0, 0) -> (0.5, 1) -> (1, 1): area 0.25 + 0.5
    assert apgr([(0.5, 0.8)], weak=0.6, strong=0.8) == pytest.approx(0.75)


def test_cpt_interpolates_on_the_hull() -> None:
    curve = [(0.5, 0.8)]
    assert cpt(curve, 0.6, 0.8, 0.5) == pytest.approx(0.25)
    assert cpt(curve, 0.6, 0.8, 0.8) == pytest.approx(0.4)


def test_cost_at_quality_and_unreachable_quality() -> None:
    points = [(1.0, 0.5), (3.0, 0.9)]
    assert cost_at_quality(points, 0.7) == pytest.approx(2.0)
    assert cost_at_quality(points, 0.95) is None


def test_strong_share_rescales_costs_between_weak_and_strong() -> None:
    assert strong_share_curve([(1.0, 0.5), (6.0, 0.7)], 1.0, 11.0) == [(0.0, 0.5), (0.5, 0.7)]


def test_oracle_ranges_from_all_cheap_to_cheapest_correct() -> None:
    scores = np.array([[1, 0, 1, 0], [1, 1, 0, 0]], dtype=float)
    costs = np.array([[1, 1, 1, 1], [10, 10, 10, 10]], dtype=float)
    curve = oracle_curve(scores, costs)
    assert curve[0] == (1.0, 0.5)
    assert curve[-1] == (3.25, 0.75)
