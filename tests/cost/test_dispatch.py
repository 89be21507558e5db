"""What a call abandoned before its answer costs: its input once its request was sent, nothing
while it still waited to be (here for the one concurrency slot its limiter allows) — in the
budget a guard settles, and in the ledger's row of a stream the caller left."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable

import pytest

from modelyard.cost import scope as request_scope
from modelyard.cost.accounting import Accounted
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget, BudgetStatus
from modelyard.cost.dispatch import Dispatch, Sender, mark_sent, watching
from modelyard.cost.ledger import Ledger, SpendRow
from modelyard.model import Model
from modelyard.resilience.ratelimit import Limiter, RateLimitModel, RateLimits
from modelyard.state.memory import MemoryStore
from modelyard.streaming import collect
from tests.cost.helpers import guard, priced, question

TOTAL = Budget(name="total", scope="total", limit=1.0)


class Rows(Ledger):
    """A ledger that keeps the rows it is given."""

    def __init__(self) -> None:  # no file: nothing is written
        self.rows: list[SpendRow] = []

    def record(self, rows: list[SpendRow]) -> None:
        self.rows.extend(rows)


def queued() -> tuple[Model, Limiter]:
    """A priced fake behind a limiter of one concurrency slot."""
    limiter = Limiter("model:m", RateLimits(max_concurrency=1), MemoryStore())
    return RateLimitModel(priced(), [limiter]), limiter


async def cancelled_once_reserved(book: BudgetBook, call: Awaitable[object]) -> BudgetStatus:
    """Run `call`, cancel it once it has reserved its worst case, and return the total budget
    after."""
    task = asyncio.ensure_future(call)
    for _ in range(1000):
        status = await book.status(TOTAL, "all")
        assert status is not None
        if status.reserved > 0:
            break
        await asyncio.sleep(0.001)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = await book.status(TOTAL, "all")
    assert status is not None and status.reserved == 0  # no hold is left behind
    return status


async def test_a_call_cancelled_while_waiting_for_its_slot_settles_nothing() -> None:
    book = BudgetBook(MemoryStore())
    inner, limiter = queued()
    request = question()
    held = await limiter.acquire(request, 0)  # another call has the only slot
    status = await cancelled_once_reserved(book, guard(inner, book, TOTAL).complete(request))
    limiter.release(held)
    assert status.spent == 0


async def test_a_stream_left_while_waiting_for_its_slot_costs_nothing_in_budget_or_ledger() -> None:
    book = BudgetBook(MemoryStore())
    inner, limiter = queued()
    ledger = Rows()
    model = Accounted(guard(inner, book, TOTAL), ledger=ledger)
    request = question()
    held = await limiter.acquire(request, 0)
    status = await cancelled_once_reserved(book, collect(model.stream(request)))
    limiter.release(held)
    assert status.spent == 0
    assert [(row.error, row.cost) for row in ledger.rows] == [("client_closed", 0.0)]


async def test_a_stream_left_after_its_request_was_sent_costs_its_input() -> None:
    book = BudgetBook(MemoryStore())
    ledger = Rows()
    model = Accounted(guard(priced(latency=5.0), book, TOTAL), ledger=ledger)
    status = await cancelled_once_reserved(book, collect(model.stream(question())))
    assert status.spent > 0
    [row] = ledger.rows
    assert row.cost == pytest.approx(status.spent)


def test_a_send_marks_every_call_it_runs_under_and_the_request() -> None:
    scope = request_scope.RequestScope(entry="system")
    with request_scope.entered(scope), watching() as outer:
        with watching() as inner:
            pass
        with watching() as sending:
            mark_sent()
    assert sending.sent and outer.sent and scope.sent
    assert not inner.sent


def test_a_sender_marks_its_calls_from_another_thread() -> None:
    # A local model's worker thread says when its job starts.
    dispatch = Dispatch()
    with watching(dispatch):
        sender = Sender()
    thread = threading.Thread(target=sender)
    thread.start()
    thread.join()
    assert dispatch.sent


def test_nothing_is_marked_outside_a_watched_call() -> None:
    mark_sent()  # a call nobody watches: nothing to mark, nothing raised
    assert not Dispatch().sent
