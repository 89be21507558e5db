"""How long Gemini translation takes per call: to_wire, from_wire and one stream event, and a
whole streamed answer through RemoteModel against the fake server at a given concurrency.

    .venv/bin/python bench/bench_gemini_wire.py [--requests 2000] [--concurrency 50]

Prints microseconds per translation and requests per second end to end; the target is that
translation stays far below the network (tens of microseconds, not milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fakes.gemini_server import FakeGemini

import modelyard
from modelyard.providers.gemini_wire import WIRE
from modelyard.providers.sse import Event
from modelyard.streaming import collect
from modelyard.types import ChatRequest, Message, Tool

REQUEST = ChatRequest(
    system="You are a helpful assistant.",
    messages=tuple(
        Message(role="user" if i % 2 == 0 else "assistant", content=f"turn {i} " * 40)
        for i in range(9)
    ),
    tools=(Tool(name="lookup", parameters={"type": "object", "properties": {"q": {}}}),),
    temperature=0.3,
    max_tokens=512,
)
ANSWER = {
    "candidates": [
        {
            "content": {"parts": [{"text": "word " * 200}], "role": "model"},
            "finishReason": "STOP",
            "index": 0,
        }
    ],
    "usageMetadata": {"promptTokenCount": 900, "candidatesTokenCount": 200},
    "modelVersion": "gemini-2.5-flash",
    "responseId": "r",
}
EVENT = Event(
    "message", orjson.dumps({**ANSWER, "candidates": [{**ANSWER["candidates"][0]}]}).decode()
)


def per_call(label: str, function: object, rounds: int = 20000) -> None:
    start = time.perf_counter()
    for _ in range(rounds):
        function()  # type: ignore[operator]
    micros = (time.perf_counter() - start) / rounds * 1e6
    print(f"{label:<28} {micros:8.1f} us/call")


async def end_to_end(requests: int, concurrency: int) -> None:
    fake = FakeGemini(api_key="AIzaSy-bench-key-000000000000000")
    with fake.running(), tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "bench.yaml"
        path.write_text(
            "providers:\n  g:\n    type: gemini\n    api_key: ${KEY}\n"
            f"    base_url: {fake.url}/v1beta\n"
            "models:\n  m:\n    provider: g\n    id: gemini-2.5-flash\n"
            "    price: {input: 0.3, output: 2.5}\n",
            encoding="utf-8",
        )
        async with modelyard.load(path, env={"KEY": "AIzaSy-bench-key-000000000000000"}) as yard:
            semaphore = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with semaphore:
                    await collect(yard.stream("m", "one two three four five six"))

            start = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(requests)))
            elapsed = time.perf_counter() - start
    print(f"streamed answers via fake      {requests / elapsed:8.0f} req/s at c={concurrency}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    args = parser.parse_args()
    per_call("to_wire (9 turns + tool)", lambda: WIRE.to_wire(REQUEST, "m", stream=True))
    per_call("from_wire (200 words)", lambda: WIRE.from_wire(ANSWER))
    per_call("stream event decode", lambda: WIRE.stream_decoder().feed(EVENT))
    asyncio.run(end_to_end(args.requests, args.concurrency))


if __name__ == "__main__":
    main()
