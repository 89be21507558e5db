"""Live counters shared between processes: counts added in batches, values cached briefly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from modelyard.errors import UnavailableError
from modelyard.resilience.breaker import BreakerModel, BreakerPolicy, CircuitBreaker, CircuitState
from modelyard.state.base import Change, Lease
from modelyard.state.batched import FLUSH_MEMORY, SWEEP_EVERY, BatchedStore
from modelyard.state.memory import MemoryStore
from modelyard.state.sqlite import SqliteStore
from modelyard.types import user
from tests.resilience.scripted import fails, scripted

POLICY = BreakerPolicy(failure_rate=0.5, min_calls=3, window=10.0, open_for=5.0, probes=1)
NEVER = 3600.0
"""A flush interval no test waits for: it flushes by hand."""


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000.0

    def __call__(self) -> float:
        return self.now


class Counted(MemoryStore):
    """A shared store that counts its round trips, and fails the next `failing` flushes."""

    def __init__(self) -> None:
        super().__init__()
        self.flushes: list[list[Change]] = []
        self.gets = 0
        self.failing = 0

    async def adjust_many(self, changes: Sequence[Change]) -> list[float]:
        if self.failing:
            self.failing -= 1
            raise UnavailableError("the store is down", code="state_unavailable")
        self.flushes.append(list(changes))
        return await super().adjust_many(changes)

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        return await super().get(key)


async def test_many_adds_reach_the_shared_store_in_one_flush() -> None:
    shared = Counted()
    store = BatchedStore(shared, flush_every=NEVER)
    for _ in range(5):
        await store.add("calls", 1.0, ttl=60)
    await store.add("failures", 2.0, ttl=60)
    assert shared.flushes == [] and await shared.counter("calls") == 0
    assert await store.flush()
    assert shared.flushes == [[("calls", 5.0, 60), ("failures", 2.0, 60)]]
    assert await shared.counter("calls") == 5


async def test_a_counter_is_the_shared_value_plus_what_is_not_sent_yet() -> None:
    shared = Counted()
    await shared.adjust("calls", 10.0)  # another process's, already added
    store = BatchedStore(shared, flush_every=NEVER)
    await store.add("calls", 3.0)
    assert await store.counter("calls") == 13
    await store.flush()
    assert await store.counter("calls") == 13


async def test_adds_are_flushed_in_the_background() -> None:
    shared = Counted()
    store = BatchedStore(shared, flush_every=0.01)
    await store.add("calls", 1.0)
    await store.add("calls", 1.0)
    for _ in range(200):
        if shared.flushes:
            break
        await asyncio.sleep(0.01)
    assert shared.flushes == [[("calls", 2.0, None)]]
    await store.aclose()


async def test_a_clean_close_sends_what_is_counted(tmp_path: Path) -> None:
    shared = SqliteStore(tmp_path / "state.db")
    store = BatchedStore(shared, flush_every=NEVER)
    await store.add("calls", 4.0, ttl=60)
    await store.aclose()
    other = SqliteStore(tmp_path / "state.db")  # another process, or the next start
    try:
        assert await other.counter("calls") == 4
    finally:
        await other.aclose()
        await shared.aclose()


async def test_a_failed_flush_keeps_its_counts_and_sends_them_once() -> None:
    shared = Counted()
    store = BatchedStore(shared, flush_every=NEVER)
    await store.add("calls", 2.0)
    shared.failing = 1
    assert not await store.flush()
    assert await store.counter("calls") == 2  # kept here, not lost, not counted twice
    await store.add("calls", 1.0)
    assert await store.flush()
    assert await shared.counter("calls") == 3
    await store.aclose()  # nothing left to send
    assert shared.flushes == [[("calls", 3.0, None)]]


async def test_a_value_read_is_answered_from_memory_for_cache_for() -> None:
    shared, clock = Counted(), Clock()
    store = BatchedStore(shared, cache_for=0.25, clock=clock)
    await shared.set("state", b"closed")
    assert await store.get("state") == b"closed"
    await shared.set("state", b"open")  # another process's write
    assert await store.get("state") == b"closed" and shared.gets == 1
    clock.now += 0.25
    assert await store.get("state") == b"open" and shared.gets == 2


async def test_a_write_goes_through_and_is_read_back_at_once() -> None:
    shared, clock = Counted(), Clock()
    store = BatchedStore(shared, cache_for=0.25, clock=clock)
    assert await store.get("state") is None
    await store.set("state", b"open")
    assert await shared.get("state") == b"open"
    assert await store.get("state") == b"open"
    await store.delete("state")
    assert await shared.get("state") is None and await store.get("state") is None
    assert shared.gets == 3  # the first read, and the two on `shared` here; none cached


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def workers(tmp_path: Path, clock: Clock) -> AsyncIterator[list[BatchedStore]]:
    """Two worker processes' live stores on one SQLite file, their caches on `clock`."""
    made = [
        BatchedStore(SqliteStore(tmp_path / "state.db"), flush_every=NEVER, clock=clock)
        for _ in "ab"
    ]
    yield made
    for store in made:
        await store.aclose()
        await store.inner.aclose()


async def test_a_circuit_one_worker_opens_is_open_in_the_other_within_cache_for(
    workers: list[BatchedStore], clock: Clock
) -> None:
    sick = BreakerModel(
        scripted("a", default=fails("unavailable")),
        [CircuitBreaker("model:a", POLICY, workers[0], clock=clock)],
    )
    other_inner = scripted("a", default="fine")
    other = BreakerModel(other_inner, [CircuitBreaker("model:a", POLICY, workers[1], clock=clock)])
    assert (await other.complete(user("x"))).text == "fine"  # its closed state is cached
    for _ in range(3):  # counted by the sick worker alone, none flushed: it opens on its own
        with pytest.raises(UnavailableError) as caught:
            await sick.complete(user("x"))
        assert caught.value.code != "circuit_open"
    with pytest.raises(UnavailableError) as refused:
        await sick.complete(user("x"))
    assert refused.value.code == "circuit_open"
    assert (await other.complete(user("x"))).text == "fine"  # the bound: cache_for, no more
    clock.now += workers[1].cache_for
    with pytest.raises(UnavailableError) as caught:
        await other.complete(user("x"))
    assert caught.value.code == "circuit_open" and len(other_inner.calls) == 2


async def test_a_probe_admitted_on_a_stale_state_does_not_close_a_circuit_reopened_since(
    workers: list[BatchedStore], clock: Clock
) -> None:
    first, second = (CircuitBreaker("model:a", POLICY, store, clock=clock) for store in workers)
    sick = BreakerModel(scripted("a", default=fails("unavailable")), [first])
    for _ in range(3):
        with pytest.raises(UnavailableError):
            await sick.complete(user("x"))
    clock.now += POLICY.open_for
    assert (await second.health()).state is CircuitState.HALF_OPEN  # read, and cached
    probe = await first.admit()
    await first.record(probe, None)  # closed by the first worker's probe
    for _ in range(3):  # and opened again
        with pytest.raises(UnavailableError):
            await sick.complete(user("x"))
    # The second worker still reads the half-open state it cached: its probe goes out...
    late = await second.admit()
    assert late.probe
    await second.record(late, None)
    # ...and its success speaks of a state that is gone: the circuit stays open.
    clock.now += workers[1].cache_for
    assert (await second.health()).state is CircuitState.OPEN


class Lossy(MemoryStore):
    """A shared store across a network: it applies the next `losing` releases and their
    answers are lost; it records every release it is sent."""

    def __init__(self, clock: Clock) -> None:
        super().__init__(clock)
        self.sent: list[tuple[str, list[Change]]] = []
        self.losing = 0

    async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
        self.sent.append((lease.id, list(changes)))
        values = await super().release(lease, changes)
        if self.losing:
            self.losing -= 1
            raise UnavailableError("no answer within 1 s", code="state_unavailable")
        return values


async def test_a_flush_whose_answer_was_lost_is_sent_again_as_it_was_and_counted_once(
    clock: Clock,
) -> None:
    shared = Lossy(clock)
    store = BatchedStore(shared, flush_every=NEVER, applied_once=True, clock=clock)
    await store.add("calls", 2.0)
    shared.losing = 1
    assert not await store.flush()
    await store.add("calls", 1.0)  # waits for the batch after it
    assert await store.counter("calls") == 5  # maybe twice until answered, never lost
    assert await store.flush()
    (first, lost), (again, resent), (then, later) = shared.sent
    assert (first, lost) == (again, resent) == (first, [("calls", 2.0, None)])
    assert then != first and later == [("calls", 1.0, None)]
    assert await shared.counter("calls") == 3 and await store.counter("calls") == 3


async def test_a_flush_unanswered_longer_than_the_store_remembers_is_dropped_not_sent_twice(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    shared = Lossy(clock)
    store = BatchedStore(shared, flush_every=NEVER, applied_once=True, clock=clock)
    await store.add("calls", 2.0)
    shared.losing = 1
    assert not await store.flush()  # applied, its answer lost
    clock.now += FLUSH_MEMORY  # an outage: the store forgets the flush meanwhile
    await store.add("calls", 1.0)
    assert await store.flush()
    assert await shared.counter("calls") == 3  # sent again, it would be 5
    assert "might count twice" in caplog.text


async def test_a_process_that_flushes_has_the_store_forget_flush_ids_past_their_memory(
    clock: Clock,
) -> None:
    shared = Lossy(clock)
    store = BatchedStore(shared, flush_every=NEVER, applied_once=True, clock=clock)
    for _ in range(3):
        await store.add("calls", 1.0)
        assert await store.flush()
        clock.now += FLUSH_MEMORY / 2
    clock.now += SWEEP_EVERY
    await store.add("calls", 1.0)
    assert await store.flush()
    remembered = shared._released  # what a sweep leaves of the flushes' ids
    assert list(remembered) == [shared.sent[-2][0], shared.sent[-1][0]]
    assert await shared.counter("calls") == 4
