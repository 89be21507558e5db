"""CPU cost of the OpenAI wire translation, per request: what the adapter adds to each call.

    .venv/bin/python bench/openai_wire.py [--seconds 2]

Measures, single-threaded: `to_wire` + JSON encoding of a typical request, JSON decoding +
`from_wire` of a typical answer, and decoding a 200-event stream. Prints microseconds per
operation; compare against the gateway's budget of 0.4 ms of CPU per request.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from modelyard.providers.openai_wire import StreamDecoder, from_wire, to_wire
from modelyard.providers.sse import Event
from modelyard.types import ChatRequest, Message, Tool

REQUEST = ChatRequest(
    system="You are a support assistant. Answer briefly.",
    messages=tuple(
        Message(role="user" if i % 2 == 0 else "assistant", content=f"message number {i} " * 20)
        for i in range(6)
    ),
    tools=(
        Tool(name="lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}}),
    ),
    temperature=0.3,
    max_tokens=256,
)
ANSWER = orjson.dumps(
    {
        "id": "chatcmpl-abc",
        "object": "chat.completion",
        "created": 1730000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "word " * 150, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 300, "completion_tokens": 150, "total_tokens": 450},
        "system_fingerprint": "fp_x",
    }
)
CHUNK = {
    "id": "chatcmpl-abc",
    "object": "chat.completion.chunk",
    "created": 1730000000,
    "model": "gpt-4o-mini-2024-07-18",
    "choices": [
        {"index": 0, "delta": {"content": " word"}, "logprobs": None, "finish_reason": None}
    ],
}
STREAM = [Event("message", orjson.dumps(CHUNK).decode()) for _ in range(199)]
STREAM.append(Event("message", "[DONE]"))


def encode() -> None:
    orjson.dumps(to_wire(REQUEST, "gpt-4o-mini", stream=False))


def decode() -> None:
    from_wire(orjson.loads(ANSWER))


def decode_stream() -> None:
    decoder = StreamDecoder()
    for event in STREAM:
        decoder.feed(event)


def measure(function: Callable[[], None], seconds: float) -> float:
    """Microseconds per call, over about `seconds` of repeated calls."""
    count, started = 0, time.process_time()
    while (elapsed := time.process_time() - started) < seconds:
        for _ in range(100):
            function()
        count += 100
    return elapsed / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    seconds = parser.parse_args().seconds
    for name, function in [
        ("to_wire + encode (6 messages, 1 tool)", encode),
        ("decode + from_wire (150-word answer)", decode),
        ("stream decode (200 events)", decode_stream),
    ]:
        print(f"{name:42s} {measure(function, seconds):9.1f} us")


if __name__ == "__main__":
    main()
