"""Providers without explicit prompt-cache markers send the same body whether a request carries
breakpoints or not (OpenAI and Gemini cache prefixes on their own)."""

from __future__ import annotations

import pytest

from modelyard.providers import gemini_wire, openai_wire
from modelyard.providers.wire import WireFormat
from modelyard.types import CacheTtl, ChatRequest, Message, TextPart, Tool, ToolCall


def asked(ttl: CacheTtl | None) -> ChatRequest:
    call = ToolCall(id="t1", name="lookup", arguments="{}", cache=ttl)
    return ChatRequest(
        system="Be brief.",
        system_cache=ttl,
        tools=(Tool(name="lookup", parameters={"type": "object"}, cache=ttl),),
        messages=(
            Message(role="user", content=(TextPart(text="order 7?", cache=ttl),)),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", tool_call_id="t1", content="shipped"),
        ),
        max_tokens=20,
    )


@pytest.mark.parametrize("wire", [openai_wire.WIRE, gemini_wire.WIRE], ids=lambda w: w.name)
def test_breakpoints_leave_the_body_unchanged(wire: WireFormat) -> None:
    plain = wire.to_wire(asked(None), "m", stream=False)
    assert wire.to_wire(asked("5m"), "m", stream=False) == plain
    assert wire.to_wire(asked("1h"), "m", stream=False) == plain
