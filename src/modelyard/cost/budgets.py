"""Budgets that cannot be overspent: reserve the worst case before a call, settle after it.

Before a call, `BudgetGuard` reserves the request's worst-case cost (`cost_bound`) against every
budget it touches, in one atomic `StateStore.reserve`: all fit, or none is charged and the
request is refused (or downgraded). After the call it settles each budget to the real cost and
releases the rest; on an error it settles `error.cost`, on cancellation or an abandoned stream
an estimate of what was used. Since nothing runs without its worst case held, concurrent
requests — in one process or many sharing Redis — can never push spend past a cap.

Where each scope is charged: model budgets by the guard around that model (so a fallback chain
can skip a model whose budget is spent), system budgets by the guard around that system, and
key, tag and total budgets once per request, by the outermost guard it meets, with the whole
system's worst case.

The worst case of a system (`cost_bound`) is the sum over every model call its graph contains:
each leaf costs at most its price times (input bounded by the prompt's UTF-8 length, see
`prices.bound_input_tokens`) plus (`max_tokens`, or the model's `max_output_tokens`, per choice).
That holds for fallbacks, cascades, ensembles and routers (a router calls one of its members,
the sum covers all). A node that calls a child more than once (retries) or feeds one model's
output into another (pipelines) must say so by defining `worst_case_cost(request)`.
"""

from __future__ import annotations

import asyncio
import calendar
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

from modelyard.config.operations import BudgetSpec
from modelyard.cost import scope as request_scope
from modelyard.cost.alerts import Alert, AlertHub
from modelyard.cost.decoration import Decoration
from modelyard.cost.dispatch import Dispatch, watching
from modelyard.cost.dispatch import current as current_dispatch
from modelyard.cost.prices import PER_MILLION, estimate_input_tokens, tokens_for_chars, usd
from modelyard.errors import BudgetExceededError, ModelError, UnavailableError
from modelyard.model import Model
from modelyard.state.base import Claim, StateStore
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, ChatResponse, Chunk, Decision, EmbeddingRequest, Message

log = logging.getLogger("modelyard.budgets")

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


@dataclass(frozen=True, slots=True, kw_only=True)
class Refusal:
    """The budget a reservation did not fit under, and by how much."""

    hold: Hold
    used: float
    embedding: bool = False
    """Whether the refused call is an embedding call, which no budget downgrades."""

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
        return BudgetExceededError(
            f"{self.hold.describe()} would be passed: ${usd(self.used)} of ${usd(budget.limit)} "
            f"is spent or reserved and this {call} may cost up to ${usd(self.hold.amount)}{why}",
            model=node,
            code=budget.name,
            retryable=False,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetStatus:
    """A budget's state in its current window, for reports."""

    hold: Hold
    spent: float
    reserved: float


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
    call, smaller = (
        ("embedding call", "send fewer or shorter texts per call")
        if embedding
        else ("request", "lower max_tokens")
    )
    return f"{now}; one {call}'s worst case alone is above the limit: raise it, or {smaller}"


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
    ) -> None:
        self.store = store
        self.alerts = alerts
        self.clock = clock
        self._periods: dict[tuple[str, datetime | None, datetime | None], tuple[int, Period | None]]
        self._periods = {}
        self.in_process = isinstance(store, MemoryStore)
        """An in-process store never suspends, so a settlement cannot be cut by a cancel."""

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
        """The counters `request` at `node` charges, `amount` each."""
        now = self.clock()
        out = []
        for budget in budgets:
            period = self._period(budget, now)
            if period is None:
                continue
            for subject in budget.subjects(request, node):
                out.append(Hold(budget=budget, subject=subject, period=period, amount=amount))
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
            ),
        )
        return Refusal(hold=hold, used=used, embedding=embedding)

    async def settle(self, holds: Sequence[Hold], actual: float) -> None:
        """Replace each hold's reservation by `actual`, and alert on thresholds crossed."""
        if not holds:
            return
        changes: list[tuple[str, float, float | None]] = [
            (h.used_key, actual - h.amount, h.ttl) for h in holds
        ]
        if actual == 0:
            await self.store.adjust_many(changes)
            return
        changes += [(h.spent_key, actual, h.ttl) for h in holds]
        values = await self.store.adjust_many(changes)
        for hold, total in zip(holds, values[len(holds) :], strict=True):
            await self._thresholds(hold, before=total - actual, after=total)

    async def _thresholds(self, hold: Hold, *, before: float, after: float) -> None:
        limit = hold.budget.limit
        for fraction in hold.budget.alert_at:
            mark = fraction * limit
            if before < mark <= after + 1e-12:
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
                        details={"budget": hold.budget.name, "fraction": fraction},
                    ),
                )

    async def _once(self, hold: Hold, what: str, alert: Alert) -> None:
        """Emit `alert` unless it was already emitted for this hold's window (in any process)."""
        if self.alerts is None:
            return
        flag = f"alert:{hold.budget.name}:{hold.subject}:{hold.period.id}:{what}"
        if await self.store.reserve([Claim(key=flag, amount=1, limit=1, ttl=hold.ttl)]) is None:
            self.alerts.emit(alert)

    async def status(self, budget: Budget, subject: str) -> BudgetStatus | None:
        """Spent and reserved in the current window of `budget` for `subject`."""
        period = period_of(budget.window, self.clock(), budget.start, budget.end)
        if period is None:
            return None
        hold = Hold(budget=budget, subject=subject, period=period, amount=0.0)
        used = await self.store.counter(hold.used_key)
        spent = await self.store.counter(hold.spent_key)
        return BudgetStatus(hold=hold, spent=spent, reserved=max(0.0, used - spent))


def cost_bound(model: Model, request: ChatRequest) -> float:
    """The most `request` can cost through `model` (see the module docstring for the bound)."""
    custom = getattr(model, "worst_case_cost", None)
    if callable(custom):
        return float(custom(request))
    children = model.children
    if not children:
        info = model.info
        return info.price.worst_case(request, info.capabilities.max_output_tokens)
    return sum(cost_bound(child, request) for child in children)


MAX_BYTES_PER_TOKEN = 8
"""What one output token can take as text, for bounding what another model reads: CJK text
takes about 3 bytes a token, runs of code indentation up to 8. (Input is bounded by bytes,
which is safe: a token is at least one byte.)"""


def output_bytes_bound(model: Model, request: ChatRequest) -> int:
    """The most bytes `model` can write for `request`: `max_tokens` (or the largest
    `max_output_tokens` under it) per choice, at `MAX_BYTES_PER_TOKEN`."""
    most = max(
        request.max_tokens or leaf.info.capabilities.max_output_tokens for leaf in leaves(model)
    )
    return most * request.n * MAX_BYTES_PER_TOKEN


def reading(request: ChatRequest, input_bytes: int, *, helper: bool = False) -> ChatRequest:
    """A stand-in for a call whose input is built from other calls' outputs, `input_bytes`
    long (`cost_bound` reads byte length): the caller's request with that prompt, or for a
    `helper` (a judge, checker, verifier: `patterns.records.derived`) a fresh one-message
    request that keeps none of the caller's `max_tokens`, `n` or tools, as the real call does."""
    if helper:
        from modelyard.patterns.records import derived  # the patterns use cost, not the reverse

        return derived(request, "x" * input_bytes)
    return replace(request, messages=(Message(role="user", content="x" * input_bytes),))


def partial_cost(
    model: Model, request: ChatRequest, output_chars: int = 0, *, sent: bool = True
) -> float:
    """An estimate of what an interrupted call spent: its input and the `output_chars`
    characters of output seen so far, at the dearest prices under `model` (the provider bills
    what it generated, which we may not have seen all of, so lean high). Nothing for a call
    that was never `sent` (`cost.dispatch`): no provider received it."""
    if not (sent or output_chars):
        return 0.0
    prices = [m.info.price for m in leaves(model)]
    if not prices:
        return 0.0
    input_rate = max(p.dearest_input for p in prices)
    output_rate = max(p.output for p in prices)
    return (
        estimate_input_tokens(request) * input_rate + tokens_for_chars(output_chars) * output_rate
    ) / PER_MILLION


def leaves(model: Model) -> list[Model]:
    """The models under `model` that call no other (the ones that are billed)."""
    if not model.children:
        return [model]
    return [leaf for child in model.children for leaf in leaves(child)]


_BOUNDING: ContextVar[frozenset[str]] = ContextVar("modelyard_bounding", default=frozenset())
"""The guards whose downgrade targets are being bounded, so a downgrade cycle ends."""


class BudgetGuard(Decoration):
    """Enforces budgets around one system or model (see the module docstring)."""

    def __init__(
        self,
        inner: Model,
        *,
        book: BudgetBook,
        own: Sequence[Budget],
        per_request: Sequence[Budget],
        targets: Mapping[str, Model],
    ) -> None:
        super().__init__(inner)
        self.book = book
        self.own = tuple(own)
        self.per_request = tuple(per_request)
        self.targets = targets
        """Where downgrades go: the built systems and models, looked up at call time."""
        self._downgrades = tuple(
            {b.downgrade_to for b in self.own if b.action == "downgrade" and b.downgrade_to}
        )

    def worst_case_cost(self, request: ChatRequest) -> float:
        """The inner node's bound, or a downgrade target's where dearer: a budget that downgrades
        sends the request there instead (the guard itself spends nothing). An outer guard
        reserves this for the key, tag and total budgets."""
        bound = cost_bound(self.inner, request)
        if not self._downgrades:
            return bound
        bounding = _BOUNDING.get()
        if self.name in bounding:  # a downgrade cycle is refused at run time
            return bound
        token = _BOUNDING.set(bounding | {self.name})
        try:
            for name in self._downgrades:
                target = self.targets.get(name)
                if target is not None:
                    bound = max(bound, cost_bound(target, request))
        finally:
            _BOUNDING.reset(token)
        return bound

    def describe(self) -> dict[str, object]:
        out = self.inner.describe()
        if self.own:
            out["budgets"] = ", ".join(b.name for b in self.own)
        return out

    def _holds(self, request: ChatRequest, scope: request_scope.RequestScope) -> list[Hold]:
        budgets = list(self.own)
        if not scope.request_budgets_held:
            budgets += self.per_request
        if not budgets:
            return []
        return self.book.holds(budgets, request, self.name, cost_bound(self.inner, request))

    async def _admit(
        self, request: ChatRequest, scope: request_scope.RequestScope
    ) -> tuple[list[Hold], Model | None]:
        """Reserve; returns the holds, and the downgrade target when a budget sends us there."""
        holds = self._holds(request, scope)
        refusal = await self.book.reserve(holds)
        if refusal is None:
            if any(h.budget.per_request for h in holds):
                scope.request_budgets_held = True
            return holds, None
        budget = refusal.hold.budget
        if budget.action != "downgrade" or budget.downgrade_to is None:
            raise refusal.error(self.name)
        target = budget.downgrade_to
        if target == self.name or target in scope.downgraded or target not in self.targets:
            raise refusal.error(self.name)
        scope.downgraded.append(self.name)
        return [], self.targets[target]

    def _scope(self) -> tuple[request_scope.RequestScope, bool]:
        scope = request_scope.current()
        if scope is None:
            return request_scope.RequestScope(entry=self.name), True
        return scope, False

    async def complete(self, request: ChatRequest) -> ChatResponse:
        scope, _ = self._scope()
        with request_scope.entered(scope):
            holds, downgrade = await self._admit(request, scope)
            if downgrade is not None:
                response = await downgrade.complete(request)
                return _downgraded(self.name, downgrade.name, response)
            call = watching()
            try:
                with call:
                    response = await self.inner.complete(request)
            except ModelError as exc:
                await settle_shielded(self.book, holds, exc.cost)
                raise
            except BaseException:
                # Cancelled: the provider bills the input only if the request reached it.
                used = partial_cost(self.inner, request, sent=call.dispatch.sent)
                await settle_shielded(self.book, holds, used)
                raise
            await settle_shielded(self.book, holds, response.cost)
            return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        scope, _ = self._scope()
        with request_scope.entered(scope):
            holds, downgrade = await self._admit(request, scope)
        source = downgrade if downgrade is not None else self.inner
        chunks = source.stream(request)
        seen = 0  # characters streamed: with whether it was sent, all an estimate needs
        settled = downgrade is not None
        dispatch = Dispatch(current_dispatch())
        try:
            while True:
                with request_scope.entered(scope), watching(dispatch):
                    try:
                        chunk = await anext(chunks)
                    except StopAsyncIteration:
                        break
                if chunk.response is not None and not settled:
                    await settle_shielded(self.book, holds, chunk.response.cost)
                    settled = True
                if chunk.response is not None and downgrade is not None:
                    chunk = Chunk(response=_downgraded(self.name, downgrade.name, chunk.response))
                seen += chunk.chars
                yield chunk
        except ModelError as exc:
            if not settled:
                settled = True
                used = exc.cost
                if not used and seen:
                    used = partial_cost(self.inner, request, seen)
                await settle_shielded(self.book, holds, used)
            raise
        finally:
            if not settled:
                # Cancelled, or the consumer stopped reading: settle what was likely used.
                estimate = partial_cost(self.inner, request, seen, sent=dispatch.sent)
                await settle_shielded(self.book, holds, estimate)
            close = getattr(chunks, "aclose", None)
            if close is not None:
                await close()


async def settle_shielded(book: BudgetBook, holds: Sequence[Hold], actual: float) -> None:
    """Settle even if the task is being cancelled (the reservation must not leak).

    If the store cannot be reached, the answer is still returned (it was paid for; an error
    would invite a retry and a second payment) and the worst case stays reserved: spend is
    over-counted, never under-counted.
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
            "could not settle %s to $%.6f (%s); its worst case stays reserved",
            ", ".join(h.describe() for h in holds),
            actual,
            exc.message,
        )


DOWNGRADE = "budget"
"""The decision kind of a node whose budget sent the request to another node."""


def downgraded(response: ChatResponse) -> bool:
    """Whether a budget downgrade, anywhere in the graph, had another node answer `response`."""
    decision = response.decision
    return decision is not None and any(d.kind == DOWNGRADE for d in decision.walk())


def _downgraded(node: str, target: str, response: ChatResponse) -> ChatResponse:
    decision = Decision(
        node=node,
        kind=DOWNGRADE,
        chosen=target,
        reason=f"budget reached: downgraded to {target}",
        latency_ms=response.decision.latency_ms if response.decision else 0.0,
        cost=response.cost,
        children=(response.decision,) if response.decision else (),
    )
    return replace(response, decision=decision)


def budgets_from_specs(specs: Sequence[BudgetSpec]) -> list[Budget]:
    """The budgets of a config."""
    return [Budget.from_spec(spec) for spec in specs]
