"""CPU cost of the Anthropic Messages translation per request: to_wire (with JSON encoding),
from_wire (from decoded JSON) and decoding a 40-event stream.

    .venv/bin/python bench/anthropic_wire.py [--rounds 20000]

Prints microseconds per call; the gateway's budget for all of its own work is 400 us a request.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import orjson

from modelyard.providers.anthropic_wire import WIRE
from modelyard.providers.sse import Event
from modelyard.types import ChatRequest, Message, Tool, ToolCall

TOOL = Tool(
    name="get_weather",
    description="Current weather in a city.",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
REQUEST = ChatRequest(
    system="You are a helpful assistant.",
    messages=(
        Message(role="user", content="What is the weather in Paris? " * 10),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Paris"}'),),
        ),
        Message(role="tool", content="18C, sunny", tool_call_id="toolu_1"),
        Message(role="user", content="And should I take an umbrella?"),
    ),
    tools=(TOOL,),
    max_tokens=1024,
    temperature=0.3,
)
ANSWER = orjson.loads(
    orjson.dumps(
        {
            "id": "msg_01",
            "type": "message",
            "role": "assistant",
            "model": "claude-haiku-4-5-20251001",
            "content": [{"type": "text", "text": "No umbrella needed today. " * 8}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 120, "output_tokens": 48, "cache_read_input_tokens": 900},
        }
    )
)


def stream_events() -> list[Event]:
    start = {**ANSWER, "content": [], "stop_reason": None}
    events = [
        Event("message_start", orjson.dumps({"type": "message_start", "message": start}).decode()),
        Event(
            "content_block_start",
            '{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}',
        ),
        Event("ping", '{"type":"ping"}'),
    ]
    delta = '{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" word"}}'
    events += [Event("content_block_delta", delta)] * 34
    events += [
        Event("content_block_stop", '{"type":"content_block_stop","index":0}'),
        Event(
            "message_delta",
            '{"type":"message_delta","delta":{"stop_reason":"end_turn"},'
            '"usage":{"output_tokens":34}}',
        ),
        Event("message_stop", '{"type":"message_stop"}'),
    ]
    return events


def per_call_us(work: Callable[[], object], rounds: int) -> float:
    for _ in range(min(1000, rounds)):
        work()
    started = time.perf_counter()
    for _ in range(rounds):
        work()
    return (time.perf_counter() - started) / rounds * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=20000)
    rounds = parser.parse_args().rounds
    events = stream_events()

    def decode_stream() -> None:
        decoder = WIRE.stream_decoder()
        for event in events:
            decoder.feed(event)

    results = {
        "to_wire + orjson.dumps": per_call_us(
            lambda: orjson.dumps(WIRE.to_wire(REQUEST, "claude-haiku-4-5-20251001", stream=True)),
            rounds,
        ),
        "from_wire": per_call_us(lambda: WIRE.from_wire(ANSWER), rounds),
        f"stream decode ({len(events)} events)": per_call_us(decode_stream, rounds // 10 or 1),
    }
    for name, micros in results.items():
        print(f"{name:32s} {micros:8.1f} us")


if __name__ == "__main__":
    main()
