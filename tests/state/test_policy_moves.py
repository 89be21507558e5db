"""The move of what a replica counted alone to the shared store, as it comes back: a request
cancelled while the move is under way (a client gone, a shutdown) loses none of the counts;
the leases of requests still in flight (a key's slots, budgets' worst cases) are carried to
the store with them, and stay held locally while it is down."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Change, Claim, Lease
from modelyard.state.memory import MemoryStore
from modelyard.state.policy import PolicyStore


class Backend(MemoryStore):
    """A shared store that is down, or answers a release only once `gate` opens."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(clock)
        self.down = True
        self.gate: asyncio.Event | None = None
        self.releasing = asyncio.Event()

    def _check(self) -> None:
        if self.down:
            raise UnavailableError("the backend is down", code="state_unavailable")

    async def adjust(self, key: str, delta: float, *, ttl: float | None = None) -> float:
        self._check()
        return await super().adjust(key, delta, ttl=ttl)

    async def counter(self, key: str) -> float:
        self._check()
        return await super().counter(key)

    async def reserve_or_explain(
        self, claims: Sequence[Claim], *, lease: Lease | None = None
    ) -> tuple[Claim, float] | None:
        self._check()
        return await super().reserve_or_explain(claims, lease=lease)

    async def renew(self, lease_ids: Sequence[str], seconds: float) -> None:
        self._check()
        await super().renew(lease_ids, seconds)

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        self._check()
        self.releasing.set()
        if self.gate is not None:
            await self.gate.wait()
            self._check()  # gone meanwhile: not applied (a real store's release is atomic)
        return await super().release(lease, changes)


@pytest.mark.parametrize("unanswered_first", [False, True])
@pytest.mark.parametrize("counted_after", [False, True])
async def test_a_request_cancelled_during_the_move_loses_no_local_count(
    unanswered_first: bool, counted_after: bool
) -> None:
    backend = Backend()
    now = [0.0]
    # Tried again only when a request comes after the clock is moved on: no probe races it.
    store = PolicyStore(backend, on_unavailable="local", retry_interval=60.0, clock=lambda: now[0])
    await store.adjust("spent", 1.0)  # counted alone: the backend is down
    if unanswered_first:
        # A move sent as the backend went again, its answer lost: it is sent again first.
        backend.down, backend.gate = False, asyncio.Event()
        now[0] += 61
        moving = asyncio.create_task(store.adjust("spent", 0.0))
        await backend.releasing.wait()
        backend.down = True
        backend.gate.set()
        await moving
        backend.releasing.clear()
        await store.adjust("spent", 2.0)  # counted alone again
    backend.down, backend.gate = False, asyncio.Event()
    now[0] += 61
    asked = asyncio.create_task(store.adjust("spent", 4.0))
    await backend.releasing.wait()  # the move is under way: the request waits for it
    asked.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asked
    backend.gate = None
    if counted_after:  # still unsure of the backend: counted alone, not tried again yet
        await store.adjust("spent", 16.0)
    now[0] += 61
    await store.adjust("spent", 8.0)  # the move again, then this request
    expected = 1.0 + 8.0 + (2.0 if unanswered_first else 0.0) + (16.0 if counted_after else 0.0)
    assert await backend.counter("spent") == pytest.approx(expected)
    await store.aclose()


SLOT = Claim(key="key-slots:k", amount=1, limit=1)
"""A key's one concurrent slot."""


async def slot_taken_while_down(seconds: float) -> tuple[list[float], Backend, PolicyStore]:
    """The key's one slot taken under lease `a` of `seconds` while the backend is down, on a
    clock of the test's (the backend's too), which a request must move on for a try of it."""
    now = [0.0]
    backend = Backend(clock=lambda: now[0])
    store = PolicyStore(backend, on_unavailable="local", retry_interval=60.0, clock=lambda: now[0])
    assert await store.reserve_or_explain([SLOT], lease=Lease(id="a", seconds=seconds)) is None
    return now, backend, store


async def test_a_lease_held_locally_stays_held_when_the_backend_is_tried_in_vain() -> None:
    # The key's one slot taken while the backend is down, then a try of the backend that
    # fails: the slot is still taken (the try had dropped the local leases with their counts,
    # and the next request took the key's slot a second time).
    now, _, store = await slot_taken_while_down(600)
    now[0] += 61
    assert await store.counter("key-slots:k") == 1  # tried, still down, counted locally
    assert await store.reserve_or_explain([SLOT], lease=Lease(id="b", seconds=600)) is not None
    assert await store.release(Lease(id="a", seconds=600), []) == []
    assert await store.reserve_or_explain([SLOT], lease=Lease(id="b", seconds=600)) is None
    await store.aclose()


async def test_a_lease_held_locally_is_carried_to_the_backend_when_it_is_back() -> None:
    # The key's one slot taken while the backend is down, its request still running when the
    # backend is back: the backend counts it (every replica's next request is refused), under
    # a lease its renewals keep and its release ends; had the process been killed, the sweep
    # would give it back. It had stayed behind, counted nowhere the replicas share.
    now, backend, store = await slot_taken_while_down(120)
    backend.down = False
    now[0] += 61
    assert await store.counter("key-slots:k") == 1  # the move, then the read, at the backend
    assert await backend.reserve_or_explain([SLOT]) is not None  # another replica: refused
    await store.renew(["a"], 300)  # the keeper renews it by its own id
    now[0] += 200  # past the 120 s it had left, not past its renewal
    assert await backend.reclaim() == []
    assert await store.release(Lease(id="a", seconds=120), []) == []
    assert await backend.counter("key-slots:k") == 0
    assert await backend.reserve_or_explain([SLOT]) is None
    await store.aclose()


async def test_a_carried_lease_nobody_renews_is_swept_at_the_backend() -> None:
    now, backend, store = await slot_taken_while_down(120)
    backend.down = False
    now[0] += 61
    assert await store.counter("key-slots:k") == 1
    now[0] += 121  # its process was killed: no renewal past the 120 s it had left
    assert [r.amounts for r in await backend.reclaim()] == [(("key-slots:k", 1.0),)]
    assert await backend.counter("key-slots:k") == 0
    await store.aclose()


async def test_a_lease_not_carried_as_the_backend_goes_again_stays_held_locally() -> None:
    now, backend, store = await slot_taken_while_down(600)
    backend.down = False
    reserve = backend.reserve_or_explain

    async def lost(claims: Sequence[Claim], *, lease: Lease | None = None) -> object:
        await reserve(claims, lease=lease)  # taken there, the answer lost
        backend.down = True
        raise UnavailableError("the backend is down", code="state_unavailable")

    backend.reserve_or_explain = lost  # type: ignore[method-assign]
    now[0] += 61
    assert await store.counter("key-slots:k") == 1  # the move, then down: counted locally
    assert await store.reserve_or_explain([SLOT], lease=Lease(id="b", seconds=600)) is not None
    del backend.reserve_or_explain
    backend.down = False
    now[0] += 61
    assert await store.counter("key-slots:k") == 1  # carried now; the lost one released
    assert await store.release(Lease(id="a", seconds=600), []) == []
    assert await backend.counter("key-slots:k") == 0
    assert not backend.leased()
    await store.aclose()
