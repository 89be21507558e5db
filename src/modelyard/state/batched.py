"""Live counters shared between processes, at the price of a round trip now and then.

`BatchedStore` wraps a store several processes share (the SQLite file under
`serve --workers N`) for the counters that tolerate a fraction of a second of staleness
between processes: a circuit's call and failure counts, a retry budget's requests, a circuit's
state. Per request, these cost a round trip each on the shared store (the hop to the SQLite
worker thread and a transaction); batched, a process pays one round trip per `flush_every`
for every count it made, and one per `cache_for` for each circuit's state.

- `add` (a count whose new value nobody reads) is kept in memory and added to the shared store
  in one `adjust_many` every `flush_every` seconds, from a background task, and at `aclose`
  (a clean stop drops nothing). A flush is never counted twice. On SQLite one that fails was
  one transaction rolled back, which added none of its deltas: they wait for the next flush
  (`resend_failed`). Across a network (Redis, PostgreSQL) a flush whose answer was lost may
  have been applied: its deltas are dropped and logged, as a count made without this wrapper
  is (`policy.after_the_call`).
- `counter` is the shared value plus what this process has counted and not yet seen added
  (including a flush under way: a read racing a flush may count its deltas twice, for that
  one round trip, never lose them).
- `get` is answered from a cache for `cache_for` seconds; `set` and `delete` write through and
  update it, so a process sees its own writes at once, and another's within `cache_for`.
- Everything else (`reserve`, `window_acquire`, leases, `adjust`) goes straight through: a
  limit stays exact. `exact` is the wrapped store, for a read that must see every process's
  writes (a circuit about to change state compares generations there).

The wrapped store is not closed by `aclose`: whoever made it closes it (it is shared with
budgets, the ledger and caches).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

from modelyard.state.base import (
    Change,
    Claim,
    Lease,
    Reclaimed,
    StateStore,
    StoreHealth,
    WindowUse,
)

log = logging.getLogger("modelyard.state")

FLUSH_EVERY = 0.2
"""Seconds between two flushes of a process's counts to the shared store."""
CACHE_FOR = 0.25
"""Seconds a value read from the shared store (a circuit's state) is answered from memory."""


class BatchedStore(StateStore):
    """A shared store whose counts are added in batches and whose values are cached briefly."""

    def __init__(
        self,
        inner: StateStore,
        *,
        flush_every: float = FLUSH_EVERY,
        cache_for: float = CACHE_FOR,
        resend_failed: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`resend_failed`: whether a failed flush certainly applied nothing (one transaction,
        rolled back), so its deltas are sent again; else they are dropped."""
        self.inner = inner
        self.resend_failed = resend_failed
        self.backend = inner.backend
        self.flush_every = flush_every
        self.cache_for = cache_for
        self._clock = clock
        self._pending: dict[str, tuple[float, float | None]] = {}
        """Key -> (delta, ttl): counted here, not yet sent."""
        self._sending: dict[str, tuple[float, float | None]] = {}
        """The batch a flush under way is adding."""
        self._cache: dict[str, tuple[float, bytes | None]] = {}
        """Key -> (until when, value)."""
        self._writes = 0
        """Bumped by every `set` and `delete`: a `get` that overlapped one does not cache."""
        self._flusher: asyncio.Task[None] | None = None
        self._failing = False
        self._closing = False

    @property
    def exact(self) -> StateStore:
        return self.inner

    # Counts: batched.

    async def add(self, key: str, delta: float, *, ttl: float | None = None) -> None:
        self._keep(key, delta, ttl)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_later())

    def _keep(self, key: str, delta: float, ttl: float | None) -> None:
        """Count `delta` at `key` here, to send with the next flush."""
        held = self._pending.get(key)
        self._pending[key] = (delta, ttl) if held is None else (held[0] + delta, held[1])

    async def counter(self, key: str) -> float:
        value = await self.inner.counter(key)
        return value + self._unsent(key)

    def _unsent(self, key: str) -> float:
        pending = self._pending.get(key)
        sending = self._sending.get(key)
        return (pending[0] if pending else 0.0) + (sending[0] if sending else 0.0)

    async def _flush_later(self) -> None:
        """Flush every `flush_every` seconds while there is something to send."""
        while self._pending and not self._closing:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def flush(self) -> bool:
        """Add what this process has counted to the shared store, in one round trip; whether
        it went (a failure is logged, and the counts wait for the next flush)."""
        if self._sending or not self._pending:
            return not self._pending  # a flush under way sends the rest after it
        self._sending, self._pending = self._pending, {}
        changes = [(key, delta, ttl) for key, (delta, ttl) in self._sending.items()]
        try:
            await self.inner.adjust_many(changes)
        except Exception as exc:
            if self.resend_failed:
                for key, delta, ttl in changes:
                    self._keep(key, delta, ttl)
            if not self._failing:
                fate = "kept for the next try" if self.resend_failed else "dropped (and any more)"
                log.warning(
                    "%d live count(s) not added to the %s store (%s); %s until it answers",
                    len(changes),
                    self.backend,
                    exc,
                    fate,
                )
            self._failing = True
            return False
        finally:
            self._sending = {}
        if self._failing:
            log.warning("live counts reach the %s store again", self.backend)
        self._failing = False
        return True

    # Values: cached for `cache_for` seconds, written through.

    async def get(self, key: str) -> bytes | None:
        cached = self._cache.get(key)
        now = self._clock()
        if cached is not None and cached[0] > now:
            return cached[1]
        writes = self._writes
        value = await self.inner.get(key)
        if writes == self._writes:  # no write of this process's own overtook the read
            self._cache[key] = (now + self.cache_for, value)
        return value

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._writes += 1
        await self.inner.set(key, value, ttl=ttl)
        keep = self.cache_for if ttl is None else min(ttl, self.cache_for)
        self._cache[key] = (self._clock() + keep, value)

    async def delete(self, key: str) -> None:
        self._writes += 1
        self._pending.pop(key, None)
        await self.inner.delete(key)
        self._cache[key] = (self._clock() + self.cache_for, None)

    # Everything else: exact, straight through.

    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        return await self.inner.reserve(claims)

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        return await self.inner.reserve_or_explain(claims, lease=lease)

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        return await self.inner.release(lease, changes)

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        await self.inner.renew(lease_ids, seconds)

    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        return await self.inner.reclaim(limit)

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        return await self.inner.adjust(key, delta, ttl=ttl) + self._unsent(key)

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        values = await self.inner.adjust_many(changes)
        keys = [key for key, _, _ in changes]
        return [value + self._unsent(key) for value, key in zip(values, keys, strict=True)]

    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        return await self.inner.window_acquire(key, amount, limit=limit, window=window)

    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        await self.inner.window_correct(key, amount, age=age, window=window)

    def health(self) -> StoreHealth:
        return self.inner.health()

    def on_recovery(self, listener: Callable[[], None]) -> Callable[[], None]:
        return self.inner.on_recovery(listener)

    async def leave_loop(self) -> None:
        """The running loop is ending: if the flusher runs on it, send what is counted now
        (the next count, on another loop, starts a flusher there)."""
        flusher = self._flusher
        if flusher is not None and flusher.get_loop() is asyncio.get_running_loop():
            await self._stop_flusher()
            await self.flush()

    async def _stop_flusher(self) -> None:
        """Stop the flusher if it runs on the running loop (one on another loop, a thread's,
        is not this loop's to wait for: it sends what it took, and stops once `_closing`)."""
        flusher, self._flusher = self._flusher, None
        if flusher is None or flusher.get_loop() is not asyncio.get_running_loop():
            return
        if not flusher.done():
            if not self._sending:
                flusher.cancel()  # asleep: nothing is lost
            # A flush under way may have been applied: its end is awaited, never cancelled.
            await asyncio.gather(flusher, return_exceptions=True)

    async def aclose(self) -> None:
        """Send what is still counted here (the wrapped store stays open: not this one's)."""
        self._closing = True
        await self._stop_flusher()
        if self._pending and not await self.flush():
            log.warning(
                "%d live count(s) not added to the %s store at close",
                len(self._pending),
                self.backend,
            )
