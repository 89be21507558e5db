"""A request a budget refused made no model call: the request log names no model, as its
ledger row does, and its decision says which budget refused it; a virtual key's own budget's
refusals are recorded so too, ledger row included."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
from tests.gateway.conftest import Running
from tests.gateway.test_embedding_spend import ledger_rows
from tests.gateway.test_keys import ADMIN, create_key

LEDGER = "ledger: {flush_interval: 0.05}\n"


def ask(running: Running, key: str | None = None) -> httpx2.Response:
    return httpx2.post(
        f"{running.url}/v1/chat/completions",
        json={"model": "strong", "messages": [{"role": "user", "content": "hi"}]},
        headers={"authorization": f"Bearer {key}"} if key else {},
        timeout=5,
    )


def record_of(running: Running, reply: httpx2.Response) -> dict[str, Any]:
    found: dict[str, Any] = httpx2.get(
        f"{running.url}/v1/requests/{reply.headers['x-request-id']}",
        headers={"authorization": "Bearer admin-secret-123456"},
    ).json()
    return found


def test_a_budget_refusal_names_no_model_and_says_which_budget(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(LEDGER + "budgets:\n  - {name: cap, scope: total, limit: 0.0000001}\n")
    reply = ask(running)
    assert reply.status_code == 429, reply.text
    record = record_of(running, reply)
    assert (record["model"], record["cost"], record["input_tokens"]) == ("(none)", 0.0, 0)
    decision = record["decision"]
    assert (decision["node"], decision["kind"], decision["details"]["budget"]) == (
        "strong",
        "budget",
        "cap",
    )
    assert decision["error"].startswith("budget_exceeded: budget cap")
    assert "children" not in decision
    rows = ledger_rows(running, reply.headers["x-request-id"])
    assert [(r["model"], r["error"], r["cost"]) for r in rows] == [
        ("(none)", "budget_exceeded", 0.0)
    ]


def test_a_keys_own_budget_refusal_is_recorded_as_a_configured_budgets_is(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN + LEDGER)
    key = create_key(running, name="capped", budget=0.0000001)
    reply = ask(running, str(key["key"]))
    assert reply.status_code == 429, reply.text
    assert reply.json()["error"]["type"] == "budget_exceeded"
    record = record_of(running, reply)
    assert (record["model"], record["key_id"], record["status"]) == ("(none)", key["id"], 429)
    assert record["decision"]["kind"] == "budget"
    assert "budget virtual-key" in record["error"]
    rows = ledger_rows(running, reply.headers["x-request-id"])
    assert [(r["model"], r["key_id"], r["error"], r["cost"]) for r in rows] == [
        ("(none)", key["id"], "budget_exceeded", 0.0)
    ]


def test_both_kinds_of_budget_refusal_count_once_as_refusals_naming_their_budget(
    serve_gateway: Callable[..., Running],
) -> None:
    # A key's own budget counted in modelyard_refused_total (code: the budget's name), a
    # configured budget in modelyard_errors_total and the failed requests: an alert on
    # refusals had to look in two places.
    cap = "budgets:\n  - {name: cap, scope: total, limit: 1e-7}\n"
    running = serve_gateway(ADMIN + LEDGER + cap)
    capped = create_key(running, name="capped", budget=0.0000001)
    assert ask(running, str(capped["key"])).status_code == 429  # its own budget, checked first
    assert ask(running, str(create_key(running, name="free")["key"])).status_code == 429  # cap
    metrics = httpx2.get(f"{running.url}/metrics").text
    lines = metrics.splitlines()
    refused = sorted(line for line in lines if line.startswith("modelyard_refused_total"))
    labels = 'code="budget_exceeded",route="/v1/chat/completions",status="429"'
    assert refused == [
        f'modelyard_refused_total{{budget="cap",{labels}}} 1.0',
        f'modelyard_refused_total{{budget="virtual-key",{labels}}} 1.0',
    ]
    # Refusals, not failed requests: each request counts in one of the two.
    assert "modelyard_errors_total{" not in metrics
    assert "modelyard_requests_total{" not in metrics
