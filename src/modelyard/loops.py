"""What one object shares among event loops running at once, each in a thread of its own (a
library yard in a threaded web app whose workers each run `asyncio.run`).

asyncio's own locks, events and connection pools are bound to the loop they were first used
on, and are not thread-safe. Here: `PerLoop`, a value kept for each loop (a pool, a writer
task), closed at its loop's end or, each on its own loop, at once; `Slots`, a semaphore (or,
with one slot, a lock) that tasks of any loop wait on; `on_loop`, which runs a coroutine on
another thread's loop and waits for it; and `ended`, a task cancelled and waited for there.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

Loop = asyncio.AbstractEventLoop

CLOSE_ELSEWHERE = 10.0
"""Seconds to wait for another thread's loop to close what it holds (`on_loop`)."""


class PerLoop(dict[Loop, T]):
    """A value for each event loop (`get(asyncio.get_running_loop())`, a dict look-up, on
    the hot path). `put` forgets the values of loops already closed: one whose end nobody
    watched (a model called directly, not through the yard) does not keep its loop alive."""

    def put(self, loop: Loop, value: T) -> T:
        """Keep `value` for `loop`, and forget closed loops' values."""
        for other in list(self):
            if other.is_closed():
                self.pop(other, None)
        self[loop] = value
        return value

    async def leave(self, close: Callable[[T], Coroutine[Any, Any, object]]) -> None:
        """The running loop is ending: `close` its value, if it has one, and forget it (the
        next use on another loop makes one there)."""
        value = self.pop(asyncio.get_running_loop(), None)
        if value is not None:
            await close(value)

    async def close_all(self, close: Callable[[T], Coroutine[Any, Any, object]]) -> None:
        """`close` every loop's value on its own loop: the running one's here, another
        thread's there (waited for up to `CLOSE_ELSEWHERE` seconds); a closed loop's value is
        only forgotten (what it held went with its loop)."""
        while self:
            loop, value = self.popitem()
            await on_loop(loop, functools.partial(close, value), within=CLOSE_ELSEWHERE)


class Slots:
    """A semaphore whose waiters may run on different event loops (threads): a slot given back
    on one loop wakes a waiter on another through that loop's `call_soon_threadsafe`. With
    one slot it is a lock (`async with`). Waiters are served first come, first served."""

    def __init__(self, count: int = 1) -> None:
        self._free = count
        self._guard = threading.Lock()
        self._waiters: deque[asyncio.Future[None]] = deque()

    def locked(self) -> bool:
        """Whether a slot taken now would have to wait."""
        return self._free <= 0

    async def acquire(self) -> None:
        """Take a slot, waiting for one when none is free."""
        with self._guard:
            if self._free > 0 and not self._waiters:
                self._free -= 1
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
        try:
            await waiter
        except BaseException:  # cancelled: a slot handed over meanwhile goes on to the next
            with self._guard:
                granted = waiter not in self._waiters
                if not granted:
                    self._waiters.remove(waiter)
            if granted:
                self.release()
            raise

    def release(self) -> None:
        """Give a slot back: to the first waiter whose loop still runs, else to the pool."""
        with self._guard:
            while self._waiters:
                waiter = self._waiters.popleft()
                try:
                    waiter.get_loop().call_soon_threadsafe(_wake, waiter)
                except RuntimeError:  # its loop is closed: nobody waits there any more
                    continue
                return
            self._free += 1

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc_info: object) -> None:
        self.release()


async def ended(task: asyncio.Task[Any]) -> None:
    """Cancel `task`, on its own loop (`on_loop`), and wait for it to finish."""
    task.cancel()
    await asyncio.wait([task])


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def on_loop(
    loop: Loop, work: Callable[[], Coroutine[Any, Any, object]], within: float
) -> None:
    """Run `work()` on `loop`, the running one or another thread's, and wait for it up to
    `within` seconds; nothing if that loop is closed. What it raises is raised here."""
    if loop is asyncio.get_running_loop():
        await work()
        return
    if loop.is_closed():
        return
    coroutine = work()
    try:
        done = asyncio.run_coroutine_threadsafe(coroutine, loop)
    except RuntimeError:  # closed meanwhile
        coroutine.close()
        return
    try:
        await asyncio.wait_for(asyncio.wrap_future(done), within)
    except TimeoutError:
        done.cancel()  # that loop is stopped, or stuck: left to close at its own end
