"""The StateStore contract, run against every backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from modelyard.state.base import Claim, StateStore


async def test_reserve_applies_every_claim_when_all_fit(store: StateStore) -> None:
    refused = await store.reserve(
        [Claim(key="a", amount=1, limit=2), Claim(key="b", amount=2, limit=2)]
    )
    assert refused is None
    assert await store.counter("a") == 1
    assert await store.counter("b") == 2


async def test_reserve_applies_nothing_when_one_claim_does_not_fit(store: StateStore) -> None:
    await store.adjust("b", 1.5)
    claims = [Claim(key="a", amount=1, limit=5), Claim(key="b", amount=1, limit=2)]
    refused = await store.reserve(claims)
    assert refused == claims[1]
    assert await store.counter("a") == 0
    assert await store.counter("b") == 1.5


async def test_reserve_allows_reaching_the_limit_exactly(store: StateStore) -> None:
    assert await store.reserve([Claim(key="a", amount=0.1, limit=0.3)]) is None
    assert await store.reserve([Claim(key="a", amount=0.2, limit=0.3)]) is None
    assert await store.reserve([Claim(key="a", amount=1e-9, limit=0.3)]) is not None


async def test_infinite_limit_always_fits(store: StateStore) -> None:
    assert await store.reserve([Claim(key="a", amount=1e9, limit=float("inf"))]) is None
    assert await store.counter("a") == 1e9


async def test_concurrent_reservations_never_pass_the_limit(store: StateStore) -> None:
    results = await asyncio.gather(
        *(store.reserve([Claim(key="cap", amount=1, limit=10)]) for _ in range(40))
    )
    assert sum(r is None for r in results) == 10
    assert await store.counter("cap") == 10


async def test_adjust_returns_the_new_value_and_may_go_down(store: StateStore) -> None:
    assert await store.adjust("a", 3) == 3
    assert await store.adjust("a", -1.25) == 1.75


async def test_adjust_many_applies_each_change(store: StateStore) -> None:
    values = await store.adjust_many([("a", 1.0, None), ("b", 2.0, 60.0), ("a", 0.5, None)])
    assert values == [1.0, 2.0, 1.5]
    assert await store.counter("a") == 1.5
    assert await store.counter("b") == 2.0


async def test_counter_expires_after_its_ttl(store: StateStore) -> None:
    await store.reserve([Claim(key="a", amount=1, limit=5, ttl=0.05)])
    await asyncio.sleep(0.12)
    assert await store.counter("a") == 0
    assert await store.reserve([Claim(key="a", amount=5, limit=5, ttl=0.05)]) is None


async def test_values_round_trip_and_expire(store: StateStore) -> None:
    await store.set("v", b"hello")
    await store.set("w", b"short", ttl=0.05)
    assert await store.get("v") == b"hello"
    assert await store.get("w") == b"short"
    await asyncio.sleep(0.12)
    assert await store.get("w") is None
    await store.delete("v")
    assert await store.get("v") is None


async def test_window_admits_up_to_the_limit_then_says_how_long_to_wait(
    store: StateStore,
) -> None:
    for _ in range(3):
        assert (await store.window_acquire("rpm", 1, limit=3, window=0.3)).wait == 0.0
    wait = (await store.window_acquire("rpm", 1, limit=3, window=0.3)).wait
    assert 0.0 < wait <= 0.3
    await asyncio.sleep(wait + 0.02)
    assert (await store.window_acquire("rpm", 1, limit=3, window=0.3)).wait == 0.0


async def test_window_amount_above_the_limit_never_fits(store: StateStore) -> None:
    assert (await store.window_acquire("tpm", 11, limit=10, window=60)).wait == 60


async def test_delete_forgets_a_counter(store: StateStore) -> None:
    await store.adjust("a", 4)
    await store.delete("a")
    assert await store.counter("a") == 0


async def test_a_refusal_reports_the_counter_value_it_saw(store: StateStore) -> None:
    await store.adjust("b", 1.5)
    claim = Claim(key="b", amount=1, limit=2)
    assert await store.reserve_or_explain([claim]) == (claim, 1.5)
    assert await store.reserve_or_explain([Claim(key="c", amount=1, limit=2)]) is None


async def test_window_sums_amounts_and_frees_them_as_they_expire(store: StateStore) -> None:
    assert (await store.window_acquire("tpm", 3, limit=10, window=0.2)).wait == 0.0
    assert (await store.window_acquire("tpm", 4, limit=10, window=0.2)).wait == 0.0
    assert (await store.window_acquire("tpm", 4, limit=10, window=0.2)).wait > 0.0
    assert (await store.window_acquire("tpm", 3, limit=10, window=0.2)).wait == 0.0
    await asyncio.sleep(0.25)
    assert (await store.window_acquire("tpm", 10, limit=10, window=0.2)).wait == 0.0
    assert (await store.window_acquire("tpm", 1, limit=10, window=0.2)).wait > 0.0


async def test_window_tells_what_it_holds_and_when_it_empties(store: StateStore) -> None:
    first = await store.window_acquire("rpm", 1, limit=3, window=60)
    assert (first.wait, first.used, first.reset) == (0.0, 1.0, 60.0)
    await store.window_acquire("rpm", 1, limit=3, window=60)
    third = await store.window_acquire("rpm", 1, limit=3, window=60)
    assert (third.wait, third.used) == (0.0, 3.0)
    refused = await store.window_acquire("rpm", 1, limit=3, window=60)
    assert refused.used == 3.0  # nothing recorded
    # Empty once the newest entry leaves; the wait is for the oldest (sent a moment earlier).
    assert 59.0 < refused.wait <= refused.reset <= 60.0


async def test_window_refused_when_empty_empties_now(store: StateStore) -> None:
    use = await store.window_acquire("tpm", 11, limit=10, window=60)
    assert (use.wait, use.used, use.reset) == (60.0, 0.0, 0.0)


async def test_a_window_shared_by_two_clients_admits_exactly_its_limit(
    store: StateStore, twin: StateStore
) -> None:
    # Two processes on one store, each call taking an entry from the other's, or giving one
    # back (a tpm correction): what each sees the window hold is the same running total.
    async def take(client: StateStore, amount: float) -> float:
        use = await client.window_acquire("rpm", amount, limit=10, window=60)
        return use.used if use.wait == 0.0 else -1.0

    firsts = await asyncio.gather(*(take(c, 1) for c in [store, twin] * 4))
    assert sorted(firsts) == [1, 2, 3, 4, 5, 6, 7, 8]
    assert await take(twin, -2) == 6
    seconds = await asyncio.gather(*(take(c, 1) for c in [twin, store] * 4))
    assert sorted(seconds) == [-1, -1, -1, -1, 7, 8, 9, 10]
    assert (await store.window_acquire("rpm", 1, limit=10, window=60)).used == 10
    await store.delete("rpm")
    assert (await twin.window_acquire("rpm", 1, limit=10, window=60)).used == 1


async def _started(store: StateStore) -> float:
    """Now (`time.monotonic()`), once `store` is connected (a first call may take its time)."""
    await store.counter("warm")
    return time.monotonic()


async def _until(start: float, seconds: float) -> None:
    """Sleep until `seconds` after `start` (`time.monotonic()`)."""
    await asyncio.sleep(max(0.0, start + seconds - time.monotonic()))


async def _held(store: StateStore, window: float) -> float:
    """What the `tpm` window holds (read by an acquire too large to be recorded)."""
    use = await store.window_acquire("tpm", 1e9, limit=1.0, window=window)
    assert use.wait > 0.0
    return use.used


async def test_a_correction_dated_when_its_estimate_was_counted_leaves_with_it(
    store: StateStore,
) -> None:
    # A call estimated at 10 tokens, running half the window, used 2: its refund of 8 leaves
    # the window as the estimate does. Dated when the call ended, it stayed on half a window
    # longer, room for 8 more tokens the limit never had.
    start = await _started(store)
    assert (await store.window_acquire("tpm", 10, limit=10, window=1.0)).wait == 0.0
    await _until(start, 0.5)
    await store.window_correct("tpm", -8, age=time.monotonic() - start, window=1.0)
    assert await _held(store, 1.0) == pytest.approx(2)
    await _until(start, 1.1)  # the estimate's minute is over: both have left
    use = await store.window_acquire("tpm", 10, limit=10, window=1.0)
    assert (use.wait, use.used) == (0.0, pytest.approx(10))


async def test_a_correction_as_old_as_its_window_changes_nothing(store: StateStore) -> None:
    await store.window_acquire("tpm", 5, limit=10, window=60)
    await store.window_correct("tpm", -5, age=60, window=60)
    await store.window_correct("tpm", -5, age=600, window=60)
    assert await _held(store, 60) == 5
    await store.window_correct("other", -5, age=60, window=60)  # nor makes a window
    assert (await store.window_acquire("other", 1, limit=1, window=60)).used == 1


async def test_a_correction_dated_before_later_entries_leaves_before_them(
    store: StateStore,
) -> None:
    # The correction goes in among the entries by its date, not after the newest: the running
    # sum takes it off when it leaves, while the entry acquired after it stays.
    start = await _started(store)
    await store.window_acquire("tpm", 4, limit=10, window=1.0)
    await _until(start, 0.6)
    await store.window_acquire("tpm", 3, limit=10, window=1.0)
    await store.window_correct("tpm", -1, age=time.monotonic() - start, window=1.0)
    assert await _held(store, 1.0) == pytest.approx(6)
    await _until(start, 1.1)  # the 4 and its correction have left; the 3 stays until 1.6
    assert await _held(store, 1.0) == pytest.approx(3)


async def test_a_sum_below_zero_for_a_moment_comes_back_right(store: StateStore) -> None:
    # A correction can outlive its entry by the milliseconds between the two store calls: the
    # window then holds less than nothing for that long, and once the correction leaves too,
    # exactly what was acquired since (taken as 0 meanwhile, it came back as its refund).
    start = await _started(store)
    await store.window_acquire("tpm", 10, limit=10, window=1.5)
    await _until(start, 0.45)
    await store.window_correct("tpm", -8, age=0.0, window=1.5)  # leaves at 1.95
    await _until(start, 0.9)
    await store.window_acquire("tpm", 1, limit=10, window=1.5)  # leaves at 2.4
    await _until(start, 1.55)
    assert await _held(store, 1.5) == pytest.approx(-7)
    await _until(start, 2.05)
    assert await _held(store, 1.5) == pytest.approx(1)


async def test_a_window_refused_then_left_alone_is_empty_once_its_entries_leave(
    store: StateStore,
) -> None:
    # Redis kept a refusal's running sum a whole window from the refusal, past its entries:
    # the window then read as full with nothing in it, and a client asking again within each
    # window was refused for good.
    start = await _started(store)
    for _ in range(3):
        await store.window_acquire("rpm", 1, limit=3, window=1.0)
    await _until(start, 0.5)
    assert (await store.window_acquire("rpm", 1, limit=3, window=1.0)).wait > 0.0
    await _until(start, 1.15)
    use = await store.window_acquire("rpm", 1, limit=3, window=1.0)
    assert (use.wait, use.used) == (0.0, 1.0)
