"""Movable model aliases and drift from pinned ids."""

from __future__ import annotations

import pytest

from modelyard.providers.pinning import alias_reason, alias_warnings, drift


@pytest.mark.parametrize(
    "model_id",
    [
        "gpt-4o",
        "gpt-4-turbo",
        "chatgpt-4o-latest",
        "claude-sonnet-4-5",
        "claude-3-5-sonnet-latest",
        "gemini-1.5-pro",
        "mistral-large-latest",
        "llama3:latest",
    ],
)
def test_aliases_are_flagged(model_id: str) -> None:
    assert alias_reason(model_id) is not None


@pytest.mark.parametrize(
    "model_id",
    [
        "gpt-4o-2024-08-06",
        "gpt-4-1106-preview",
        "gpt-3.5-turbo-0125",
        "claude-sonnet-4-5-20250929",
        "claude-3-5-sonnet-20241022",
        "gemini-1.5-pro-002",
        "mistral-large-2411",
        "meta-llama/Llama-3.1-8B-Instruct",
    ],
)
def test_pinned_or_unknown_ids_pass(model_id: str) -> None:
    assert alias_reason(model_id) is None


def test_an_alias_resolving_to_its_dated_version_is_not_drift() -> None:
    assert drift("gpt-4o", "gpt-4o-2024-08-06") is None


def test_a_pinned_id_answered_by_another_version_is_drift() -> None:
    message = drift("gpt-4o-2024-08-06", "gpt-4o-2024-11-20")
    assert message is not None and "gpt-4o-2024-11-20" in message


def test_warnings_name_the_model_and_the_id() -> None:
    (warning,) = alias_warnings({"fast": "gpt-4o-mini", "pinned": "gpt-4o-2024-08-06"})
    assert "'fast'" in warning and "'gpt-4o-mini'" in warning


@pytest.mark.parametrize(
    ("model_id", "pin"),
    [
        ("gpt-4o-mini", "gpt-4o-mini-YYYY-MM-DD"),
        ("claude-sonnet-4-5", "claude-sonnet-4-5-YYYYMMDD"),
        ("gemini-1.5-flash", "gemini-1.5-flash-00N"),
        ("mistral-small", "mistral-small-YYMM"),
    ],
)
def test_the_pin_suggested_is_of_the_same_model(model_id: str, pin: str) -> None:
    # Suggesting gpt-4o-2024-08-06 for gpt-4o-mini would pin a different, dearer model.
    reason = alias_reason(model_id)
    assert reason is not None and pin in reason


def test_a_latest_alias_warning_reads_as_a_sentence() -> None:
    (warning,) = alias_warnings({"chat": "chatgpt-4o-latest"})
    assert "is an alias ending in 'latest'" in warning


def test_check_warns_about_an_alias_and_not_about_a_pinned_id(tmp_path: object) -> None:
    from pathlib import Path

    from typer.testing import CliRunner

    from modelyard.cli import app

    assert isinstance(tmp_path, Path)
    config = tmp_path / "c.yaml"
    config.write_text(
        "providers:\n  google: {type: gemini, api_key: testtesttest}\nmodels:\n"
        "  moving: {provider: google, id: gemini-1.5-pro, price: {input: 1, output: 1}}\n"
        "  pinned: {provider: google, id: gemini-1.5-pro-002, price: {input: 1, output: 1}}\n"
    )
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 0
    assert "model 'moving'" in result.output and "model 'pinned'" not in result.output
