"""`modelyard serve --workers 2` on the embedded default (SQLite state): the workers count rate
limits and circuits together, in the state file, as replicas on Redis or PostgreSQL do."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx2
import pytest
from tests.gateway.test_serve import serve_workers

from modelyard.state.batched import CACHE_FOR

ADMIN = {"authorization": "Bearer admin-secret"}
"""The config's admin key: any system or model, no rate limit of its own."""

CONFIG = """
gateway: {admin_key: admin-secret}
models:
  capped:
    local: {type: fake, default: "ok"}
    limits: {rpm: 4, when_limited: fail}
  open:
    local: {type: fake, default: "ok"}
  down:
    local: {type: fake, default: {error: unavailable}}
    breaker: {min_calls: 3, failure_rate: 0.5, window: 600, open_for: 600}
"""

SPREAD = 24
"""Requests sent at once, each on a connection of its own, so that both workers take some
(uvicorn's workers accept from one socket): the old code let each worker's limit through."""
BURSTS = 3
"""Bursts a second apart: the gateway answers once its first worker serves, and the second may
still be building the config during the first burst."""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("workers")
    config = folder / "config.yaml"
    config.write_text(CONFIG, encoding="utf-8")
    process, url = serve_workers(config, workers=2)
    try:
        yield url
    finally:
        process.terminate()
        process.wait(30)


def send_in_bursts(url: str, model: str, headers: dict[str, str]) -> list[int]:
    """The statuses of `BURSTS` x `SPREAD` chat requests to `model`, each burst sent at once,
    each request on a new connection."""
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}

    def one(_: int) -> int:
        with httpx2.Client(timeout=30) as client:  # a connection of its own
            return client.post(url + "/v1/chat/completions", json=body, headers=headers).status_code

    statuses: list[int] = []
    with ThreadPoolExecutor(SPREAD) as pool:
        for burst in range(BURSTS):
            if burst:
                time.sleep(1)
            statuses += pool.map(one, range(SPREAD))
    return statuses


def test_a_models_rpm_admits_its_limit_across_the_workers(gateway: str) -> None:
    statuses = send_in_bursts(gateway, "capped", ADMIN)
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == BURSTS * SPREAD - 4, statuses


def test_a_keys_rpm_admits_its_limit_across_the_workers(gateway: str) -> None:
    made = httpx2.post(
        gateway + "/admin/keys", json={"name": "team", "rpm": 4}, headers=ADMIN, timeout=30
    )
    assert made.status_code == 201, made.text
    headers = {"authorization": f"Bearer {made.json()['key']}"}
    statuses = send_in_bursts(gateway, "open", headers)
    assert statuses.count(200) == 4, statuses
    assert statuses.count(429) == BURSTS * SPREAD - 4, statuses
    # the rate headers are read in the same step, from the count both workers share
    with httpx2.Client(timeout=30) as client:
        reply = client.post(
            gateway + "/v1/chat/completions",
            json={"model": "open", "messages": [{"role": "user", "content": "hi"}]},
            headers=headers,
        )
    assert reply.status_code == 429
    assert reply.headers["x-ratelimit-remaining-requests"] == "0"


def test_a_circuit_opened_by_one_worker_is_open_in_the_other(gateway: str) -> None:
    body = {"model": "down", "messages": [{"role": "user", "content": "hi"}]}
    with httpx2.Client(timeout=30) as client:  # one connection: the failures reach one worker
        for _ in range(3):
            reply = client.post(gateway + "/v1/chat/completions", json=body, headers=ADMIN)
            assert reply.status_code == 503, reply.text

    time.sleep(CACHE_FOR)  # the other worker may answer from a circuit state it read before

    def circuit(_: int) -> str:
        with httpx2.Client(timeout=30) as client:  # any worker
            circuits = client.get(gateway + "/readyz").json()["health"]["circuits"]
        (down,) = [c for c in circuits if c["scope"] == "model:down"]
        return str(down["state"])

    with ThreadPoolExecutor(SPREAD) as pool:
        states = list(pool.map(circuit, range(SPREAD)))
    assert states == ["open"] * SPREAD
