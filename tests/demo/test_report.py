"""The HTML report: written, self-contained, with the diagram, the charts and every ticket."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.demo.report import render, write_report
from modelyard.demo.summary import cascade_stages, known_routes, largest_model, summarise
from modelyard.demo.workload import read_tickets, run_workload
from modelyard.diagram import system_svg
from modelyard.yard import Yard


@pytest.fixture
async def html(desk: Callable[[], Yard], desk_config: Path) -> str:
    async with desk() as yard:
        tickets = read_tickets(desk_config.parent / "tickets.jsonl")
        outcomes = await run_workload(yard, "desk", tickets)
        system = yard.systems["desk"]
        summary = summarise(
            outcomes,
            routes=known_routes(system),
            stages=cascade_stages(system),
            baseline=largest_model(yard.models),
            wall_time=0.5,
        )
        return render(
            summary,
            title="demo of the desk",
            subtitle="desk.yaml",
            diagram_svg=system_svg(system),
            notes=["a note to show"],
        )


def test_the_report_is_written_where_asked(html: str, tmp_path: Path) -> None:
    path = write_report(tmp_path / "reports" / "demo.html", html)
    assert path.read_text(encoding="utf-8") == html


def test_it_holds_the_diagram_drawn_from_the_graph(html: str) -> None:
    assert "<svg xmlns='http://www.w3.org/2000/svg'" in html
    for name in ("desk", "triage", "orders", "answer", "cheap", "big"):
        assert f">{name}</text>" in html


def test_it_opens_offline(html: str) -> None:
    assert "plotly.js v" in html  # the library itself is inline
    assert not re.search(r"<script[^>]+src=", html)


def test_it_has_the_charts(html: str) -> None:
    for title in (
        "Tickets per route",
        "Which model answered",
        "Cascade stages: what each did",
        "Latency by answering model",
        "Cost per 1,000 tickets",
        "Routing: label (rows) against route taken",
    ):
        assert title in html


def test_it_lists_every_ticket_with_its_decision_record(html: str) -> None:
    for ticket in ("t1", "t2", "t3", "t4", "t5", "t6"):
        assert f"<td>{ticket}</td>" in html
    assert html.count("<summary>decision record</summary>") == 6
    assert "orders [fallback] -&gt; answer" in html


def test_it_shows_the_key_numbers_and_notes(html: str) -> None:
    assert "83.3%" in html  # 5 of 6 routed right
    assert "All on big" in html
    assert "<li>a note to show</li>" in html
