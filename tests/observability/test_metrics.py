"""Prometheus metrics: what moves when a request is answered or fails, against the ledger."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

import modelyard
from modelyard.cost.accounting import spend_rows
from modelyard.errors import ClientClosedError, ModelTimeoutError, UnavailableError
from modelyard.observability.metrics import Metrics
from modelyard.resilience.deadline import deadline_error
from modelyard.types import ChatResponse, Choice, Decision, Message, Usage, user


def series(metrics: Metrics, name: str, **labels: str) -> float | None:
    """The value of one series in the exposition, or None when it is absent."""
    text = metrics.render().decode()
    for line in text.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and dict(re.findall(r'(\w+)="([^"]*)"', match.group(1))) == labels:
            return float(match.group(2))
    return None


def test_a_failed_request_a_provider_billed_counts_its_cost_and_tokens() -> None:
    metrics = Metrics()
    error = ModelTimeoutError("no answer within 30s", model="big")
    error.cost = 0.0025
    error.usage = Usage(input_tokens=1000, output_tokens=0, estimated=True)
    metrics.failed("support", error, 504, 30.0, billed="big")
    assert series(metrics, "modelyard_cost_usd_total", model="big", system="support") == 0.0025
    tokens = {"model": "big", "system": "support"}
    assert series(metrics, "modelyard_tokens_total", direction="input", **tokens) == 1000
    failed = {"model": "", "provider": "", "status": "504", "system": "support"}
    assert series(metrics, "modelyard_requests_total", **failed) == 1


def test_a_stream_cut_on_a_system_is_billed_to_the_model_the_ledger_names() -> None:
    metrics = Metrics()
    error = ClientClosedError("the client closed the stream before the answer ended")
    error.cost = 0.001
    metrics.failed("support", error, 499, 2.0, billed="cheap")
    assert series(metrics, "modelyard_cost_usd_total", model="cheap", system="support") == 0.001


def test_a_failure_that_cost_nothing_adds_no_cost_series() -> None:
    metrics = Metrics()
    metrics.failed("support", ModelTimeoutError("refused", model="big"), 504, 0.1)
    assert "modelyard_cost_usd_total{" not in metrics.render().decode()


def test_a_fallbacks_billed_failed_try_counts_under_its_own_model_as_in_the_ledger() -> None:
    # The primary timed out after the provider had the request (its input is billed), and the
    # backup answered: the ledger charges each its own part, and so must the metrics.
    decision = Decision(
        node="support",
        kind="fallback",
        chosen="backup",
        cost=0.003,
        children=(
            Decision(node="primary", kind="model", cost=0.001, error="timeout: no answer"),
            Decision(node="backup", kind="model", chosen="backup-id", cost=0.002),
        ),
    )
    response = ChatResponse(
        id="r1",
        model="backup",
        provider_model="backup-id",
        choices=(Choice(message=Message(role="assistant", content="hi")),),
        usage=Usage(input_tokens=10, output_tokens=5),
        cost=0.003,
        decision=decision,
    )
    metrics = Metrics()
    metrics.answered("support", response, "openai", 0.5)
    ledger = {row.model: row.cost for row in spend_rows("support", user("hi"), response, None)}
    counted = {
        model: series(metrics, "modelyard_cost_usd_total", model=model, system="support")
        for model in ledger
    }
    assert counted == pytest.approx(ledger) and ledger == pytest.approx(
        {"primary": 0.001, "backup": 0.002}
    )


def test_a_failed_request_counts_each_failed_call_under_its_model_and_kind() -> None:
    decision = Decision(
        node="support",
        kind="fallback",
        error="unavailable: every member failed",
        children=(
            Decision(node="primary", kind="model", error="timeout: no answer within 30s"),
            Decision(
                node="backup", kind="model", error="rate_limited: client-side limit of model:backup"
            ),
            Decision(node="odd", kind="model", error="something no kind is called"),
        ),
    )
    error = ModelTimeoutError("no answer within 30s", model="primary")
    error.decision = decision
    metrics = Metrics()
    metrics.failed("support", error, 504, 30.0)
    calls = {
        (model, kind): series(
            metrics, "modelyard_model_errors_total", kind=kind, model=model, system="support"
        )
        for model, kind in (("primary", "timeout"), ("backup", "rate_limited"), ("odd", "other"))
    }
    assert calls == {("primary", "timeout"): 1, ("backup", "rate_limited"): 1, ("odd", "other"): 1}
    assert (
        series(
            metrics,
            "modelyard_model_errors_total",
            kind="unavailable",
            model="support",
            system="support",
        )
        is None
    )


def test_a_semantic_cache_hit_bills_its_lookups_embedding_to_the_embedder_as_the_ledger_does() -> (
    None
):
    embedding = Decision(node="emb", kind="embedder", cost=0.0001)
    hit = Decision(
        node="support",
        kind="cache",
        chosen="cheap",
        cost=0.0001,
        children=(embedding,),
        details={"hit": True, "match": "semantic", "saved": 0.002},
    )
    response = ChatResponse(
        id="cache-1",
        model="cheap",
        provider_model="cheap-id",
        choices=(Choice(message=Message(role="assistant", content="hi")),),
        cost=0.0001,
        decision=hit,
    )
    metrics = Metrics()
    metrics.answered("support", response, "cache", 0.01, saved=0.002)
    rows = spend_rows("support", user("hi"), response, None)
    ledger = {row.model: row.cost for row in rows}
    assert ledger == pytest.approx({"cheap": 0.0, "emb": 0.0001})
    counted = {
        model: series(metrics, "modelyard_cost_usd_total", model=model, system="support")
        for model in ledger
    }
    assert counted == pytest.approx(ledger)  # the model whose answer was served cost nothing
    assert [row.model for row in rows if row.cached] == ["cheap"]


async def test_calls_refused_by_an_open_circuit_or_a_deadline_count_under_their_error_kind(
    write_config: Callable[[str], Path],
) -> None:
    # Their records led with free text, which the metrics counted as kind "other".
    text = """
models:
  down:
    local: {type: fake, default: {error: unavailable}}
    breaker: {failure_rate: 0.5, min_calls: 2, window: 30, open_for: 60}
"""
    errors = []
    async with modelyard.load(write_config(text)) as yard:
        for _ in range(3):  # two failures open the circuit; the third call is refused by it
            with pytest.raises(UnavailableError) as caught:
                await yard.complete("down", "hi")
            errors.append(caught.value)
    assert errors[-1].decision is not None and errors[-1].decision.reason == "circuit open"
    errors.append(deadline_error("slow", "waiting for its answer"))
    metrics = Metrics()
    for error in errors:
        metrics.failed("desk", error, 503, 0.1)
    counted = {
        (model, kind): series(
            metrics, "modelyard_model_errors_total", kind=kind, model=model, system="desk"
        )
        for model, kind in (("down", "unavailable"), ("slow", "timeout"))
    }
    assert counted == {("down", "unavailable"): 3, ("slow", "timeout"): 1}
    assert "other" not in metrics.render().decode()


WORKER = """
import sys
from modelyard.observability.metrics import Metrics
from modelyard.types import ChatResponse, Choice, Message, Usage

metrics = Metrics()
answer = ChatResponse(
    id="r1",
    model="cheap",
    provider_model="cheap-id",
    choices=(Choice(message=Message(role="assistant", content="ok")),),
    usage=Usage(input_tokens=10, output_tokens=2),
    cost=0.5,
)
for _ in range(int(sys.argv[1])):
    metrics.answered("support", answer, "openai", 0.1)
metrics.store_health("sqlite", "normal", True)
sys.stdout.write(metrics.render().decode())
"""


def test_the_workers_of_one_serve_add_up_in_whichever_answers_the_scrape(tmp_path: Path) -> None:
    """`serve --workers N`: each scrape of /metrics reaches one worker. Its counters must be
    the gateway's (every worker's, those a SIGHUP replaced too), not that worker's alone:
    Prometheus reads a counter that drops between scrapes as a restart."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # as `serve` sets it

    def worker(requests: int) -> str:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, str(requests)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker(2)  # a worker that served two requests, then was replaced
    text = worker(3)
    labels = 'model="cheap",provider="openai",status="200",system="support"'
    assert f"modelyard_requests_total{{{labels}}} 5.0" in text.splitlines()
    assert 'modelyard_request_seconds_count{system="support"} 5.0' in text.splitlines()
    assert 'modelyard_cost_usd_total{model="cheap",system="support"} 2.5' in text.splitlines()
    # the state store as the answering worker sees it, once
    assert text.count("modelyard_state_store_up{") == 1
    assert 'modelyard_state_store_up{backend="sqlite",mode="normal"} 1.0' in text.splitlines()


async def test_a_failed_request_that_cost_nothing_counts_the_tokens_its_calls_used(
    write_config: Callable[[str], Path],
) -> None:
    # A free draft answered, then the polish stage's model failed: the error costs $0 with no
    # estimate, and the metrics skipped the draft's tokens, which its ledger row carries.
    text = """
models:
  draft: {local: {type: fake, default: "a first draft"}}
  down: {local: {type: fake, default: {error: unavailable}}}
systems:
  drafting:
    type: pipeline
    stages:
      - {name: draft, model: draft}
      - {name: polish, model: down, input: "Polish: {previous}"}
"""
    async with modelyard.load(write_config(text)) as yard:
        with pytest.raises(UnavailableError) as caught:
            await yard.complete("drafting", "hi")
    error = caught.value
    assert error.cost == 0 and error.usage is None
    metrics = Metrics()
    metrics.failed("drafting", error, 503, 0.1)
    rows = spend_rows("drafting", user("hi"), None, error)
    assert {row.model: row.input_tokens for row in rows if row.input_tokens} == {"draft": 5}
    for row in rows:
        for direction, tokens in (("input", row.input_tokens), ("output", row.output_tokens)):
            labels = {"direction": direction, "model": row.model, "system": "drafting"}
            assert (series(metrics, "modelyard_tokens_total", **labels) or 0) == tokens
