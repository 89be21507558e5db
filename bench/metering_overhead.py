"""CPU cost of the spend meter (`cost.metering`): what counting one billed call adds, and what
the `Metered` layer around every configured model adds to a call and to each streamed chunk.

    .venv/bin/python bench/metering_overhead.py [--number 200000]

`charge()` is timed with `timeit` inside a request's scope, under 0, 1 and 3 watched calls (a
budget guard, an ensemble member, a deadline each open one), and for a free call (cost 0). The
layer is timed around a leaf that returns a prebuilt answer (or yields prebuilt chunks), bare
and metered, so the difference is the layer's own cost. Best of 5 runs, in nanoseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import timeit
from collections.abc import AsyncIterator

from modelyard.cost import scope as request_scope
from modelyard.cost.dispatch import Dispatch, charge, watching
from modelyard.cost.metering import Metered
from modelyard.model import Model, ModelInfo
from modelyard.types import ChatRequest, ChatResponse, Choice, Chunk, Message, Usage, user

REQUEST = user("How do I reset my password?")
ANSWER = ChatResponse(
    id="x",
    model="leaf",
    provider_model="leaf",
    choices=(Choice(message=Message(role="assistant", content="Open Settings.")),),
    usage=Usage(input_tokens=10, output_tokens=4),
    cost=0.000012,
    created=0,
)
CHUNKS = 100
"""Chunks in a streamed answer (a few hundred tokens, as providers send them)."""


class Prebuilt(Model):
    """A leaf that costs nothing to run: the same answer, or the same chunks, every time."""

    info = ModelInfo(name="leaf", kind="bench")
    _chunks = (*(Chunk(text="word ") for _ in range(CHUNKS)), Chunk(response=ANSWER))

    async def complete(self, request: ChatRequest) -> ChatResponse:
        return ANSWER

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        for chunk in self._chunks:
            yield chunk


def best_ns(cost: float, number: int) -> float:
    """Nanoseconds per `charge(cost)`, the best of 5 repeats of `number` calls (the statement
    is compiled into timeit's loop: no lambda around it). The scope's list of billed calls is
    emptied before each repeat and every 10 calls, as a request of a few calls has it."""
    names = {"charge": charge, "cost": cost, "current": request_scope.current}
    stmt = "charge(cost)\n" * 10 + "scope is None or scope.billed.clear()"
    setup = "scope = current()"
    runs = timeit.repeat(stmt, setup, globals=names, number=number // 10, repeat=5)
    return min(runs) / (number // 10 * 10) * 1e9


def charges(number: int) -> None:
    def show(what: str, cost: float = 1e-6) -> None:
        print(f"charge(), {what + ':':28} {best_ns(cost, number):5.0f} ns")

    scope = request_scope.RequestScope(entry="bench")
    with request_scope.entered(scope):
        show("in a request's scope")
        show("of a free call", 0.0)
        with watching():
            show("under 1 watched call")
            with watching(), watching():
                show("under 3 watched calls")
    show("outside any request")
    assert scope.spent > 0 and Dispatch().spent == 0.0


async def layer(calls: int) -> None:
    bare, metered = Prebuilt(), Metered(Prebuilt())
    scope = request_scope.RequestScope(entry="bench")

    async def completes(model: Model) -> float:
        started = time.perf_counter()
        billed = scope.billed  # emptied as each request's own list is new (both sides pay it)
        for _ in range(calls):
            await model.complete(REQUEST)
            billed.clear()
        return (time.perf_counter() - started) / calls * 1e9

    async def streams(model: Model) -> float:
        started = time.perf_counter()
        for _ in range(calls // CHUNKS):
            async for _chunk in model.stream(REQUEST):
                pass
            scope.billed.clear()
        return (time.perf_counter() - started) / (calls // CHUNKS) / (CHUNKS + 1) * 1e9

    with request_scope.entered(scope), watching():
        for name, measure in (("a whole call", completes), ("a streamed chunk", streams)):
            plain = min([await measure(bare) for _ in range(5)])
            wrapped = min([await measure(metered) for _ in range(5)])
            print(
                f"Metered, {name + ':':18} bare {plain:6.0f} ns, metered {wrapped:6.0f} ns, "
                f"+{wrapped - plain:.0f} ns"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=200_000)
    number = parser.parse_args().number
    charges(number)
    asyncio.run(layer(number))


if __name__ == "__main__":
    main()
