"""CLI usage: `ask` prints the answer alone on stdout; input and name errors exit 2."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app

CONFIG = """
providers:
  hosted: {type: openai, api_key: "${NO_SUCH_KEY}", optional: true}
models:
  steady:
    local: {type: fake, default: "the answer"}
    price: {input: 1.0, output: 1.0}
  gpt: {provider: hosted, id: gpt-4o-mini-2024-07-18, price: {input: 1, output: 1}}
systems:
  main: {type: fallback, chain: [gpt, steady]}
"""


def test_stdout_holds_the_answer_alone(write_config: Callable[[str], Path]) -> None:
    result = CliRunner().invoke(app, ["ask", str(write_config(CONFIG)), "main", "hi", "--trace"])
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "the answer"
    assert "note: provider 'hosted' is disabled" in result.stderr
    assert "model steady" in result.stderr and "model steady" not in result.stdout
    assert "fallback" in result.stdout  # the record asked for with --trace


def test_a_failure_says_where_it_arose_and_its_record_is_traced(
    write_config: Callable[[str], Path],
) -> None:
    # It printed the failing model's error alone, and --trace printed no record of the failure.
    config = CONFIG.replace('default: "the answer"', "default: {error: unavailable}")
    result = CliRunner().invoke(app, ["ask", str(write_config(config)), "main", "hi", "--trace"])
    assert result.exit_code == 1
    # A fallback reports its first member's error: the disabled gpt, in main.
    assert "error: gpt: disabled" in result.stderr and "(at main > gpt)" in result.stderr
    assert "main fallback" in result.stdout and "steady model failed" in result.stdout


def test_a_prompt_a_replayed_model_has_no_recording_for_is_a_failed_call(
    write_config: Callable[[str], Path],
) -> None:
    # It was taken for a name missing from the config: exit 2, without the model or the path.
    config = write_config(
        """
models:
  first: {local: {type: replay, data: rec.jsonl, format: jsonl, model: m}}
systems:
  main: {type: fallback, chain: [first]}
"""
    )
    row = '{"prompt": "What is 2+2?", "model": "m", "response": "4", "correct": true}\n'
    (config.parent / "rec.jsonl").write_text(row, encoding="utf-8")
    result = CliRunner().invoke(app, ["ask", str(config), "main", "What is 3+3?"])
    assert result.exit_code == 1
    assert "error: first: no recording for prompt 'What is 3+3?'" in result.stderr
    assert "(at main > first)" in result.stderr
    missing = CliRunner().invoke(app, ["ask", str(config), "mian", "What is 2+2?"])
    assert missing.exit_code == 2


def test_bad_input_is_a_usage_error(write_config: Callable[[str], Path]) -> None:
    config = str(write_config(CONFIG))
    zero = CliRunner().invoke(app, ["ask", config, "main", "hi", "--max-tokens", "0"])
    assert zero.exit_code == 2
    surrogate = CliRunner().invoke(app, ["ask", config, "main", "caf\udce9"])
    assert surrogate.exit_code == 2
    assert "not valid Unicode text" in surrogate.stderr


def test_a_misspelt_name_is_answered_with_the_name_meant(
    write_config: Callable[[str], Path],
) -> None:
    result = CliRunner().invoke(app, ["ask", str(write_config(CONFIG)), "mian", "hi"])
    assert result.exit_code == 2
    assert "no system or model named 'mian'; did you mean 'main'? available: " in result.stderr


def test_a_key_for_a_name_the_config_lacks_is_refused(write_config: Callable[[str], Path]) -> None:
    config = str(write_config(CONFIG))
    result = CliRunner().invoke(app, ["keys", "create", config, "--name", "x", "-s", "mian"])
    assert result.exit_code == 2
    assert "no system or model named 'mian'" in result.stderr
    assert "did you mean 'main'? available: gpt, main, steady" in result.stderr
    assert not list(Path(config).parent.glob(".modelyard/*/keys.sqlite3"))


@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--rpm", "0", "--rpm"),
        ("--max-concurrency", "0", "--max-concurrency"),
        ("--budget", "0", "--budget: expected a positive number of USD"),
        ("--budget", "-5", "--budget: expected a positive number of USD"),
    ],
)
def test_keys_create_refuses_a_limit_that_is_not_positive(
    write_config: Callable[[str], Path], option: str, value: str, said: str
) -> None:
    """A zero rpm or concurrency had made a key without that limit, and a negative budget one
    that nothing could be spent on; the admin route refuses them, and so does the CLI, before
    any key is made."""
    config = str(write_config(CONFIG))
    result = CliRunner().invoke(app, ["keys", "create", config, "--name", "x", option, value])
    assert result.exit_code == 2, result.output
    assert said in result.stderr
    assert not list(Path(config).parent.glob(".modelyard/*/keys.sqlite3"))


def test_keys_create_reads_the_config_once(
    write_config: Callable[[str], Path], parsed: list[str]
) -> None:
    config = str(write_config(CONFIG))
    result = CliRunner().invoke(app, ["keys", "create", config, "--name", "x", "-s", "main"])
    assert result.exit_code == 0, result.output
    assert len(parsed) == 1


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("modelyard ")


def test_demo_checks_its_report_path_before_the_run(tmp_path: Path) -> None:
    from tests.conftest import EXAMPLES

    folder = tmp_path / "out"
    folder.mkdir()
    args = ["demo", str(EXAMPLES / "quickstart.yaml"), "--report", str(folder), "--limit", "1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "cannot write the report" in result.stderr and "modelyard demo" not in result.stdout


def test_several_workers_on_in_memory_state_are_refused(
    write_config: Callable[[str], Path],
) -> None:
    config = str(write_config(CONFIG + "state: {backend: memory}\n"))
    result = CliRunner().invoke(app, ["serve", config, "--workers", "2", "--port", "1"])
    assert result.exit_code == 2
    assert "would each count budgets and rate limits alone" in result.stderr


def test_python_dash_m_runs_the_cli() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "modelyard", "serve", "--help"], capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert b"--workers" in done.stdout


def test_text_from_the_config_and_the_answers_is_printed_as_written(
    write_config: Callable[[str], Path],
) -> None:
    """Names, notes, warnings and decision reasons are data, not Rich markup: a model named
    `gpt[/]`, or a vote on answers that read `[/INST] yes`, print as they are instead of
    crashing the command with a MarkupError (or losing `[bold]`-like words)."""
    config = str(
        write_config(
            """
providers:
  hosted: {type: openai, api_key: "${NO_SUCH_KEY}", optional: true}
models:
  "gpt[/]": {provider: hosted, id: gpt-4o, price: {input: 1, output: 1}}
  a: {local: {type: fake, default: "[/INST] yes"}, price: {input: 1, output: 1}}
  b: {local: {type: fake, default: "[/INST] yes"}, price: {input: 1, output: 1}}
systems:
  vote: {type: ensemble, members: [a, b], combine: vote}
"""
        )
    )
    checked = CliRunner().invoke(app, ["check", config])
    assert checked.exit_code == 0, checked.output
    assert "warning: model 'gpt[/]'" in checked.stdout
    asked = CliRunner().invoke(app, ["ask", config, "vote", "hi", "--trace"])
    assert asked.exit_code == 0, asked.output
    assert "'[/inst] yes' won" in asked.stdout  # the vote's normalised answer


def test_notes_on_stderr_stay_whole_lines_in_a_log(write_config: Callable[[str], Path]) -> None:
    """stderr read by a pipe or a log is not a terminal: a note is one line, never cut at 80
    columns mid-sentence."""
    provider = "a-hosted-provider-whose-name-is-rather-long"
    config = str(
        write_config(CONFIG.replace("hosted:", f"{provider}:").replace("hosted,", f"{provider},"))
    )
    result = CliRunner().invoke(app, ["ask", config, "main", "hi"])
    assert result.exit_code == 0, result.output
    note = f"note: provider '{provider}' is disabled: environment variable NO_SUCH_KEY is not set"
    assert note in result.stderr.splitlines()


@pytest.mark.parametrize(
    "option", [["--port", "0"], ["--port", "65536"], ["--workers", "0"], ["--workers", "-1"]]
)
def test_serve_refuses_a_port_or_worker_count_that_cannot_be(
    write_config: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch, option: list[str]
) -> None:
    """As `gateway.port` and `gateway.workers` are checked in the config: a port out of range
    had started a gateway that never listened, and `--workers 0` silently meant one."""
    import modelyard.gateway.server

    started: list[object] = []
    monkeypatch.setattr(modelyard.gateway.server, "serve", lambda *a, **k: started.append(k))
    result = CliRunner().invoke(app, ["serve", str(write_config(CONFIG)), *option])
    assert result.exit_code == 2, result.output
    assert option[0] in result.output and not started


def test_a_records_micro_dollar_costs_do_not_read_as_zero(
    write_config: Callable[[str], Path],
) -> None:
    # What a short embedding costs: a few hundredths of a millionth.
    config = """
models:
  tiny: {local: {type: fake, default: "ok"}, price: {input: 0.02, output: 0.02}}
systems:
  main: {type: fallback, chain: [tiny]}
"""
    result = CliRunner().invoke(app, ["ask", str(write_config(config)), "main", "hi", "--trace"])
    assert result.exit_code == 0, result.output
    assert "$0.000000" not in result.output
    assert "cost $1.2e-07" in result.stderr and "$1.2e-07" in result.stdout  # 6 tokens


def test_diagram_of_a_misspelt_system_is_answered_with_the_name_meant(
    write_config: Callable[[str], Path],
) -> None:
    result = CliRunner().invoke(app, ["diagram", str(write_config(CONFIG)), "mian"])
    assert result.exit_code == 2
    assert "no system 'mian' in the config; did you mean 'main'?" in result.stderr


def test_diagram_of_a_config_without_systems_says_so(write_config: Callable[[str], Path]) -> None:
    config = write_config("models:\n  a: {local: {type: fake}}\n")
    result = CliRunner().invoke(app, ["diagram", str(config)])
    assert result.exit_code == 2
    assert "the config has no systems: add one under systems:" in result.stderr


def test_diagram_of_several_entry_points_says_how_to_pick_one(
    write_config: Callable[[str], Path],
) -> None:
    config = write_config(CONFIG + "  other: {type: fallback, chain: [steady]}\n")
    result = CliRunner().invoke(app, ["diagram", str(config)])
    assert result.exit_code == 2
    assert "2 entry points; name one after the config: main, other" in result.stderr


def test_revoking_an_unknown_key_points_to_the_list(write_config: Callable[[str], Path]) -> None:
    config = str(write_config(CONFIG))
    result = CliRunner().invoke(app, ["keys", "revoke", config, "nope"])
    assert result.exit_code == 2
    assert f"no active key 'nope'; `modelyard keys list {config}` shows" in result.stderr


def test_serve_help_says_what_several_workers_share_on_the_default_store() -> None:
    """It had said a key's rpm was shared "through redis or postgres only"; several workers on
    the default SQLite file share it too (docs/operations.md), as they do budgets."""
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    help_text = " ".join(result.output.replace("│", " ").split())
    assert "redis or postgres only" not in help_text
    assert "a key's rpm, tpm" in help_text and "sqlite, the default" in help_text


def test_serve_help_says_a_keys_concurrency_is_shared_by_the_workers() -> None:
    """It said "concurrency limits are per process" after a key's max_concurrency came to be
    counted in the state store by every worker; a model's or a provider's still is not."""
    result = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200)
    help_text = " ".join(result.output.replace("│", " ").split())
    assert "concurrency limits are per process" not in help_text
    assert "a key's rpm, tpm and max_concurrency too" in help_text
    assert "a model's or a provider's max_concurrency is per process" in help_text
