"""`/v1/embeddings` spends where chat spends: the ledger and `modelyard costs`, the configured
budgets and their alerts, the metrics and the request log; and it is held to the caller's
deadline as chat is."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

import httpx2
import pytest
from tests.fakes.openai_server import FakeOpenAI, tokens
from tests.fakes.server import Fault
from tests.gateway.conftest import Running
from typer.testing import CliRunner

from modelyard.cli import app as cli
from modelyard.cost.prices import estimate_tokens

TEXTS = ["hello world", "a second text"]
TOKENS = sum(len(tokens(t)) for t in TEXTS)  # what the fake upstream reports: 5
COST = TOKENS * 1000 / 1e6  # at $1,000 per million input tokens


def embed(
    running: Running, model: str = "emb", headers: dict[str, str] | None = None
) -> httpx2.Response:
    return httpx2.post(
        f"{running.url}/v1/embeddings",
        json={"model": model, "input": TEXTS},
        headers=headers or {},
    )


def ledger_rows(running: Running, request_id: str) -> list[dict[str, Any]]:
    """The ledger's rows for one request, waiting for the background writer."""
    path = running.config.parent / ".modelyard" / running.config.name / "ledger.db"
    for _ in range(100):
        if path.exists():
            with sqlite3.connect(path) as db, contextlib.suppress(sqlite3.OperationalError):
                db.row_factory = sqlite3.Row
                rows = db.execute("SELECT * FROM spend WHERE request_id = ?", (request_id,))
                found = [dict(r) for r in rows]
                if found:
                    return found
        threading.Event().wait(0.05)
    return []


def alerts(running: Running) -> list[tuple[str, str]]:
    """(kind, place) of each alert the ledger holds, once one has been written."""
    path = running.config.parent / ".modelyard" / running.config.name / "ledger.db"
    for _ in range(100):
        if path.exists():
            with sqlite3.connect(path) as db, contextlib.suppress(sqlite3.OperationalError):
                found = db.execute("SELECT kind, place FROM alerts").fetchall()
                if found:
                    return found
        threading.Event().wait(0.05)
    return []


def test_an_embeddings_call_is_a_ledger_row_and_costs_reports_it_by_model(
    hosted_embedder: Callable[[str], Running],
) -> None:
    running = hosted_embedder("")
    reply = embed(running, headers={"x-modelyard-tags": "customer:acme"})
    assert reply.status_code == 200, reply.text
    assert float(reply.headers["x-modelyard-cost"]) == pytest.approx(COST)
    rows = ledger_rows(running, reply.headers["x-request-id"])
    assert [(r["system"], r["model"], r["input_tokens"], r["answered"]) for r in rows] == [
        ("emb", "emb", TOKENS, 1)
    ]
    assert rows[0]["cost"] == pytest.approx(COST)
    assert rows[0]["tags"] == '["customer:acme"]'
    report = CliRunner().invoke(cli, ["costs", str(running.config)], env={"COLUMNS": "200"})
    assert report.exit_code == 0, report.output
    by_model = report.output.split("spend by model")[1].split("spend by key")[0]
    assert re.search(rf"emb\s+.*\s1\s+.*{COST:.6f}", by_model), by_model


CAP = 0.058
"""Four calls fit, a fifth would not: each costs $0.005 and its worst case is $0.04 (the UTF-8
bytes of TEXTS and their framing)."""


@pytest.mark.parametrize(
    ("budget", "headers"),
    [
        ("scope: total", {}),
        ("scope: model, selector: emb", {}),
        ("scope: tag, selector: 'customer:acme'", {"x-modelyard-tags": "customer:acme"}),
    ],
    ids=["total", "model", "tag"],
)
def test_an_exhausted_budget_refuses_embeddings_as_it_refuses_chat(
    hosted_embedder: Callable[[str], Running], budget: str, headers: dict[str, str]
) -> None:
    running = hosted_embedder(
        f"budgets:\n  - {{name: cap, {budget}, limit: {CAP}, alert_at: [0.1]}}\n"
    )
    spent, refusal = 0.0, None
    for _ in range(10):
        reply = embed(running, headers=headers)
        if reply.status_code != 200:
            refusal = reply
            break
        spent += float(reply.headers["x-modelyard-cost"])
    assert refusal is not None, f"the budget never refused (spent ${spent:.4f})"
    assert refusal.status_code == 429
    error = refusal.json()["error"]
    assert (error["type"], error["code"]) == ("budget_exceeded", "cap")
    assert "budget cap" in error["message"]
    assert spent == pytest.approx(4 * COST)
    # The refusal is logged with its status, and the ledger has its row, as a chat one's.
    record = httpx2.get(f"{running.url}/v1/requests/{refusal.headers['x-request-id']}").json()
    assert (record["target"], record["status"]) == ("emb", 429)
    rows = ledger_rows(running, refusal.headers["x-request-id"])
    assert [(r["system"], r["error"], r["cost"]) for r in rows] == [("emb", "budget_exceeded", 0.0)]
    # The alerts the budget raised on the way, as chat spend raises them.
    kinds = {kind for kind, _ in alerts(running)}
    assert {"budget_threshold", "budget_reached"} <= kinds


def test_a_total_budget_spent_on_embeddings_refuses_chat_too(
    hosted_embedder: Callable[[str], Running],
) -> None:
    running = hosted_embedder(f"budgets:\n  - {{name: cap, scope: total, limit: {CAP}}}\n")
    # `strong` at up to 2,000 output tokens may cost about $0.04: it fits the cap until the
    # embeddings have spent $0.02 of it.
    chat = {"model": "strong", "max_tokens": 2000, "messages": [{"role": "user", "content": "hi"}]}
    url = f"{running.url}/v1/chat/completions"
    assert httpx2.post(url, json=chat).status_code == 200
    for _ in range(10):
        if embed(running).status_code != 200:
            break
    refused = httpx2.post(url, json=chat)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "cap"


def test_metrics_count_an_embeddings_calls_tokens_and_cost(
    hosted_embedder: Callable[[str], Running],
) -> None:
    running = hosted_embedder("")
    assert embed(running).status_code == 200
    text = httpx2.get(f"{running.url}/metrics").text
    labels = 'model="emb",provider="up",status="200",system="emb"'
    assert f"modelyard_requests_total{{{labels}}} 1.0" in text
    tokens_in = re.search(
        r'modelyard_tokens_total\{direction="input",model="emb",system="emb"\} (\S+)', text
    )
    assert tokens_in is not None and float(tokens_in.group(1)) == TOKENS
    cost = re.search(r'modelyard_cost_usd_total\{model="emb",system="emb"\} (\S+)', text)
    assert cost is not None and float(cost.group(1)) == pytest.approx(COST)


def test_the_request_log_has_an_embeddings_call_with_its_status_and_cost(
    hosted_embedder: Callable[[str], Running],
) -> None:
    running = hosted_embedder("")
    reply = embed(running)
    record = httpx2.get(f"{running.url}/v1/requests/{reply.headers['x-request-id']}").json()
    assert (record["target"], record["model"], record["status"]) == ("emb", "emb", 200)
    assert record["api"] == "embeddings"  # told apart from a chat request's "openai"
    assert record["input_tokens"] == TOKENS
    assert record["cost"] == pytest.approx(COST)
    missing = embed(running, model="nope")
    assert missing.status_code == 404
    logged = httpx2.get(f"{running.url}/v1/requests/{missing.headers['x-request-id']}").json()
    assert (logged["target"], logged["status"]) == ("nope", 404)


def test_a_local_embedder_costs_nothing_but_is_counted_like_a_local_chat_model(
    hosted_embedder: Callable[[str], Running],
) -> None:
    running = hosted_embedder("")
    reply = embed(running, model="hash")
    assert reply.status_code == 200
    rows = ledger_rows(running, reply.headers["x-request-id"])
    assert [(r["model"], r["cost"]) for r in rows] == [("hash", 0.0)]
    assert rows[0]["input_tokens"] > 0
    text = httpx2.get(f"{running.url}/metrics").text
    assert (
        'modelyard_requests_total{model="hash",provider="local",status="200",system="hash"} 1.0'
        in text
    )
    record = httpx2.get(f"{running.url}/v1/requests/{reply.headers['x-request-id']}").json()
    assert (record["status"], record["cost"]) == (200, 0.0)
    assert record["input_tokens"] == rows[0]["input_tokens"]


ESTIMATED = sum(estimate_tokens(t) for t in TEXTS) * 1000 / 1e6
"""What a call the upstream received and never answered costs: its texts' estimated tokens."""


@pytest.mark.parametrize(
    ("extra", "headers"),
    [("", {"x-modelyard-timeout": "0.3"}), ("default_deadline: 0.3\n", {})],
    ids=["header", "config"],
)
def test_a_hanging_embedder_is_cut_at_the_deadline_with_a_504_that_costs_its_texts(
    hosted_embedder: Callable[[str], Running],
    upstream: FakeOpenAI,
    extra: str,
    headers: dict[str, str],
) -> None:
    # The provider would wait 5 s (the client gives up after 3): the deadline cuts it first.
    running = hosted_embedder(extra)
    upstream.always(Fault(hang=True))
    reply = httpx2.post(
        f"{running.url}/v1/embeddings",
        json={"model": "emb", "input": TEXTS},
        headers=headers,
        timeout=3,
    )
    assert reply.status_code == 504, reply.text
    assert "deadline" in reply.json()["error"]["message"]
    request_id = reply.headers["x-request-id"]
    record = httpx2.get(f"{running.url}/v1/requests/{request_id}").json()
    assert (record["status"], record["cost"]) == (504, pytest.approx(ESTIMATED))
    # The tokens its cost is estimated from, marked so: cost and tokens reconcile.
    estimated_tokens = sum(estimate_tokens(t) for t in TEXTS)
    assert (record["input_tokens"], record["tokens_estimated"]) == (estimated_tokens, True)
    rows = ledger_rows(running, request_id)
    assert [(r["model"], r["error"], r["cost"]) for r in rows] == [
        ("emb", "timeout", pytest.approx(ESTIMATED))
    ]
    assert [(r["input_tokens"], r["tokens_estimated"]) for r in rows] == [(estimated_tokens, 1)]


def test_an_embeddings_timeout_that_is_not_a_number_is_refused_naming_the_header(
    hosted_embedder: Callable[[str], Running],
) -> None:
    reply = embed(hosted_embedder(""), headers={"x-modelyard-timeout": "soon"})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert "x-modelyard-timeout" in error["message"] and error["param"] == "x-modelyard-timeout"
