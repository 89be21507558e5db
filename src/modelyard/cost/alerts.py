"""Alerts: budget thresholds crossed and traffic anomalies, delivered to the log, a webhook and
the ledger (so `modelyard costs` lists them).

`AlertHub.emit` never blocks a request: it logs, queues the webhook POST for a background task
(retried with exponential backoff), and hands the alert to the recorder. Each alert says what
changed (`message`) and where (`where`).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from modelyard.background import detached
from modelyard.errors import url_origin
from modelyard.loops import CLOSE_ELSEWHERE, PerLoop, on_loop

log = logging.getLogger("modelyard.alerts")


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert:
    """Something about spending that a person should know."""

    kind: str
    """`budget_threshold`, `budget_reached`, `anomaly_cost` or `anomaly_share`."""
    where: str
    """The budget, system or model it is about, e.g. `budget daily (total, 2026-05-01)`."""
    message: str
    """What changed, as a sentence."""
    value: float = 0.0
    threshold: float | None = None
    at: float = field(default_factory=time.time)
    details: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON body of the webhook POST."""
        return {
            "kind": self.kind,
            "where": self.where,
            "message": self.message,
            "value": self.value,
            "threshold": self.threshold,
            "at": self.at,
            "details": dict(self.details),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Webhook:
    """Where and how hard to POST alerts."""

    url: str
    retries: int = 3
    backoff: float = 0.5
    timeout: float = 5.0
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True, eq=False)
class _Lane:
    """What the sender holds on one event loop: its queue, the task posting it, its pool."""

    queue: asyncio.Queue[Alert]
    task: asyncio.Task[None] | None = None
    session: aiohttp.ClientSession | None = None


class WebhookSender:
    """POSTs alerts from a queue in a background task, retrying failures with backoff; one
    queue, task and pool per event loop sending (a library yard may serve several at once)."""

    def __init__(self, webhook: Webhook, *, max_queue: int = 1000) -> None:
        self.webhook = webhook
        self._max_queue = max_queue
        self._lanes: PerLoop[_Lane] = PerLoop()
        self.delivered = 0
        self.failed = 0

    def send(self, alert: Alert) -> None:
        """Queue `alert`; drops it (logged) if the queue is full. RuntimeError outside a
        running event loop."""
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop) or self._lanes.put(
            loop, _Lane(asyncio.Queue(maxsize=self._max_queue))
        )
        try:
            lane.queue.put_nowait(alert)
        except asyncio.QueueFull:
            log.error("alert webhook queue is full; dropped alert: %s", alert.message)
            return
        if lane.task is None or lane.task.done():
            lane.task = detached(self._drain(lane))

    async def _drain(self, lane: _Lane) -> None:
        while not lane.queue.empty():
            alert = lane.queue.get_nowait()
            try:
                await self._post(lane, alert)
            finally:
                lane.queue.task_done()

    async def _post(self, lane: _Lane, alert: Alert) -> None:
        hook = self.webhook
        if lane.session is None:
            lane.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=hook.timeout))
        delay = hook.backoff
        for attempt in range(hook.retries + 1):
            try:
                # A redirect is not followed: it would carry the hook's headers (its token)
                # wherever the answer points; it fails, and the log says so.
                async with lane.session.post(
                    hook.url,
                    json=alert.to_dict(),
                    headers=dict(hook.headers),
                    allow_redirects=False,
                ) as response:
                    if response.status < 300:
                        self.delivered += 1
                        return
                    problem = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = type(exc).__name__
            if attempt < hook.retries:
                await asyncio.sleep(delay)
                delay *= 2
        self.failed += 1
        log.error(
            "alert webhook %s failed after %d attempts (%s); alert: %s",
            url_origin(hook.url),
            hook.retries + 1,
            problem,
            alert.message,
        )

    async def leave_loop(self) -> None:
        """The running loop is ending: deliver what it queued and close its pool; the next
        alert sent on another loop opens a pool there."""
        lane = self._lanes.pop(asyncio.get_running_loop(), None)
        if lane is not None:
            await self._close(lane, self._patience(None))

    async def _close(self, lane: _Lane, wait: float) -> None:
        if lane.task is not None and not lane.task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(lane.task), wait)
            if not lane.task.done():
                lane.task.cancel()
        if lane.session is not None:
            await lane.session.close()
            lane.session = None

    def _patience(self, wait: float | None) -> float:
        return wait if wait is not None else self.webhook.timeout * (self.webhook.retries + 1)

    async def aclose(self, *, wait: float | None = None) -> None:
        """Deliver what is queued (up to `wait` seconds), then close the connection pools,
        each on its own loop."""
        limit = self._patience(wait)
        while self._lanes:
            loop, lane = self._lanes.popitem()
            close = functools.partial(self._close, lane, limit)
            await on_loop(loop, close, within=limit + CLOSE_ELSEWHERE)


class AlertHub:
    """Fans each alert out to the log, the webhook and the recorder."""

    def __init__(
        self,
        *,
        log_alerts: bool = True,
        webhook: Webhook | None = None,
        recorder: Callable[[Alert], None] | None = None,
    ) -> None:
        self.log_alerts = log_alerts
        self.sender = WebhookSender(webhook) if webhook is not None else None
        self.recorder = recorder
        self.recent: list[Alert] = []

    def emit(self, alert: Alert) -> None:
        """Deliver `alert` everywhere configured, without waiting for any of it."""
        self.recent = [*self.recent[-99:], alert]
        if self.log_alerts:
            log.warning("[%s] %s: %s", alert.kind, alert.where, alert.message)
        if self.recorder is not None:
            self.recorder(alert)
        if self.sender is not None:
            try:
                self.sender.send(alert)
            except RuntimeError:  # no running loop (a synchronous caller)
                log.error("alert webhook needs a running event loop; not sent: %s", alert.message)

    async def leave_loop(self) -> None:
        """The running loop is ending: the webhook's pool on it is closed (`Resources`)."""
        if self.sender is not None:
            await self.sender.leave_loop()

    async def aclose(self) -> None:
        """Deliver queued webhook POSTs, then close."""
        if self.sender is not None:
            await self.sender.aclose()
