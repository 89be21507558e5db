"""Leases, run against every backend: a reservation whose holder never releases it is given back
once its lease expires, exactly once, and a late release does not give it back twice."""

from __future__ import annotations

import asyncio

import pytest

from modelyard.state.base import Claim, Lease, StateStore

EXPIRED = 0.0
"""A lease's seconds that have run out by the time anything sweeps."""

LIVE = Lease(id="live", seconds=600)


async def held(store: StateStore, lease_id: str, amount: float, seconds: float = EXPIRED) -> None:
    refused = await store.reserve_or_explain(
        [Claim(key="used", amount=amount, limit=10, ttl=3600)],
        lease=Lease(id=lease_id, seconds=seconds),
    )
    assert refused is None


async def test_an_expired_lease_is_given_back_by_a_sweep(store: StateStore) -> None:
    await store.adjust("used", 1.0)
    await held(store, "dead", 0.25)
    assert await store.counter("used") == pytest.approx(1.25)
    reclaimed = await store.reclaim()
    assert [(r.id, r.amounts) for r in reclaimed] == [("dead", (("used", 0.25),))]
    assert await store.counter("used") == pytest.approx(1.0)
    assert await store.reclaim() == []


async def test_a_lease_not_yet_expired_is_kept(store: StateStore) -> None:
    await held(store, "alive", 0.25, seconds=600)
    assert await store.reclaim() == []
    assert await store.counter("used") == pytest.approx(0.25)


async def test_a_renewed_lease_is_kept(store: StateStore) -> None:
    await held(store, "renewed", 0.25)
    await store.renew(["renewed", "unknown"], 600)
    assert await store.reclaim() == []
    assert await store.counter("used") == pytest.approx(0.25)


async def test_release_gives_back_the_reservation_and_applies_the_changes(
    store: StateStore,
) -> None:
    await held(store, "live", 0.25, seconds=600)
    values = await store.release(LIVE, [("used", 0.1, 3600), ("spent", 0.1, 3600)])
    assert values == [pytest.approx(0.1), pytest.approx(0.1)]
    assert await store.counter("used") == pytest.approx(0.1)
    assert await store.reclaim() == []


async def test_a_release_after_its_lease_was_reclaimed_charges_the_actual_once(
    store: StateStore,
) -> None:
    await held(store, "slow", 0.25)
    assert len(await store.reclaim()) == 1
    await store.release(Lease(id="slow", seconds=600), [("used", 0.1, 3600)])
    assert await store.counter("used") == pytest.approx(0.1)


async def test_two_sweepers_at_once_give_each_lease_back_once(
    store: StateStore, twin: StateStore
) -> None:
    await store.adjust("used", 1.0)
    for i in range(20):
        await held(store, f"dead-{i}", 0.125)
    first, second = await asyncio.gather(store.reclaim(), twin.reclaim())
    ids = [r.id for r in first + second]
    assert sorted(ids) == sorted(f"dead-{i}" for i in range(20))
    assert await store.counter("used") == pytest.approx(1.0)


async def test_a_sweep_takes_no_more_than_its_limit(store: StateStore) -> None:
    for i in range(3):
        await held(store, f"dead-{i}", 0.5)
    assert len(await store.reclaim(limit=2)) == 2
    assert len(await store.reclaim(limit=2)) == 1
    assert await store.counter("used") == pytest.approx(0.0)


async def test_nothing_is_given_back_to_a_counter_whose_window_is_over(store: StateStore) -> None:
    refused = await store.reserve_or_explain(
        [Claim(key="short", amount=0.5, limit=10, ttl=0.05)], lease=Lease(id="l", seconds=0.0)
    )
    assert refused is None
    await asyncio.sleep(0.12)
    assert [r.id for r in await store.reclaim()] == ["l"]
    assert await store.counter("short") == 0.0
    assert await store.reserve([Claim(key="short", amount=10, limit=10)]) is None


async def test_a_refused_reservation_takes_no_lease(store: StateStore) -> None:
    refused = await store.reserve_or_explain(
        [Claim(key="used", amount=11, limit=10)], lease=Lease(id="no", seconds=0.0)
    )
    assert refused is not None
    assert await store.reclaim() == []


async def test_a_release_sent_again_changes_nothing(store: StateStore) -> None:
    # The first answer was lost: the holder cannot know the release was applied, and retries.
    await held(store, "live", 0.25, seconds=600)
    changes = [("used", 0.1, 3600), ("spent", 0.1, 3600)]
    await store.release(LIVE, changes)
    assert await store.release(LIVE, changes) == [pytest.approx(0.1), pytest.approx(0.1)]
    assert await store.counter("used") == pytest.approx(0.1)
    assert await store.counter("spent") == pytest.approx(0.1)


async def test_a_release_after_a_sweep_sent_again_charges_the_actual_once(
    store: StateStore,
) -> None:
    await held(store, "slow", 0.25)
    assert len(await store.reclaim()) == 1
    for _ in range(2):
        await store.release(Lease(id="slow", seconds=600), [("used", 0.1, 3600)])
    assert await store.counter("used") == pytest.approx(0.1)


async def test_two_releases_of_one_lease_at_once_apply_it_once(
    store: StateStore, twin: StateStore
) -> None:
    await held(store, "live", 0.25, seconds=600)
    changes = [("used", 0.1, 3600)]
    await asyncio.gather(store.release(LIVE, changes), twin.release(LIVE, changes))
    assert await store.counter("used") == pytest.approx(0.1)


async def test_a_released_lease_is_forgotten_by_the_sweep_after_its_seconds(
    store: StateStore,
) -> None:
    await held(store, "brief", 0.25)
    await store.release(Lease(id="brief", seconds=EXPIRED), [("used", 0.1, 3600)])
    assert await store.reclaim() == []  # forgotten, and not reported as given back
    await store.release(Lease(id="brief", seconds=EXPIRED), [("used", 0.1, 3600)])
    assert await store.counter("used") == pytest.approx(0.2)


async def test_a_renewed_release_is_remembered_past_its_first_seconds(
    store: StateStore,
) -> None:
    await held(store, "kept", 0.25, seconds=600)
    kept = Lease(id="kept", seconds=EXPIRED)
    await store.release(kept, [("used", 0.1, 3600)])
    await store.renew(["kept"], 600)  # its holder is still retrying it
    assert await store.reclaim() == []
    await store.release(kept, [("used", 0.1, 3600)])
    assert await store.counter("used") == pytest.approx(0.1)
