"""Every example config (and every benchmark config) passes `modelyard check` with no API keys
in the environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from tests.conftest import EXAMPLES, skip_without_shared_data

CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
BENCH_CONFIGS = sorted((EXAMPLES.parent / "bench" / "configs").glob("*.yaml"))
KEY_VARIABLES = [name for name in os.environ if name.endswith(("_API_KEY", "_KEY"))]


def test_there_are_examples() -> None:
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize(
    "config", [*CONFIGS, *BENCH_CONFIGS], ids=[c.name for c in [*CONFIGS, *BENCH_CONFIGS]]
)
def test_example_passes_check_without_keys(config: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    skip_without_shared_data(config)
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name)
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
