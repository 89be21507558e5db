"""The demo's numbers, on a desk of scripted models whose every decision is worked out by hand
(see conftest.py: which path each ticket takes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.cost.prices import Price
from modelyard.demo.summary import (
    Summary,
    cascade_stages,
    expected_route,
    known_routes,
    largest_model,
    percentile,
    summarise,
)
from modelyard.demo.workload import read_tickets, run_workload
from modelyard.yard import Yard


async def _run(desk: Callable[[], Yard], config: Path) -> Summary:
    async with desk() as yard:
        tickets = read_tickets(config.parent / "tickets.jsonl")
        outcomes = await run_workload(yard, "desk", tickets, concurrency=3)
        system = yard.systems["desk"]
        return summarise(
            outcomes,
            routes=known_routes(system),
            stages=cascade_stages(system),
            baseline=largest_model(yard.models),
        )


@pytest.fixture
async def summary(desk: Callable[[], Yard], desk_config: Path) -> Summary:
    return await _run(desk, desk_config)


def test_outcomes_keep_the_order_of_the_tickets(summary: Summary) -> None:
    assert [o.ticket.id for o in summary.outcomes] == ["t1", "t2", "t3", "t4", "t5", "t6"]


def test_each_ticket_takes_its_route(summary: Summary) -> None:
    routes = [t.route for t in summary.traces]
    assert routes == ["orders", "orders", "refunds", "generalist", "generalist", "shouting"]


def test_requests_per_route(summary: Summary) -> None:
    counts = {route: count.tickets for route, count in summary.routes.items()}
    assert counts == {"orders": 2, "generalist": 2, "refunds": 1, "shouting": 1}


def test_routing_accuracy_counts_the_unsure_classifier_as_wrong(summary: Summary) -> None:
    assert [summary.is_correct(i) for i in range(6)] == [True, True, True, True, False, True]
    assert (summary.correct, summary.labelled) == (5, 6)
    assert summary.accuracy == pytest.approx(5 / 6)


def test_accuracy_per_label(summary: Summary) -> None:
    per_label = {label: (c.tickets, c.correct) for label, c in summary.labels.items()}
    assert per_label == {
        "orders": (2, 2),
        "product": (1, 1),
        "refunds": (2, 1),
        "shouting": (1, 1),
    }
    assert summary.labels["refunds"].routes == {"refunds": 1, "generalist": 1}


def test_which_model_answered(summary: Summary) -> None:
    assert dict(summary.answered_by) == {"lookup": 1, "big": 4, "cheap": 1}


def test_cascade_stage_counts(summary: Summary) -> None:
    rows = [(s.cascade, s.stage, s.answered, s.escalated, s.reached) for s in summary.stages]
    assert rows == [("answer", "cheap", 1, 3, 4), ("answer", "big", 3, 0, 3)]


def test_the_fallback_taken_and_why(summary: Summary) -> None:
    assert dict(summary.fallbacks) == {"orders: lookup → answer": 1}
    assert summary.fallback_requests == 1
    step = summary.traces[1].fallbacks[0]
    assert (step.failed, step.answered, step.why) == ("lookup", "answer", "scripted no_answer")


def test_cost_is_what_the_priced_model_spent(summary: Summary) -> None:
    # big ($1 in, $2 out per million) answered t2, t4, t5, t6: (input + 2 x output) tokens,
    # input = len/4 rounded up + 4 per message, output "the big answer" = 4 tokens.
    assert summary.cost == pytest.approx((15 + 15 + 13 + 14) / 1e6)
    assert summary.errors == 0


def test_baseline_prices_every_ticket_at_the_largest_model(summary: Summary) -> None:
    # Each ticket's input tokens plus the tokens of the answer it got, at big's prices:
    # t1 7 in + "it shipped" 3 out; t3 8 in + "within 30 days" 4 out; the rest as above.
    assert summary.baseline_model == "big"
    assert summary.baseline_cost == pytest.approx((13 + 15 + 16 + 15 + 13 + 14) / 1e6)


def test_largest_model_is_the_dearest_priced_one() -> None:
    class Priced:
        def __init__(self, price: Price) -> None:
            self.info = type("Info", (), {"price": price})()

    models = {
        "local": Priced(Price()),
        "mini": Priced(Price(input=0.15, output=0.6)),
        "large": Priced(Price(input=2.5, output=10.0)),
    }
    assert largest_model(models)[0] == "large"  # type: ignore[arg-type,index]
    assert largest_model({"local": Priced(Price())}) is None  # type: ignore[dict-item]


def test_a_label_without_a_route_belongs_to_the_generalist() -> None:
    assert expected_route("refunds", {"refunds", "orders"}) == "refunds"
    assert expected_route("product", {"refunds", "orders"}) == "generalist"


def test_percentiles_interpolate() -> None:
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([], 50) == 0.0


def test_latency_percentiles_come_from_the_outcomes(summary: Summary) -> None:
    latencies = sorted(o.latency for o in summary.outcomes)
    assert summary.latency_p50 == pytest.approx((latencies[2] + latencies[3]) / 2)
    assert latencies[0] <= summary.latency_p95 <= latencies[-1]
