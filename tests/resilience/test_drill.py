"""The failover drill: verdicts per fault, exit codes, and that no real provider is touched."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import NotFoundError
from modelyard.resilience.drill import Workload, run_drill
from tests.conftest import EXAMPLES, skip_without_shared_data

TWO_PROVIDERS = """
providers:
  alpha: {type: openai, api_key: "${ALPHA_KEY}", base_url: "http://127.0.0.1:9"}
  beta: {type: anthropic, api_key: "${BETA_KEY}", base_url: "http://127.0.0.1:9"}
models:
  a1: {provider: alpha, id: a1, price: {input: 1, output: 1}}
  b1: {provider: beta, id: b1, price: {input: 1, output: 1}, capabilities: {prefill: true}}
systems:
  main:
    type: fallback
    chain: [a1, b1]
    continue_streams: true
default_deadline: 20
"""

ONE_PROVIDER = """
providers:
  alpha: {type: openai, api_key: sk-none-at-all, base_url: "http://127.0.0.1:9"}
models:
  a1: {provider: alpha, id: a1, price: {input: 1, output: 1}}
systems:
  main: {type: fallback, chain: [a1]}
"""

Write = Callable[[str], Path]
QUICK = Workload(requests=4, concurrency=2)
# Where a drill runs into its deadline (the slow fault), time runs 20x faster rather than the
# default 100x: the 20 s deadline is 1 s of real time, so a 100 ms stall of a busy machine
# cannot use up the share kept for the fallback.
SLOW_SCALE = 0.05


async def test_two_providers_survive_every_fault_of_either(write_config: Write) -> None:
    report = await run_drill(
        write_config(TWO_PROVIDERS), workload=QUICK, env={}, time_scale=SLOW_SCALE
    )
    assert {(r.provider, r.fault) for r in report.results} == {
        (p, f)
        for p in ("alpha", "beta")
        for f in ("down", "slow", "rate_limited", "server_error", "cut_streams")
    }
    assert all(r.verdict == "survived" for r in report.results), [
        (r.provider, r.fault, dict(r.errors)) for r in report.results if r.verdict != "survived"
    ]
    assert report.ok(strict=True)


async def test_answers_come_from_the_other_provider_when_one_is_down(write_config: Write) -> None:
    report = await run_drill(write_config(TWO_PROVIDERS), faults=["down"], workload=QUICK, env={})
    by_provider = {r.provider: r.answered_by for r in report.results}
    assert set(by_provider["alpha"]) == {"b1"}
    assert set(by_provider["beta"]) == {"a1"}


async def test_a_slow_primary_adds_latency_but_is_survived(write_config: Write) -> None:
    report = await run_drill(
        write_config(TWO_PROVIDERS), faults=["slow"], workload=QUICK, env={}, time_scale=SLOW_SCALE
    )
    alpha = next(r for r in report.results if r.provider == "alpha")
    assert alpha.verdict == "survived"
    assert alpha.added_latency > 1.0


async def test_a_single_provider_does_not_survive_its_outage(write_config: Write) -> None:
    report = await run_drill(write_config(ONE_PROVIDER), faults=["down"], workload=QUICK)
    (result,) = report.results
    assert result.verdict == "failed"
    assert any("connection refused" in error for error in result.errors)
    assert not report.ok()


async def test_a_drill_runs_off_production_cache_budgets_and_ledger(write_config: Write) -> None:
    """The drill builds the production config: its traffic must neither be answered from (nor
    stored in) the shared cache, where a baseline answer would hide the outage, nor charge a
    budget or land in the ledger."""
    path = write_config(
        ONE_PROVIDER
        + "cache: {backend: sqlite}\n"
        + "budgets: [{name: tiny, scope: total, window: day, limit: 0.000001}]\n"
    )
    report = await run_drill(path, faults=["down"], workload=QUICK)
    assert all(o.answered for outcomes in report.baselines.values() for o in outcomes)
    (result,) = report.results
    assert result.verdict == "failed"
    assert not (path.parent / ".modelyard").exists()


async def test_cut_streams_without_continuation_are_degraded_not_hidden(
    write_config: Write,
) -> None:
    report = await run_drill(write_config(ONE_PROVIDER), faults=["cut_streams"], workload=QUICK)
    (result,) = report.results
    assert result.verdict == "degraded"
    assert sum(o.interrupted for o in result.outcomes) == 2
    assert report.ok() and not report.ok(strict=True)


async def test_an_unknown_target_is_named(write_config: Write) -> None:
    with pytest.raises(NotFoundError) as caught:
        await run_drill(write_config(ONE_PROVIDER), ["nope"], workload=QUICK)
    assert "main" in str(caught.value)


def test_cli_exit_code_follows_the_verdicts(write_config: Write) -> None:
    runner = CliRunner()
    two = str(write_config(TWO_PROVIDERS, "two.yaml"))
    good = runner.invoke(app, ["drill", two, "--requests", "4", "--time-scale", str(SLOW_SCALE)])
    assert good.exit_code == 0, good.output
    assert "survived" in good.output
    bad = runner.invoke(
        app, ["drill", str(write_config(ONE_PROVIDER, "one.yaml")), "--fault", "down"]
    )
    assert bad.exit_code == 1
    assert "connection refused" in bad.output
    typo = runner.invoke(app, ["drill", two, "nosuch"])
    assert typo.exit_code == 2  # a usage error, not a fault the system failed to survive
    assert "no system or model named 'nosuch'" in typo.output


def test_the_json_report_has_the_latencies_the_text_shows(write_config: Write) -> None:
    # A CI step gating on the drill reads the JSON: the worst request (a failover that answers
    # only after the primary's whole timeout) must be there, as it is in the text.
    two = str(write_config(TWO_PROVIDERS, "two.yaml"))
    args = ["drill", two, "--fault", "slow", "--requests", "4", "--time-scale", str(SLOW_SCALE)]
    result = CliRunner().invoke(app, [*args, "--json"])
    assert result.exit_code == 0, result.output
    alpha = next(r for r in json.loads(result.output)["results"] if r["provider"] == "alpha")
    assert alpha["worst_latency_s"] > alpha["added_latency_s"] > 1.0
    assert 0 <= alpha["baseline_latency_s"] < 1.0


def test_a_fault_survived_slower_than_max_latency_fails_the_drill(write_config: Write) -> None:
    # The slow primary is survived only after its whole timeout: past what clients accept.
    two = str(write_config(TWO_PROVIDERS, "two.yaml"))
    args = ["drill", two, "--fault", "slow", "--requests", "4", "--time-scale", str(SLOW_SCALE)]
    runner = CliRunner()
    relaxed = runner.invoke(app, [*args, "--max-latency", "600"])
    assert relaxed.exit_code == 0, relaxed.output
    assert "too slow" not in relaxed.output
    text = runner.invoke(app, [*args, "--max-latency", "0.5"])
    assert text.exit_code == 1, text.output
    assert "too slow" in text.output
    document = runner.invoke(app, [*args, "--max-latency", "0.5", "--json"])
    assert document.exit_code == 1
    report = json.loads(document.output)
    assert report["ok"] is False and report["max_latency_s"] == 0.5
    verdicts = {r["provider"]: (r["verdict"], r["too_slow"]) for r in report["results"]}
    assert verdicts["alpha"] == ("survived", True)  # answered, but after the timeout
    bad = runner.invoke(app, [*args, "--max-latency", "0"])
    assert bad.exit_code != 0 and "--max-latency must be above 0" in bad.output


def test_the_json_verdict_follows_strict_as_the_exit_code_does(write_config: Write) -> None:
    # The cut-streams fault with no continuation is degraded: --strict fails it, in the JSON too.
    one = str(write_config(ONE_PROVIDER, "one.yaml"))
    args = ["drill", one, "--fault", "cut_streams", "--requests", "4", "--json"]
    lenient = CliRunner().invoke(app, args)
    strict = CliRunner().invoke(app, [*args, "--strict"])
    assert json.loads(lenient.output)["ok"] is True and lenient.exit_code == 0
    assert json.loads(strict.output)["ok"] is False and strict.exit_code == 1


@pytest.mark.parametrize("example", sorted(p.name for p in EXAMPLES.glob("*.yaml")))
def test_drill_runs_on_every_example(example: str) -> None:
    skip_without_shared_data(EXAMPLES / example)
    args = ["drill", str(EXAMPLES / example), "--requests", "2", "--time-scale", "0.001"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code in (0, 1), result.output
    assert "healthy baseline" in result.output or "nothing to drill" in result.output


def test_resilient_example_survives_every_fault() -> None:
    args = ["drill", str(EXAMPLES / "resilient.yaml"), "--strict", "--time-scale", str(SLOW_SCALE)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output


async def test_a_config_without_hosted_providers_has_nothing_to_drill(
    write_config: Write,
) -> None:
    text = "models:\n  canned:\n    local: {type: fake, default: hi}\n"
    report = await run_drill(write_config(text), workload=QUICK)
    assert report.results == () and report.ok()
    assert report.notes == ("canned: uses no hosted provider; nothing to drill",)
