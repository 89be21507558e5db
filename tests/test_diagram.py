"""Architecture diagrams computed from the model graph: every node once, in columns by depth,
edges from parent to child, fallbacks dashed, disabled models marked."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.diagram import NODE_HEIGHT, Layout, Link, layout, system_svg

from .demo.conftest import DESK


@pytest.fixture
def drawn(write_config: Callable[[str], Path]) -> Layout:
    return layout(modelyard.load(write_config(DESK)).systems["desk"])


def _node(drawn: Layout, name: str) -> int:
    return next(i for i, n in enumerate(drawn.nodes) if n.name == name)


def test_every_node_is_drawn_once(drawn: Layout) -> None:
    names = sorted(n.name for n in drawn.nodes)
    assert names == ["answer", "big", "cheap", "desk", "labeller", "lookup", "orders", "triage"]


def test_a_node_sits_right_of_every_parent(drawn: Layout) -> None:
    columns = {n.name: n.column for n in drawn.nodes}
    assert columns == {
        "desk": 0,
        "triage": 1,
        "labeller": 2,
        "orders": 2,
        "lookup": 3,
        "answer": 3,  # right of orders, its deepest parent
        "cheap": 4,
        "big": 4,  # right of answer, though desk reaches it directly too
    }


def test_each_edge_runs_from_a_parent_box_to_a_child_box(drawn: Layout) -> None:
    assert len(drawn.links) == 9
    boxes = [(n.x, n.x + n.width, n.y, n.y + NODE_HEIGHT) for n in drawn.nodes]
    for link in drawn.links:
        (x1, y1), (x2, y2) = link.points[0], link.points[-1]
        assert any(right == x1 and top <= y1 <= bottom for _, right, top, bottom in boxes)
        assert any(left == x2 and top <= y2 <= bottom for left, _, top, bottom in boxes)
        assert x2 > x1


def test_a_long_edge_bends_through_the_columns_between(drawn: Layout) -> None:
    desk = drawn.nodes[_node(drawn, "desk")]
    big = drawn.nodes[_node(drawn, "big")]
    edge = next(
        link
        for link in drawn.links
        if link.points[0][0] == desk.x + desk.width and link.points[-1][0] == big.x
    )
    assert len(edge.points) == 2 + 2 * 3  # through the columns of triage, orders and answer


def test_nodes_do_not_overlap(drawn: Layout) -> None:
    for a in drawn.nodes:
        for b in drawn.nodes:
            if a is not b and a.column == b.column:
                assert abs(a.y - b.y) >= NODE_HEIGHT


def test_only_edges_to_later_fallback_members_are_dashed(drawn: Layout) -> None:
    dashed = [link for link in drawn.links if link.dashed]
    assert len(dashed) == 1
    answer = drawn.nodes[_node(drawn, "answer")]
    assert dashed[0].points[-1][0] == answer.x
    assert dashed[0].role == ""


FALLBACKS = """
models:
  a: {local: {type: fake}}
  b: {local: {type: fake}}
  c: {local: {type: fake}}
  d: {local: {type: fake}, fallbacks: [b]}
systems:
  s: {type: fallback, chain: [a, d], on_error: {content_filter: [c]}}
"""


def test_a_models_fallbacks_and_a_fallbacks_on_error_nodes_are_dashed(
    write_config: Callable[[str], Path],
) -> None:
    """Each is asked only when what comes before it failed, as the legend says of dashed
    edges; both had been drawn solid, a model's `fallbacks:` (its kind the model's own, not
    "fallback") with its "2nd" written on it."""
    drawn = layout(modelyard.load(write_config(FALLBACKS)).systems["s"])
    solid = sorted(drawn.nodes[_to(drawn, link)].name for link in drawn.links if not link.dashed)
    dashed = sorted(drawn.nodes[_to(drawn, link)].name for link in drawn.links if link.dashed)
    assert solid == ["a", "d"]  # s -> a (1st), d -> d (the first of its fallbacks)
    assert dashed == ["b", "c", "d"]  # s -> d (2nd), s -> c (on an error), d -> b (2nd)
    assert not any(link.role for link in drawn.links)


def _to(drawn: Layout, link: Link) -> int:
    """The index of the node `link` ends at."""
    x, y = link.points[-1]
    return next(i for i, n in enumerate(drawn.nodes) if n.x == x and n.y <= y <= n.y + NODE_HEIGHT)


def test_roles_are_written_on_edges(drawn: Layout) -> None:
    roles = sorted(link.role for link in drawn.links if link.role)
    assert roles == [
        "1st (≥ 0.5)", "2nd", "classifier", "orders", "refunds | generalist", "shouting", "triage"
    ]  # fmt: skip


def test_the_svg_names_every_node_and_escapes_text(write_config: Callable[[str], Path]) -> None:
    svg = system_svg(modelyard.load(write_config(DESK)).systems["desk"])
    assert svg.startswith("<svg xmlns='http://www.w3.org/2000/svg'")
    for name in ("desk", "triage", "orders", "lookup", "answer", "cheap", "big", "labeller"):
        assert f">{name}</text>" in svg
    assert "1st (≥ 0.5)" in svg
    assert "rules: regex /^[A-Z !]+$/ -&gt; shouting" in svg  # the tooltip, escaped


HOSTED = """
providers:
  openai: {type: openai, api_key: "${OPENAI_API_KEY}", optional: true}
models:
  local: {local: {type: fake}}
  hosted: {provider: openai, id: gpt-4o-mini-2024-07-18, price: {input: 0.15, output: 0.6}}
systems:
  chain:
    type: cascade
    stages: [{model: local, estimator: {type: confidence}, threshold: 0.5}, {model: hosted}]
"""


def test_a_disabled_model_says_which_variable_enables_it(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    drawn = layout(modelyard.load(write_config(HOSTED)).systems["chain"])
    hosted = drawn.nodes[_node(drawn, "hosted")]
    assert hosted.category == "disabled"
    assert hosted.detail == "disabled until OPENAI_API_KEY is set"


def test_an_enabled_hosted_model_is_drawn_as_hosted(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    drawn = layout(modelyard.load(write_config(HOSTED)).systems["chain"])
    hosted = drawn.nodes[_node(drawn, "hosted")]
    assert (hosted.category, hosted.detail) == ("hosted", "gpt-4o-mini-2024-07-18")
