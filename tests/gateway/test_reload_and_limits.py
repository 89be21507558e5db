"""Hot reload under load, refused configs, body limits, broken streams, graceful shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import httpx2
import openai
import orjson
import pytest
from tests.gateway.conftest import SYSTEMS, Running

CUTTER = """  cutter:
    local: {type: fake, default: {text: "one two three four five", cut_after: 2}}
"""


def with_models(extra: str, base: str = SYSTEMS) -> str:
    """The test config with more models added to its models section."""
    return base.replace("embedders:", extra + "embedders:")


def test_reload_under_concurrent_load_drops_nothing(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    failures: list[BaseException] = []
    answers: list[str] = []
    stop = threading.Event()

    def hammer() -> None:
        client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
        while not stop.is_set():
            try:
                reply = client.chat.completions.create(
                    model="support", messages=[{"role": "user", "content": "slow"}]
                )
                answers.append(reply.choices[0].message.content or "")
            except BaseException as exc:
                failures.append(exc)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for thread in threads:
        thread.start()
    versions = set()
    for i in range(4):
        text = SYSTEMS.replace('"the cheap answer"', f'"answer v{i}"')
        running.config.write_text(text)
        reply = httpx2.post(f"{running.url}/admin/reload")
        assert reply.status_code == 200, reply.text
        versions.add(reply.json()["config_version"])
        asyncio.run(asyncio.sleep(0.35))
    stop.set()
    for thread in threads:
        thread.join(10)
    assert failures == []
    assert len(answers) >= 20 and set(answers) == {"late"}
    assert len(versions) == 4


def test_invalid_config_is_refused_and_the_old_one_keeps_serving(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    version = running.app.live.current.version
    running.config.write_text(SYSTEMS.replace("type: fallback", "type: fallbak"))
    reply = httpx2.post(f"{running.url}/admin/reload")
    assert reply.status_code == 400
    assert "fallbak" in reply.json()["error"]["message"]
    assert running.app.live.current.version == version
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    reply2 = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "ping"}]
    )
    assert reply2.choices[0].message.content == "pong"


def test_reload_reports_what_changed(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    changed = SYSTEMS.replace('"the strong answer"', '"new"')
    running.config.write_text(with_models(CUTTER, changed))
    changes = httpx2.post(f"{running.url}/admin/reload").json()["changes"]
    assert "models.strong" in changes["changed"]
    assert "models.cutter" in changes["added"]


def test_oversized_malformed_and_too_many_messages(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway("gateway:\n  max_body_bytes: 2000\n  max_messages: 3\n")
    url = f"{running.url}/v1/chat/completions"
    big = {"model": "support", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert httpx2.post(url, json=big).status_code == 413
    bad = httpx2.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    many = {"model": "support", "messages": [{"role": "user", "content": "x"}] * 4}
    reply = httpx2.post(url, json=many)
    assert reply.status_code == 400 and "at most 3" in reply.json()["error"]["message"]
    missing = httpx2.post(url, json={"model": "support"})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "messages"


def test_stream_broken_midway_ends_with_an_error_event(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(text=with_models(CUTTER))
    body = {"model": "cutter", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx2.stream("POST", f"{running.url}/v1/chat/completions", json=body) as reply:
        assert reply.status_code == 200
        frames = [line for line in reply.iter_lines() if line.startswith("data: ")]
    assert frames[-1] != "data: [DONE]"
    error = orjson.loads(frames[-1][6:])
    assert error["error"]["type"] == "unavailable"
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIError):
        list(
            client.chat.completions.create(
                model="cutter", stream=True, messages=[{"role": "user", "content": "go"}]
            )
        )


def test_stream_failing_before_first_chunk_is_a_plain_http_error(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    body = {"model": "broken", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    reply = httpx2.post(f"{running.url}/v1/chat/completions", json=body)
    assert reply.status_code == 503


def test_metrics_count_requests_by_system_and_model(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    client.chat.completions.create(model="support", messages=[{"role": "user", "content": "ping"}])
    text = httpx2.get(f"{running.url}/metrics").text
    assert (
        'modelyard_requests_total{model="cheap",provider="local",status="200",system="support"} 1.0'
        in text
    )
    assert "modelyard_cost_usd_total" in text


def test_readyz_reports_version_and_disabled(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    body = httpx2.get(f"{running.url}/readyz").json()
    assert body["status"] == "ready"
    assert body["config_version"] == running.app.live.current.version
    assert body["health"] == {"healthy": True, "degraded": [], "circuits": []}
    assert httpx2.get(f"{running.url}/healthz").json() == {"status": "ok"}
