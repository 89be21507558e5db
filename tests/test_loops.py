"""What event loops in different threads share: a semaphore whose waiters sit on any loop."""

from __future__ import annotations

import asyncio
import threading

from modelyard.loops import Slots
from modelyard.resilience.ratelimit import Limiter, RateLimits
from modelyard.state.memory import MemoryStore
from modelyard.types import ChatRequest, user
from tests.test_yard_threads import in_threads


def test_a_concurrency_slot_freed_on_one_loop_wakes_a_call_waiting_on_another() -> None:
    """A provider's max_concurrency holds across threads' loops: thread b waits for the one
    slot thread a holds, and gets it when a gives it back (asyncio.Semaphore bound itself to
    b's loop and woke it from a's thread, which b's loop never noticed)."""
    limiter = Limiter("model:m", RateLimits(max_concurrency=1, max_wait=5.0), MemoryStore())
    request = ChatRequest(messages=(user("hi"),))
    holding = threading.Event()
    taken = threading.Event()
    order: list[str] = []

    async def a() -> None:
        ticket = await limiter.acquire(request, 1)
        order.append("a took it")
        holding.set()
        await asyncio.sleep(0.2)  # b is waiting by now
        order.append("a gives it back")
        limiter.release(ticket)
        # b's loop is woken to take it, not left asleep until its own 5 s timer fires.
        if not await asyncio.to_thread(taken.wait, 2):
            order.append("b still asleep")

    async def b() -> None:
        await asyncio.to_thread(holding.wait, 5)
        ticket = await limiter.acquire(request, 1)
        order.append("b took it")
        taken.set()
        limiter.release(ticket)

    in_threads(a, b)
    assert order == ["a took it", "a gives it back", "b took it"]


async def test_a_waiter_cancelled_as_it_is_handed_the_slot_passes_it_on() -> None:
    slots = Slots(1)
    await slots.acquire()
    first = asyncio.create_task(slots.acquire())
    second = asyncio.create_task(slots.acquire())
    await asyncio.sleep(0)
    slots.release()  # handed to `first`, which is cancelled before it runs
    first.cancel()
    await asyncio.wait_for(second, 1)
    assert slots.locked()
    slots.release()
    assert not slots.locked()
