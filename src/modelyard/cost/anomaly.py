"""Anomaly detection: a system's cost per item, or a model's share of its answers, moving far
from its trailing window.

Traffic is counted in time buckets per system (bounded memory: one bucket per `bucket` seconds
of history); the recent `window` is compared with the `trailing` seconds before it, at most once
a second per system, so the request path pays a dict update. An alert for the same thing is not
repeated within `trailing` seconds. Counts are per process.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from modelyard.cost.alerts import Alert, AlertHub


@dataclass(slots=True)
class _Bucket:
    requests: int = 0
    cost: float = 0.0
    models: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    cost: float = 0.0
    models: Counter[str] = field(default_factory=Counter)

    def add(self, bucket: _Bucket) -> None:
        self.requests += bucket.requests
        self.cost += bucket.cost
        self.models.update(bucket.models)

    def share(self, model: str) -> float:
        return self.models[model] / self.requests if self.requests else 0.0


class AnomalyDetector:
    """Watches each system's traffic and alerts when it departs from its own history."""

    def __init__(
        self,
        alerts: AlertHub,
        *,
        window: float = 300.0,
        trailing: float = 3600.0,
        cost_factor: float = 2.0,
        share_delta: float = 0.3,
        min_requests: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.alerts = alerts
        self.window = window
        self.trailing = trailing
        self.cost_factor = cost_factor
        self.share_delta = share_delta
        self.min_requests = min_requests
        self.clock = clock
        self.bucket = window / 5
        self._buckets: dict[str, dict[int, _Bucket]] = {}
        self._checked: dict[str, float] = {}
        self._fired: dict[tuple[str, str, str], float] = {}

    def observe(self, system: str, cost: float, model: str | None) -> None:
        """Count one request of `system` that cost `cost` and was answered by `model`."""
        now = self.clock()
        index = int(now // self.bucket)
        buckets = self._buckets.setdefault(system, {})
        bucket = buckets.get(index)
        if bucket is None:
            bucket = buckets[index] = _Bucket()
            oldest = index - int((self.window + self.trailing) // self.bucket) - 1
            for stale in [i for i in buckets if i < oldest]:
                del buckets[stale]
        bucket.requests += 1
        bucket.cost += cost
        if model is not None:
            bucket.models[model] += 1
        if now - self._checked.get(system, -1e18) >= 1.0:
            self._checked[system] = now
            self.check(system, now)

    def check(self, system: str, now: float) -> None:
        """Compare the recent window of `system` with its trailing window; alert on a departure."""
        index = int(now // self.bucket)
        recent_from = index - int(self.window // self.bucket) + 1
        trailing_from = recent_from - int(self.trailing // self.bucket)
        recent, before = _Totals(), _Totals()
        for i, bucket in self._buckets.get(system, {}).items():
            if i >= recent_from:
                recent.add(bucket)
            elif i >= trailing_from:
                before.add(bucket)
        if recent.requests < self.min_requests or before.requests < self.min_requests:
            return
        self._check_cost(system, now, recent, before)
        for model in set(recent.models) | set(before.models):
            then, now_share = before.share(model), recent.share(model)
            if abs(now_share - then) >= self.share_delta:
                self._fire(
                    now,
                    ("share", system, model),
                    Alert(
                        kind="anomaly_share",
                        where=f"system {system}, model {model}",
                        message=f"{model}'s share of {system}'s answers moved from {then:.0%} "
                        f"to {now_share:.0%} in the last {self.window:g}s "
                        f"(compared with the {self.trailing:g}s before)",
                        value=now_share,
                        threshold=then,
                    ),
                )

    def _check_cost(self, system: str, now: float, recent: _Totals, before: _Totals) -> None:
        then = before.cost / before.requests
        per_item = recent.cost / recent.requests
        if then == 0:
            jumped = per_item > 0
        else:
            ratio = per_item / then
            jumped = ratio >= self.cost_factor or ratio <= 1 / self.cost_factor
        if not jumped:
            return
        change = f"x{per_item / then:.1f}" if then else "from nothing"
        self._fire(
            now,
            ("cost", system, ""),
            Alert(
                kind="anomaly_cost",
                where=f"system {system}",
                message=f"cost per request moved from ${then:.6f} to ${per_item:.6f} ({change}) "
                f"in the last {self.window:g}s (compared with the {self.trailing:g}s before)",
                value=per_item,
                threshold=then,
            ),
        )

    def _fire(self, now: float, what: tuple[str, str, str], alert: Alert) -> None:
        last = self._fired.get(what)
        if last is not None and now - last < self.trailing:
            return
        self._fired[what] = now
        self.alerts.emit(alert)
