"""A system's graph as data: roles of children, wrappers folded away, entry points; and how
`modelyard check` prints it (each shared part once)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from typer.testing import CliRunner

import modelyard
from modelyard.cli import app
from modelyard.topology import edges, entry_points, ordinal, reachable

from .demo.conftest import DESK


def _roles(yard: modelyard.Yard, name: str) -> list[tuple[str, str]]:
    return [(edge.child.name, edge.role) for edge in edges(yard.systems[name])]


def test_children_carry_their_roles(write_config: Callable[[str], Path]) -> None:
    yard = modelyard.load(write_config(DESK))
    assert _roles(yard, "desk") == [("big", "shouting"), ("triage", "triage")]
    assert _roles(yard, "answer") == [("cheap", "1st (≥ 0.5)"), ("big", "2nd")]


def test_a_child_in_several_roles_is_one_edge(write_config: Callable[[str], Path]) -> None:
    yard = modelyard.load(write_config(DESK))
    assert _roles(yard, "triage") == [
        ("labeller", "classifier"),
        ("orders", "orders"),
        ("answer", "refunds | generalist"),
    ]


def test_a_member_an_ensemble_lists_twice_is_drawn_with_its_count(
    write_config: Callable[[str], Path],
) -> None:
    """It is asked twice and votes twice; its edge had said "member", as for one vote, so the
    tree and the diagram showed two members of an ensemble of three."""
    text = (
        "models:\n  a: {local: {type: fake}}\n  b: {local: {type: fake}}\n"
        "systems:\n  s: {type: ensemble, members: [a, b, a]}\n"
    )
    yard = modelyard.load(write_config(text))
    assert _roles(yard, "s") == [("a", "member ×2"), ("b", "member")]
    result = CliRunner().invoke(app, ["check", str(write_config(text))])
    assert result.exit_code == 0, result.output
    assert "member ×2: a" in result.output


def test_a_fallbacks_on_error_nodes_are_named_by_the_errors_they_answer(
    write_config: Callable[[str], Path],
) -> None:
    """They had no role, so `check` drew one as if it were asked like the chain's members."""
    text = (
        "models:\n  a: {local: {type: fake}}\n  b: {local: {type: fake}}\n"
        "  c: {local: {type: fake}}\n"
        "systems:\n  s: {type: fallback, chain: [a, b], on_error: {content_filter: [c]}}\n"
    )
    yard = modelyard.load(write_config(text))
    assert _roles(yard, "s") == [("a", "1st"), ("b", "2nd"), ("c", "on content_filter")]


def test_children_keep_their_roles_under_a_cache_and_a_budget(
    write_config: Callable[[str], Path],
) -> None:
    """A system with a cache and a budget is wrapped in decorations that show its children as
    their own: the roles are still the pattern's (they had all been blank, so `check` drew a
    router's routes and a cascade's stages unnamed)."""
    extra = (
        "cache: {backend: memory}\n"
        "budgets:\n  - {name: b, scope: system, selector: answer, window: day, limit: 5}\n"
    )
    yard = modelyard.load(write_config(DESK + extra))
    assert _roles(yard, "desk") == [("big", "shouting"), ("triage", "triage")]
    assert _roles(yard, "answer") == [("cheap", "1st (≥ 0.5)"), ("big", "2nd")]


def test_reachable_visits_each_node_once(write_config: Callable[[str], Path]) -> None:
    yard = modelyard.load(write_config(DESK))
    names = [node.name for node in reachable(yard.systems["desk"])]
    assert sorted(names) == sorted(set(names))
    assert set(names) == {
        "desk",
        "big",
        "triage",
        "labeller",
        "orders",
        "lookup",
        "answer",
        "cheap",
    }


def test_entry_points_are_the_systems_no_other_uses(write_config: Callable[[str], Path]) -> None:
    yard = modelyard.load(write_config(DESK))
    assert entry_points(yard.systems) == ["desk"]


def test_ordinals() -> None:
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "101st",
    ]  # fmt: skip


def test_check_prints_each_entry_point_with_roles_and_shared_parts_once(
    write_config: Callable[[str], Path],
) -> None:
    result = CliRunner().invoke(app, ["check", str(write_config(DESK))], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[1] == "desk router default=triage, rules=regex /^[A-Z !]+$/ -> shouting"
    assert sum("answer cascade" in line for line in lines) == 1
    assert any(
        line.endswith(
            "2nd: answer cascade stages=cheap if the model's own confidence >= 0.5; big (last)"
        )
        for line in lines
    )
    assert lines[-1].endswith("refunds | generalist: answer (shown above)")
