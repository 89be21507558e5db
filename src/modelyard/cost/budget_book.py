"""The budget ledger: reserving a request's worst case against its budgets' counters in a
`StateStore` (all fit, or none is charged), under a lease its process renews
(`cost.budget_leases`), settling them to the real cost after the call, and firing their alerts
once per window."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from modelyard.cost.alerts import Alert, AlertHub
from modelyard.cost.budget_counters import (
    Budget,
    BudgetStatus,
    Hold,
    Period,
    Refusal,
    period_of,
    smaller_call,
)
from modelyard.cost.budget_leases import LeaseKeeper
from modelyard.cost.prices import usd
from modelyard.errors import UnavailableError
from modelyard.state.base import Change, Claim, StateStore
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, EmbeddingRequest

log = logging.getLogger("modelyard.budgets")

_ROUNDING = 1e-9
"""Below this share of a counter (or $1), a difference between two counters is rounding: no
real reservation is that small (one token at the cheapest hosted price is about 1e-8 USD)."""

_ALERTED_KEPT = 10_000
"""Alert flags a book remembers claiming before it forgets them all (and asks the store)."""


def _from_now(hold: Hold, *, embedding: bool) -> str:
    """What a budget-reached alert says becomes of the calls that could pass the budget, as the
    call that reached it met it, and what to change when that call alone is above the limit."""
    budget = hold.budget
    if budget.downgrade_to is None:
        now = "requests that could pass it are now refused"
    elif not embedding:
        now = f"requests that could pass it are now downgraded to {budget.downgrade_to}"
    else:
        now = (
            "embedding calls that could pass it are now refused: there is no other embedder "
            "to downgrade them to"
        )
        if budget.per_request:  # it caps chat requests too
            now += f" (chat requests are downgraded to {budget.downgrade_to})"
    if hold.amount <= budget.limit:
        return now
    call = "embedding call" if embedding else "request"
    return (
        f"{now}; one {call}'s worst case alone is above the limit: raise it, or "
        f"{smaller_call(embedding=embedding)}"
    )


def _naming(hold: Hold) -> dict[str, str]:
    """What a budget alert's `details` say it is about, for a webhook to route it by."""
    budget = hold.budget
    return {
        "budget": budget.name,
        "scope": budget.scope,
        "subject": hold.subject,
        "window": f"{budget.window} {hold.period.id}",
    }


def _alert_of(hold: Hold, what: str) -> tuple[str, str, str, float, str]:
    """Which alert `what` of `hold` is: one per budget, subject, window and limit."""
    return (hold.budget.name, hold.subject, hold.period.id, hold.budget.limit, what)


def now_utc() -> datetime:
    """The wall clock in UTC (budget windows are calendar windows)."""
    return datetime.now(UTC)


class BudgetBook:
    """Reserves and settles against budgets kept in a StateStore, and fires their alerts."""

    def __init__(
        self,
        store: StateStore,
        *,
        alerts: AlertHub | None = None,
        clock: Callable[[], datetime] = now_utc,
        leases: LeaseKeeper | None = None,
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.clock = clock
        self.leases = leases if leases is not None else LeaseKeeper(store)
        """Renews this process's reservations and gives back those of processes that died."""
        self._periods: dict[tuple[str, datetime | None, datetime | None], tuple[int, Period | None]]
        self._periods = {}
        self.in_process = isinstance(store, MemoryStore)
        """An in-process store never suspends, so a settlement cannot be cut by a cancel."""
        self._alerted: set[tuple[str, str, str, float, str]] = set()
        """Alerts this book has claimed or found claimed (budget, subject, window, limit,
        which): a spend past a threshold asks the store about each once, not every time."""

    def _period(self, budget: Budget, now: datetime) -> Period | None:
        """`period_of`, computed once per budget per second (the hot path asks every request)."""
        second = int(now.timestamp())
        key = (budget.window, budget.start, budget.end)
        cached = self._periods.get(key)
        if cached is None or cached[0] != second:
            cached = (second, period_of(budget.window, now, budget.start, budget.end))
            self._periods[key] = cached
        return cached[1]

    def holds(
        self,
        budgets: Sequence[Budget],
        request: ChatRequest | EmbeddingRequest,
        node: str,
        amount: float,
    ) -> list[Hold]:
        """The counters `request` at `node` charges, `amount` each, under one lease."""
        now = self.clock()
        out = []
        lease = ""
        for budget in budgets:
            period = self._period(budget, now)
            if period is None:
                continue
            for subject in budget.subjects(request, node):
                lease = lease or self.leases.new_id()
                out.append(
                    Hold(budget=budget, subject=subject, period=period, amount=amount, lease=lease)
                )
        return out

    async def reserve(self, holds: Sequence[Hold], *, embedding: bool = False) -> Refusal | None:
        """Charge every hold if all fit under their limits (alert-only budgets always fit).
        `embedding`: the holds are an embedding call's, which a downgrade budget refuses."""
        if not holds:
            return None
        claims = [
            Claim(
                key=h.used_key,
                amount=h.amount,
                limit=float("inf") if h.budget.action == "alert_only" else h.budget.limit,
                ttl=h.ttl,
            )
            for h in holds
        ]
        lease_id = holds[0].lease
        if lease_id:
            outcome = await self.leases.reserve(claims, lease_id)
        else:
            outcome = await self.store.reserve_or_explain(claims)
        if outcome is None:
            return None
        refused, used = outcome
        hold = holds[claims.index(refused)]
        budget = hold.budget
        call = "an embedding call" if embedding else "a request"
        await self._once(
            hold,
            "reached",
            Alert(
                kind="budget_reached",
                where=hold.describe(),
                # "Reached" means admission: spent + reserved + a request's worst case would
                # pass the limit, which happens before the spend itself gets there.
                message=f"limit ${budget.limit:g} reached for admission: ${usd(used)} spent or "
                f"reserved plus {call}'s worst case ${usd(hold.amount)} would pass it; "
                + _from_now(hold, embedding=embedding),
                value=used,
                threshold=budget.limit,
                details=_naming(hold),
            ),
        )
        # Which part blocks says whether a retry can help: settled spend stays until the window
        # ends; reservations of requests in flight are given back within seconds.
        spent = await self.store.counter(hold.spent_key)
        return Refusal(hold=hold, used=used, spent=spent, embedding=embedding)

    async def settle(self, holds: Sequence[Hold], actual: float) -> None:
        """Replace each hold's reservation by `actual`, and alert on thresholds crossed."""
        if not holds:
            return
        lease_id = holds[0].lease
        if lease_id:
            # The store gives the reservation back with the lease, unless a sweep already did.
            changes: list[Change] = [(h.used_key, actual, h.ttl) for h in holds]
        else:
            changes = [(h.used_key, actual - h.amount, h.ttl) for h in holds]
        if actual != 0:
            changes += [(h.spent_key, actual, h.ttl) for h in holds]
        if lease_id:
            values = await self.leases.release(lease_id, changes)
        else:
            values = await self.store.adjust_many(changes)
        if actual == 0:
            return
        for hold, total in zip(holds, values[len(holds) :], strict=True):
            await self._thresholds(hold, after=total)

    async def _thresholds(self, hold: Hold, *, after: float) -> None:
        """Alert on each threshold the window's spend has passed, not only the ones this
        settlement crossed: a limit lowered mid-window (a hot reload) puts the spend past its
        new thresholds at once, and they alert on the next settlement (once each)."""
        if self.alerts is None:
            return
        limit = hold.budget.limit
        for fraction in hold.budget.alert_at:
            mark = fraction * limit
            if mark <= after + 1e-12 and not self._claimed(hold, f"t{fraction:g}"):
                over = (
                    " (alert only: requests still let through)"
                    if (hold.budget.action == "alert_only" and fraction >= 1)
                    else ""
                )
                await self._once(
                    hold,
                    f"t{fraction:g}",
                    Alert(
                        kind="budget_threshold",
                        where=hold.describe(),
                        message=f"spend passed {fraction * 100:g}% of ${limit:g}: "
                        f"${usd(after)} settled{over}",
                        value=after,
                        threshold=mark,
                        details={**_naming(hold), "fraction": fraction},
                    ),
                )

    def _claimed(self, hold: Hold, what: str) -> bool:
        """Whether this book already claimed alert `what` of `hold`'s window and limit, or
        found it claimed (the store says so for every process; this spares asking again)."""
        return _alert_of(hold, what) in self._alerted

    async def _once(self, hold: Hold, what: str, alert: Alert) -> None:
        """Emit `alert` unless it was already emitted for this hold's window and limit (in any
        process)."""
        if self.alerts is None or self._claimed(hold, what):
            return
        # The limit is part of the flag: one changed mid-window (a hot reload after the alert)
        # alerts again at its own thresholds, instead of being taken for the old one's.
        budget = hold.budget
        flag = f"alert:{budget.name}:{hold.subject}:{hold.period.id}:{budget.limit!r}:{what}"
        if await self.store.reserve([Claim(key=flag, amount=1, limit=1, ttl=hold.ttl)]) is None:
            self.alerts.emit(alert)
        if len(self._alerted) >= _ALERTED_KEPT:
            self._alerted.clear()  # mostly past windows'; the store still answers for them
        self._alerted.add(_alert_of(hold, what))

    async def status(self, budget: Budget, subject: str) -> BudgetStatus | None:
        """Spent and reserved in the current window of `budget` for `subject`."""
        period = period_of(budget.window, self.clock(), budget.start, budget.end)
        if period is None:
            return None
        hold = Hold(budget=budget, subject=subject, period=period, amount=0.0)
        used = await self.store.counter(hold.used_key)
        spent = await self.store.counter(hold.spent_key)
        reserved = used - spent
        # The two counters are sums of many float amounts, reserved then settled: what they
        # differ by with nothing in flight is rounding (2e-19), not a reservation to report.
        if reserved <= _ROUNDING * max(1.0, abs(used)):
            reserved = 0.0
        return BudgetStatus(hold=hold, spent=spent, reserved=reserved)


async def settle_shielded(book: BudgetBook, holds: Sequence[Hold], actual: float) -> None:
    """Settle even if the task is being cancelled (the reservation must not leak).

    If the store cannot be reached, the answer is still returned (it was paid for; an error
    would invite a retry and a second payment), the worst case stays reserved, and the lease
    keeper retries the settlement until the store answers (`LeaseKeeper.defer`).
    """
    if not holds:
        return
    try:
        if book.in_process:
            await book.settle(holds, actual)
        else:
            await asyncio.shield(book.settle(holds, actual))
    except UnavailableError as exc:
        log.error(
            "could not settle %s to $%.6f (%s); its worst case stays reserved and the settlement "
            "is retried while this process runs",
            ", ".join(h.describe() for h in holds),
            actual,
            exc.message,
        )
