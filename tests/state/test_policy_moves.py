"""The move of what a replica counted alone to the shared store, as it comes back: a request
cancelled while the move is under way (a client gone, a shutdown) loses none of the counts."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from modelyard.errors import UnavailableError
from modelyard.state.base import Change, Lease
from modelyard.state.memory import MemoryStore
from modelyard.state.policy import PolicyStore


class Backend(MemoryStore):
    """A shared store that is down, or answers a release only once `gate` opens."""

    def __init__(self) -> None:
        super().__init__()
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
