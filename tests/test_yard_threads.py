"""One Yard used from several event loops at once (a threaded web app whose worker threads each
run `asyncio.run`): each loop's calls run on pools of its own, which no other loop closes."""

from __future__ import annotations

import asyncio
import gc
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

import modelyard
from tests.fakes.openai_server import FakeOpenAI
from tests.fakes.server import Fault
from tests.test_yard_loops import KEY, batch, config, spend_rows


def in_threads(*works: Callable[[], Coroutine[Any, Any, Any]]) -> list[Any]:
    """`asyncio.run(work())` for each work in a thread of its own, all at once; their results,
    or the first error one raised."""
    results: list[Any] = [None] * len(works)

    def run(i: int) -> None:
        try:
            results[i] = asyncio.run(works[i]())
        except BaseException as exc:  # handed to the test below
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


@pytest.fixture
def slow() -> Iterator[FakeOpenAI]:
    """The fake API, answering after 30 ms and streaming its events 5 ms apart: calls stay in
    flight long enough for the other thread's calls to start and end meanwhile."""
    with FakeOpenAI(api_key=KEY).running() as fake:
        assert isinstance(fake, FakeOpenAI)
        fake.always(Fault(delay=0.03, chunk_delay=0.005))
        yield fake


def test_two_threads_loops_share_a_yard_at_once_and_every_call_is_recorded_once(
    write_config: Callable[[str], Path], tmp_path: Path, slow: FakeOpenAI, quiet: list[str]
) -> None:
    ledger = tmp_path / "ledger.db"
    yard = modelyard.load(write_config(config(slow, ledger)))
    rounds = threading.Barrier(2)

    def thread(name: str) -> Callable[[], Coroutine[Any, Any, list[str]]]:
        async def work() -> list[str]:
            answers = []
            for number in range(3):
                # Both loops start each round together: their calls are in flight at once.
                await asyncio.to_thread(rounds.wait, 10)
                answers += await batch(yard, number)
            return [a.replace("Echo: batch", name) for a in answers]

        return work

    first, second = in_threads(thread("a"), thread("b"))
    asyncio.run(yard.aclose())
    expected = [f"{{}} {n} {what}" for n in range(3) for what in ("call 0", "call 1", "streamed")]
    assert first == [e.format("a") for e in expected]
    assert second == [e.format("b") for e in expected]
    assert spend_rows(ledger) == 18
    with_uids = yard.built.ledger
    assert with_uids is not None and with_uids.written == 18
    gc.collect()
    assert quiet == []


def test_a_loop_ending_closes_nothing_another_loops_call_still_uses(
    write_config: Callable[[str], Path], tmp_path: Path, slow: FakeOpenAI, quiet: list[str]
) -> None:
    """Thread b's loop ends (closing what it used) while thread a's stream is half read."""
    ledger = tmp_path / "ledger.db"
    yard = modelyard.load(write_config(config(slow, ledger)))
    reading = threading.Event()
    ended = threading.Event()

    async def long_stream() -> str:
        chunks = yard.stream("m", "a long answer " * 20)
        async for chunk in chunks:
            if not reading.is_set():
                reading.set()
                await asyncio.to_thread(ended.wait, 10)
            if chunk.response is not None:
                return chunk.response.text
        raise AssertionError("no final chunk")

    async def short_call() -> str:
        await asyncio.to_thread(reading.wait, 10)
        return (await yard.complete("m", "short")).text

    results: list[Any] = []

    def b() -> None:
        results.append(asyncio.run(short_call()))
        ended.set()  # asyncio.run has returned: b's loop, and what the yard used on it, closed

    thread_b = threading.Thread(target=b)
    thread_b.start()
    (text,) = in_threads(long_stream)
    thread_b.join(10)
    asyncio.run(yard.aclose())
    assert results == ["Echo: short"]
    assert text == "Echo: " + ("a long answer " * 20).strip()
    assert spend_rows(ledger) == 2
    assert quiet == []
