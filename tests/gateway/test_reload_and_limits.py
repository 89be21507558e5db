"""Hot reload under load, refused configs, body limits, broken streams, graceful shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2
import openai
import orjson
import pytest
from tests.gateway.conftest import SYSTEMS, Running, hammering, until, watched

from modelyard.gateway import stalled
from modelyard.gateway.app import Gateway, create_app
from modelyard.observability.decision_log import RequestRecord

CUTTER = """  cutter:
    local: {type: fake, default: {text: "one two three four five", cut_after: 2}}
"""


def with_models(extra: str, base: str = SYSTEMS) -> str:
    """The test config with more models added to its models section."""
    return base.replace("embedders:", extra + "embedders:")


def test_reload_under_concurrent_load_drops_nothing(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)

    def ask() -> str:
        reply = client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "slow"}]
        )
        return reply.choices[0].message.content or ""

    versions = set()
    with hammering(ask, clients=6) as traffic:
        for i in range(4):
            text = SYSTEMS.replace('"the cheap answer"', f'"answer v{i}"')
            running.config.write_text(text)
            reply = httpx2.post(f"{running.url}/admin/reload")
            assert reply.status_code == 200, reply.text
            versions.add(reply.json()["config_version"])
            asyncio.run(asyncio.sleep(0.35))
    assert traffic.failures == []
    assert len(traffic.answers) >= 20 and set(traffic.answers) == {"late"}
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
    for role in (["user"], {"r": 1}, 7):
        odd = httpx2.post(
            url, json={"model": "support", "messages": [{"role": role, "content": "x"}]}
        )
        assert odd.status_code == 400 and odd.json()["error"]["param"] == "messages[0].role"


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


def test_a_reload_that_unpins_a_model_id_warns_of_it_once(
    serve_gateway: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    running = serve_gateway()
    alias = (
        "providers:\n  oa: {type: openai, api_key: sk-x, base_url: 'http://127.0.0.1:9/v1'}\n"
        "models:\n  mini: {provider: oa, id: gpt-4o-mini, price: {input: 1, output: 1}}\n"
    )
    running.config.write_text(SYSTEMS.replace("models:\n", alias))
    for _ in range(2):  # the second reload changes nothing: no warning again
        assert httpx2.post(f"{running.url}/admin/reload").status_code == 200
    warned = [r for r in caplog.records if "gpt-4o-mini" in r.getMessage()]
    assert len(warned) == 1 and warned[0].levelname == "WARNING"
    assert "alias" in warned[0].getMessage()


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


def test_metrics_count_the_failed_model_calls_a_fallback_covered(
    serve_gateway: Callable[..., Running],
) -> None:
    # support's first member is down and its second answers: every request succeeds, and
    # only this series shows that the primary is failing.
    running = serve_gateway()
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    for _ in range(2):
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
    text = httpx2.get(f"{running.url}/metrics").text
    assert (
        'modelyard_model_errors_total{kind="unavailable",model="broken",system="support"} 2.0'
        in text
    )
    assert 'modelyard_model_errors_total{kind="unavailable",model="cheap"' not in text


def test_metrics_name_the_cache_as_the_provider_of_a_cache_hit_and_count_what_it_saved(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway("cache: {backend: memory}\n")
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    costs = []
    for _ in range(3):
        answer = client.chat.completions.with_raw_response.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
        costs.append(float(answer.headers["x-modelyard-cost"]))
    text = httpx2.get(f"{running.url}/metrics").text
    assert 'model="cheap",provider="local",status="200",system="support"} 1.0' in text
    assert 'model="cheap",provider="cache",status="200",system="support"} 2.0' in text
    assert costs[0] > 0 and costs[1:] == [0.0, 0.0]
    saved = re.search(r'modelyard_cache_saved_usd_total\{system="support"\} (\S+)', text)
    assert saved is not None and float(saved.group(1)) == pytest.approx(2 * costs[0])


def test_readyz_reports_version_and_disabled(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    body = httpx2.get(f"{running.url}/readyz").json()
    assert body["status"] == "ready"
    assert body["config_version"] == running.app.live.current.version
    assert body["health"] == {"healthy": True, "degraded": [], "circuits": []}
    assert httpx2.get(f"{running.url}/healthz").json() == {"status": "ok"}


def test_readyz_says_the_file_was_refused_until_a_reload_loads_it(
    serve_gateway: Callable[..., Running],
) -> None:
    # The refusal was only in the log and in the answer to POST /admin/reload: a health check
    # or a dashboard saw a ready gateway and could not tell the file on disk was not serving.
    running = serve_gateway()
    served = running.app.live.current.version
    assert httpx2.get(f"{running.url}/readyz").json()["config_refused"] is None
    running.config.write_text(SYSTEMS.replace("type: fallback", "type: fallbak"))
    refusal = httpx2.post(f"{running.url}/admin/reload").json()["error"]["message"]
    ready = httpx2.get(f"{running.url}/readyz")
    assert ready.status_code == 200  # the old config serves: still ready
    body = ready.json()
    assert body["status"] == "ready" and body["config_version"] == served
    refused = body["config_refused"]
    assert set(refused) == {"at", "error"}
    assert "fallbak" in refused["error"] and refusal.endswith(refused["error"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", refused["at"])
    running.config.write_text(SYSTEMS.replace('"the strong answer"', '"new"'))
    assert httpx2.post(f"{running.url}/admin/reload").status_code == 200
    body = httpx2.get(f"{running.url}/readyz").json()
    assert body["config_refused"] is None
    assert body["config_version"] == running.app.live.current.version != served


def test_health_prints_the_refusal_of_the_config_file_the_gateway_reports(
    serve_gateway: Callable[..., Running],
) -> None:
    # `modelyard health --gateway` printed the circuits the gateway reported and nothing of
    # `config_refused`: the file on disk not serving went unseen. The refused file does not
    # load in the command either: it printed that error alone, exit 2.
    from typer.testing import CliRunner

    from modelyard.cli import app

    running = serve_gateway()
    running.config.write_text(SYSTEMS.replace("type: fallback", "type: fallbak"))
    assert httpx2.post(f"{running.url}/admin/reload").status_code == 400
    ask = ["health", str(running.config), "--gateway", running.url]
    refused = CliRunner().invoke(app, ask)
    assert refused.exit_code == 2, refused.output
    said = " ".join(refused.output.split())
    assert f"the gateway serving it at {running.url}" in said
    assert "config refused at 20" in said and "fallbak" in said
    assert "still serves the config it loaded before" in said
    # Edited again, to a file that loads, and not reloaded yet: the refusal still stands.
    running.config.write_text(SYSTEMS.replace('"the strong answer"', '"new"'))
    loads = CliRunner().invoke(app, ask)
    assert loads.exit_code == 0, loads.output
    assert "config refused at 20" in " ".join(loads.output.split())
    body = orjson.loads(CliRunner().invoke(app, [*ask, "--json"]).stdout)
    assert "fallbak" in body["config_refused"]["error"]
    assert httpx2.post(f"{running.url}/admin/reload").status_code == 200
    body = orjson.loads(CliRunner().invoke(app, [*ask, "--json"]).stdout)
    assert body["config_refused"] is None


def test_readyz_never_shows_a_secret_of_the_refused_file(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    running.config.write_text(
        SYSTEMS
        + "providers:\n  oa: {type: openai, api_key: sk-live-0123456789abcdef, timeout: soon}\n"
    )
    assert httpx2.post(f"{running.url}/admin/reload").status_code == 400
    ready = httpx2.get(f"{running.url}/readyz")
    assert "timeout" in ready.json()["config_refused"]["error"]
    assert "0123456789abcdef" not in ready.text


async def test_readyz_clears_the_refusal_once_the_watched_file_is_back_to_what_serves(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        config.write_text(SYSTEMS.replace("type: fallback", "type: fallbak"))
        assert await until(lambda: app.live.refused is not None)
        _, raw, _ = await _asgi(app, "GET", "/readyz")
        assert "fallbak" in orjson.loads(raw)["config_refused"]["error"]
        config.write_text(SYSTEMS)  # put back: nothing to load, the refusal no longer stands
        assert await until(lambda: app.live.refused is None)
        _, raw, _ = await _asgi(app, "GET", "/readyz")
        assert orjson.loads(raw)["config_refused"] is None


async def test_watched_config_reloads_after_every_replace_by_rename(tmp_path: Path) -> None:
    """Editors, `sed -i` and ConfigMaps swap the file by a rename; each swap must be seen, and a
    file that is not UTF-8 refused without stopping the watch."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        for i, raw in enumerate(
            [
                SYSTEMS.replace("the cheap answer", "v1").encode(),
                SYSTEMS.replace("the cheap answer", "caf\xe9").encode("latin-1"),
                SYSTEMS.replace("the cheap answer", "v2").encode(),
                SYSTEMS.replace("the cheap answer", "v3").encode(),
            ]
        ):
            fresh = tmp_path / f"config.yaml.{i}"
            fresh.write_bytes(raw)
            fresh.replace(config)
            if b"caf" in raw:
                assert await until(
                    lambda: bool(app.live.history[-1:]) and app.live.history[-1]["version"] is None
                )
                assert "not UTF-8" in app.live.history[-1]["error"]
                continue
            expected = raw.decode()
            assert await until(lambda text=expected: app.live.current.loaded.text == text), (
                f"swap {i}"
            )


async def test_a_watched_config_written_in_pieces_is_loaded_only_whole(tmp_path: Path) -> None:
    """A writer that pauses midway (scp, a program writing as it goes) leaves for a moment a file
    whose first part validates on its own: the models, without the systems after them. The
    watcher waits for the file to hold still, so that part is never served."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    whole = SYSTEMS.replace("the cheap answer", "v1")
    head, tail = whole.split("systems:")
    async with watched(config) as app:
        with config.open("w") as handle:
            handle.write(head)
            handle.flush()
            await asyncio.sleep(0.3)
            handle.write("systems:" + tail)
        assert await until(lambda: app.live.current.loaded.text == whole)
        assert [entry["version"] for entry in app.live.history] == [app.live.current.version]


def test_a_config_cut_short_that_still_validates_is_refused(
    serve_gateway: Callable[..., Running],
) -> None:
    """A write that failed midway (a full disk, a copy killed) leaves a file cut at some byte:
    here mid-number, `default_deadline: 30` read as 3, which validates. It ends without the
    newline the serving file ended with, so it is refused and the old config keeps serving."""
    running = serve_gateway("default_deadline: 30\n")
    before = running.app.live.current.version
    running.config.write_text(SYSTEMS + "default_deadline: 3")
    reply = httpx2.post(f"{running.url}/admin/reload")
    assert reply.status_code == 400
    message = reply.json()["error"]["message"]
    assert f"{running.config}:" in message and "does not end with a newline" in message
    assert running.app.live.current.version == before
    running.config.write_text(SYSTEMS + "default_deadline: 3\n")  # complete after all
    assert httpx2.post(f"{running.url}/admin/reload").status_code == 200


async def test_a_watched_config_deleted_and_written_again_reloads_without_an_error(
    tmp_path: Path,
) -> None:
    """Some editors save by deleting the file and writing it anew: no refusal ("config file not
    found") is logged for the moment it is gone."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        config.unlink()
        await asyncio.sleep(0.3)
        config.write_text(SYSTEMS.replace("the cheap answer", "v1"))
        assert await until(lambda: "v1" in app.live.current.loaded.text)
        assert [entry.get("error") for entry in app.live.history] == [None]


async def test_a_watched_config_returned_to_its_first_text_reloads(tmp_path: Path) -> None:
    """Reloaded to another text by an admin reload (or SIGHUP) before the watcher saw it, the file
    put back as it was at start is a change to reload like any other."""
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS)
    async with watched(config) as app:
        first = app.live.current.version
        config.write_text(SYSTEMS.replace("the cheap answer", "v1"))
        await app.live.reload()  # before the watcher's debounce: it finds v1 already serving
        assert app.live.current.version != first
        await asyncio.sleep(1.0)
        config.write_text(SYSTEMS)
        assert await until(lambda: app.live.current.version == first)


def test_gateway_settings_changed_by_reload_are_reported_as_needing_a_restart(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway("gateway:\n  max_body_bytes: 2000\n")
    running.config.write_text(SYSTEMS + "gateway:\n  max_body_bytes: 3000\n")
    changes = httpx2.post(f"{running.url}/admin/reload").json()["changes"]
    assert changes["restart_required"] == ["gateway"]
    # Reloaded again, unchanged: the restart is still pending (the process runs 2000).
    assert httpx2.post(f"{running.url}/admin/reload").json()["changes"]["restart_required"] == [
        "gateway"
    ]
    running.config.write_text(SYSTEMS + "gateway:\n  max_body_bytes: 2000\n")
    assert httpx2.post(f"{running.url}/admin/reload").json()["changes"]["restart_required"] == []


def test_a_state_store_changed_by_reload_is_reported_as_needing_a_restart(
    serve_gateway: Callable[..., Running], tmp_path: Path
) -> None:
    # Key rate limits and key budgets stay on the store the gateway started with.
    running = serve_gateway("state: {backend: memory}\n")
    running.config.write_text(SYSTEMS + f"state: {{path: '{tmp_path / 'other.db'}'}}\n")
    changes = httpx2.post(f"{running.url}/admin/reload").json()["changes"]
    assert "state.backend" in changes["changed"] and changes["restart_required"] == ["state"]


def test_a_reload_that_moves_the_state_store_leaves_budgets_on_the_one_started_with(
    serve_gateway: Callable[..., Running], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The reload says the move waits for a restart; budgets must not start from zero on the
    new store meanwhile (its spend not counted, its alerts fired again)."""
    budgets = (
        "budgets:\n  - {name: day, scope: total, window: day, limit: 1.0e-9, alert_at: [0.5],"
        " action: alert_only}\n"
    )
    running = serve_gateway(budgets)

    def ask() -> None:
        body = {"model": "support", "messages": [{"role": "user", "content": "ping"}]}
        reply = httpx2.post(f"{running.url}/v1/chat/completions", json=body)
        assert reply.status_code == 200, reply.text

    with caplog.at_level(logging.WARNING, logger="modelyard.alerts"):
        ask()
        moved = tmp_path / "moved.db"
        running.config.write_text(SYSTEMS + budgets + f"state: {{path: '{moved}'}}\n")
        changes = httpx2.post(f"{running.url}/admin/reload").json()["changes"]
        assert "state.path" in changes["changed"] and changes["restart_required"] == ["state"]
        ask()
    assert sum("[budget_threshold]" in r.getMessage() for r in caplog.records) == 1
    assert not moved.exists()


def test_a_reload_that_disables_a_provider_says_so_in_the_log(
    serve_gateway: Callable[..., Running],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A provider added by a reload whose key variable this process lacks is disabled, and its
    models with it: the log says so, as it does at start."""
    monkeypatch.delenv("QA_UNSET_KEY", raising=False)
    running = serve_gateway()
    added = (
        "providers:\n  extra: {type: openai, api_key: '${QA_UNSET_KEY}', optional: true}\n"
        + with_models(
            "  hosted:\n    provider: extra\n    id: gpt-4o-mini-2024-07-18\n"
            "    price: {input: 1, output: 2}\n"
        )
    )
    running.config.write_text(added)
    with caplog.at_level(logging.INFO, logger="modelyard.gateway"):
        assert httpx2.post(f"{running.url}/admin/reload").status_code == 200
        assert httpx2.post(f"{running.url}/admin/reload").status_code == 200  # said once
    notes = [r.getMessage() for r in caplog.records if "QA_UNSET_KEY" in r.getMessage()]
    assert notes == [
        "note: provider 'extra' is disabled: environment variable QA_UNSET_KEY is not set"
    ]


def test_an_empty_config_is_refused_and_the_old_one_keeps_serving(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    running.config.write_text("")
    reply = httpx2.post(f"{running.url}/admin/reload")
    assert reply.status_code == 400
    assert "defines no models, systems or embedders" in reply.json()["error"]["message"]
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    answer = client.chat.completions.create(
        model="support", messages=[{"role": "user", "content": "ping"}]
    )
    assert answer.choices[0].message.content == "pong"


def test_a_stream_the_client_leaves_is_recorded_with_its_estimated_cost(
    serve_gateway: Callable[..., Running],
) -> None:
    long = "word " * 50_000
    running = serve_gateway(
        text=with_models(
            f'  chatty:\n    local: {{type: fake, default: "{long}"}}\n'
            "    price: {input: 1.0, output: 2.0}\n"
        )
    )
    body = {"model": "chatty", "stream": True, "messages": [{"role": "user", "content": "go"}]}
    with httpx2.stream("POST", f"{running.url}/v1/chat/completions", json=body) as reply:
        request_id = reply.headers["x-request-id"]
        for line in reply.iter_lines():
            if line.startswith("data: "):
                break  # read one chunk, then hang up
    record: dict[str, object] = {}
    for _ in range(100):
        got = httpx2.get(f"{running.url}/v1/requests/{request_id}")
        if got.status_code == 200:
            record = got.json()
            break
        threading.Event().wait(0.05)
    assert record["status"] == 499
    assert str(record["error"]).startswith("client_closed:")
    assert 0 < float(record["cost"]) < cost_of_everything(long)  # type: ignore[arg-type]
    metrics = httpx2.get(f"{running.url}/metrics").text
    assert (
        'modelyard_requests_total{model="",provider="",status="499",system="chatty"} 1.0' in metrics
    )
    ledger = running.config.parent / ".modelyard" / running.config.name / "ledger.db"
    rows: list[tuple[str, float, str, str]] = []
    for _ in range(100):
        if ledger.exists():
            with sqlite3.connect(ledger) as db, contextlib.suppress(sqlite3.OperationalError):
                rows = db.execute(  # the table may not be made yet
                    "SELECT error, cost, request_id, model FROM spend WHERE system = 'chatty'"
                ).fetchall()
            if rows:
                break
        threading.Event().wait(0.05)
    assert [(error, rid, model) for error, _, rid, model in rows] == [
        ("client_closed", request_id, "chatty")
    ]
    assert rows[0][1] > 0
    # The metrics count what the ledger bills, so dashboards and `modelyard costs` agree.
    spent = re.search(r'modelyard_cost_usd_total\{model="chatty",system="chatty"\} (\S+)', metrics)
    assert spent is not None and float(spent.group(1)) == pytest.approx(rows[0][1])


def cost_of_everything(text: str) -> float:
    """What the whole answer would cost at the chatty model's $2 per million output tokens."""
    return len(text) / 4 * 2.0 / 1e6


@pytest.mark.parametrize(
    ("policy", "status", "mode"), [("fail_closed", 503, "refusing"), ("local", 200, "local")]
)
def test_readiness_shows_a_shared_state_store_that_is_down(
    serve_gateway: Callable[..., Running], policy: str, status: int, mode: str
) -> None:
    dead = "redis://127.0.0.1:1/0"  # nothing listens on port 1
    running = serve_gateway(
        f"state: {{backend: redis, url: '{dead}', on_unavailable: {policy}, timeout: 0.3}}\n"
    )
    reply = httpx2.get(f"{running.url}/readyz")
    assert reply.status_code == status, reply.text
    state = reply.json()["state"]
    assert state["backend"] == "redis" and state["ok"] is False and state["mode"] == mode
    metrics = httpx2.get(f"{running.url}/metrics").text  # for alerting, not only probes
    assert f'modelyard_state_store_up{{backend="redis",mode="{mode}"}} 0.0' in metrics


async def test_a_watched_configmap_reloads_on_every_update(tmp_path: Path) -> None:
    """Kubernetes mounts config.yaml -> ..data/config.yaml, ..data -> ..<timestamp>; an update
    writes a new timestamped folder, swaps ..data and deletes the old folder."""

    def publish(version: int) -> None:
        folder = tmp_path / f"..ts{version}"
        folder.mkdir()
        (folder / "config.yaml").write_text(SYSTEMS.replace("the cheap answer", f"v{version}"))
        link = tmp_path / "..data_tmp"
        link.symlink_to(folder.name)
        link.replace(tmp_path / "..data")  # the atomic swap
        if version > 1:
            for old in (tmp_path / f"..ts{version - 1}").iterdir():
                old.unlink()
            (tmp_path / f"..ts{version - 1}").rmdir()

    publish(1)
    (tmp_path / "config.yaml").symlink_to("..data/config.yaml")
    async with watched(tmp_path / "config.yaml") as app:
        for version in (2, 3, 4):
            publish(version)
            assert await until(lambda v=version: f"v{v}" in app.live.current.loaded.text)


@pytest.mark.parametrize("limit", [{"budget": 5}, {"rpm": 60}])
def test_a_key_limit_on_a_store_that_is_down_is_a_503_not_a_500(
    serve_gateway: Callable[..., Running], limit: dict[str, int]
) -> None:
    dead = "redis://127.0.0.1:1/0"
    running = serve_gateway(
        f"state: {{backend: redis, url: '{dead}', timeout: 0.3}}\n"
        "gateway:\n  admin_key: admin-secret-123456\n"
    )
    made = httpx2.post(
        f"{running.url}/admin/keys",
        json={"name": "capped", **limit},
        headers={"authorization": "Bearer admin-secret-123456"},
    )
    key = made.json()["key"]
    client = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)
    with pytest.raises(openai.InternalServerError) as caught:
        client.chat.completions.create(
            model="support", messages=[{"role": "user", "content": "ping"}]
        )
    assert caught.value.status_code == 503
    assert "internal error" not in caught.value.message
    assert "state store redis" in caught.value.message


async def _asgi(
    app: Gateway,
    method: str,
    path: str,
    body: dict[str, object] | None = None,
    key: str | None = None,
) -> tuple[dict[bytes, bytes], bytes, bool]:
    """Serve one request in process (with `key`, if given). A stream's client hangs up once
    the first part of the answer was sent. Returns the response headers, the body sent, and
    whether it hung up."""
    left = asyncio.Event()
    receive = _receiver(orjson.dumps(body) if body is not None else b"", left)
    headers: dict[bytes, bytes] = {}
    parts: list[bytes] = []

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            headers.update(message["headers"])
        elif message["type"] == "http.response.body":
            parts.append(message.get("body", b""))
            if message.get("more_body") and not left.is_set():
                left.set()
                for _ in range(3):  # let the gateway's disconnect watcher see it
                    await asyncio.sleep(0)

    await app(_scope(method, path, key), receive, send)  # type: ignore[arg-type]
    return headers, b"".join(parts), left.is_set()


def _receiver(raw: bytes, leaves: asyncio.Event) -> Callable[[], Any]:
    """An ASGI receive: the request body `raw`, then a disconnect once `leaves` is set."""
    asked = False

    async def receive() -> dict[str, object]:
        nonlocal asked
        if not asked:
            asked = True
            return {"type": "http.request", "body": raw, "more_body": False}
        await leaves.wait()
        return {"type": "http.disconnect"}

    return receive


def _scope(method: str, path: str, key: str | None = None) -> dict[str, object]:
    headers = [(b"content-type", b"application/json")]
    if key is not None:
        headers.append((b"authorization", f"Bearer {key}".encode()))
    return {
        "type": "http",
        "method": method,
        "path": path,
        "headers": headers,
        "client": ("127.0.0.1", 1),
    }


async def _record(app: Gateway, request_id: str) -> dict[str, Any]:
    """The request's decision record, once the request log has written it."""
    for _ in range(100):
        found, text, _ = await _asgi(app, "GET", f"/v1/requests/{request_id}")
        if found and b"status" in text:
            return orjson.loads(text)  # type: ignore[no-any-return]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no record of {request_id}")


def _stalled_client(
    body: dict[str, object], *, takes: int, stuck: asyncio.Event | None = None
) -> tuple[Callable[[], Any], Callable[[dict[str, Any]], Any], dict[bytes, bytes]]:
    """A client that sends `body`, takes `takes` body messages of the answer, then reads
    nothing more (that send never returns, and sets `stuck`) and never leaves. Returns
    receive, send and the response headers it got."""
    receive = _receiver(orjson.dumps(body), asyncio.Event())  # never leaves
    headers: dict[bytes, bytes] = {}
    taken = 0

    async def send(message: dict[str, Any]) -> None:
        nonlocal taken
        if message["type"] == "http.response.start":
            headers.update(message["headers"])
        elif message["type"] == "http.response.body":
            if taken == takes:  # the socket's buffers are full: this send never returns
                if stuck is not None:
                    stuck.set()
                await asyncio.Event().wait()
            taken += 1

    return receive, send, headers


async def test_a_cached_stream_the_client_leaves_cost_nothing(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        with_models(
            '  chatty:\n    local: {type: fake, default: "a long answer"}\n'
            "    price: {input: 1.0, output: 2.0}\n"
        )
        + "cache: {targets: [chatty]}\n"
    )
    app = create_app(config)
    ask = {"model": "chatty", "messages": [{"role": "user", "content": "go"}]}
    _, first, _ = await _asgi(app, "POST", "/v1/chat/completions", ask)
    assert orjson.loads(first)["choices"][0]["message"]["content"] == "a long answer"
    headers, body, left = await _asgi(app, "POST", "/v1/chat/completions", {**ask, "stream": True})
    assert left and b"[DONE]" not in body  # replayed from the cache, and cut
    record = await _record(app, headers[b"x-request-id"].decode())
    assert record["status"] == 499
    assert record["cost"] == 0  # the key's budget is settled to this too
    await app.aclose()


def test_a_disabled_model_is_not_offered(
    serve_gateway: Callable[..., Running], monkeypatch: pytest.MonkeyPatch
) -> None:
    # An optional provider without its key disables its models: listing them as available sent
    # clients to a name that could only be refused.
    monkeypatch.delenv("UNSET_KEY_FOR_TEST", raising=False)
    provider = "providers:\n  up:\n    type: openai\n    api_key: ${UNSET_KEY_FOR_TEST}\n"
    provider += "    optional: true\n"
    hosted = "  hosted: {provider: up, id: gpt-4o-mini-2024-07-18, price: {input: 1, output: 1}}\n"
    running = serve_gateway(text=provider + with_models(hosted))
    assert "hosted" in running.app.live.current.built.disabled
    client = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    offered = {m.id for m in client.models.list()}
    assert "cheap" in offered and "hosted" not in offered
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert "cheap" in caught.value.message and "hosted" not in caught.value.message


async def test_a_stream_whose_client_stops_reading_is_cut_and_recorded_as_left(
    tmp_path: Path,
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        with_models(
            '  chatty:\n    local: {type: fake, default: "one two three four five six"}\n'
            "    price: {input: 1.0, output: 2.0}\n"
        )
        + "gateway: {stalled_client_timeout: 0.2}\n"
    )
    app = create_app(config)
    ask = {"model": "chatty", "messages": [{"role": "user", "content": "go"}], "stream": True}
    receive, send, headers = _stalled_client(ask, takes=1)
    await asyncio.wait_for(app(_scope("POST", "/v1/chat/completions"), receive, send), 5)  # type: ignore[arg-type]
    assert app.in_flight == 0
    record = await _record(app, headers[b"x-request-id"].decode())
    assert record["status"] == 499
    assert record["cost"] > 0  # the input, and the part generated before it stopped reading
    await app.aclose()


async def test_a_shutdown_cancel_landing_with_the_stalled_client_cut_still_ends_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        with_models('  chatty:\n    local: {type: fake, default: "one two three four"}\n')
        + "gateway: {stalled_client_timeout: 0.2}\n"
    )
    app = create_app(config)
    fire = stalled.SendWatch._check

    def fire_and_shut_down(watch: stalled.SendWatch) -> None:
        fire(watch)
        if watch.fired:  # the server cancels the request's task in the same loop turn
            assert watch._task is not None
            watch._task.cancel()

    monkeypatch.setattr(stalled.SendWatch, "_check", fire_and_shut_down)
    ask = {"model": "chatty", "messages": [{"role": "user", "content": "go"}], "stream": True}
    receive, send, _ = _stalled_client(ask, takes=0)  # the client reads nothing
    scope = _scope("POST", "/v1/chat/completions")
    serving = asyncio.ensure_future(app(scope, receive, send))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(serving, 5)
    await app.aclose()


@pytest.mark.parametrize(
    ("path", "ask"),
    [
        (
            "/v1/chat/completions",
            {"model": "chatty", "messages": [{"role": "user", "content": "go"}]},
        ),
        ("/v1/embeddings", {"model": "hash", "input": ["one", "two", "three"]}),
    ],
)
async def test_a_whole_answer_whose_client_never_reads_it_is_cut_and_recorded_as_left(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, path: str, ask: dict[str, object]
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(
        with_models(
            '  chatty:\n    local: {type: fake, default: "one two three four five six"}\n'
            "    price: {input: 1.0, output: 2.0}\n"
        )
        + "gateway: {stalled_client_timeout: 0.2, admin_key: admin-secret-123456}\n"
    )
    app = create_app(config)
    records: list[RequestRecord] = []
    keep = app.decisions.record
    monkeypatch.setattr(app.decisions, "record", lambda r: (records.append(r), keep(r)))
    # The cut waits for the reload: a reload builds the config in a thread, which a loaded
    # machine can keep past the 0.2 s timeout, and a request cut before the swap leaves no
    # one on the old config to hold it open.
    reloaded = asyncio.Event()
    fire = stalled._Cut.__call__

    def fire_once_reloaded(cut: stalled._Cut) -> None:
        if reloaded.is_set():
            fire(cut)
        else:
            asyncio.ensure_future(reloaded.wait()).add_done_callback(lambda _: fire(cut))

    monkeypatch.setattr(stalled._Cut, "__call__", fire_once_reloaded)
    made = {"name": "one-at-a-time", "max_concurrency": 1}
    _, created, _ = await _asgi(app, "POST", "/admin/keys", made, key="admin-secret-123456")
    key = orjson.loads(created)["key"]
    stuck = asyncio.Event()
    receive, send, headers = _stalled_client(ask, takes=0, stuck=stuck)  # it reads nothing
    serving = asyncio.ensure_future(app(_scope("POST", path, key), receive, send))  # type: ignore[arg-type]
    await asyncio.wait_for(stuck.wait(), 5)  # the answer is made, its send waits on the client
    generation = app.live.serving().generation
    await app.live.reload()  # the old config stays open while the request runs on it
    assert generation.idle_since is None
    reloaded.set()
    await asyncio.wait_for(serving, 5)
    assert generation.in_flight == 0 and generation.idle_since is not None  # and then closes
    assert app.in_flight == 0
    mine = [r for r in records if r.id == headers[b"x-request-id"].decode()]
    assert [r.status for r in mine] == [499]  # recorded once, as a client that left
    assert mine[0].cost == float(headers[b"x-modelyard-cost"])  # all of it was billed
    assert mine[0].error is not None and "took none of the answer" in mine[0].error
    answered, _, _ = await _asgi(app, "POST", path, ask, key=key)  # the key's slot is free
    assert b"x-modelyard-cost" in answered
    await app.aclose()


async def test_a_shutdown_cancel_landing_with_a_whole_answer_cut_still_ends_the_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(SYSTEMS + "gateway: {stalled_client_timeout: 0.2}\n")
    app = create_app(config)
    fire = stalled._Cut.__call__

    def fire_and_shut_down(cut: stalled._Cut) -> None:
        fire(cut)
        cut.task.cancel()  # the server cancels the request's task in the same loop turn

    monkeypatch.setattr(stalled._Cut, "__call__", fire_and_shut_down)
    ask = {"model": "cheap", "messages": [{"role": "user", "content": "go"}]}
    receive, send, _ = _stalled_client(ask, takes=0)  # the client reads nothing
    serving = asyncio.ensure_future(app(_scope("POST", "/v1/chat/completions"), receive, send))  # type: ignore[arg-type]
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(serving, 5)
    await app.aclose()


def test_a_pipelined_answer_behind_one_never_read_is_cut_on_a_real_socket(
    serve_gateway: Callable[..., Running], caplog: pytest.LogCaptureFixture
) -> None:
    server_said: list[str] = []  # uvicorn's own loggers do not reach caplog: they stop at "uvicorn"
    heard = logging.Handler()
    heard.emit = lambda record: server_said.append(record.getMessage())  # type: ignore[method-assign]
    # uvicorn hands a whole answer to the socket's buffer at once; the next answer on the
    # connection waits for room while the client reads none of the first.
    wide = "embedders:\n  wide:\n    local: {type: hashing, dimensions: 256}\n"
    running = serve_gateway(
        text=SYSTEMS.replace("embedders:", wide) + "gateway: {stalled_client_timeout: 0.3}\n"
    )
    records: list[RequestRecord] = []
    keep = running.app.decisions.record
    running.app.decisions.record = lambda r: (records.append(r), keep(r))  # type: ignore[method-assign]
    body = orjson.dumps({"model": "wide", "input": [f"word {i}" for i in range(5000)]})
    head = b"POST /v1/embeddings HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
    ask = head + b"content-length: %d\r\n\r\n" % len(body) + body
    port = int(running.url.rsplit(":", 1)[1])
    logging.getLogger("uvicorn.error").addHandler(heard)
    with socket.socket() as client:
        client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        client.connect(("127.0.0.1", port))
        client.sendall(ask + ask)  # and reads nothing
        deadline = time.monotonic() + 10
        while (len(records) < 2 or running.app.in_flight) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [r.status for r in records] == [200, 499]  # the second one cut, and released
        assert running.app.in_flight == 0
        time.sleep(0.2)  # the server logs once the app has returned
    logging.getLogger("uvicorn.error").removeHandler(heard)
    # logged once, by us with the reason; not again by the server as an app that forgot to answer
    assert any("took none of the answer" in r.getMessage() for r in caplog.records)
    assert not [m for m in server_said if "ASGI callable returned" in m], server_said
