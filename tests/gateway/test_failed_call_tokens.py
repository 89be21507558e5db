"""A chat request whose call failed after its provider received it: the request log and the
ledger show the tokens its estimated cost was worked out from, marked estimated, beside it."""

from __future__ import annotations

from collections.abc import Callable

import httpx2
import pytest
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running
from tests.gateway.test_embedding_spend import ledger_rows

from modelyard.cost.prices import estimate_input_tokens
from modelyard.types import Usage, user

QUESTION = "What is the capital of France?"


def test_a_chat_call_cut_after_sending_logs_its_estimated_input_tokens(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    running = serve_gateway(
        text=f"""
providers:
  up: {{type: openai, base_url: "{upstream.url}/v1", api_key: {UPSTREAM_KEY},
        retry: {{attempts: 0}}, timeouts: {{total: 5}}}}
models:
  mini: {{provider: up, id: gpt-4o-mini, price: {{input: 1000, output: 2000}}}}
ledger: {{flush_interval: 0.05}}
"""
    )
    upstream.always(Fault(hang=True))
    reply = httpx2.post(
        f"{running.url}/v1/chat/completions",
        json={"model": "mini", "messages": [{"role": "user", "content": QUESTION}]},
        headers={"x-modelyard-timeout": "0.3"},
        timeout=3,
    )
    assert reply.status_code == 504, reply.text
    request_id = reply.headers["x-request-id"]
    tokens = estimate_input_tokens(user(QUESTION))
    cost = running.app.live.current.models["mini"].info.price.cost(Usage(input_tokens=tokens))
    record = httpx2.get(f"{running.url}/v1/requests/{request_id}").json()
    assert record["cost"] == pytest.approx(cost) and cost > 0
    assert (record["input_tokens"], record["tokens_estimated"]) == (tokens, True)
    rows = ledger_rows(running, request_id)
    assert [(r["cost"], r["input_tokens"], r["tokens_estimated"]) for r in rows] == [
        (pytest.approx(cost), tokens, 1)
    ]
