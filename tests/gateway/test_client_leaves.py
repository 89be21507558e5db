"""A client that hangs up before its whole answer is ready (an SDK's timeout, which it follows
with a retry): the model call stops, the key's slot is given back for the retry, and the
request is recorded as one the client left."""

from __future__ import annotations

import time
from collections.abc import Callable

import openai
import pytest
from tests.gateway.conftest import Running
from tests.gateway.test_keys import ADMIN, create_key
from tests.gateway.test_reload_and_limits import with_models

from modelyard.observability.decision_log import DecisionLog, RequestRecord

SLUGGISH = "  sluggish:\n    local: {type: fake, default: {text: late, latency: 30}}\n"


@pytest.fixture
def running(serve_gateway: Callable[..., Running]) -> Running:
    running = serve_gateway(text=with_models(SLUGGISH) + ADMIN)
    running.app.chat.leave_watch_after = 0.05  # watched from the start (1 s in service)
    return running


def test_a_client_that_gives_up_frees_its_slot_for_the_retry(running: Running) -> None:
    key = str(create_key(running, name="one-at-a-time", max_concurrency=1)["key"])
    impatient = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0, timeout=0.5)
    ask = [{"role": "user", "content": "hi"}]
    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(model="sluggish", messages=ask)  # type: ignore[arg-type]
    while running.app.in_flight and time.monotonic() - started < 10:
        time.sleep(0.02)
    assert time.monotonic() - started < 5  # not the 30 s the model would have taken
    client = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)
    answer = client.chat.completions.create(model="support", messages=ask)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "the cheap answer"  # not a 429: the slot is free


def test_a_request_its_client_left_is_recorded_as_left(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    records: list[RequestRecord] = []
    log = running.app.decisions
    monkeypatch.setattr(log, "record", lambda r: (records.append(r), DecisionLog.record(log, r)))
    impatient = openai.OpenAI(
        base_url=running.openai_url, api_key="admin-secret-123456", max_retries=0, timeout=0.5
    )
    with pytest.raises(openai.APITimeoutError):
        impatient.chat.completions.create(
            model="sluggish", messages=[{"role": "user", "content": "hi"}]
        )
    started = time.monotonic()
    while not records and time.monotonic() - started < 10:
        time.sleep(0.02)
    assert [(r.target, r.status) for r in records] == [("sluggish", 499)]
    assert str(records[0].error).startswith("client_closed: the client left before")
