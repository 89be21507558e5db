"""The in-process state backend: plain dicts, atomic because nothing awaits mid-operation."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence

from modelyard.state.base import Change, Claim, Lease, Reclaimed, StateStore, WindowUse, window_wait


class MemoryStore(StateStore):
    """State for one process. Fast, and gone when the process ends."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._counters: dict[str, float] = {}
        self._values: dict[str, bytes] = {}
        self._expiry: dict[str, float] = {}
        self._windows: dict[str, deque[tuple[float, float]]] = {}
        self._window_sums: dict[str, float] = {}
        self._leases: dict[str, tuple[float, tuple[tuple[str, float], ...]]] = {}
        """Lease id -> (when it expires, what it reserved on each counter)."""
        self._released: dict[str, float] = {}
        """Lease id -> when it is forgotten."""

    def _alive(self, key: str) -> bool:
        expires = self._expiry.get(key)
        if expires is not None and expires <= self._clock():
            self._counters.pop(key, None)
            self._values.pop(key, None)
            self._expiry.pop(key, None)
            return False
        return True

    def _touch(self, key: str, ttl: float | None) -> None:
        if ttl is not None and key not in self._expiry:
            self._expiry[key] = self._clock() + ttl

    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        refused = self._reserve(claims, None)
        return None if refused is None else refused[0]

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        return self._reserve(claims, lease)

    def _reserve(self, claims: Sequence[Claim], lease: Lease | None) -> tuple[Claim, float] | None:
        for claim in claims:
            current = self._counters.get(claim.key, 0.0) if self._alive(claim.key) else 0.0
            if current + claim.amount > claim.limit + 1e-12:
                return claim, current
        self._take(claims)
        if lease is not None:
            amounts = tuple((c.key, c.amount) for c in claims)
            self._leases[lease.id] = (self._clock() + lease.seconds, amounts)
        return None

    def _take(self, claims: Sequence[Claim]) -> None:
        for claim in claims:
            self._counters[claim.key] = self._counters.get(claim.key, 0.0) + claim.amount
            self._touch(claim.key, claim.ttl)

    def _give_back(self, amounts: tuple[tuple[str, float], ...]) -> None:
        for key, amount in amounts:
            if key in self._counters and self._alive(key):  # an expired window has nothing
                self._counters[key] -= amount

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        now = self._clock()
        if self._released.get(lease.id, now) > now:
            return [await self.counter(key) for key, _, _ in changes]
        self._released[lease.id] = now + lease.seconds
        held = self._leases.pop(lease.id, None)
        if held is not None:
            self._give_back(held[1])
        return [await self.adjust(key, delta, ttl=ttl) for key, delta, ttl in changes]

    def hold(self, claims: Sequence[Claim], lease: Lease) -> None:
        """Take `claims` under `lease` whatever their limits: a lease already admitted
        elsewhere, held here from now on."""
        self._take(claims)
        amounts = tuple((c.key, c.amount) for c in claims)
        self._leases[lease.id] = (self._clock() + lease.seconds, amounts)

    def holds(self, lease_id: str) -> bool:
        """Whether lease `lease_id` is held here (taken and not yet released or reclaimed)."""
        return lease_id in self._leases

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        expires = self._clock() + seconds
        for lease_id in lease_ids:
            held = self._leases.get(lease_id)
            if held is not None:
                self._leases[lease_id] = (expires, held[1])
            if lease_id in self._released:
                self._released[lease_id] = expires

    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        now = self._clock()
        for lease_id in [i for i, until in self._released.items() if until <= now]:
            del self._released[lease_id]
        expired = [i for i, (expires, _) in self._leases.items() if expires <= now][:limit]
        out = []
        for lease_id in expired:
            amounts = self._leases.pop(lease_id)[1]
            self._give_back(amounts)
            out.append(Reclaimed(id=lease_id, amounts=amounts))
        return out

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        self._alive(key)
        value = self._counters.get(key, 0.0) + delta
        self._counters[key] = value
        self._touch(key, ttl)
        return value

    async def counter(self, key: str) -> float:
        return self._counters.get(key, 0.0) if self._alive(key) else 0.0

    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        now = self._clock()
        entries, used = self._window_left(key, now - window)
        if used + amount <= limit + 1e-12:
            entries.append((now, amount))
            self._window_sums[key] = used + amount
            return WindowUse(wait=0.0, used=used + amount, reset=window)
        self._window_sums[key] = used
        reset = entries[-1][0] + window - now if entries else 0.0
        return WindowUse(
            wait=window_wait(entries, used + amount - limit, window, now), used=used, reset=reset
        )

    def _window_left(self, key: str, cutoff: float) -> tuple[deque[tuple[float, float]], float]:
        """The entries of the window at `key` once those at or before `cutoff` have left it,
        and their sum: a running sum keeps each call O(entries expired), not O(entries in the
        window)."""
        entries = self._windows.setdefault(key, deque())
        used = self._window_sums.get(key, 0.0)
        while entries and entries[0][0] <= cutoff:
            used -= entries.popleft()[1]
        return entries, used if entries else 0.0

    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        if age >= window:
            return
        now = self._clock()
        entries, used = self._window_left(key, now - window)
        at = now - max(age, 0.0)
        # In time order: only the entries acquired since `at` are passed, from the newest.
        index = len(entries)
        while index and entries[index - 1][0] > at:
            index -= 1
        entries.insert(index, (at, amount))
        self._window_sums[key] = used + amount

    def counters(self) -> dict[str, tuple[float, float | None]]:
        """Every live counter with the seconds it has left (None: no expiry)."""
        now = self._clock()
        out: dict[str, tuple[float, float | None]] = {}
        for key in list(self._counters):
            if self._alive(key):
                expires = self._expiry.get(key)
                out[key] = (self._counters[key], None if expires is None else expires - now)
        return out

    def held(self) -> list[tuple[Lease, tuple[tuple[str, float], ...]]]:
        """The leases not yet released nor expired, each with the seconds it has left and what
        it reserved on each counter."""
        now = self._clock()
        return [
            (Lease(id=lease_id, seconds=expires - now), amounts)
            for lease_id, (expires, amounts) in self._leases.items()
            if expires > now
        ]

    def leased(self) -> dict[str, float]:
        """What the leases not yet released hold, per counter."""
        out: dict[str, float] = {}
        for _, amounts in self._leases.values():
            for key, amount in amounts:
                out[key] = out.get(key, 0.0) + amount
        return out

    async def get(self, key: str) -> bytes | None:
        return self._values.get(key) if self._alive(key) else None

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        self._values[key] = value
        self._expiry.pop(key, None)
        self._touch(key, ttl)

    async def delete(self, key: str) -> None:
        self._values.pop(key, None)
        self._counters.pop(key, None)
        self._expiry.pop(key, None)
        self._windows.pop(key, None)
        self._window_sums.pop(key, None)
