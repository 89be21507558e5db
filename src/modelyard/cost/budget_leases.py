"""Leases on budget reservations: what gives back the worst case of a request whose process died
before settling it (SIGKILL, the OOM killer, a lost host).

Every reservation is also a lease in the state store (`StateStore.reserve_or_explain`), taken
for `state.hold_lease` seconds. While a process lives, its `LeaseKeeper` renews the leases of
its requests in flight every quarter of that (one store call for all of them), so a request may
run as long as it likes (a long stream, a slow pipeline); a process that dies stops renewing,
and once its leases expire the next sweep, by any replica, gives their amounts back, once. The
keeper sweeps at most every quarter lease, and runs only while its process holds leases: the
serving path pays a dict insert and delete, never a store call of its own.

A settlement the store could not take is retried on each round, and at once when the store is
seen answering again (`StateStore.on_recovery`): until then its worst case stays reserved, and
the budget looks fuller than it is. The store applies a release once, so a retry of one whose
answer was lost changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING

from modelyard.background import WriteOutage, detached
from modelyard.cost.prices import usd
from modelyard.errors import UnavailableError
from modelyard.loops import CLOSE_ELSEWHERE, ended, on_loop
from modelyard.state.base import Change, Claim, Lease, Reclaimed, StateStore
from modelyard.state.memory import MemoryStore

if TYPE_CHECKING:
    from modelyard.config.resources import Resources

log = logging.getLogger("modelyard.budgets")

HOLD_LEASE = 120.0
"""Seconds a reservation stays held without its process renewing it (`state.hold_lease`)."""

RENEWALS = 4
"""Renewals per lease: a process may miss all but one (a store outage, a stalled loop)."""

KEY_SLOTS = "key-slots:"
"""The prefix of a virtual key's count of requests in flight that several processes share (its
id follows): one slot a lease (`KeyLimits.admit`), given back as a budget's reservation is."""

SWEEP_BATCH = 100
"""Leases one sweep call ends; a sweep repeats while whole batches come back."""


class LeaseKeeper:
    """Renews the leases this process holds on one store and sweeps the expired ones."""

    def __init__(self, store: StateStore, *, seconds: float = HOLD_LEASE) -> None:
        self.store = store
        self.seconds = seconds
        self.every = seconds / RENEWALS
        """Seconds between renewals, and between sweeps."""
        self._prefix = uuid.uuid4().hex[:16] + "-"
        self._ids = itertools.count()
        self._live: dict[str, asyncio.AbstractEventLoop] = {}
        """The leases renewed, each with the loop its request runs on (a library yard may
        serve several): when the keeper's loop ends, the keeping moves to another of theirs."""
        self._deferred: dict[str, list[Change]] = {}
        """Settlements the store could not take when they were made, retried on each round."""
        self._task: asyncio.Task[None] | None = None
        self._sweep_at = 0.0
        self._store_back: asyncio.Event | None = None
        """Set when the store answers again with settlements deferred: the round runs now."""
        self._outage = WriteOutage(
            log, "budget leases", items="settlement(s)", retry_every=self.every
        )
        self._in_process = isinstance(store, MemoryStore)
        """An in-process store never suspends, so a reservation cannot be cut by a cancel."""
        self._stop_listening = store.on_recovery(self._on_store_back)
        """Ends the store's calls to `_on_store_back` (on `aclose`): a keeper replaced by a
        reload must not stay reachable from the store it served."""

    def new_id(self) -> str:
        """A lease id no other process or reservation uses."""
        return f"{self._prefix}{next(self._ids)}"

    def hold(self, lease_id: str) -> None:
        """Renew `lease_id` from now on, until `drop`; starts the keeper if it is not running."""
        self._live[lease_id] = asyncio.get_running_loop()
        self._start()

    def _start(self) -> None:
        """Start the keeper on the running loop, unless it runs."""
        if self._task is None or self._task.done():
            self._task = detached(self._keep())

    def drop(self, lease_id: str) -> None:
        """Stop renewing `lease_id` (settled, or given up to the sweep)."""
        self._live.pop(lease_id, None)

    async def reserve(self, claims: Sequence[Claim], lease_id: str) -> tuple[Claim, float] | None:
        """`StateStore.reserve_or_explain` under the lease `lease_id`, renewed from then on
        while this process runs, until `release`: the refused claim and its counter's value,
        or None when all were reserved.

        Shielded from a cancel (a client gone, a deadline), as a settlement is
        (`settle_shielded`): one landing while the store takes the reservation would leave it
        taken, known to no one, until its lease expired (a key's slot missing for
        `state.hold_lease` seconds). The reservation goes on; once the store has taken it, it
        is given back (`release`, retried until the store takes it), and the cancel raised at
        once."""
        lease = Lease(id=lease_id, seconds=self.seconds)
        if self._in_process:  # never suspends: a cancel cannot land mid-reservation
            outcome = await self.store.reserve_or_explain(claims, lease=lease)
        else:
            reserving = asyncio.ensure_future(self.store.reserve_or_explain(claims, lease=lease))
            try:
                outcome = await asyncio.shield(reserving)
            except asyncio.CancelledError:
                reserving.add_done_callback(functools.partial(self._unwanted, lease_id))
                raise
        if outcome is None:
            self.hold(lease_id)
        return outcome

    def _unwanted(
        self, lease_id: str, reserving: asyncio.Future[tuple[Claim, float] | None]
    ) -> None:
        """The reservation of `lease_id` ended after its request was cancelled: if the store
        took it, give it back (the lease renewed until then)."""
        if reserving.cancelled() or reserving.exception() is not None:
            return  # a store down: `PolicyStore` releases it when back, else it expires
        if reserving.result() is not None:
            return  # refused: nothing taken
        self.hold(lease_id)
        detached(self._give_back(lease_id))

    async def _give_back(self, lease_id: str) -> None:
        with contextlib.suppress(UnavailableError):  # deferred: retried until it is taken
            await self.release(lease_id, [])

    async def release(self, lease_id: str, changes: list[Change]) -> list[float]:
        """End `lease_id` and apply `changes` (`StateStore.release`), returning their new
        values; when the store cannot take it, it is retried until it does (`defer`) and the
        error raised."""
        self.drop(lease_id)
        try:
            return await self.store.release(Lease(id=lease_id, seconds=self.seconds), changes)
        except UnavailableError:
            self.defer(lease_id, changes)
            raise

    def defer(self, lease_id: str, changes: list[Change]) -> None:
        """Retry the settlement of `lease_id` (`StateStore.release`) until the store takes it,
        renewing its lease meanwhile (and the store's memory of its release, which makes a
        retry of a release applied with its answer lost change nothing). Whether a sweep took
        the lease first or not, the release counts the cost once."""
        self._deferred[lease_id] = changes
        self.hold(lease_id)

    async def _keep(self) -> None:
        # Made here: bound to the loop the keeper runs on.
        self._store_back = store_back = asyncio.Event()
        me = asyncio.current_task()
        # Until `_stop` hands the keeping on: a cancel alone may be lost in a store call under
        # way (Python 3.11's `wait_for`, which redis-py sends with, can swallow one).
        while self._live and self._task is me:
            # The first sweep runs at once: after a restart, the first reservation starts it.
            await self.sweep_when_due()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.every):
                    await store_back.wait()
            if self._task is me:
                await self.renew()

    def _on_store_back(self) -> None:
        if self._deferred and self._store_back is not None:
            self._store_back.set()

    async def renew(self) -> None:
        """Renew the leases of this process's requests in flight, and retry the settlements
        the store could not take."""
        settled = 0
        try:
            if self._live:
                await self.store.renew(list(self._live), self.seconds)
            for lease_id, changes in list(self._deferred.items()):
                await self._settle(lease_id, changes)
                settled += 1
        except UnavailableError as exc:  # the store is down: the leases' slack covers it
            self._outage.failed(exc, len(self._deferred))
        else:
            self._outage.written(settled)
        if self._store_back is not None:
            self._store_back.clear()

    async def _settle(self, lease_id: str, changes: list[Change]) -> None:
        await self.store.release(Lease(id=lease_id, seconds=self.seconds), changes)
        self._deferred.pop(lease_id, None)
        self._live.pop(lease_id, None)

    async def _tolerant(self, work: Awaitable[object]) -> None:
        try:
            await work
        except UnavailableError as exc:  # the store is down: the leases' slack covers it
            self._outage.failed(exc, len(self._deferred))

    async def sweep_when_due(self) -> bool:
        """`sweep`, unless one ran in the last `every` seconds; whether it gave anything back.
        Also for a refusal that expired leases may cause while this process holds none (so
        its keeper is not running): a key's slots all held by a killed process."""
        if time.monotonic() < self._sweep_at:
            return False
        self._sweep_at = time.monotonic() + self.every
        try:
            return bool(await self.sweep())
        except UnavailableError as exc:  # the store is down: the leases' slack covers it
            self._outage.failed(exc, len(self._deferred))
            return False

    async def sweep(self, *, quiet: bool = False) -> list[Reclaimed]:
        """Give back every expired lease (each once, whichever replica sweeps), and log it
        unless `quiet` (the caller says so itself)."""
        out: list[Reclaimed] = []
        while True:
            batch = await self.store.reclaim(SWEEP_BATCH)
            out += batch
            if len(batch) < SWEEP_BATCH:
                break
        if out and not quiet:
            log.warning("%s", reclaimed_message(out))
        return out

    async def leave_loop(self) -> None:
        """The running loop is ending: stop the keeper if it runs there, before the store
        closes its connections on it; the leases of requests on other loops are renewed from
        one of those from now on (or the next hold starts it where it runs)."""
        here = asyncio.get_running_loop()
        if self._task is None or self._task.get_loop() is not here:
            return
        await self._stop()
        for loop in {loop for loop in list(self._live.values()) if loop is not here}:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(self._start)
                return

    async def _stop(self) -> None:
        """Stop the keeper, on its own loop (`on_loop`; nothing when that loop is closed):
        woken to see it is no longer `_task`, and cancelled."""
        task, wake, self._task = self._task, self._store_back, None
        if task is not None:
            await on_loop(task.get_loop(), functools.partial(_stopped, task, wake), CLOSE_ELSEWHERE)

    async def aclose(self) -> None:
        """Stop renewing and sweeping (the store is about to close), after a last try at the
        settlements the store could not take: left to the sweep, each would give its worst
        case back and its cost would never be counted."""
        self._stop_listening()
        await self._stop()
        for lease_id, changes in list(self._deferred.items()):
            await self._tolerant(self._settle(lease_id, changes))
        if self._deferred:
            log.error("%s", unsent_message(list(self._deferred.values())))


async def _stopped(task: asyncio.Task[None], wake: asyncio.Event | None) -> None:
    if wake is not None:
        wake.set()
    await ended(task)


def unsent_message(unsent: list[list[Change]]) -> str:
    """What a keeper stopping leaves unsent, by what it is: budget settlements, whose costs
    are left out of the budgets, and releases charging nothing (a virtual key's concurrent
    slot, or a reservation whose request was cancelled before it ran), which stay taken until
    their leases expire."""
    slots = sum(1 for changes in unsent if not changes)
    settlements = len(unsent) - slots
    what, why = [], []
    if settlements:
        what.append(f"{settlements} budget settlement(s)")
        why.append("their costs are left out of the budgets (the ledger has them)")
    if slots:
        what.append(
            f"{slots} release(s) of virtual keys' concurrent slots (or of reservations whose "
            "requests never ran)"
        )
        why.append("those stay taken until their leases expire (state.hold_lease)")
    return f"stopping with {' and '.join(what)} the state store could not take: {'; '.join(why)}"


def reclaimed_message(reclaimed: list[Reclaimed]) -> str:
    """What a sweep gave back, per budget counter (names and windows, never a secret) and per
    virtual key whose concurrent slots were held (`KEY_SLOTS`)."""
    per_counter: dict[str, float] = {}
    for lease in reclaimed:
        for key, amount in lease.amounts:
            per_counter[key] = per_counter.get(key, 0.0) + amount
    total = slots = 0.0
    counters = []
    for key, amount in per_counter.items():
        if key.startswith(KEY_SLOTS):
            slots += amount
            counters.append(f"key {key.removeprefix(KEY_SLOTS)} {amount:g} slot(s)")
        else:
            total += amount
            counters.append(f"{key.removeprefix('budget:')} ${usd(amount)}")
    what = [f"${usd(total)}"] if total or not slots else []
    if slots:
        what.append(f"{slots:g} concurrent slot(s) of virtual keys")
    return (
        f"gave back {' and '.join(what)} reserved by {len(reclaimed)} request(s) never settled, "
        f"whose process stopped renewing their leases (killed outright?): {', '.join(counters)}"
    )


def lease_keeper(store: StateStore, seconds: float, resources: Resources) -> LeaseKeeper:
    """The one keeper of `store` in this process, kept (and closed) with `resources`."""
    keeper: LeaseKeeper = resources.service(
        f"leases|{id(store)}|{seconds!r}", lambda: LeaseKeeper(store, seconds=seconds)
    )
    return keeper
