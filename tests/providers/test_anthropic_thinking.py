"""Extended thinking on the Anthropic wire: `thinking` and the history's thinking blocks out, the
answer's thinking blocks in (whole and streamed), checked against the SDK's types; then the
round trip through RemoteModel and the fake Anthropic, which refuses a block sent back altered."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse, Turn
from tests.fakes.anthropic_thinking import redacted_data, sign
from tests.providers.test_anthropic_adapter import WEATHER
from tests.providers.test_anthropic_wire import ask, body, decode, fake_stream, message_json, u

import modelyard
from modelyard.errors import BadRequestError
from modelyard.providers.anthropic_wire import WIRE
from modelyard.streaming import StreamAssembler, collect
from modelyard.types import (
    FinishReason,
    Message,
    RedactedThinkingPart,
    Thinking,
    ThinkingPart,
    ToolCall,
)

BUDGET = Thinking(budget_tokens=2048)
THOUGHT = ThinkingPart(
    text="They want Oslo's weather.", signature=sign("They want Oslo's weather.")
)
HIDDEN = RedactedThinkingPart(data=redacted_data("h1"))


# --- the request ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("thinking", "wire"),
    [
        (BUDGET, {"type": "enabled", "budget_tokens": 2048}),
        (
            Thinking(budget_tokens=4000, display="omitted"),
            {
                "type": "enabled",
                "budget_tokens": 4000,
                "display": "omitted",
            },
        ),
        (Thinking(type="adaptive"), {"type": "adaptive"}),
        (Thinking(type="disabled"), {"type": "disabled"}),
    ],
)
def test_thinking_goes_out_as_the_api_spells_it(thinking: Thinking, wire: dict[str, Any]) -> None:
    assert body(ask(u("hi"), max_tokens=8000, thinking=thinking))["thinking"] == wire


def test_no_thinking_sends_no_thinking_field() -> None:
    assert "thinking" not in body(ask(u("hi")))


def test_enabled_thinking_without_a_budget_is_refused_naming_it() -> None:
    with pytest.raises(BadRequestError, match="budget_tokens"):
        WIRE.to_wire(ask(u("hi"), thinking=Thinking()), "m", stream=False)


def test_history_reasoning_goes_back_unchanged_and_first_in_its_turn() -> None:
    call = ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Oslo"}')
    history = (
        u("weather in Oslo?"),
        Message(
            role="assistant", content="Checking.", tool_calls=(call,), thinking=(THOUGHT, HIDDEN)
        ),
        Message(role="tool", content="12C", tool_call_id="toolu_1"),
    )
    sent = body(ask(*history, max_tokens=8000, thinking=BUDGET, tools=(WEATHER,)))
    assert sent["messages"][1]["content"] == [
        {"type": "thinking", "thinking": THOUGHT.text, "signature": THOUGHT.signature},
        {"type": "redacted_thinking", "data": HIDDEN.data},
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}},
    ]


# --- the answer -------------------------------------------------------------------------------


def test_answer_thinking_and_redacted_blocks_become_the_messages_reasoning() -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "redacted_thinking", "data": "opaque"},
        {"type": "text", "text": "Hello"},
    ]
    message = WIRE.from_wire(message_json(content=content)).choices[0].message
    assert message.thinking == (
        ThinkingPart(text="hmm", signature="sig"),
        RedactedThinkingPart(data="opaque"),
    )
    assert message.text == "Hello"


def test_a_thinking_block_without_its_signature_is_a_bad_response_naming_it() -> None:
    from modelyard.errors import BadResponseError

    answer = message_json()
    answer["content"].insert(0, {"type": "thinking", "thinking": "hmm"})
    with pytest.raises(BadResponseError, match=r"content\[0\]\.signature"):
        WIRE.from_wire(answer)


def test_stream_of_thinking_yields_its_pieces_then_its_signature() -> None:
    events = fake_stream(ask(u("hello there"), max_tokens=4000, thinking=BUDGET))
    kinds = [e.data for e in events if '"thinking_delta"' in e.data or "signature_delta" in e.data]
    assert len(kinds) > 2  # several pieces of thinking, then the signature
    chunks, _ = decode(events)
    pieces = [c.reasoning for c in chunks if c.reasoning is not None]
    thinking = "".join(p.text for p in pieces)
    assert thinking == "Let me think about what they asked."
    assert [p.signature for p in pieces if p.signature] == [sign(thinking)]
    assert "".join(c.text for c in chunks) == "You said: hello there"
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    assert assembler.choices()[0].message.thinking == (
        ThinkingPart(text=thinking, signature=sign(thinking)),
    )


def test_stream_of_a_redacted_block_yields_its_data_whole() -> None:
    turn = Turn(thinking="first", redacted_thinking=True)
    chunks, _ = decode(fake_stream(ask(u("hi"), max_tokens=4000, thinking=BUDGET), turn))
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    first, hidden = assembler.choices()[0].message.thinking
    assert first == ThinkingPart(text="first", signature=sign("first"))
    assert isinstance(hidden, RedactedThinkingPart) and hidden.data


# --- the round trip, against the fake on a socket -------------------------------------------------


def weather_turns(claude_fake: FakeAnthropic) -> None:
    claude_fake.script(
        Turn(
            thinking="They want Oslo's weather.",
            redacted_thinking=True,
            tool_uses=(ToolUse(name="get_weather", input={"city": "Oslo"}),),
        ),
        Turn(text="12C in Oslo."),
    )


@pytest.mark.parametrize("streamed", [False, True])
async def test_a_tool_use_turn_sends_its_reasoning_back_and_the_api_accepts_it(
    claude_yard: modelyard.Yard, claude_fake: FakeAnthropic, streamed: bool
) -> None:
    weather_turns(claude_fake)
    asked: dict[str, Any] = {"tools": (WEATHER,), "thinking": BUDGET}
    question = [u("weather in Oslo?")]
    if streamed:
        first = await collect(claude_yard.stream("sonnet", question, **asked))
    else:
        first = await claude_yard.complete("sonnet", question, **asked)
    assert first.finish_reason is FinishReason.TOOL_CALLS
    assert [type(p) for p in first.message.thinking] == [ThinkingPart, RedactedThinkingPart]
    assert claude_fake.requests[-1].json["thinking"] == {"type": "enabled", "budget_tokens": 2048}
    result = Message(role="tool", content="12C", tool_call_id=first.message.tool_calls[0].id)
    second = await claude_yard.complete("sonnet", [*question, first.message, result], **asked)
    assert second.text == "12C in Oslo."
    sent_back = claude_fake.requests[-1].json["messages"][1]["content"]
    assert [b["type"] for b in sent_back] == ["thinking", "redacted_thinking", "tool_use"]


async def test_a_thinking_block_sent_back_altered_is_the_apis_400(
    claude_yard: modelyard.Yard, claude_fake: FakeAnthropic
) -> None:
    weather_turns(claude_fake)
    asked: dict[str, Any] = {"tools": (WEATHER,), "thinking": BUDGET}
    first = await claude_yard.complete("sonnet", [u("weather in Oslo?")], **asked)
    thought, hidden = first.message.thinking
    assert isinstance(thought, ThinkingPart)
    altered = replace(first.message, thinking=(replace(thought, text="Something else."), hidden))
    result = Message(role="tool", content="12C", tool_call_id=first.message.tool_calls[0].id)
    with pytest.raises(BadRequestError, match="Invalid `signature` in `thinking` block"):
        await claude_yard.complete("sonnet", [u("weather in Oslo?"), altered, result], **asked)


async def test_a_tool_result_after_a_turn_stripped_of_its_reasoning_is_the_apis_400(
    claude_yard: modelyard.Yard, claude_fake: FakeAnthropic
) -> None:
    weather_turns(claude_fake)
    asked: dict[str, Any] = {"tools": (WEATHER,), "thinking": BUDGET}
    first = await claude_yard.complete("sonnet", [u("weather in Oslo?")], **asked)
    stripped = replace(first.message, thinking=())
    result = Message(role="tool", content="12C", tool_call_id=first.message.tool_calls[0].id)
    with pytest.raises(BadRequestError, match="must start with a thinking block"):
        await claude_yard.complete("sonnet", [u("weather in Oslo?"), stripped, result], **asked)


async def test_a_budget_the_api_refuses_is_its_own_400(
    claude_yard: modelyard.Yard, claude_fake: FakeAnthropic
) -> None:
    with pytest.raises(BadRequestError, match="greater than or equal to 1024"):
        await claude_yard.complete("sonnet", "hi", thinking=Thinking(budget_tokens=500))
    with pytest.raises(BadRequestError, match="temperature"):
        await claude_yard.complete("sonnet", "hi", thinking=BUDGET, temperature=0.2)
