"""What happens when the shared state backend is down: refuse, or count locally and say so.

`PolicyStore` wraps a shared store (Redis, PostgreSQL). When the backend answers with
`UnavailableError(code="state_unavailable")`, the `on_unavailable` policy applies:

- `fail_closed`: every operation raises a clear `UnavailableError`, so budgets and limits are
  never silently skipped; requests are refused until the backend is back.
- `local`: operations go to an in-process `MemoryStore` (this process then enforces its limits
  alone), a warning is logged once per outage, and `health()` shows `mode="local"`. When the
  backend answers again, the spend counted locally is added to it, so no spend is lost, and
  once: the move is a release (`state.handover.MOVE_MEMORY`), and one whose answer was lost is
  sent again as it was.

Either way the backend is tried again at most every `retry_interval` seconds, so a dead backend
costs no connect timeout per request; `on_recovery` listeners hear when it answers again. It is
tried in the background too, as often, not only by the next request: a replica that counted
alone and then went idle (or is about to be shut down) hands its spend to the backend as soon
as it answers, where the other replicas enforce it, instead of at its next request.

A reservation made locally (a request's worst case against a budget, a virtual key's
concurrent slot) whose request is still in flight when the backend answers again is carried to
it with the counts: reserved there, whatever the limits (it was admitted), under a lease of its
own that the request's renewals and release go to from then on. So the replicas count it (a
key's slots are not over its limit while those requests run), and if this process is killed,
the backend's sweep gives it back. While the backend is down it stays held locally, also
through a failed try of the backend.

The release of a lease the backend holds is never counted locally: the backend may have applied
it with its answer lost, and added to it at recovery the local count would charge it twice. It
fails as in `fail_closed`, and the caller retries it there (`LeaseKeeper.defer`), where a
release is applied once. A reservation sent as the backend went down may have been made there
with its answer lost: once its request is refused, or settled on the local store, no one would
release that lease but its expiry, so it is released when the backend answers again.

What fails closed is admission: the bookkeeping of a call already made (`after_the_call`) is
lost, never its answer.

A replica stopped (`aclose`, on SIGTERM) while the backend is still down tries one last move;
if that fails too, what it owes is written to a file in its state folder (`spool`), and the
next `PolicyStore` on that folder hands it to the backend at its first contact, applied once
(`state.handover`). A process killed outright (SIGKILL) writes nothing: what it counted alone
is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Literal, TypeVar

from modelyard.errors import UnavailableError
from modelyard.loops import Slots
from modelyard.state.base import (
    Change,
    Claim,
    Lease,
    Reclaimed,
    StateStore,
    StoreHealth,
    WindowUse,
)
from modelyard.state.handover import Move, hand_over, keep
from modelyard.state.memory import MemoryStore

T = TypeVar("T")
log = logging.getLogger("modelyard.state")

OnUnavailable = Literal["fail_closed", "local"]


async def after_the_call(bookkeeping: Awaitable[None], what: str) -> None:
    """Await the bookkeeping of a call that has been made (a circuit's count, a token estimate
    corrected). With the store down, the bookkeeping is lost and logged, not the call: the
    provider has answered and billed it, so its answer (or its own error) reaches the caller,
    where an error would invite a retry and a second payment."""
    try:
        await bookkeeping
    except UnavailableError as exc:
        if exc.code != "state_unavailable":
            raise
        log.warning("%s not recorded: %s", what, exc.message)


Held = tuple[Lease, list[Claim]]
"""A lease held locally, with what it reserved (its claims, with no limit)."""


def _claims(
    amounts: tuple[tuple[str, float], ...], counted: dict[str, tuple[float, float | None]]
) -> list[Claim]:
    """What a local lease reserved, as claims with no limit and their counters' time left
    (none on a counter that has expired: its window is over)."""
    return [
        Claim(key=key, amount=amount, limit=math.inf, ttl=counted[key][1])
        for key, amount in amounts
        if key in counted
    ]


class PolicyStore(StateStore):
    """A shared store with a policy for when it cannot be reached."""

    def __init__(
        self,
        primary: StateStore,
        *,
        on_unavailable: OnUnavailable = "fail_closed",
        retry_interval: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
        where: str = "",
        spool: Path | None = None,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.primary = primary
        self.backend = primary.backend
        self.on_unavailable = on_unavailable
        self.retry_interval = retry_interval
        self._clock = clock
        self._where = where or primary.backend
        self._local = MemoryStore()
        self._down: UnavailableError | None = None
        self._retry_at = 0.0
        self._moving: Slots | None = None
        """Held while `_recovered` moves local counts: the local store is empty meanwhile, and
        an operation that used it would admit what the counts it no longer holds refuse. A
        `Slots`, not an `asyncio.Event`: the operations waiting may run on other threads'
        loops (a library yard's), which it wakes."""
        self._probing: asyncio.Task[None] | None = None
        """Tries the backend while it is down, every `retry_interval` (`_probe`)."""
        self._listeners: list[Callable[[], None]] = []
        self._unsure: Move | None = None
        """The last move of local counts to the backend, if its answer was lost."""
        self._spool = spool
        """The folder where a stop with the backend down leaves what it owes, and where the
        next start finds what stopped replicas left (`state.handover`); None: nowhere."""
        self._spool_due = spool is not None
        """Whether that folder is still to be handed over (at the first contact)."""
        self._wall = wall
        self._closing = False
        self._unanswered: dict[str, Lease] = {}
        """Leases the backend may hold with no one to release them: their reservation was sent
        and failed (it may have been applied, its answer lost), and the request was refused
        or went on under a local lease."""
        self._moves = itertools.count()
        self._carried: dict[str, str] = {}
        """Leases taken locally and carried to the backend when it came back (`_carry`), each
        with the id of the lease that holds its reservation there."""
        self._move_prefix = f"moved-{uuid.uuid4().hex[:16]}-"

    def _move_id(self) -> str:
        return f"{self._move_prefix}{next(self._moves)}"

    async def _run(
        self, operation: Callable[[StateStore], Awaitable[T]], *, local: bool = True
    ) -> T:
        moving = self._moving
        if moving is not None:  # the local counts are on their way to the backend
            async with moving:
                pass
        if self._spool_due and self._down is None:
            with contextlib.suppress(UnavailableError):  # marked down: handed over once back
                await self._hand_over()
        if self._down is not None and not await self._recovered():
            return await self._fallback(operation, local)
        try:
            return await operation(self.primary)
        except UnavailableError as exc:
            if exc.code != "state_unavailable":
                raise
            self._mark_down(exc)
            return await self._fallback(operation, local)

    async def _fallback(self, operation: Callable[[StateStore], Awaitable[T]], local: bool) -> T:
        """`operation` on the local store (`local` mode and a `local` operation), or the error
        saying why not."""
        if self.on_unavailable == "local" and local:
            return await operation(self._local)
        assert self._down is not None
        why = (
            "not counted locally: retried there when it is back"
            if self.on_unavailable == "local"
            else "refusing requests until it is back (state.on_unavailable: fail_closed)"
        )
        raise UnavailableError(f"{self._down.message}; {why}", code="state_unavailable")

    def _mark_down(self, exc: UnavailableError) -> None:
        self._retry_at = self._clock() + self.retry_interval
        if self._down is None:
            if self.on_unavailable == "local":
                log.error(
                    "%s; budgets and rate limits are now enforced by this process ALONE "
                    "(state.on_unavailable: local) until it is back",
                    exc.message,
                )
            else:
                log.error("%s; refusing requests (state.on_unavailable: fail_closed)", exc.message)
        self._down = exc
        if self._closing:
            return
        if self._probing is None or self._probing.done():
            self._probing = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Try the backend every `retry_interval` until it answers (and has taken what was
        counted locally). Requests try it too; whichever comes first after the interval does."""
        while self._down is not None:
            await asyncio.sleep(self.retry_interval)
            if self._down is None:
                return
            try:
                await self._recovered()
            except Exception:  # a bug of ours must not end the probing: requests still try
                log.exception("state store %s: trying it again failed", self._where)

    async def _recovered(self) -> bool:
        """Whether the backend is back; if so, what was counted locally has been added to it."""
        if self._clock() < self._retry_at:
            return False
        self._retry_at = self._clock() + self.retry_interval
        # Concurrent operations wait for the move (bounded by the backend's timeout), then use
        # the backend or the local store holding the counts again.
        self._moving = moving = Slots(1)
        await moving.acquire()  # free: at once
        try:
            return await self._move_local_counts()
        finally:
            self._moving = None
            moving.release()

    async def _move_local_counts(self) -> bool:
        """Add what was counted locally to the backend; whether it took all of it."""
        moved = 0
        probed = False
        held: list[Held] = []
        while True:
            counted = self._local.counters()
            if not counted and probed:
                break
            changes = self._unmoved(counted)
            # Taken with the counts: the leases still held, carried to the backend after them.
            held += [(lease, _claims(amounts, counted)) for lease, amounts in self._local.held()]
            self._local = MemoryStore()
            unsure = self._unsure
            try:
                if unsure is not None:
                    await self.primary.release(unsure.lease, unsure.changes)
                    self._unsure = unsure = None
                if changes:
                    self._unsure = Move(id=self._move_id(), changes=changes, sent=self._wall())
                    await self.primary.release(self._unsure.lease, changes)
                    self._unsure = None
                else:
                    await self.primary.counter("health-probe")
            except BaseException as exc:
                # Kept here to enforce meanwhile, and to move next time: what this process
                # counted and did not move. Also when the request waiting on the move is
                # cancelled (a client gone, a shutdown): the counts are this process's, not
                # the request's. (The local store's adjust never suspends.)
                for key, value, ttl in [*changes, *(unsure.changes if unsure else [])]:
                    await self._local.adjust(key, value, ttl=ttl)
                self._hold_locally(held)
                if not isinstance(exc, UnavailableError):
                    raise
                self._mark_down(exc)
                return False
            probed = True
            moved += len(changes)
        try:
            carried = await self._carry(held)
            freed = await self._release_unanswered()
            if self._spool_due:
                await self._hand_over()
        except UnavailableError as exc:
            self._mark_down(exc)
            return False
        self._down = None
        log.warning(
            "state store %s is reachable again; %d counter(s) counted locally were added to "
            "it, %d reservation(s) of requests still in flight were carried to it, and %d "
            "reservation(s) made as it went down and never answered were released",
            self._where,
            moved,
            carried,
            freed,
        )
        for listener in self._listeners:
            listener()
        return True

    async def _carry(self, held: list[Held]) -> int:
        """Reserve at the backend what the leases still held locally reserved, each under a
        lease of its own there that their requests' renewals and releases go to from now on
        (`_carried`): the backend counts the slots and worst cases of the requests still in
        flight that this process admitted alone, so no replica admits past a limit for them,
        and what a process killed meanwhile held comes back with the backend's sweep. A lease
        not carried (the backend gone again, a cancel) stays held locally, carried next time;
        what a reservation whose answer was lost may have taken there is released when the
        backend answers again (`_unanswered`). Returns how many were carried."""
        for index, (lease, claims) in enumerate(held):
            carried = Lease(id=f"{lease.id}~{next(self._moves)}", seconds=lease.seconds)
            try:
                await self.primary.reserve_or_explain(claims, lease=carried)
            except BaseException:
                self._unanswered[carried.id] = carried
                self._hold_locally(held[index:])
                raise
            self._carried[lease.id] = carried.id
        return len(held)

    def _hold_locally(self, held: list[Held]) -> None:
        """Take `held` (leases, with what they reserved) again in the local store, whose
        counts their requests' releases go to while the backend is down."""
        for lease, claims in held:
            self._local.hold(claims, lease)

    def _unmoved(self, counted: dict[str, tuple[float, float | None]]) -> tuple[Change, ...]:
        """What of `counted` (the local counters) is still to be moved to the backend."""
        # What local leases still hold is not moved: it goes to the backend with them, each
        # under a lease of its own there (`_carry`), which their requests' releases end.
        leased = self._local.leased()
        # A move whose answer was lost is sent again as it was (applied once, as a release
        # is): its counts, kept locally meanwhile, are not moved a second time.
        again = {key: delta for key, delta, _ in self._unsure.changes} if self._unsure else {}
        return tuple(
            (key, value - leased.get(key, 0.0) - again.get(key, 0.0), ttl)
            for key, (value, ttl) in counted.items()
        )

    async def _hand_over(self) -> None:
        """Send the backend what replicas stopped while it was down left in the spool folder
        (`state.handover`); raises UnavailableError, marked down, if it does not answer."""
        assert self._spool is not None
        self._spool_due = False  # concurrent operations do not send it too
        try:
            await hand_over(self._spool, self.primary, now=self._wall(), where=self._where)
        except Exception as exc:
            if isinstance(exc, UnavailableError) and exc.code == "state_unavailable":
                self._spool_due = True
                self._mark_down(exc)
                raise
            # A bug of ours, or a folder that cannot be read: never a request's error.
            log.exception("handing over the state folder %s failed", self._spool)

    async def reserve(self, claims: Sequence[Claim]) -> Claim | None:
        return await self._run(lambda store: store.reserve(claims))

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        async def reserve(store: StateStore) -> tuple[Claim, float] | None:
            try:
                return await store.reserve_or_explain(claims, lease=lease)
            except UnavailableError:
                if store is self.primary and lease is not None:
                    self._unanswered[lease.id] = lease
                raise

        return await self._run(reserve)

    async def _release_unanswered(self) -> int:
        """Release at the backend the leases of reservations sent as it went down, whose
        requests were refused or have settled locally: what the backend may have reserved
        for them comes back now, not when their leases expire (`state.hold_lease`). A lease
        it never took is only remembered as released. Returns how many were released."""
        released = 0
        for lease_id, lease in list(self._unanswered.items()):
            await self.primary.release(lease, [])
            del self._unanswered[lease_id]
            released += 1
        return released

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        if self._local.holds(lease.id):  # taken locally, while the backend was down
            return await self._local.release(lease, changes)
        return await self._run(lambda store: self._release(store, lease, changes), local=False)

    async def _release(
        self, store: StateStore, lease: Lease, changes: Sequence[Change]
    ) -> list[float]:
        """`store.release`, under the lease the backend knows `lease` by if it was carried
        there (`_carry`; looked up once the move that carries it is over)."""
        carried = self._carried.get(lease.id)
        if carried is None:
            return await store.release(lease, changes)
        values = await store.release(Lease(id=carried, seconds=lease.seconds), changes)
        self._carried.pop(lease.id, None)
        return values

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        def renewed(store: StateStore) -> Awaitable[None]:
            carried = self._carried
            ids = [carried.get(i, i) for i in lease_ids] if carried else lease_ids
            return store.renew(ids, seconds)

        await self._run(renewed)

    async def reclaim(self, limit: int = 100) -> list[Reclaimed]:
        return await self._run(lambda store: store.reclaim(limit))

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        return await self._run(lambda store: store.adjust(key, delta, ttl=ttl))

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        return await self._run(lambda store: store.adjust_many(changes))

    async def counter(self, key: str) -> float:
        return await self._run(lambda store: store.counter(key))

    async def window_acquire(
        self, key: str, amount: float, *, limit: float, window: float
    ) -> WindowUse:
        return await self._run(
            lambda store: store.window_acquire(key, amount, limit=limit, window=window)
        )

    async def window_correct(self, key: str, amount: float, *, age: float, window: float) -> None:
        await self._run(lambda store: store.window_correct(key, amount, age=age, window=window))

    async def get(self, key: str) -> bytes | None:
        return await self._run(lambda store: store.get(key))

    async def set(self, key: str, value: bytes, *, ttl: float | None = None) -> None:
        await self._run(lambda store: store.set(key, value, ttl=ttl))

    async def delete(self, key: str) -> None:
        await self._run(lambda store: store.delete(key))

    def on_recovery(self, listener: Callable[[], None]) -> Callable[[], None]:
        self._listeners.append(listener)

        def stop() -> None:
            if listener in self._listeners:  # not when stopped twice
                self._listeners.remove(listener)

        return stop

    def health(self) -> StoreHealth:
        if self._down is None:
            return StoreHealth(backend=self.backend)
        return StoreHealth(
            backend=self.backend,
            ok=False,
            mode="local" if self.on_unavailable == "local" else "refusing",
            detail=self._down.message,
        )

    async def leave_loop(self) -> None:
        await self.primary.leave_loop()

    async def aclose(self) -> None:
        """Close the backend's connections; with counts held locally and the backend still
        down, first try one last move, then keep what it could not move in the spool folder."""
        self._closing = True
        moving = self._moving
        if moving is not None:  # a move under way ends, never cancelled midway
            async with moving:
                pass
        if self._probing is not None and not self._probing.done():
            self._probing.cancel()
            if self._probing.get_loop() is asyncio.get_running_loop():
                with contextlib.suppress(asyncio.CancelledError):
                    await self._probing
        if self._down is not None and (self._unsure is not None or self._local.counters()):
            await self._last_move()
        await self.primary.aclose()

    async def _last_move(self) -> None:
        """At close: move the local counts now (bounded by the backend's timeout), or write
        what is owed to a spool file the next start hands over."""
        self._retry_at = 0.0  # now, whatever the retry interval
        if await self._recovered():
            return
        owed = [self._unsure] if self._unsure is not None else []
        unmoved = tuple(c for c in self._unmoved(self._local.counters()) if abs(c[1]) > 1e-12)
        if unmoved:  # never sent: sent first by whoever hands the spool over
            owed.append(Move(id=self._move_id(), changes=unmoved))
        if owed:
            await keep(
                self._spool,
                owed,
                backend=self.backend,
                location=self.primary.location,
                now=self._wall(),
                where=self._where,
            )
