"""A virtual key's own limits on the serving path: its requests per minute, its concurrent
slots and its own monthly budget (`keys create --rpm/--max-concurrency/--budget`)."""

from __future__ import annotations

from modelyard.cost.alerts import AlertHub
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Hold, key_budget
from modelyard.cost.budget_leases import LeaseKeeper
from modelyard.errors import ModelError
from modelyard.gateway.errors import ApiError, from_model_error
from modelyard.gateway.exchange import Call
from modelyard.gateway.headers import key_rate_headers
from modelyard.gateway.keys import VirtualKey
from modelyard.state.base import StateStore
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, EmbeddingRequest


class KeyLimits:
    """Checks and takes a key's rate, concurrent slots and budget for one request each."""

    def __init__(self) -> None:
        self.limits: StateStore = MemoryStore()
        """Per-key request rates; a shared backend makes them hold across replicas."""
        self.spend: StateStore = self.limits
        """Each key's own budget (spend, persisted with the embedded default)."""
        self.leases: LeaseKeeper | None = None
        """The keeper of `spend`'s leases in this process (the configured budgets' too)."""
        self.alerts: AlertHub | None = None
        """Where the config serving the last reservation sends its alerts (`reserve`)."""
        self._book: BudgetBook | None = None
        self._per_key: dict[str, int] = {}

    @property
    def book(self) -> BudgetBook:
        """The ledger of each key's own monthly budget, on the shared state store."""
        book = self._book
        if (
            book is None
            or book.store is not self.spend
            or (self.leases is not None and book.leases is not self.leases)
            or book.alerts is not self.alerts
        ):
            book = self._book = BudgetBook(self.spend, leases=self.leases, alerts=self.alerts)
        return book

    async def check_rate(self, key: VirtualKey, call: Call) -> None:
        """Count one request against the key's requests per minute, and give `call` the
        headers telling what is left of them (sent with whatever it answers); 429 when it is
        reached."""
        assert key.rpm is not None
        try:
            use = await self.limits.window_acquire(f"key-rpm:{key.id}", 1, limit=key.rpm, window=60)
        except ModelError as exc:  # the shared store is down: a 503 saying so, not a 500
            raise from_model_error(exc) from None
        call.rate = key_rate_headers(key.rpm, use, anthropic=call.anthropic)
        wait = use.wait
        if wait > 0:
            raise ApiError(
                429,
                f"this key's limit of {key.rpm} requests per minute is reached",
                "rate_limit_error",
                "key_rate_limited",
                headers={"retry-after": str(max(1, round(wait)))},
            )

    def occupy(self, key: VirtualKey) -> None:
        """Take one of the key's concurrent slots (`release` gives it back); 429 when none is
        free."""
        limit = key.max_concurrency
        if limit is None:
            return
        if self._per_key.get(key.id, 0) >= limit:
            raise ApiError(
                429,
                f"more than {limit} concurrent requests for this key",
                "rate_limit_error",
                "concurrency_limit",
            )
        self._per_key[key.id] = self._per_key.get(key.id, 0) + 1

    def release(self, key: VirtualKey) -> None:
        """Give back the slot `occupy` took."""
        if key.max_concurrency is not None:
            self._per_key[key.id] -= 1

    async def reserve(
        self,
        key: VirtualKey,
        request: ChatRequest | EmbeddingRequest,
        target: str,
        worst_case: float,
        alerts: AlertHub | None = None,
    ) -> list[Hold]:
        """Reserve the request's worst case against the key's own budget (`keys create
        --budget`), like any configured budget: refused only if it could really pass it (a
        `BudgetExceededError` with its record, for the caller to record as a configured
        budget's refusal is), and alerting through `alerts` (the serving config's) as it
        does."""
        assert key.budget is not None
        self.alerts = alerts
        holds = self.book.holds([key_budget(key.id, key.budget)], request, target, worst_case)
        try:
            refusal = await self.book.reserve(
                holds, embedding=isinstance(request, EmbeddingRequest)
            )
        except ModelError as exc:  # the shared store is down: a 503 saying so, not a 500
            raise from_model_error(exc) from None
        if refusal is not None:
            raise refusal.error(target)
        return holds
