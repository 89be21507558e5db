"""Budget reservations are leases, on every backend: what a process that died had reserved is
given back once its lease expires, exactly once, and a late settlement charges its cost once."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any

import pytest

from modelyard.cost.budget_book import BudgetBook, settle_shielded
from modelyard.cost.budget_counters import Budget, BudgetStatus, Hold
from modelyard.cost.budget_leases import LeaseKeeper, reclaimed_message
from modelyard.errors import UnavailableError
from modelyard.state.base import Change, Lease, Reclaimed, StateStore
from modelyard.state.memory import MemoryStore
from modelyard.state.policy import OnUnavailable, PolicyStore
from modelyard.state.postgres import PostgresStore
from modelyard.state.redis import RedisStore
from tests.conftest import relayed_postgres
from tests.cost.helpers import question
from tests.fakes.tcp_relay import TcpRelay
from tests.state.conftest import (  # noqa: F401  (store, twin: every backend in turn)
    DOWN_TIMEOUT,
    REDIS_URL,
    store,
    twin,
    unique_prefix,
)
from tests.test_yard_threads import in_threads

BUDGET = Budget(name="monthly", scope="total", limit=1.0, window="month")
SHORT = 0.05
"""Seconds of a lease that runs out within a test."""


async def reserved_by(book: BudgetBook, amount: float) -> list[Hold]:
    holds = book.holds([BUDGET], question(), "m", amount)
    assert await book.reserve(holds) is None
    return holds


async def dead_process(
    store: StateStore,  # noqa: F811
    amount: float,
    seconds: float = SHORT,
) -> list[Hold]:
    """A process that reserves for a request and dies before settling it (nothing renews)."""
    book = BudgetBook(store, leases=LeaseKeeper(store, seconds=seconds))
    holds = await reserved_by(book, amount)
    await book.leases.aclose()
    return holds


async def status(book: BudgetBook) -> BudgetStatus:
    out = await book.status(BUDGET, "all")
    assert out is not None
    return out


async def test_what_a_dead_process_reserved_is_given_back_once_its_lease_expires(
    store: StateStore,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    alive = BudgetBook(store)
    await alive.settle(await reserved_by(alive, 0.25), 0.125)
    before = await status(alive)
    for _ in range(20):
        await dead_process(store, 0.01)
    assert (await status(alive)).reserved == pytest.approx(before.reserved + 0.2)
    await asyncio.sleep(SHORT * 2)
    with caplog.at_level(logging.WARNING, logger="modelyard.budgets"):
        reclaimed = await alive.leases.sweep()
    assert len(reclaimed) == 20
    after = await status(alive)
    assert after.reserved == pytest.approx(before.reserved)
    assert after.spent == pytest.approx(before.spent) == 0.125
    (record,) = caplog.records
    assert "gave back $0.200000 reserved by 20 request(s)" in record.getMessage()
    assert "monthly:all:20" in record.getMessage()


async def test_a_lease_not_yet_expired_is_not_swept(store: StateStore) -> None:  # noqa: F811
    await dead_process(store, 0.25, seconds=600)
    alive = BudgetBook(store)
    assert await alive.leases.sweep() == []
    assert (await status(alive)).reserved == pytest.approx(0.25)


async def test_a_settlement_after_its_lease_was_reclaimed_charges_the_cost_once(
    store: StateStore,  # noqa: F811
) -> None:
    stalled = BudgetBook(store, leases=LeaseKeeper(store, seconds=SHORT))
    holds = await reserved_by(stalled, 0.5)
    await stalled.leases.aclose()  # stalled: nothing renews its lease
    await asyncio.sleep(SHORT * 2)
    other = BudgetBook(store)
    assert len(await other.leases.sweep()) == 1
    assert (await status(other)).reserved == 0
    await stalled.settle(holds, 0.25)
    after = await status(other)
    assert after.spent == pytest.approx(0.25)
    assert after.reserved == pytest.approx(0.0)
    assert await store.counter(holds[0].used_key) == pytest.approx(0.25)


async def test_two_replicas_sweeping_at_once_give_each_reservation_back_once(
    store: StateStore,  # noqa: F811
    twin: StateStore,  # noqa: F811
) -> None:
    for _ in range(30):
        await dead_process(store, 0.01)
    await asyncio.sleep(SHORT * 2)
    first, second = BudgetBook(store), BudgetBook(twin)
    swept = await asyncio.gather(first.leases.sweep(), second.leases.sweep())
    assert sum(len(s) for s in swept) == 30
    assert (await status(first)).reserved == pytest.approx(0.0, abs=1e-12)


async def test_a_live_process_renews_its_leases_past_their_first_expiry(
    store: StateStore,  # noqa: F811
) -> None:
    book = BudgetBook(store, leases=LeaseKeeper(store, seconds=0.4))
    holds = await reserved_by(book, 0.5)
    await asyncio.sleep(0.25)
    await book.leases.renew()
    await asyncio.sleep(0.25)  # past the first expiry, within the renewed one
    other = BudgetBook(store)
    assert await other.leases.sweep() == []
    await book.settle(holds, 0.25)
    assert (await status(other)).reserved == pytest.approx(0.0)
    await book.leases.aclose()


@pytest.mark.redis
async def test_a_settlement_the_store_missed_is_made_when_the_process_stops() -> None:
    relay = TcpRelay("127.0.0.1", 6379)
    relay.restore()
    prefix = unique_prefix()
    shared = PolicyStore(
        RedisStore(f"redis://127.0.0.1:{relay.port}/0", prefix=prefix, timeout=DOWN_TIMEOUT),
        retry_interval=0.01,
    )
    book = BudgetBook(shared)  # its keeper would retry the settlement only in 30 s
    try:
        holds = await reserved_by(book, 0.5)
        relay.cut()
        with pytest.raises(UnavailableError):
            await book.settle(holds, 0.25)
        relay.restore()
        await asyncio.sleep(0.02)
        await book.leases.aclose()  # a gateway stopping (SIGTERM) before that retry
    finally:
        await shared.aclose()
        relay.close()
    direct = RedisStore(REDIS_URL, prefix=prefix)
    try:
        after = await status(BudgetBook(direct))
        assert after.spent == pytest.approx(0.25)
        assert after.reserved == pytest.approx(0.0)
    finally:
        await direct.clear_prefix()
        await direct.aclose()


async def settled_by_the_keeper(book: BudgetBook) -> None:
    """Wait (at most 5 s, far less than a keeper's 30 s round) for the deferred settlements."""
    for _ in range(100):
        if not book.leases._deferred:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the settlement was not retried when the store came back")


async def seen_back(shared: PolicyStore, book: BudgetBook) -> None:
    """Requests' store calls, every 0.1 s (past retry_interval), until one sees it back."""
    for _ in range(50):
        await asyncio.sleep(0.1)
        with contextlib.suppress(UnavailableError):
            await status(book)
        if shared.health().ok:
            return


async def a_lost_release_answer(shared: PolicyStore, relay: TcpRelay, marker: bytes) -> None:
    """Reserve $0.5 and settle it to $0.25 while the release's answer is lost (the store applied
    it); then bring the store back and see it: the one settlement counts once, at once."""
    book = BudgetBook(shared)
    holds = await reserved_by(book, 0.5)
    relay.lose_replies_after(marker)
    await settle_shielded(book, holds, 0.25)  # applied, but the answer never came
    relay.flow()
    await seen_back(shared, book)
    await settled_by_the_keeper(book)
    after = await status(book)
    assert after.spent == pytest.approx(0.25)
    assert after.reserved == pytest.approx(0.0)
    await book.leases.aclose()


@pytest.mark.redis
@pytest.mark.parametrize("on_unavailable", ["local", "fail_closed"])
async def test_a_release_whose_answer_was_lost_counts_once_in_redis(
    on_unavailable: OnUnavailable,
) -> None:
    relay = TcpRelay("127.0.0.1", 6379)
    relay.restore()
    primary = RedisStore(f"redis://127.0.0.1:{relay.port}/0", prefix=unique_prefix(), timeout=1)
    shared = PolicyStore(primary, on_unavailable=on_unavailable, retry_interval=0.05)
    try:
        # Its sha is what is sent.
        await primary._clients.here().script_load(primary._release.script)
        await a_lost_release_answer(shared, relay, primary._release.sha.encode())
    finally:
        relay.flow()
        await primary.clear_prefix()
        await shared.aclose()
        relay.close()


@pytest.mark.postgres
@pytest.mark.parametrize("on_unavailable", ["local", "fail_closed"])
async def test_a_release_whose_answer_was_lost_counts_once_in_postgres(
    on_unavailable: OnUnavailable, postgres_relay: TcpRelay
) -> None:
    url = relayed_postgres(postgres_relay)
    primary = PostgresStore(url, table_prefix="t" + uuid.uuid4().hex[:10] + "_", timeout=1)
    shared = PolicyStore(primary, on_unavailable=on_unavailable, retry_interval=0.05)
    try:
        await a_lost_release_answer(shared, postgres_relay, b"COMMIT")
    finally:
        postgres_relay.flow()
        await primary.drop_tables()
        await shared.aclose()


async def test_a_closed_keeper_stops_listening_for_the_store_coming_back() -> None:
    # A reload that changes `state.hold_lease` replaces the keeper; the old one must not stay
    # reachable from the store (a leak per reload, and a closed keeper woken on recovery).
    listening: list[object] = []

    class Told(MemoryStore):
        def on_recovery(self, listener: Callable[[], None]) -> Callable[[], None]:
            listening.append(listener)
            return lambda: listening.remove(listener)

    told = Told()
    keepers = [LeaseKeeper(told, seconds=s) for s in (60.0, 120.0)]
    assert len(listening) == 2
    for keeper in keepers:
        await keeper.aclose()
    assert listening == []


@pytest.mark.postgres
async def test_a_keeper_tells_an_outage_once_and_its_deferred_settlements_when_back(
    postgres_relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    primary = PostgresStore(
        relayed_postgres(postgres_relay), table_prefix="t" + uuid.uuid4().hex[:10] + "_", timeout=1
    )
    shared = PolicyStore(primary, retry_interval=0.05)
    book = BudgetBook(shared)
    try:
        holds = await reserved_by(book, 0.5)
        postgres_relay.cut()
        with caplog.at_level(logging.INFO, logger="modelyard.budgets"):
            await settle_shielded(book, holds, 0.25)  # deferred (and logged: a request's line)
            for _ in range(3):  # rounds of the keeper while the store is down
                await asyncio.sleep(0.06)
                await book.leases.renew()
            postgres_relay.restore()
            await asyncio.sleep(0.06)
            await status(book)  # a request's store call sees it back: the keeper retries
            await settled_by_the_keeper(book)
        lines = [
            (r.levelname, r.getMessage())
            for r in caplog.records
            if r.name == "modelyard.budgets" and "could not settle" not in r.getMessage()
        ]
        assert len(lines) == 2, lines  # the keeper's first sweep may have been cut too
        (level, began), (_, ended) = lines
        assert level == "ERROR" and began.startswith("budget leases: cannot write, state.url")
        assert "settlement(s) waiting" in began and "retrying every 30 s" in began
        assert "wrote the 1 settlement(s) held back" in ended
        after = await status(book)
        assert (after.spent, after.reserved) == (pytest.approx(0.25), pytest.approx(0.0))
    finally:
        await book.leases.aclose()
        await primary.drop_tables()
        await shared.aclose()


@pytest.mark.postgres
@pytest.mark.parametrize("settled", ["never", "during", "after"])
async def test_a_reservation_whose_answer_was_lost_is_given_back_when_the_store_is_back(
    settled: str, postgres_relay: TcpRelay, caplog: pytest.LogCaptureFixture
) -> None:
    """`never`: refused (fail_closed); `during`, `after` the outage: reserved locally too
    (local), and settled then."""
    primary = PostgresStore(
        relayed_postgres(postgres_relay), table_prefix="t" + uuid.uuid4().hex[:10] + "_", timeout=1
    )
    mode: OnUnavailable = "fail_closed" if settled == "never" else "local"
    shared = PolicyStore(primary, on_unavailable=mode, retry_interval=0.05)
    book = BudgetBook(shared)  # leases of 120 s: none expires within the test
    try:
        await status(book)  # connected, tables made
        holds = book.holds([BUDGET], question(), "m", 0.5)
        postgres_relay.lose_replies_after(b"COMMIT")  # the reservation is made, unanswered
        if settled == "never":
            with pytest.raises(UnavailableError):
                await book.reserve(holds)  # the request is refused
        else:
            assert await book.reserve(holds) is None
        if settled == "during":
            await settle_shielded(book, holds, 0.25)
        postgres_relay.flow()
        with caplog.at_level(logging.WARNING, logger="modelyard.state"):
            await seen_back(shared, book)
        if settled == "after":
            await settle_shielded(book, holds, 0.25)
        after = await status(book)
        assert after.reserved == pytest.approx(0.0)  # not held for the lease's 120 s
        assert after.spent == pytest.approx(0.0 if settled == "never" else 0.25)
        back = [r.getMessage() for r in caplog.records if "reachable again" in r.getMessage()]
        assert back and "1 reservation(s) made as it went down" in back[-1]
        # A request still in flight is carried to the store under a lease of its own.
        carried = 1 if settled == "after" else 0
        assert f"{carried} reservation(s) of requests still in flight were carried" in back[-1]
    finally:
        postgres_relay.flow()
        await book.leases.aclose()
        await primary.drop_tables()
        await shared.aclose()


def test_a_sweep_tells_a_keys_slots_apart_from_dollars() -> None:
    swept = [
        Reclaimed(id="a", amounts=(("budget:total:all:2026-12", 0.25), ("key-slots:k1", 1.0))),
        Reclaimed(id="b", amounts=(("key-slots:k1", 1.0),)),
    ]
    assert reclaimed_message(swept) == (
        "gave back $0.250000 and 2 concurrent slot(s) of virtual keys reserved by 2 request(s) "
        "never settled, whose process stopped renewing their leases (killed outright?): "
        "total:all:2026-12 $0.250000, key k1 2 slot(s)"
    )
    assert reclaimed_message(swept[1:]).startswith("gave back 1 concurrent slot(s) of virtual")


def test_a_keeper_whose_loop_ends_moves_to_a_loop_whose_request_still_holds_a_lease() -> None:
    """Thread a's loop runs the keeper and ends while thread b's request holds its lease: the
    keeping moves to b's loop, so b's lease is still renewed (it would not be until b's next
    reservation, and a long call's lease would run out)."""
    keeper = LeaseKeeper(MemoryStore(), seconds=60.0)
    a_holds, b_holds = threading.Event(), threading.Event()

    async def a() -> None:
        keeper.hold("a-1")
        a_holds.set()
        await asyncio.to_thread(b_holds.wait, 10)
        keeper.drop("a-1")
        await keeper.leave_loop()  # a's loop ends

    async def b() -> bool:
        await asyncio.to_thread(a_holds.wait, 10)
        keeper.hold("b-1")
        b_holds.set()
        for _ in range(1000):  # until a's loop has ended, at most 10 s
            task = keeper._task
            if task is not None and task.get_loop() is asyncio.get_running_loop():
                return True
            await asyncio.sleep(0.01)
        return False

    _, moved = in_threads(a, b)
    asyncio.run(keeper.aclose())
    assert moved


async def test_a_cancel_landing_while_the_store_takes_a_reservation_gives_it_back(
    store: StateStore,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A request cancelled while its worst case is being reserved, the store having taken it:
    # given back as the answer comes, not held until the lease expires (state.hold_lease).
    if isinstance(store, MemoryStore):
        pytest.skip("an in-process store never suspends: no cancel lands mid-reservation")
    book = BudgetBook(store)
    taken, answer = asyncio.Event(), asyncio.Event()
    reserve = store.reserve_or_explain

    async def answered_late(claims: Any, *, lease: Lease | None = None) -> Any:
        outcome = await reserve(claims, lease=lease)
        taken.set()
        await answer.wait()
        return outcome

    monkeypatch.setattr(store, "reserve_or_explain", answered_late)
    try:
        before = await status(book)
        reserving = asyncio.create_task(book.reserve(book.holds([BUDGET], question(), "m", 0.5)))
        await asyncio.wait_for(taken.wait(), 10)
        reserving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(reserving, 10)
        assert (await status(book)).reserved == pytest.approx(before.reserved + 0.5)
        answer.set()
        for _ in range(200):
            if (await status(book)).reserved == pytest.approx(before.reserved):
                break
            await asyncio.sleep(0.05)
        after = await status(book)
        assert after.reserved == pytest.approx(before.reserved)
        assert after.spent == pytest.approx(before.spent)
        assert not book.leases._live
    finally:
        await book.leases.aclose()


async def test_a_keeper_stopping_tells_unsent_slots_apart_from_settlements(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Down(MemoryStore):
        async def release(self, lease: Lease, changes: Sequence[Change]) -> list[float]:
            raise UnavailableError("the store is down", code="state_unavailable")

    keeper = LeaseKeeper(Down())
    keeper.defer("settled", [("budget:total:all:2026-12:used", 0.25, None)])
    keeper.defer("slot", [])  # a key's slot given back: nothing to charge
    keeper.defer("slot-2", [])
    with caplog.at_level(logging.ERROR, logger="modelyard.budgets"):
        await keeper.aclose()
    stopping = [r.getMessage() for r in caplog.records if "stopping with" in r.getMessage()]
    assert stopping == [
        "stopping with 1 budget settlement(s) and 2 release(s) of virtual keys' concurrent "
        "slots (or of reservations whose requests never ran) the state store could not take: "
        "their costs are left out of the budgets (the ledger has them); those stay taken "
        "until their leases expire (state.hold_lease)"
    ]
