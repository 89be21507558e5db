"""What eval, compare and gate print and write: figures a client can read as they are."""

from __future__ import annotations

from dataclasses import replace

import pytest

from modelyard.cli.app import console
from modelyard.cli.evidence_output import _print_nodes, print_gate
from modelyard.evaluation.gate import Tolerances, judge
from modelyard.evaluation.html import gate_html, report_rows
from modelyard.evaluation.report import NodeStats, Tally, summarize
from modelyard.evaluation.runner import ItemResult
from tests.evaluation.conftest import scored


def _item(item: str, *, score: float = 1.0) -> ItemResult:
    return scored(item, score=score, cost=3e-6)


@pytest.fixture(autouse=True)
def wide(monkeypatch: pytest.MonkeyPatch) -> None:
    """A terminal wide enough that no column is cut."""
    monkeypatch.setattr(console, "width", 200)


def _gate(base: list[ItemResult], cand: list[ItemResult]):  # type: ignore[no-untyped-def]
    base_report, cand_report = summarize("main", base), summarize("main", cand)
    return judge(base_report, cand_report, Tally.of(base), Tally.of(cand), Tolerances())


def test_a_cheap_run_s_cost_reads_in_dollars_not_as_zero_or_an_exponent(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Six answers at $0.000003 had printed `total $ 0.0000` beside `$/item 3e-06`."""
    result = _gate([_item(str(i)) for i in range(6)], [_item(str(i)) for i in range(6)])
    print_gate(result)
    shown = capsys.readouterr().out
    assert "0.000018" in shown and "0.000003" in shown
    assert "0.0000 " not in shown and "e-06" not in shown
    rows = dict(report_rows(result.baseline))
    assert rows["cost per item (USD)"] == "0.000003"
    assert rows["total cost (USD)"] == "0.000018"


def test_a_node_that_ran_but_chose_nothing_in_the_candidate_says_so(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A cascade stage unsure on every item records no choice: the line had ended at
    `candidate`, as if cut off."""
    result = _gate([_item("1")], [_item("1")])
    stage = "main/first"
    base = replace(result.baseline, nodes={stage: NodeStats(kind="stage", chosen={"first": 1})})
    cand = replace(result.candidate, nodes={stage: NodeStats(kind="stage")})
    print_gate(replace(result, baseline=base, candidate=cand))
    shown = " ".join(capsys.readouterr().out.split())
    assert "main/first baseline chose first: 1; candidate chose nothing" in shown


def test_the_gate_page_names_the_items_the_candidate_broke_and_fixed() -> None:
    """The page had said only `1 items broken, 0 fixed.`: a reader could not tell which."""
    base = [_item("refund-1"), _item("hours"), _item("boots", score=0.0)]
    cand = [_item("refund-1", score=0.0), _item("hours"), _item("boots")]
    page = gate_html(_gate(base, cand))
    assert "1 item broken, 1 fixed" in page
    assert "<td>refund-1</td>" in page and "<td>boots</td>" in page


def test_eval_names_a_node_that_chose_nothing_and_leaves_an_embedder_to_its_details(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = replace(
        summarize("main", [_item("1")]),
        nodes={
            "main/first": NodeStats(kind="stage"),
            "main/minilm": NodeStats(kind="embedder", details={"out_of_fold": 1.0}),
        },
    )
    _print_nodes(report)
    shown = capsys.readouterr().out.splitlines()
    assert "main/first stage chose nothing" in shown
    assert "main/minilm embedder out_of_fold≈1" in shown
