"""Every example config (and every benchmark config) passes `modelyard check` with no API keys
in the environment."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from tests.conftest import EXAMPLES, skip_without_shared_data

CONFIGS = sorted(EXAMPLES.glob("*.yaml"))
BENCH_CONFIGS = sorted((EXAMPLES.parent / "bench" / "configs").glob("*.yaml"))
KEY_VARIABLES = [name for name in os.environ if name.endswith(("_API_KEY", "_KEY"))]
MIXTRAL, GPT4 = "mistralai/Mixtral-8x7B-Instruct-v0.1", "gpt-4-1106-preview"
# Benchmark configs whose learned part reads an artifact that `modelyard train` writes (into the
# ignored bench/out): the variable that names it, and how to train a small one for `check`.
TRAINED: dict[str, tuple[str, list[str]]] = {
    "routellm-gsm8k-check.yaml": ("GSM8K_CHECK", ["--features", "answer", "--models", MIXTRAL]),
    "routellm-mmlu-router.yaml": ("MMLU_ROUTER", []),
}


def test_there_are_examples() -> None:
    assert len(CONFIGS) >= 5


def test_the_readme_names_the_lines_of_the_quickstarts_openai_provider() -> None:
    """The README's "Pointing it at hosted providers" names the quickstart's lines by number."""
    readme = (EXAMPLES.parent / "README.md").read_text(encoding="utf-8")
    match = re.search(r"lines (\d+)-(\d+) of the quickstart", readme)
    assert match is not None
    first, last = int(match[1]), int(match[2])
    lines = (EXAMPLES / "quickstart.yaml").read_text(encoding="utf-8").splitlines()
    block = lines[first - 1 : last]
    assert block[0] == "providers:" and block[1].split("#")[0].strip() == "openai:"
    assert any("optional: true" in line for line in block)
    assert lines[last].strip() == ""  # the provider ends where the README says


@pytest.mark.parametrize(
    "config", [*CONFIGS, *BENCH_CONFIGS], ids=[c.name for c in [*CONFIGS, *BENCH_CONFIGS]]
)
def test_example_passes_check_without_keys(
    config: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    skip_without_shared_data(config)
    for name in KEY_VARIABLES:
        monkeypatch.delenv(name)
    if config.name in TRAINED:
        variable, options = TRAINED[config.name]
        monkeypatch.setenv(variable, str(train_small_artifact(config, options, tmp_path)))
    result = CliRunner().invoke(app, ["check", str(config)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.output
    assert "warning:" not in result.output  # a new user's first `check` has nothing to fix


def train_small_artifact(config: Path, options: list[str], where: Path) -> Path:
    """Train the config's artifact on a few made-up outcomes: `check` needs one that exists."""
    outcomes, artifact = where / "outcomes.jsonl", where / "artifact.npz"
    rows = [
        {"prompt": f"question {i}", "model": model, "response": f"answer {i}", "correct": right}
        for i in range(6)
        for model, right in ((MIXTRAL, i % 2 == 0), (GPT4, i % 3 != 0))
    ]
    outcomes.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    args = ["train", str(outcomes), "--embedder", "hash", "--config", str(config)]
    result = CliRunner().invoke(app, [*args, *options, "-o", str(artifact)])
    assert result.exit_code == 0, result.output
    return artifact


def test_the_resilience_guides_config_passes_check(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/resilience.md's "Config" block is a whole config a reader can copy: every model it
    names is defined in it."""
    guide = (EXAMPLES.parent / "docs" / "resilience.md").read_text(encoding="utf-8")
    match = re.search(r"## Config\n+```yaml\n(.*?)```", guide, re.DOTALL)
    assert match is not None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    result = CliRunner().invoke(app, ["check", str(write_config(match[1]))])
    assert result.exit_code == 0, result.output
