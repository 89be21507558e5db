"""The request fields Claude Code sends, as each wire format writes them (pure translation):
mid-conversation system messages, effort and context management, and the Anthropic betas the
body needs."""

from __future__ import annotations

import pytest
from tests.fakes.anthropic_server import validate_request

from modelyard.errors import BadRequestError
from modelyard.model import Capabilities
from modelyard.providers import anthropic_wire, gemini_wire, openai_wire
from modelyard.providers.request_fit import (
    CONTEXT_MANAGEMENT_DROPPED,
    HINTS,
    THINKING_DROPPED,
    fit,
)
from modelyard.types import ChatRequest, ContextManagement, ImagePart, Message, Thinking, Tool, user

CONTEXT = ContextManagement(json='{"edits":[{"keep":"all","type":"clear_thinking_20251015"}]}')
MIDDLE = (
    Message(role="system", content="First."),
    Message(role="user", content="hi"),
    Message(role="system", content="Now be brief."),
    Message(role="assistant", content="ok"),
    Message(role="user", content="more"),
)


def test_anthropic_sends_a_system_message_after_the_first_turn_where_it_stands() -> None:
    body = anthropic_wire.to_wire(
        ChatRequest(messages=MIDDLE, system="Top.", max_tokens=10), "claude-opus-4-8", stream=False
    )
    assert body["system"] == "Top.\n\nFirst."
    assert body["messages"] == [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": "Now be brief."},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "more"},
    ]
    assert validate_request(body) is None


def test_anthropic_refuses_an_image_in_a_system_message() -> None:
    image = Message(role="system", content=(ImagePart(url="https://x/y.png"),))
    request = ChatRequest(messages=(MIDDLE[1], image), max_tokens=10)
    with pytest.raises(BadRequestError, match="system"):
        anthropic_wire.to_wire(request, "m", stream=False)


def test_anthropic_sends_effort_and_context_management_with_the_beta_it_needs() -> None:
    request = user("hi", max_tokens=10, effort="max", context_management=CONTEXT)
    body = anthropic_wire.to_wire(request, "claude-opus-4-8", stream=False)
    assert body["output_config"] == {"effort": "max"}
    assert body["context_management"] == {
        "edits": [{"keep": "all", "type": "clear_thinking_20251015"}]
    }
    headers = anthropic_wire.WIRE.body_headers(body)
    assert headers == {"anthropic-beta": anthropic_wire.CONTEXT_MANAGEMENT_BETA}
    assert validate_request(body, betas=frozenset(headers["anthropic-beta"].split(","))) is None
    assert (
        anthropic_wire.WIRE.body_headers(
            anthropic_wire.to_wire(user("hi", max_tokens=1), "m", stream=False)
        )
        == {}
    )


def test_anthropic_asks_for_interleaved_thinking_when_it_thinks_with_tools() -> None:
    tool = Tool(name="Read", parameters={"type": "object"})
    thinking = Thinking(type="adaptive")
    with_tools = anthropic_wire.to_wire(
        user("hi", max_tokens=10, thinking=thinking, tools=(tool,)), "m", stream=False
    )
    without = anthropic_wire.to_wire(
        user("hi", max_tokens=10, thinking=thinking), "m", stream=False
    )
    assert anthropic_wire.beta_names(with_tools) == [anthropic_wire.INTERLEAVED_THINKING_BETA]
    assert anthropic_wire.beta_names(without) == []


def test_openai_keeps_system_messages_in_place_and_takes_effort_over_a_budget() -> None:
    request = ChatRequest(
        messages=MIDDLE,
        effort="xhigh",
        thinking=Thinking(type="enabled", budget_tokens=2000),
        context_management=CONTEXT,
    )
    body = openai_wire.to_wire(request, "o4-mini", stream=False)
    assert [m["role"] for m in body["messages"]] == [
        "system",
        "user",
        "system",
        "assistant",
        "user",
    ]
    assert body["reasoning_effort"] == "xhigh"
    assert "context_management" not in body


def test_gemini_joins_system_messages_into_its_instruction_and_sends_no_effort() -> None:
    request = ChatRequest(messages=MIDDLE, effort="high", context_management=CONTEXT)
    body = gemini_wire.to_wire(request)
    assert body["systemInstruction"] == {"parts": [{"text": "First."}, {"text": "Now be brief."}]}
    assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
    assert "thinkingConfig" not in body.get("generationConfig", {})


def test_a_model_without_system_messages_gets_them_ahead_of_the_first_turn() -> None:
    request = ChatRequest(messages=MIDDLE, effort="low", context_management=CONTEXT)
    moved, dropped = fit(
        request, Capabilities(reasoning=True, system_messages=False), unsent=frozenset()
    )
    assert [m.role for m in moved.messages] == ["system", "system", "user", "assistant", "user"]
    assert (moved.effort, moved.context_management, dropped) == ("low", CONTEXT, {})
    kept, _ = fit(request, Capabilities(system_messages=True), unsent=frozenset())
    assert kept.messages == MIDDLE


def test_what_a_model_cannot_take_is_dropped_and_named() -> None:
    request = ChatRequest(
        messages=MIDDLE[1:2],
        thinking=Thinking(type="adaptive"),
        effort="high",
        context_management=CONTEXT,
    )
    fitted, dropped = fit(request, Capabilities(), unsent=frozenset({"context_management"}))
    assert (fitted.thinking, fitted.effort, fitted.context_management) == (None, None, None)
    assert dropped == {
        "thinking": THINKING_DROPPED,
        "effort": THINKING_DROPPED,
        "context_management": CONTEXT_MANAGEMENT_DROPPED,
    }


def test_a_hint_the_wire_cannot_send_is_named_only_when_the_request_uses_it() -> None:
    picture = ImagePart(url="https://x/y.png", detail="high")
    used = ChatRequest(
        messages=(Message(role="user", content=(picture,), name="ann"),),
        seed=3,
        tools=(Tool(name="f", strict=True),),
    )
    hints = frozenset({"seed", "name", "detail", "strict"})
    _, dropped = fit(used, Capabilities(), unsent=hints)
    assert dropped == {name: HINTS[name][1] for name in ("seed", "name", "detail", "strict")}
    plain = ChatRequest(
        messages=(
            Message(role="user", content=(ImagePart(url="https://x/y.png", detail="auto"),)),
            Message(role="tool", content="ok", tool_call_id="c1", name="f"),
        ),
        tools=(Tool(name="f", strict=False),),
    )
    assert fit(plain, Capabilities(), unsent=hints)[1] == {}
    assert fit(used, Capabilities(), unsent=frozenset())[1] == {}
