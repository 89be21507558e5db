"""The one small state interface behind budgets, rate limits, circuit breakers and caches.

Backends: `memory` (in-process, the embedded default), `sqlite` (the same, persisted so a
restart loses no spend), `redis` (shared by several gateway processes, atomic via Lua). Every
operation that checks and changes a counter does both atomically, so concurrent callers — in one
process or many — can never both pass a limit that only one of them fits under.

A reservation may also take a `Lease`: the store keeps what it reserved until it is released,
in the same atomic step as the counters. A holder that dies before releasing (a process killed
outright) leaves its lease to expire, and `reclaim` gives its amounts back, once, whichever
process sweeps. A release after its lease was reclaimed gives nothing back a second time.

A release is applied once: the store remembers its lease's id as released for the lease's
seconds (renewed by `renew` while the holder retries it), so a release sent again after its
answer was lost (it was applied, the caller could not know) changes nothing. Past that, a
sweep forgets the id: a release retried only after its holder was cut off from the store for
longer than a whole lease would count again.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """Add `amount` to counter `key`, but only if it stays within `limit`.

    `ttl` (seconds) lets a backend forget the counter once its window is over; window
    arithmetic (which day, which month) is the caller's: it is part of the key.
    """

    key: str
    amount: float
    limit: float
    ttl: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Lease:
    """A reservation's hold on its counters for `seconds` from now (renewable): what `reclaim`
    gives back if it is never released."""

    id: str
    seconds: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Reclaimed:
    """A lease a sweep took back, and the amount it had reserved on each counter."""

    id: str
    amounts: tuple[tuple[str, float], ...]


@dataclass(slots=True, kw_only=True)
class WindowUse:
    """What one `window_acquire` found and did, read in the same atomic step: what a caller
    tells its own clients of their rate (remaining, reset) costs no further round trip.

    Not frozen, though nothing changes it: one is made for every rate-limited request, and a
    frozen dataclass takes twice as long to make (0.58 against 0.30 µs)."""

    wait: float
    """0.0 when the amount was recorded; else the seconds until it would fit."""
    used: float
    """The amounts in the window after the call (this one's included when recorded)."""
    reset: float
    """Seconds until all of `used` has left the window (0.0 when nothing is in it)."""


def window_wait(
    entries: Iterable[tuple[float, float]], excess: float, window: float, now: float
) -> float:
    """Seconds until enough of a window's (time, amount) entries, oldest first, have left it to
    free `excess`: what a refused `window_acquire` waits (the whole window if they never can)."""
    freed = 0.0
    for at, acquired in entries:
        freed += acquired
        if freed >= excess - 1e-12:
            return max(0.0, at + window - now)
    return window


def _nothing() -> None:
    """What stops a listener that is never called."""


Change = tuple[str, float, float | None]
"""(key, delta, ttl): one unconditional change of a counter."""


@dataclass(frozen=True, slots=True, kw_only=True)
class StoreHealth:
    """Whether a store is serving from where it should; shown by health checks and the CLI."""

    backend: str
    ok: bool = True
    mode: str = "normal"
    """`normal`; `local` (a shared backend is down and this process counts alone); `refusing`
    (a shared backend is down and the policy is to fail closed)."""
    detail: str = ""


class StateStore(abc.ABC):
    """Counters and values shared by everything that uses the same store."""

    backend = "memory"
    location = ""
    """Where a shared backend keeps this store's data (`server_location`), with no credential
    in it: a spool of counts owed to one store is never handed to another. Empty: in this
    process, or a file of its own."""

    @abc.abstractmethod
    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        """Apply every claim if all fit, atomically; otherwise apply none and return the first
        claim that does not fit."""

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        """`reserve`; when a claim does not fit, it and its counter's value at that moment (what
        refusal messages quote). Shared backends read both in the same atomic step. With
        `lease`, what the claims add is also kept under the lease's id, in the same step."""
        if lease is not None:
            raise NotImplementedError(f"the {self.backend} store keeps no leases")
        refused = await self.reserve(claims)
        return None if refused is None else (refused, await self.counter(refused.key))

    @abc.abstractmethod
    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        """In one atomic step: if `lease` is still held, end it and take what it reserved off
        its counters (those not expired); then apply `changes` (as `adjust_many`) and return
        their new values. A lease already reclaimed gives nothing back twice; a lease already
        released (a retry whose first answer was lost) changes nothing, and the values are the
        counters' current ones."""

    @abc.abstractmethod
    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        """Extend each lease still held, or remembered as released, to `seconds` from now
        (their holder is alive)."""

    @abc.abstractmethod
    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        """End up to `limit` expired leases and give back what they reserved: each exactly
        once, even with several processes sweeping at the same time. Released leases whose
        seconds are over are forgotten too (not counted in `limit`, not returned): `reclaim(0)`
        only forgets them (`state.batched` sweeps the ids of its flushes so)."""

    @abc.abstractmethod
    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        """Add `delta` (may be negative) to counter `key` unconditionally; return the new value."""

    @abc.abstractmethod
    async def counter(self, key: str) -> float:
        """The current value of counter `key` (0 when unset)."""

    @abc.abstractmethod
    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        """Sliding-window rate limit: if the amounts acquired at `key` during the last `window`
        seconds plus `amount` stay within `limit`, record `amount` (`wait` 0.0); otherwise
        record nothing (`wait`: the seconds until it would fit). Either way, with what the
        window holds then and when it will have emptied."""

    @abc.abstractmethod
    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        """Record `amount` (a correction, often negative) in the window at `key` as if acquired
        `age` seconds ago by the store's own clock, whatever the window holds: it leaves the
        window with the entry it corrects (a token estimate counted when its call began), not
        `age` seconds after it. Nothing when `age >= window` (that entry has left already)."""

    @abc.abstractmethod
    async def get(self, key: str) -> bytes | None:
        """The value stored at `key`, if any and not expired."""

    @abc.abstractmethod
    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        """Store `value` at `key`, expiring after `ttl` seconds if given."""

    @abc.abstractmethod
    async def delete(self, key: str) -> None:
        """Forget `key` (value or counter)."""

    async def add(self, key: str, delta: float, *, ttl: float | None = None) -> None:
        """`adjust` when nobody reads the new value (a call counted): a store shared between
        processes may add it a fraction of a second later, in a batch (`state.batched`), and
        its own `counter` includes it meanwhile."""
        await self.adjust(key, delta, ttl=ttl)

    @property
    def exact(self) -> StateStore:
        """This store without any cache in front of it: a read here sees what every process
        has written (`state.batched`'s `get` may be a fraction of a second old)."""
        return self

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        """`adjust` each (key, delta, ttl) and return the new values, in order; shared backends
        do it in one round trip."""
        return [await self.adjust(key, delta, ttl=ttl) for key, delta, ttl in changes]

    def health(self) -> StoreHealth:
        """Where this store is serving from right now."""
        return StoreHealth(backend=self.backend)

    def on_recovery(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` each time the store answers again after an outage (a store that
        is never down never calls it), until the function returned is called."""
        return _nothing

    async def leave_loop(self) -> None:
        """The running event loop is ending (`Resources.leave_loop`): close the connections
        opened on it; the next call on another loop opens its own."""

    async def aclose(self) -> None:
        """Release connections."""


def server_location(url: str, *, default_port: int, database: str, names: str) -> str:
    """Which data of which server `url` reaches, without its user, password or query:
    `host:port/database, names` (`names`: the keys' or tables' prefix, as `modelyard:*`).
    Only what tells servers and databases apart is kept, so a rotated password or another
    user for the same data names the same place; `database` when the URL names none."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    server = parts.netloc.rpartition("@")[2].lower()  # never the user and password
    if parts.scheme == "unix":  # redis-py's unix:///path/to.sock?db=N
        server, named = parts.path, ""
    else:
        server = server or (query.get("host") or ["localhost"])[0]
        if not re.search(r":\d+$", server):  # [::1]:6379 and host:6379 name their port
            server = f"{server}:{(query.get('port') or [str(default_port)])[0]}"
        named = parts.path.strip("/")
    for setting in ("db", "dbname", "database"):  # names, never credentials
        named = named or (query.get(setting) or [""])[0]
    return f"{server}/{named or database}, {names}"
