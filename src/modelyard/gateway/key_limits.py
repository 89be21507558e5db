"""A virtual key's own limits on the serving path: its requests and tokens per minute, its
concurrent slots and its own monthly budget (`keys create --rpm/--tpm/--max-concurrency/
--budget`)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass

from modelyard.cost.alerts import AlertHub
from modelyard.cost.bounds import leaves
from modelyard.cost.budget_book import BudgetBook, settle_shielded
from modelyard.cost.budget_counters import Hold, key_budget
from modelyard.cost.budget_leases import KEY_SLOTS, LeaseKeeper
from modelyard.errors import ModelError, UnavailableError
from modelyard.gateway.errors import ApiError, from_model_error, retry_after
from modelyard.gateway.exchange import Call
from modelyard.gateway.headers import key_rate_headers
from modelyard.gateway.keys import VirtualKey
from modelyard.model import Model, Wrapper
from modelyard.resilience.ratelimit import MINUTE, correct_estimate, estimated_tokens
from modelyard.resilience.streams import closing
from modelyard.state.base import Claim, StateStore, WindowUse
from modelyard.state.memory import MemoryStore
from modelyard.state.policy import after_the_call
from modelyard.types import ChatRequest, ChatResponse, Chunk, EmbeddingRequest

log = logging.getLogger("modelyard.gateway")


@dataclass(frozen=True, slots=True, kw_only=True)
class TokensCounted:
    """A request's token estimate as its key's tpm counted it, and when (`KeyLimits.clock`):
    the correction to its usage is dated then, so it leaves the window with the estimate."""

    tokens: int
    at: float


class KeyLimits:
    """Checks and takes a key's rate, concurrent slots and budget for one request each."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        """What dates a token estimate, to date its correction; the store dates in its own
        clock, `clock` measures only how long ago that was."""
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

    async def check_rate(
        self, key: VirtualKey, call: Call, tokens: int = 0
    ) -> TokensCounted | None:
        """Count one request against the key's requests per minute and `tokens` (its estimate,
        `token_estimate`) against its tokens per minute, and give `call` the headers telling
        what is left of each, read in the step that counted (sent with whatever it answers);
        429 when either is reached. Returns the tokens counted, if any: `settle_tokens`
        corrects them to the usage once known."""
        if key.rpm is not None:
            use = await self._window(f"key-rpm:{key.id}", 1, key.rpm)
            call.rate = key_rate_headers(key.rpm, use, anthropic=call.anthropic)
            if use.wait > 0:
                raise _refused(f"this key's limit of {key.rpm} requests per minute is reached", use)
        if key.tpm is None:
            return None
        if tokens > key.tpm:
            await self._give_back(key, call)
            raise ApiError(  # no retry-after: no wait would make room for it; and no retry
                429,
                f"this request needs about {tokens} tokens, more than this key's limit of "
                f"{key.tpm} tokens per minute; lower max_tokens or shorten the prompt",
                "rate_limit_error",
                "key_request_too_large",
                headers={"x-should-retry": "false"},
            )
        at = self.clock()
        use = await self._window(f"key-tpm:{key.id}", tokens, key.tpm)
        told = key_rate_headers(key.tpm, use, anthropic=call.anthropic, unit="tokens")
        if use.wait > 0 and tokens:  # a request counting none (a token count) is not refused
            await self._give_back(key, call)
            call.rate = (*call.rate, *told)
            raise _refused(
                f"this key's limit of {key.tpm} tokens per minute is reached (this request "
                f"needs about {tokens})",
                use,
            )
        call.rate = (*call.rate, *told)
        return TokensCounted(tokens=tokens, at=at) if tokens else None

    async def settle_tokens(
        self, key: VirtualKey, counted: TokensCounted | None, used: int
    ) -> None:
        """Correct the `counted` estimate of a request of `key` to the `used` tokens it
        reported (lost, and logged, when the shared store cannot take it: the call is made)."""
        if key.tpm is not None and counted is not None and used != counted.tokens:
            await after_the_call(
                self._correct(key, used - counted.tokens, counted.at),
                f"the tokens used by key {key.id}",
            )

    async def _correct(self, key: VirtualKey, tokens: int, counted_at: float) -> None:
        key_window = f"key-tpm:{key.id}"
        elapsed = self.clock() - counted_at
        await correct_estimate(self.limits, key_window, tokens, elapsed=elapsed, window=MINUTE)

    async def _window(self, name: str, amount: float, limit: float) -> WindowUse:
        try:
            return await self.limits.window_acquire(name, amount, limit=limit, window=MINUTE)
        except ModelError as exc:  # the shared store is down: a 503 saying so, not a 500
            raise from_model_error(exc) from None

    async def _give_back(self, key: VirtualKey, call: Call) -> None:
        """Take back the request its tokens refused from the key's requests per minute (it was
        never served), and say so in the rpm headers."""
        if key.rpm is not None:
            use = await self._window(f"key-rpm:{key.id}", -1, math.inf)
            call.rate = key_rate_headers(key.rpm, use, anthropic=call.anthropic)

    async def admit(self, key: VirtualKey, call: Call, tokens: int = 0) -> TokensCounted | None:
        """`check_rate`, then one of the key's concurrent slots (429 when none is free; a
        refusal for want of a slot gives its tokens back). Returns the tokens counted, if any,
        for `settle_tokens`; `release` gives the slot back."""
        counted = None
        if key.rpm is not None or key.tpm is not None:
            counted = await self.check_rate(key, call, tokens)
        if key.max_concurrency is None:
            return counted
        try:
            # Counted in the state store when every process sharing it counts the key's rate
            # there too (`serve --workers N` on SQLite, Redis, PostgreSQL); else in memory.
            if isinstance(self.limits, MemoryStore):
                self.occupy(key)
            else:
                await self._take_slot(key, call)
        except ApiError:
            await self.settle_tokens(key, counted, 0)
            raise
        return counted

    def occupy(self, key: VirtualKey) -> None:
        """Take one of the key's concurrent slots in this process's own count; 429 when none
        is free."""
        limit = key.max_concurrency
        if limit is None:
            return
        if self._per_key.get(key.id, 0) >= limit:
            raise _no_slot(limit)
        self._per_key[key.id] = self._per_key.get(key.id, 0) + 1

    async def _take_slot(self, key: VirtualKey, call: Call) -> None:
        """Take one of the key's slots in the count every process shares: a claim of 1 on it
        under a lease of its own, renewed while this process runs (a budget's reservation),
        so a killed process's slots come back when its leases expire."""
        limit = key.max_concurrency
        assert limit is not None
        leases = self.book.leases
        lease_id = leases.new_id()
        claim = Claim(key=f"{KEY_SLOTS}{key.id}", amount=1, limit=limit)
        try:
            refused = await leases.reserve([claim], lease_id)
            # Its slots may all be a killed process's, and this process may hold no lease
            # that would run the sweep giving them back.
            if refused is not None and await leases.sweep_when_due():
                refused = await leases.reserve([claim], lease_id)
        except ModelError as exc:  # the shared store is down: a 503 saying so, not a 500
            raise from_model_error(exc) from None
        if refused is not None:
            raise _no_slot(limit)
        call.slot = lease_id

    async def release(self, key: VirtualKey, call: Call) -> None:
        """Give back the slot `admit` took for `call`, unless it was given back already (with
        the answer: `KeyAnswered`). A shared slot is given back even while the request's task
        is cancelled; when the store cannot take it, this process retries until it does."""
        slot = call.slot
        if slot is None:  # taken in this process's own count
            if key.max_concurrency is not None:
                self._per_key[key.id] -= 1
            return
        if not slot:  # given back already
            return
        call.slot = ""
        try:
            await asyncio.shield(self.book.leases.release(slot, []))
        except UnavailableError as exc:
            log.error(
                "could not give back a concurrent slot of key %s (%s); it stays taken and is "
                "given back when the state store answers",
                key.id,
                exc.message,
            )

    async def finish(
        self,
        key: VirtualKey,
        call: Call,
        holds: Sequence[Hold],
        spent: float,
        counted: TokensCounted | None,
        tokens: int,
    ) -> None:
        """End a request of `key`: its slot given back, then its budget `holds` settled to
        `spent` (shielded, even if a cancel lands in the slot's store round trip), then its
        `counted` tokens (if not corrected with its answer) corrected to `tokens`: neither the
        slot nor the correction may strand the hold."""
        try:
            if key.max_concurrency is not None:
                await self.release(key, call)
        finally:
            await settle_shielded(self.book, holds, spent)
            await self.settle_tokens(key, counted, tokens)

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


def _no_slot(limit: int) -> ApiError:
    """A key's concurrent slots are all taken: 429 (no retry-after: a slot frees when a
    request ends, not at a time the gateway knows)."""
    return ApiError(
        429,
        f"too many concurrent requests for this key (its limit is {limit})",
        "rate_limit_error",
        "concurrency_limit",
    )


def _refused(message: str, use: WindowUse) -> ApiError:
    """A key's window refused the request: 429, with when it would fit."""
    return ApiError(
        429,
        message,
        "rate_limit_error",
        "key_rate_limited",
        headers=retry_after(use.wait),
    )


class KeyAnswered(Wrapper):
    """The system or model as a key with a tpm, or with a slot in a shared count of requests
    in flight, calls it: once its answer is known, before it reaches the caller (the last
    chunk of a stream too), the key's count of the request's tokens is corrected to the usage
    the answer reports and its slot is given back, so the caller's next request finds both
    done, whichever process serves it. Any other ending (a failure, a client gone) is settled
    by the gateway, unless `settled`."""

    def __init__(
        self,
        inner: Model,
        limits: KeyLimits,
        key: VirtualKey,
        counted: TokensCounted | None,
        call: Call,
    ) -> None:
        super().__init__(inner)
        self.limits = limits
        self.key = key
        self.counted = counted
        self.call = call
        self.settled = False

    async def _settle(self, response: ChatResponse) -> None:
        self.settled = True
        await self.limits.settle_tokens(self.key, self.counted, response.usage.total_tokens)
        if self.call.slot:
            await self.limits.release(self.key, self.call)

    async def complete(self, request: ChatRequest) -> ChatResponse:
        response = await self.inner.complete(request)
        await self._settle(response)
        return response

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        async with closing(self.inner.stream(request)) as chunks:
            async for chunk in chunks:
                if chunk.response is not None:
                    await self._settle(chunk.response)
                yield chunk


def token_estimate(model: Model, request: ChatRequest) -> int:
    """The tokens `request` may use through `model`, as the model limits estimate them (the
    prompt, plus `max_tokens` or the largest output its models allow, per choice)."""
    allowance = request.max_tokens or max(
        leaf.info.capabilities.max_output_tokens for leaf in leaves(model)
    )
    return estimated_tokens(request, allowance)
