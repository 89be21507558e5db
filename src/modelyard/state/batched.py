"""Live counters shared between processes, at the price of a round trip now and then.

`BatchedStore` wraps a store several processes share (Redis, PostgreSQL, the SQLite file under
`serve --workers N`) for the counters that tolerate a fraction of a second of staleness
between processes: a circuit's call and failure counts, a retry budget's requests, a circuit's
state. Per request, these cost a round trip each on the shared store (a network hop, or the hop
to the SQLite worker thread and a transaction); batched, a process pays one round trip per
`flush_every` for every count it made, and one per `cache_for` for each circuit's state.

- `add` (a count whose new value nobody reads) is kept in memory and added to the shared store
  in one batch every `flush_every` seconds, from a background task, and at `aclose` (a clean
  stop drops nothing). A batch is counted once, and never lost while the process lives:
  - on SQLite (`adjust_many`), one that fails was one transaction rolled back, which added
    none of its deltas: they join the next batch;
  - across a network (Redis, PostgreSQL, `applied_once`), a flush whose answer was lost may
    have been applied. Each batch is a release under an id of its own (`StateStore.release`,
    which applies an id once), sent again as it was (same id, same deltas; counts made since
    wait for the next batch) until the store answers. The store remembers a flush's id for
    `FLUSH_MEMORY` seconds; a flush unanswered for `RESEND_FOR` (an outage of 9 minutes) is
    dropped and logged instead, since sent again it might count twice. Every `SWEEP_EVERY`
    seconds a process that flushes has the store forget the ids past their memory
    (`reclaim(0)`), so they never pile up: a few thousand a busy process at most.
- Behind `state.policy.PolicyStore` (`on_unavailable: local`), a release is refused while the
  backend is down (the backend may have applied it). The batch and the counts made meanwhile
  wait here, in this process's `counter`, and reach the backend once it answers again, once.
  At a stop while it is still down, the counts never sent go to `adjust_many`, which the
  policy counts locally and keeps in its spool folder; the batch it may have applied is lost
  (logged): kept there, it would be sent again after the store forgot its id.
- `counter` is the shared value plus what this process has counted and not yet seen added
  (including a batch under way, or unanswered: a read then may count its deltas twice, until
  it is answered, never lose them).
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
import itertools
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from modelyard.errors import UnavailableError
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
FLUSH_MEMORY = 600.0
"""Seconds the shared store remembers a flush's id (`applied_once`), from when it applied it:
a flush sent again within that is applied once. At 5 flushes a second, 3,000 ids a process."""
RESEND_FOR = FLUSH_MEMORY - 60.0
"""Seconds, from its first sending, a flush whose answer was lost is sent again: the store
applied it after that, so still remembers it (the minute spare: the clocks' rates)."""
SWEEP_EVERY = 60.0
"""Seconds between two sweeps, by a process that flushes, of the flush ids past their memory."""

Counts = dict[str, tuple[float, float | None]]
"""Key -> (delta, ttl): counted here, not yet added to the shared store."""


def as_changes(counts: Counts) -> list[Change]:
    """`counts` as the changes a store applies."""
    return [(key, delta, ttl) for key, (delta, ttl) in counts.items()]


@dataclass(slots=True, kw_only=True)
class Batch:
    """The counts one flush adds, under the id the store applies once (`applied_once`)."""

    id: str
    counts: Counts
    since: float
    """When it was first sent (by `BatchedStore`'s clock)."""

    @property
    def changes(self) -> list[Change]:
        return as_changes(self.counts)

    @property
    def lease(self) -> Lease:
        """The lease whose release applies this batch, once."""
        return Lease(id=self.id, seconds=FLUSH_MEMORY)


class BatchedStore(StateStore):
    """A shared store whose counts are added in batches and whose values are cached briefly."""

    def __init__(
        self,
        inner: StateStore,
        *,
        flush_every: float = FLUSH_EVERY,
        cache_for: float = CACHE_FOR,
        applied_once: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`applied_once`: whether a failed flush may have been applied (its answer lost
        across a network), so each is a release under an id of its own, sent again as it was;
        else (SQLite: one transaction, rolled back) its counts join the next flush."""
        self.inner = inner
        self.applied_once = applied_once
        self.backend = inner.backend
        self.flush_every = flush_every
        self.cache_for = cache_for
        self._clock = clock
        self._pending: Counts = {}
        """Counted here, not yet in a batch."""
        self._batch: Batch | None = None
        """The batch a flush is sending, or (`applied_once`) will send again as it is."""
        self._sending = False
        """Whether a flush is under way."""
        self._ids = itertools.count()
        self._id_prefix = f"flush-{uuid.uuid4().hex[:16]}-"
        self._sweep_at = clock()
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
        sent = self._batch.counts.get(key) if self._batch is not None else None
        return (pending[0] if pending else 0.0) + (sent[0] if sent else 0.0)

    @property
    def _owed(self) -> bool:
        """Whether anything counted here is still to reach the shared store."""
        return bool(self._pending) or self._batch is not None

    async def _flush_later(self) -> None:
        """Flush every `flush_every` seconds while there is something to send."""
        while self._owed and not self._closing:
            await asyncio.sleep(self.flush_every)
            await self.flush()

    async def flush(self) -> bool:
        """Add what this process has counted to the shared store; whether it went (a failure
        is logged, and the counts wait for the next flush). One round trip; two after a
        flush whose answer was lost: that one again, then what was counted since."""
        if self._sending:
            return False  # the flusher sends the rest after the flush under way
        again = self._batch is not None
        if not await self._send_next():
            return False
        return await self._send_next() if again else True

    async def _send_next(self) -> bool:
        """Send the next batch (`_next_batch`), if any; whether it went (or there was none)."""
        batch = self._next_batch()
        if batch is None:
            return True
        self._sending = True
        try:
            if self.applied_once:
                await self.inner.release(batch.lease, batch.changes)
            else:
                await self.inner.adjust_many(batch.changes)
        except Exception as exc:
            if not self.applied_once:  # rolled back: nothing of it was added
                for key, (delta, ttl) in batch.counts.items():
                    self._keep(key, delta, ttl)
            self._failed(exc)
            return False
        finally:
            self._sending = False
            if not self.applied_once:  # cancelled midway: dropped, never sent twice
                self._batch = None
        self._batch = None
        if self._failing:
            log.warning("live counts reach the %s store again", self.backend)
        self._failing = False
        if self.applied_once and self._clock() >= self._sweep_at:
            await self._sweep()
        return True

    def _next_batch(self) -> Batch | None:
        """The batch to send: the last one again if unanswered (and still remembered by the
        store), else what is pending (None: nothing)."""
        now = self._clock()
        batch = self._batch
        if batch is not None and now - batch.since >= RESEND_FOR:
            log.error(
                "%d live count(s) dropped: their flush to the %s store went unanswered for "
                "%.0f s, longer than the store surely remembers it (%.0f s): sent again, it "
                "might count twice",
                len(batch.counts),
                self.backend,
                now - batch.since,
                RESEND_FOR,
            )
            self._batch = batch = None
        if batch is None and self._pending:
            batch = Batch(id=f"{self._id_prefix}{next(self._ids)}", counts=self._pending, since=now)
            self._batch, self._pending = batch, {}
        return batch

    def _failed(self, exc: Exception) -> None:
        """Log a flush that failed, once until one goes again."""
        if not self._failing:
            log.warning(
                "live counts not added to the %s store (%s); kept for the next try until it "
                "answers",
                self.backend,
                exc,
            )
        self._failing = True

    async def _sweep(self) -> None:
        """Have the store forget the ids of flushes past their memory (a `reclaim` that ends
        no lease: the sweep of leases is the budgets' `LeaseKeeper`'s, which logs them)."""
        self._sweep_at = self._clock() + SWEEP_EVERY
        try:
            await self.inner.reclaim(0)
        except UnavailableError:
            pass  # the store is down: the next flush says so, and the next sweep comes
        except Exception:  # a bug of ours: never the flusher's end
            log.exception("sweeping the flush ids of the %s store failed", self.backend)

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
        if self._owed and not await self.flush():
            await self._leave_behind()

    async def _leave_behind(self) -> None:
        """At a close the store refuses: the counts never sent go to `adjust_many` (which a
        `PolicyStore` under `on_unavailable: local` counts itself, and keeps in its spool
        folder if the backend is still down at its own close); a batch the store may have
        applied is lost, as sent that way it might count twice. What is lost is logged."""
        pending, self._pending = self._pending, {}
        lost = 0
        if self._batch is not None and not self._sending:  # (one under way: its flusher's)
            lost, self._batch = len(self._batch.counts), None
        why = ""
        try:
            if pending:
                await self.inner.adjust_many(as_changes(pending))
        except Exception as exc:
            lost, why = lost + len(pending), f" ({exc})"
        if lost:
            log.warning(
                "%d live count(s) not added to the %s store at close%s", lost, self.backend, why
            )
