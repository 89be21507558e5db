"""What a budget caps and the counters it keeps: a `Budget` (a USD cap on one scope over a
calendar window), the `Period` of its window, the `Hold` a reservation charges to one counter,
the `Refusal` when a hold does not fit, and a counter's `BudgetStatus` for reports."""

from __future__ import annotations

import calendar
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from modelyard.config.operations import BudgetSpec
from modelyard.cost.prices import usd
from modelyard.errors import BudgetExceededError
from modelyard.types import ChatRequest, Decision, EmbeddingRequest

_GRACE = 3600.0
"""Seconds a window's counters are kept after it ends (reports of the period just closed)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Period:
    """One window of a budget: its id (part of the counter key) and seconds until it ends."""

    id: str
    ends_in: float


def period_of(
    window: str, now: datetime, start: datetime | None = None, end: datetime | None = None
) -> Period | None:
    """The calendar window (UTC) containing `now`, or None outside a fixed window."""
    if window == "fixed":
        assert start is not None and end is not None
        if not start <= now < end:
            return None
        return Period(
            id=f"{start:%Y%m%dT%H%M}-{end:%Y%m%dT%H%M}", ends_in=(end - now).total_seconds()
        )
    if window == "minute":
        first = now.replace(second=0, microsecond=0)
        return Period(
            id=f"{first:%Y-%m-%dT%H:%M}",
            ends_in=(first + timedelta(minutes=1) - now).total_seconds(),
        )
    if window == "hour":
        first = now.replace(minute=0, second=0, microsecond=0)
        return Period(
            id=f"{first:%Y-%m-%dT%H}", ends_in=(first + timedelta(hours=1) - now).total_seconds()
        )
    if window == "day":
        first = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return Period(
            id=f"{first:%Y-%m-%d}", ends_in=(first + timedelta(days=1) - now).total_seconds()
        )
    if window == "month":
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        days = calendar.monthrange(now.year, now.month)[1]
        return Period(
            id=f"{first:%Y-%m}", ends_in=(first + timedelta(days=days) - now).total_seconds()
        )
    raise ValueError(f"unknown budget window {window!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Budget:
    """A cap in USD on one scope over a window, and what happens at it."""

    name: str
    scope: str
    limit: float
    selector: str | None = None
    window: str = "day"
    action: str = "block"
    downgrade_to: str | None = None
    alert_at: tuple[float, ...] = (0.5, 0.8, 1.0)
    start: datetime | None = None
    end: datetime | None = None

    @classmethod
    def from_spec(cls, spec: BudgetSpec) -> Budget:
        """The budget a config entry describes."""
        return cls(
            name=spec.name,
            scope=spec.scope,
            limit=spec.limit,
            selector=spec.selector,
            window=spec.window,
            action=spec.action,
            downgrade_to=spec.downgrade_to,
            alert_at=tuple(spec.alert_at),
            start=spec.start,
            end=spec.end,
        )

    def subjects(self, request: ChatRequest | EmbeddingRequest, node: str) -> tuple[str, ...]:
        """What this budget caps in this request at `node`: the counters it is charged to."""
        if self.scope == "total":
            return ("all",)
        if self.scope in ("model", "system"):
            return (node,) if self.selector in ("*", node) else ()
        if self.scope == "key":
            key = request.key_id
            return (key,) if key is not None and self.selector in ("*", key) else ()
        return tuple(t for t in dict.fromkeys(request.tags) if self.selector in ("*", t))

    def applies_to_node(self, node: str) -> bool:
        """Whether the guard around `node` charges this (model or system) budget."""
        return self.scope in ("model", "system") and self.selector in ("*", node)

    @property
    def per_request(self) -> bool:
        """Key, tag and total budgets: charged once per request, whatever it calls."""
        return self.scope in ("key", "tag", "total")


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """One budget counter a reservation charged."""

    budget: Budget
    subject: str
    period: Period
    amount: float
    lease: str = ""
    """The lease of the reservation this hold belongs to (shared by its holds), or none."""

    @property
    def used_key(self) -> str:
        """Reserved plus settled spend: what admission checks."""
        return f"budget:{self.budget.name}:{self.subject}:{self.period.id}"

    @property
    def spent_key(self) -> str:
        """Settled spend only: what reports and alerts show."""
        return f"spent:{self.budget.name}:{self.subject}:{self.period.id}"

    @property
    def ttl(self) -> float:
        return self.period.ends_in + _GRACE

    def describe(self) -> str:
        """E.g. `budget daily (key team-a, day 2026-05-01)`."""
        budget = self.budget
        what = "total" if budget.scope == "total" else f"{budget.scope} {self.subject}"
        return f"budget {budget.name} ({what}, {budget.window} {self.period.id})"


def smaller_call(*, embedding: bool) -> str:
    """What makes a call whose worst case alone is above a budget's limit fit under it."""
    return "send fewer or shorter texts per call" if embedding else "lower max_tokens"


BUDGET = "budget"
"""The decision kind of a node whose budget decided where a request went: refused it, or sent
it to another node (a downgrade). Never a model call itself."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """The budget a reservation did not fit under, and by how much."""

    hold: Hold
    used: float
    spent: float = 0.0
    """Of `used`, what is settled (the rest is reserved by requests in flight)."""
    embedding: bool = False
    """Whether the refused call is an embedding call, which no budget downgrades."""

    @property
    def never_fits(self) -> bool:
        """Whether this call's worst case alone is above the limit: no wait lets it through."""
        return self.hold.amount > self.hold.budget.limit

    @property
    def until_window_ends(self) -> bool:
        """Whether settled spend alone leaves no room for this call: then nothing frees any
        before the budget's window ends, where reservations are given back as requests end."""
        return self.spent + self.hold.amount > self.hold.budget.limit

    def error(self, node: str) -> BudgetExceededError:
        """The error a blocked request gets."""
        budget = self.hold.budget
        call = "embedding call" if self.embedding else "request"
        why = (
            f"; an embedding call is refused, not downgraded to {budget.downgrade_to}: there is "
            "no other embedder to send it to"
            if self.embedding and budget.downgrade_to
            else ""
        )
        lasting = self.until_window_ends and not self.never_fits
        if self.never_fits:
            when = (
                f"; this {call} alone may cost more than the budget's limit: no retry can fit; "
                f"{smaller_call(embedding=self.embedding)}, or raise the limit"
            )
        elif lasting:
            ends = _duration(self.hold.period.ends_in)
            when = f"; what is spent leaves no room for it until the window ends in {ends}"
        else:
            when = (
                f"; ${usd(self.used - self.spent)} of that is reserved by requests in flight, "
                "given back as they end: a retry may fit"
            )
        error = BudgetExceededError(
            f"{self.hold.describe()} would be passed: ${usd(self.used)} of ${usd(budget.limit)} "
            f"is spent or reserved and this {call} may cost up to ${usd(self.hold.amount)}"
            f"{when}{why}",
            model=node,
            code=budget.name,
            retryable=False,
            retry_after=self.hold.period.ends_in if lasting else None,
        )
        error.never_fits = self.never_fits
        # Its record says which budget refused it and why; no model was called, so the
        # ledger and the request log name none (`cost.accounting.NO_MODEL`).
        error.decision = Decision(
            node=node,
            kind=BUDGET,
            reason=f"refused by {self.hold.describe()}",
            threshold=budget.limit,
            error=f"{error.kind}: {error.message}",
            details={"budget": budget.name, "used": self.used, "worst_case": self.hold.amount},
        )
        return error


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatus:
    """A budget's state in its current window, for reports."""

    hold: Hold
    spent: float
    reserved: float


KEY_BUDGET = "virtual-key"
"""The name of each virtual key's own budget (`keys create --budget`)."""


def key_budget(key_id: str, limit: float) -> Budget:
    """A virtual key's own budget: `limit` USD a calendar month, charged like a key budget."""
    return Budget(name=KEY_BUDGET, scope="key", selector=key_id, window="month", limit=limit)


def budgets_from_specs(specs: Sequence[BudgetSpec]) -> list[Budget]:
    """The budgets of a config."""
    return [Budget.from_spec(spec) for spec in specs]


def _duration(seconds: float) -> str:
    """`seconds` as a person reads a wait: 40 s, 12 min, 5.5 h, 3 days."""
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    if seconds < 90 * 60:
        return f"{round(seconds / 60)} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.0f} days"
