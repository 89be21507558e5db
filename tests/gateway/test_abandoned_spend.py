"""Through the gateway, a request whose system cancelled a branch after it had spent says what
was spent: the `x-modelyard-cost` header and the request log both count the cancelled branch's
calls (`cost.metering`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import openai
import pytest
from tests.cost.test_abandoned_spend import BACKUP, DRAFT, MODELS, VERDICT, VOTE
from tests.gateway.conftest import Running
from tests.patterns.conftest import dollars

from modelyard.observability.decision_log import DecisionLog, RequestRecord

ASK: Any = [{"role": "user", "content": "which letter?"}]


@pytest.fixture
def running(serve_gateway: Callable[..., Running]) -> Running:
    return serve_gateway(text=MODELS + "default_deadline: 1\n")


def recorded(running: Running, monkeypatch: pytest.MonkeyPatch) -> list[RequestRecord]:
    records: list[RequestRecord] = []
    log = running.app.decisions
    monkeypatch.setattr(log, "record", lambda r: (records.append(r), DecisionLog.record(log, r)))
    return records


def once_recorded(records: list[RequestRecord]) -> list[RequestRecord]:
    """`records`, once the request's record is written (after its answer is sent)."""
    started = time.monotonic()
    while not records and time.monotonic() - started < 10:
        time.sleep(0.02)
    return records


def client(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_url, api_key="anything", max_retries=0)


def test_a_quorum_that_cancelled_a_cascade_bills_its_finished_calls(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = recorded(running, monkeypatch)
    raw = client(running).chat.completions.with_raw_response.create(model="panel", messages=ASK)
    spent = 2 * dollars(VOTE) + dollars(DRAFT) + dollars(VERDICT)
    assert float(raw.headers["x-modelyard-cost"]) == pytest.approx(spent)
    assert [r.cost for r in once_recorded(records)] == [pytest.approx(spent)]


def test_a_stream_that_fell_over_bills_the_member_it_gave_up_on(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = recorded(running, monkeypatch)
    stream = client(running).chat.completions.create(model="top", messages=ASK, stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert text == BACKUP
    spent = dollars(DRAFT) + dollars(VERDICT) + dollars(BACKUP)
    assert [r.cost for r in once_recorded(records)] == [pytest.approx(spent)]
