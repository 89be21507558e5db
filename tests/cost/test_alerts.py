"""Alerts reach a webhook (retried when it fails) and anomalies are spotted against history."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from modelyard.cost.alerts import Alert, AlertHub, Webhook
from modelyard.cost.anomaly import AnomalyDetector


class Hook:
    """A webhook receiver on 127.0.0.1 that fails its first `fail` POSTs with a 500."""

    def __init__(self, fail: int) -> None:
        self.fail = fail
        self.attempts = 0
        self.received: list[dict[str, object]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.attempts += 1
        if self.attempts <= self.fail:
            return web.Response(status=500)
        self.received.append(await request.json())
        return web.Response(status=204)


@pytest.fixture
async def hook() -> AsyncIterator[tuple[Hook, str]]:
    receiver = Hook(fail=1)
    app = web.Application()
    app.router.add_post("/alerts", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield receiver, f"http://127.0.0.1:{port}/alerts"
    await runner.cleanup()


def alert() -> Alert:
    return Alert(
        kind="budget_threshold",
        where="budget daily (total, day 2026-01-01)",
        message="spend passed 80% of $10",
        value=8.0,
        threshold=8.0,
    )


async def test_webhook_retries_a_failed_post_and_delivers_the_alert(
    hook: tuple[Hook, str],
) -> None:
    receiver, url = hook
    hub = AlertHub(log_alerts=False, webhook=Webhook(url=url, retries=2, backoff=0.01))
    hub.emit(alert())
    await hub.aclose()
    assert receiver.attempts == 2
    assert receiver.received[0]["message"] == "spend passed 80% of $10"
    assert receiver.received[0]["where"] == "budget daily (total, day 2026-01-01)"


async def test_a_webhook_that_redirects_is_not_followed_with_its_headers(
    hook: tuple[Hook, str],
) -> None:
    receiver, url = hook
    elsewhere = web.Application()
    moved = web.AppRunner(elsewhere)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(url)

    elsewhere.router.add_post("/hook", redirect)
    await moved.setup()
    site = web.TCPSite(moved, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    headers = {"authorization": "Bearer hook-token"}
    webhook = Webhook(url=f"http://127.0.0.1:{port}/hook", retries=0, headers=headers)
    hub = AlertHub(log_alerts=False, webhook=webhook)
    hub.emit(alert())
    await hub.aclose()
    await moved.cleanup()
    assert hub.sender is not None
    assert receiver.attempts == 0 and hub.sender.failed == 1


async def test_emit_never_waits_for_the_webhook(hook: tuple[Hook, str]) -> None:
    _, url = hook
    hub = AlertHub(log_alerts=False, webhook=Webhook(url=url, retries=3, backoff=0.2))
    started = asyncio.get_running_loop().time()
    hub.emit(alert())
    assert asyncio.get_running_loop().time() - started < 0.01
    await hub.aclose()


async def test_a_webhook_that_never_answers_is_given_up_on_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub = AlertHub(
        log_alerts=False,
        webhook=Webhook(
            url="http://127.0.0.1:9/services/T00/B00/XyZ9secret?token=hooktok3n",
            retries=1,
            backoff=0.01,
        ),
    )
    hub.emit(alert())
    await hub.aclose()
    assert hub.sender is not None and hub.sender.failed == 1
    assert "alert webhook http://127.0.0.1:9/… failed after 2 attempts" in caplog.text
    assert "XyZ9secret" not in caplog.text and "hooktok3n" not in caplog.text


@pytest.mark.parametrize(
    "url", ["http://", "http://exa mple.com/hook", "hooks.slack.com/services/T/B/secret"]
)
def test_a_webhook_url_without_a_host_is_refused_without_echoing_it(url: str) -> None:
    from modelyard.config.loader import parse
    from modelyard.errors import ConfigError

    text = f"models:\n  a: {{local: {{type: fake}}}}\nalerts:\n  webhook: {{url: '{url}'}}\n"
    with pytest.raises(ConfigError) as caught:
        parse(text, env={})
    assert "alerts.webhook.url" in str(caught.value) and "not shown" in str(caught.value)
    assert "exa mple" not in str(caught.value) and "T/B/secret" not in str(caught.value)


def detector(alerts: list[Alert], now: list[float]) -> AnomalyDetector:
    hub = AlertHub(log_alerts=False, recorder=alerts.append)
    return AnomalyDetector(
        hub,
        window=60,
        trailing=600,
        cost_factor=2.0,
        share_delta=0.3,
        min_requests=10,
        clock=lambda: now[0],
    )


def test_cost_per_item_doubling_against_its_trailing_window_alerts_once() -> None:
    alerts: list[Alert] = []
    now = [0.0]
    watch = detector(alerts, now)
    for _ in range(300):
        now[0] += 2
        watch.observe("support", 0.001, "small")
    for _ in range(60):
        now[0] += 1
        watch.observe("support", 0.003, "small")
    costs = [a for a in alerts if a.kind == "anomaly_cost"]
    assert len(costs) == 1
    assert costs[0].where == "system support"
    assert "cost per request moved from $0.001000" in costs[0].message
    assert costs[0].threshold is not None and costs[0].value >= 2 * costs[0].threshold


def test_a_model_taking_over_a_systems_traffic_alerts() -> None:
    alerts: list[Alert] = []
    now = [0.0]
    watch = detector(alerts, now)
    for i in range(300):
        now[0] += 2
        watch.observe("support", 0.001, "small" if i % 10 else "large")
    for _ in range(60):
        now[0] += 1
        watch.observe("support", 0.001, "large")
    shares = [a for a in alerts if a.kind == "anomaly_share"]
    assert {a.where for a in shares} == {
        "system support, model large",
        "system support, model small",
    }
    assert any("from 10% to" in a.message for a in shares)


def test_steady_traffic_raises_no_alert() -> None:
    alerts: list[Alert] = []
    now = [0.0]
    watch = detector(alerts, now)
    for i in range(1000):
        now[0] += 1
        watch.observe("support", 0.001 + (i % 3) * 0.0001, "small")
    assert alerts == []
