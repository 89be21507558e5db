"""`modelyard demo` and `modelyard diagram` from the command line, on the scripted desk."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from modelyard.cli import app


def _demo(config: Path, *extra: str) -> tuple[int, str]:
    report = config.parent / "out" / "report.html"
    args = ["demo", str(config), "--tickets", str(config.parent / "tickets.jsonl")]
    result = CliRunner().invoke(
        app, [*args, "--report", str(report), *extra], env={"COLUMNS": "160"}
    )
    return result.exit_code, result.output


def test_demo_prints_the_summary_writes_the_report_and_says_how_to_serve(
    desk_config: Path,
) -> None:
    code, output = _demo(desk_config)
    assert code == 0, output
    assert "✓ system desk ready" in output
    assert "Where the 6 tickets went" in output
    assert "How the cascades escalated" in output
    assert "orders: lookup → answer" in output
    assert "83.3%  5 of 6 labelled tickets took the route of their label" in output
    assert "had big answered every ticket" in output
    assert (desk_config.parent / "out" / "report.html").is_file()
    assert f"modelyard serve {desk_config}" in output
    assert 'OpenAI(base_url="http://127.0.0.1:8080/v1", api_key="unused")' in output
    assert 'model="desk"' in output


def test_the_demo_stays_off_the_configs_books(desk_config: Path) -> None:
    # its tickets are a showcase, not a client's traffic: `modelyard costs` must not count them
    code, output = _demo(desk_config, "--limit", "2")
    assert code == 0, output
    assert not (desk_config.parent / ".modelyard").exists()  # no ledger, cache or state written
    costs = CliRunner().invoke(app, ["costs", str(desk_config)])
    assert "no spend recorded yet" in costs.output, costs.output


def test_limit_asks_only_the_first_tickets(desk_config: Path) -> None:
    code, output = _demo(desk_config, "--limit", "2")
    assert code == 0, output
    assert "Where the 2 tickets went" in output


def test_a_missing_ticket_file_is_one_clear_line(desk_config: Path) -> None:
    result = CliRunner().invoke(app, ["demo", str(desk_config)])
    assert result.exit_code == 2
    assert "no tickets at" in result.output
    assert "give a JSONL file of tickets with --tickets" in result.output


def test_a_config_with_several_entry_points_needs_a_system(desk_config: Path) -> None:
    text = desk_config.read_text(encoding="utf-8") + "  other: {type: fallback, chain: [big]}\n"
    desk_config.write_text(text, encoding="utf-8")
    code, output = _demo(desk_config)
    assert code == 2
    assert "pick one with --system" in output


def test_diagram_writes_an_svg(desk_config: Path, tmp_path: Path) -> None:
    out = tmp_path / "desk.svg"
    result = CliRunner().invoke(app, ["diagram", str(desk_config), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").startswith("<svg")
