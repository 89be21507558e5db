"""A request log in PostgreSQL shared by gateway replicas: any replica answers for a request
another one served, and `modelyard traffic` exports what all of them captured. Talks to the
real server at 127.0.0.1:5432 (database `test`)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest
import redis
from tests.conftest import outage_told, relayed_postgres
from tests.fakes.server import free_port
from tests.fakes.tcp_relay import TcpRelay
from tests.gateway.conftest import SYSTEMS, Running
from tests.gateway.test_reload_and_limits import _receiver, _scope
from tests.observability.test_decision_log import record
from tests.state.conftest import POSTGRES_URL, REDIS_URL, fresh_tables, unique_prefix
from tests.state.test_postgres import answered
from typer.testing import CliRunner

from modelyard.cli import app
from modelyard.errors import UnavailableError
from modelyard.gateway.app import create_app
from modelyard.observability.decision_log import DecisionLog
from modelyard.observability.request_log_postgres import PostgresRequestLog

pytestmark = pytest.mark.postgres


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    """Tables no other test run uses, dropped afterwards."""
    async for name in fresh_tables(PostgresRequestLog):
        yield name


def test_any_replica_answers_for_a_request_another_served(
    serve_gateway: Callable[..., Running], prefix: str, tmp_path: Path
) -> None:
    shared = (
        f"gateway:\n  request_log_url: '{POSTGRES_URL}'\n"
        f"  request_log_table_prefix: {prefix}\n  capture: {{}}\n"
    )
    first, second = serve_gateway(shared), serve_gateway(shared)
    client = openai.OpenAI(base_url=first.openai_url, api_key="x", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="support", messages=[{"role": "user", "content": "ping"}]
    )
    embedded = httpx2.post(f"{first.url}/v1/embeddings", json={"model": "hash", "input": "x"})
    record = read_elsewhere(second, raw.headers["x-request-id"])
    assert (record["model"], record["status"], record["api"]) == ("cheap", 200, "openai")
    assert record["decision"]["kind"] == "fallback"
    # An embeddings call is logged apart from chat, and is no traffic to export.
    record = read_elsewhere(second, embedded.headers["x-request-id"])
    assert (record["model"], record["status"], record["api"]) == ("hash", 200, "embeddings")

    out = tmp_path / "traffic.jsonl"
    exported = CliRunner().invoke(app, ["traffic", str(first.config), "--out", str(out)])
    assert exported.exit_code == 0, exported.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["label"] for row in rows] == ["pong"]


def read_elsewhere(replica: Running, request_id: str) -> dict[str, Any]:
    """The record of `request_id` as `replica` reads it from the shared log."""
    for _ in range(100):  # each replica writes its log every half second
        reply = httpx2.get(f"{replica.url}/v1/requests/{request_id}")
        if reply.status_code == 200:
            found: dict[str, Any] = reply.json()
            return found
        time.sleep(0.05)
    raise AssertionError(f"the other replica never found request {request_id}")


ROW = ("r1", 1.0, None, "s", "openai", 0, "v", 200, "m", "m", 1.0, 0.1, 1, 1, None, None, 0)
"""A request record as the log stores it (`decision_log.COLUMNS`)."""


def test_a_record_written_twice_keeps_the_last(prefix: str) -> None:
    async def go() -> tuple[object, ...] | None:
        log = PostgresRequestLog(POSTGRES_URL, table_prefix=prefix)
        try:
            row = ROW
            await log.write([row], [])
            await log.write([(*row[:7], 499, *row[8:])], [])
            return await log.read("r1")
        finally:
            await log.aclose()

    stored = asyncio.run(go())
    assert stored is not None and stored[7] == 499


@pytest.mark.redis
async def test_a_request_the_shutdown_cuts_gets_a_503_and_its_record_and_settlement_land(
    prefix: str, tmp_path: Path
) -> None:
    """Past gateway.drain_timeout the server cancels what still runs, then shuts the app down
    at once. The caller had uvicorn's bare 500, and the shared log no record of the request."""
    keys = unique_prefix()
    config = tmp_path / "config.yaml"
    config.write_text(
        SYSTEMS.replace("latency: 0.3", "latency: 30")
        + f"state: {{backend: redis, url: '{REDIS_URL}', prefix: '{keys}'}}\n"
        + "budgets:\n  - {name: day, scope: total, limit: 1}\n"
        + f"gateway:\n  request_log_url: '{POSTGRES_URL}'\n  request_log_table_prefix: {prefix}\n"
    )
    counters = redis.Redis.from_url(REDIS_URL)

    def budget(kind: str) -> list[float]:
        return [float(counters.get(k) or 0) for k in counters.scan_iter(f"{keys}c:{kind}:*")]

    app = create_app(config)
    app.start()
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    ask = {"model": "support", "messages": [{"role": "user", "content": "slow"}]}
    receive = _receiver(json.dumps(ask).encode(), asyncio.Event())  # the caller waits on
    scope = _scope("POST", "/v1/chat/completions")
    serving = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
    try:
        for _ in range(200):  # until its worst case is reserved: the model is answering
            if budget("budget"):
                break
            await asyncio.sleep(0.02)
        serving.cancel()  # as uvicorn does, then the lifespan shutdown without waiting
        await app.aclose()
        with pytest.raises(asyncio.CancelledError):
            await serving
        start = sent[0]
        assert start["type"] == "http.response.start" and start["status"] == 503
        assert json.loads(sent[1]["body"])["error"]["code"] == "shutting_down"
        log = PostgresRequestLog(POSTGRES_URL, table_prefix=prefix)
        row = await log.read(dict(start["headers"])[b"x-request-id"].decode())
        await log.aclose()
        assert row is not None and row[7] == 503
        assert budget("budget") == budget("spent"), "the worst case held was settled"
        assert budget("spent") == [pytest.approx(row[11])] and row[11] > 0  # its input
    finally:
        for key in counters.scan_iter(f"{keys}*"):
            counters.delete(key)
        counters.close()


def test_a_shared_log_that_cannot_be_reached_is_named_not_reported_as_output(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    url = f"postgresql://gw:hunter2-secret@127.0.0.1:{free_port()}/test"
    config.write_text(SYSTEMS + f"gateway:\n  request_log_url: '{url}'\n  capture: {{}}\n")
    out = tmp_path / "traffic.jsonl"
    shown = CliRunner().invoke(app, ["traffic", str(config), "--out", str(out)])
    assert shown.exit_code == 1, shown.output
    assert "gateway.request_log_url (postgresql://127.0.0.1:" in shown.output
    assert "output failed" not in shown.output and "hunter2" not in shown.output
    assert not out.exists()


async def test_a_shared_log_whose_database_stops_answering_names_it_and_still_closes(
    prefix: str, postgres_relay: TcpRelay
) -> None:
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    log = PostgresRequestLog(url, table_prefix=prefix, timeout=0.3)
    try:
        await log.write([ROW], [])
        relay.stall()
        with pytest.raises(UnavailableError) as caught:
            await answered(log.write([(*ROW[:7], 499, *ROW[8:])], []))
        assert "gateway.request_log_url" in caught.value.message
        assert "no answer within 0.3 s" in caught.value.message
        await answered(log.aclose())  # a shutdown does not wait on it
    finally:
        relay.flow()


async def test_a_request_log_whose_database_stops_answering_mid_write_still_closes(
    prefix: str, postgres_relay: TcpRelay
) -> None:
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    shared = PostgresRequestLog(url, table_prefix=prefix, timeout=2.0)
    log = DecisionLog(None, shared=shared, flush_every=0.05)
    try:
        log.record(record("r1"))
        await log.flush()  # connected, tables made
        relay.stall()
        log.start()
        log.record(record("r2"))
        await asyncio.sleep(0.5)  # the writer now waits on the database for r2
        # The gateway's shutdown closes the log: it must not retry forever.
        await answered(log.aclose())
    finally:
        relay.flow()


async def test_an_outage_is_one_line_and_its_end_another_with_no_traceback(
    prefix: str, postgres_relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    log = DecisionLog(None, shared=PostgresRequestLog(url, table_prefix=prefix, timeout=0.5))
    try:
        log.record(record("r0"))
        await log.flush()  # connected, tables made
        with caplog.at_level(logging.INFO):
            relay.cut()
            for i in range(1, 4):
                log.record(record(f"r{i}"))
                await log.flush()
                await asyncio.sleep(0.4)  # time for a pool to try to reconnect by itself
            relay.restore()
            await log.flush()
    finally:
        await log.aclose()
    began, ended = outage_told(caplog, "modelyard.log")
    assert began.startswith("request log: cannot write, gateway.request_log_url (postgresql://")
    assert "keeping the 1 request record(s) waiting" in began and "retrying every" in began
    assert "writing again after" in ended and "wrote the 3 request record(s) held back" in ended
    reader = PostgresRequestLog(POSTGRES_URL, table_prefix=prefix)
    try:
        assert await reader.read("r3") is not None
    finally:
        await reader.aclose()


async def test_a_long_outage_keeps_at_most_max_pending_records_and_tells_what_it_dropped(
    prefix: str, postgres_relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    # A replica's memory must not grow without bound however long the database is away: past
    # `max_pending` records are dropped, told once when it starts and summed at the recovery.
    relay, url = postgres_relay, relayed_postgres(postgres_relay)
    shared = PostgresRequestLog(url, table_prefix=prefix, timeout=0.5)
    log = DecisionLog(None, shared=shared, max_pending=3)
    try:
        log.record(record("r0"))
        await log.flush()  # connected, tables made
        with caplog.at_level(logging.INFO):
            relay.cut()
            for i in range(1, 7):
                log.record(record(f"r{i}"))
            await log.flush()
            relay.restore()
            await log.flush()
    finally:
        await log.aclose()
    assert log.dropped == 3
    ours = [r.getMessage() for r in caplog.records if r.name == "modelyard.log"]
    assert len(ours) == 3, ours  # the queue full, the write failing, the recovery
    full = next(line for line in ours if "is full" in line)
    assert "the queue of 3 request record(s) waiting is full" in full
    assert "dropped 3 request record(s) while the queue was full" in ours[-1]
    reader = PostgresRequestLog(POSTGRES_URL, table_prefix=prefix)
    try:
        kept = [await reader.read(f"r{i}") is not None for i in range(7)]
    finally:
        await reader.aclose()
    assert kept == [True, True, True, True, False, False, False]


def test_a_record_asked_for_while_the_shared_log_is_down_is_a_503_naming_it(
    serve_gateway: Callable[..., Running], prefix: str, postgres_relay: TcpRelay
) -> None:
    url = f"postgresql://postgres:hunter2-secret@127.0.0.1:{postgres_relay.port}/test"
    running = serve_gateway(
        f"gateway:\n  request_log_url: '{url}'\n  request_log_table_prefix: {prefix}\n"
    )
    postgres_relay.cut()
    reply = httpx2.get(f"{running.url}/v1/requests/served-by-another-replica")
    assert reply.status_code == 503, reply.text
    message = reply.json()["error"]["message"]
    assert "gateway.request_log_url (postgresql://127.0.0.1:" in message
    assert "hunter2" not in message
