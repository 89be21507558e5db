"""The official Anthropic SDK through the gateway's /v1/messages to the fake Anthropic upstream:
what Anthropic says about an answer reaches the client as Anthropic says it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.fakes.anthropic_server import FakeAnthropic
from tests.gateway.conftest import CLAUDE_KEY, Running, anthropic_client

COUNTING: Any = [{"role": "user", "content": "one two three four five"}]


@pytest.fixture
def running(serve_gateway: Callable[..., Running], claude_fake: FakeAnthropic) -> Running:
    return serve_gateway(
        text=f"""
providers:
  anthropic: {{type: anthropic, base_url: "{claude_fake.url}", api_key: {CLAUDE_KEY}}}
models:
  claude: {{provider: anthropic, id: claude-haiku-4-5-20251001, price: {{input: 1, output: 5}}}}
systems:
  cached: claude
cache: {{backend: memory}}
"""
    )


def test_a_stop_sequence_that_ended_the_answer_is_named(running: Running) -> None:
    message = anthropic_client(running).messages.create(
        model="claude", max_tokens=100, messages=COUNTING, stop_sequences=["zzz", "three"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "three")
    assert message.content[0].text == "You said: one two "  # type: ignore[union-attr]


def test_a_streamed_answer_names_its_stop_sequence(running: Running) -> None:
    with anthropic_client(running).messages.stream(
        model="claude", max_tokens=100, messages=COUNTING, stop_sequences=["three"]
    ) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "three")


def test_a_cached_answer_keeps_its_stop_sequence(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    client = anthropic_client(running)
    for _ in range(2):  # the second one is a hit
        message = client.messages.create(
            model="cached", max_tokens=100, messages=COUNTING, stop_sequences=["three"]
        )
        assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "three")
    assert len(claude_fake.requests) == 1


def test_an_answer_that_ended_on_its_own_names_no_stop_sequence(running: Running) -> None:
    message = anthropic_client(running).messages.create(
        model="claude", max_tokens=100, messages=COUNTING, stop_sequences=["zzz"]
    )
    assert (message.stop_reason, message.stop_sequence) == ("end_turn", None)


PNG = "iVBORw0KGgo="
CALLED: Any = [
    {"role": "user", "content": "take a screenshot"},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}],
    },
]
SCREENSHOT: Any = {"name": "screenshot", "input_schema": {"type": "object"}}


def test_an_image_in_a_tool_result_reaches_anthropic_in_it(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    # What Claude Code sends when a tool (Read, on a picture) returns an image.
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    result = {
        "type": "tool_result",
        "tool_use_id": "t1",
        "content": [{"type": "text", "text": "here it is"}, image],
    }
    anthropic_client(running).messages.create(
        model="claude",
        max_tokens=50,
        tools=[SCREENSHOT],
        messages=[*CALLED, {"role": "user", "content": [result]}],
    )
    assert claude_fake.requests[-1].json["messages"][-1]["content"] == [result]


def test_a_failed_tool_call_reaches_anthropic_as_an_error(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    # Claude Code marks the result of a tool that failed so; without it the model reads the
    # error as the tool's output.
    result = {"type": "tool_result", "tool_use_id": "t1", "content": "no display", "is_error": True}
    anthropic_client(running).messages.create(
        model="claude",
        max_tokens=50,
        tools=[SCREENSHOT],
        messages=[*CALLED, {"role": "user", "content": [result]}],
    )
    assert claude_fake.requests[-1].json["messages"][-1]["content"] == [result]
