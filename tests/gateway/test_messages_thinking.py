"""Extended thinking through the gateway's /v1/messages, with the official Anthropic SDK: the
`thinking` field reaches an Anthropic upstream, its thinking blocks come back (signature and
all) whole and streamed as Anthropic streams them, and a tool-use conversation sends them back
unchanged, which the fake Anthropic checks as the API does. On an OpenAI model the budget
becomes `reasoning_effort`, or is dropped, said, for a model that does not reason."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent
from pydantic import TypeAdapter
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse, Turn
from tests.fakes.anthropic_thinking import sign
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway.conftest import CLAUDE_KEY, UPSTREAM_KEY, Running, anthropic_client
from tests.gateway.test_keys import record_of

from modelyard.gateway.anthropic_api import parse_messages
from modelyard.providers.remote import THINKING_DROPPED
from modelyard.types import RedactedThinkingPart, Thinking, ThinkingPart

EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)
THINKING: Any = {"type": "enabled", "budget_tokens": 2048}
TOOL: Any = {
    "name": "get_weather",
    "description": "Current weather in a city.",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
QUESTION: Any = [{"role": "user", "content": "weather in Oslo?"}]
DEFAULT_THOUGHT = "Let me think about what they asked."


@pytest.fixture
def running(
    serve_gateway: Callable[..., Running], claude_fake: FakeAnthropic, upstream: FakeOpenAI
) -> Running:
    return serve_gateway(
        text=f"""
providers:
  anthropic: {{type: anthropic, base_url: "{claude_fake.url}", api_key: {CLAUDE_KEY}}}
  oa: {{type: openai, base_url: "{upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
x-price: &price {{input: 3.0, output: 15.0}}
models:
  claude: {{provider: anthropic, id: claude-haiku-4-5-20251001, price: *price}}
  mini: {{provider: oa, id: gpt-4o-mini, price: *price}}
  thinker: {{provider: oa, id: o4-mini, price: *price, capabilities: {{reasoning: true}}}}
"""
    )


def signed_history() -> list[Any]:
    """QUESTION, an assistant turn that thought (signed as the fake Anthropic signs) and asked
    back, and the user's reply."""
    return [
        *QUESTION,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Oslo.", "signature": sign("Oslo.")},
                {"type": "text", "text": "Which unit?"},
            ],
        },
        {"role": "user", "content": "Celsius"},
    ]


def strict(message: SdkMessage) -> SdkMessage:
    """The message re-read with validation (the SDK builds it without)."""
    return SdkMessage.model_validate(message.model_dump(mode="json", exclude_unset=True))


def shape(event: Any) -> tuple[Any, ...]:
    """What a stream event says, without the ids and counts that differ between servers."""
    data = event.model_dump(mode="json", exclude_unset=True)
    kind = data["type"]
    if kind == "content_block_start":
        return (kind, data["index"], data["content_block"])
    if kind == "content_block_delta":
        return (kind, data["index"], data["delta"])
    if kind == "content_block_stop":
        return (kind, data["index"])
    if kind == "message_delta":
        return (kind, data["delta"]["stop_reason"])
    return (kind,)


def test_a_thinking_answer_comes_back_with_its_signed_thinking_block(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    message = strict(
        anthropic_client(running).messages.create(
            model="claude", max_tokens=4096, thinking=THINKING, messages=QUESTION
        )
    )
    assert claude_fake.requests[-1].json["thinking"] == THINKING
    thought, text = message.content
    assert thought.type == "thinking" and text.type == "text"
    assert thought.thinking == DEFAULT_THOUGHT
    assert thought.signature == sign(DEFAULT_THOUGHT)
    assert text.text == "You said: weather in Oslo?"


def test_a_streamed_thinking_answer_is_the_event_sequence_anthropic_sends(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    asked: dict[str, Any] = {"max_tokens": 4096, "thinking": THINKING, "messages": QUESTION}
    ours = list(anthropic_client(running).messages.create(model="claude", stream=True, **asked))
    direct = anthropic.Anthropic(base_url=claude_fake.url, api_key=CLAUDE_KEY, max_retries=0)
    theirs = list(direct.messages.create(model="claude-haiku-4-5-20251001", stream=True, **asked))
    for event in ours:  # every event is one the SDK's own types accept
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))
    assert [shape(e) for e in ours] == [shape(e) for e in theirs if e.type != "ping"]
    deltas = [shape(e)[2]["type"] for e in ours if e.type == "content_block_delta"]
    assert deltas[:2] == ["thinking_delta", "thinking_delta"]
    assert deltas.count("signature_delta") == 1


def test_the_stream_helpers_final_message_holds_the_thinking_block(running: Running) -> None:
    with anthropic_client(running).messages.stream(
        model="claude", max_tokens=4096, thinking=THINKING, messages=QUESTION
    ) as stream:
        thinking = "".join(e.thinking for e in stream if e.type == "thinking")
        final = strict(stream.get_final_message())
    assert thinking == DEFAULT_THOUGHT
    thought = final.content[0]
    assert thought.type == "thinking"
    assert (thought.thinking, thought.signature) == (DEFAULT_THOUGHT, sign(DEFAULT_THOUGHT))
    assert final.content[1].type == "text"


@pytest.mark.parametrize("streamed", [False, True])
def test_a_tool_use_conversation_sends_the_thinking_back_and_anthropic_accepts_it(
    running: Running, claude_fake: FakeAnthropic, streamed: bool
) -> None:
    claude_fake.script(
        Turn(
            thinking="They want Oslo's weather.",
            redacted_thinking=True,
            tool_uses=(ToolUse(name="get_weather", input={"city": "Oslo"}),),
        ),
        Turn(text="12C in Oslo."),
    )
    asked: dict[str, Any] = {"max_tokens": 4096, "thinking": THINKING, "tools": [TOOL]}
    if streamed:
        with anthropic_client(running).messages.stream(
            model="claude", messages=QUESTION, **asked
        ) as s:
            first = s.get_final_message()
    else:
        first = anthropic_client(running).messages.create(
            model="claude", messages=QUESTION, **asked
        )
    assert [b.type for b in first.content] == ["thinking", "redacted_thinking", "tool_use"]
    call = first.content[2]
    assert call.type == "tool_use"
    result = {"type": "tool_result", "tool_use_id": call.id, "content": "12C"}
    conversation = [
        *QUESTION,
        {"role": "assistant", "content": first.content},
        {"role": "user", "content": [result]},
    ]
    second = anthropic_client(running).messages.create(
        model="claude", messages=conversation, **asked
    )
    assert second.content[-1].type == "text" and second.content[-1].text == "12C in Oslo."
    sent_back = claude_fake.requests[-1].json["messages"][1]["content"]
    assert sent_back[:2] == [
        b.model_dump(mode="json", exclude_unset=True) for b in first.content[:2]
    ]


def test_a_thinking_block_sent_back_altered_is_anthropics_400(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    claude_fake.script(Turn(thinking="Oslo.", tool_uses=(ToolUse(name="get_weather"),)))
    asked: dict[str, Any] = {"max_tokens": 4096, "thinking": THINKING, "tools": [TOOL]}
    first = anthropic_client(running).messages.create(model="claude", messages=QUESTION, **asked)
    blocks = [b.model_dump(mode="json", exclude_unset=True) for b in first.content]
    blocks[0]["thinking"] = "Bergen."
    conversation = [
        *QUESTION,
        {"role": "assistant", "content": blocks},
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": blocks[1]["id"], "content": "x"}],
        },
    ]
    with pytest.raises(anthropic.BadRequestError, match="Invalid `signature`"):
        anthropic_client(running).messages.create(model="claude", messages=conversation, **asked)


def test_disabled_thinking_reaches_anthropic_and_a_bad_budget_is_its_400(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    anthropic_client(running).messages.create(
        model="claude", max_tokens=50, thinking={"type": "disabled"}, messages=QUESTION
    )
    assert claude_fake.requests[-1].json["thinking"] == {"type": "disabled"}
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 1024"):
        anthropic_client(running).messages.create(
            model="claude",
            max_tokens=4096,
            thinking={"type": "enabled", "budget_tokens": 500},
            messages=QUESTION,
        )


def test_an_openai_reasoning_model_gets_the_budget_as_reasoning_effort(
    running: Running, upstream: FakeOpenAI
) -> None:
    history = signed_history()
    message = anthropic_client(running).messages.create(
        model="thinker",
        max_tokens=20_000,
        thinking={"type": "enabled", "budget_tokens": 10_000},
        messages=history,
    )
    sent = upstream.requests[-1].json
    assert sent["reasoning_effort"] == "medium"
    # The Anthropic-signed thinking stays behind; the answer has none.
    assert sent["messages"][1] == {
        "role": "assistant",
        "content": [{"type": "text", "text": "Which unit?"}],
    }
    assert [b.type for b in message.content] == ["text"]


def test_an_openai_model_that_does_not_reason_answers_without_it_and_the_log_says_so(
    running: Running, upstream: FakeOpenAI
) -> None:
    raw = anthropic_client(running).messages.with_raw_response.create(
        model="mini", max_tokens=4096, thinking=THINKING, messages=QUESTION
    )
    assert raw.parse().content[0].type == "text"
    assert "reasoning_effort" not in upstream.requests[-1].json
    record = record_of(running, raw.headers["x-request-id"])
    assert record["decision"]["details"]["thinking"] == THINKING_DROPPED  # type: ignore[index]


# --- reading the request ----------------------------------------------------------------------


def parsed(**fields: Any) -> Any:
    body = {"model": "m", "max_tokens": 4096, "messages": QUESTION, **fields}
    return parse_messages(body, max_messages=100).request


@pytest.mark.parametrize(
    ("thinking", "expected"),
    [
        (THINKING, Thinking(budget_tokens=2048)),
        ({**THINKING, "display": "omitted"}, Thinking(budget_tokens=2048, display="omitted")),
        ({"type": "adaptive"}, Thinking(type="adaptive")),
        ({"type": "disabled"}, Thinking(type="disabled")),
    ],
)
def test_the_thinking_field_is_read_as_sent(thinking: Any, expected: Thinking) -> None:
    assert parsed(thinking=thinking).thinking == expected


@pytest.mark.parametrize(
    ("thinking", "named"),
    [
        ({"type": "enabled"}, "thinking.budget_tokens: required"),
        ({"type": "enabled", "budget_tokens": "lots"}, "thinking.budget_tokens: expected an"),
        ({"type": "between_tools"}, "thinking.type: expected"),
        ({"type": "disabled", "budget_tokens": 2048}, "thinking.budget_tokens: not allowed"),
        ({**THINKING, "display": "full"}, "thinking.display: expected"),
    ],
)
def test_a_malformed_thinking_field_is_a_400_naming_it(thinking: Any, named: str) -> None:
    from modelyard.gateway.errors import ApiError

    with pytest.raises(ApiError, match=named) as caught:
        parsed(thinking=thinking)
    assert caught.value.status == 400


def test_history_thinking_blocks_become_the_assistant_messages_reasoning() -> None:
    history = [
        *QUESTION,
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Oslo.", "signature": "s1"},
                {"type": "redacted_thinking", "data": "opaque"},
                {"type": "text", "text": "Which unit?"},
            ],
        },
        {"role": "user", "content": "Celsius"},
    ]
    assistant = parsed(messages=history).messages[1]
    assert assistant.thinking == (
        ThinkingPart(text="Oslo.", signature="s1"),
        RedactedThinkingPart(data="opaque"),
    )
    assert assistant.text == "Which unit?"


def test_a_thinking_block_in_a_user_turn_is_a_400_naming_it() -> None:
    from modelyard.gateway.errors import ApiError

    turn = {"role": "user", "content": [{"type": "thinking", "thinking": "x", "signature": "s"}]}
    with pytest.raises(ApiError, match=r"messages\[0\]\.content\[0\]\.type"):
        parsed(messages=[turn])


def test_chat_completions_clients_get_the_reasoning_as_reasoning_content_and_no_empty_frame(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    import openai

    claude_fake.script(Turn(thinking="one two three four five six", text="the answer"))
    chunks = list(
        openai.OpenAI(base_url=running.openai_url, api_key="anything").chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "the answer"
    # The field compatible servers (DeepSeek, vLLM) stream reasoning in; the signature stays out.
    reasoning = [getattr(c.choices[0].delta, "reasoning_content", None) for c in chunks]
    assert "".join(r or "" for r in reasoning) == "one two three four five six"
    empty = [
        c
        for c in chunks
        if c.choices
        and c.choices[0].delta.model_dump(exclude_none=True) == {}
        and c.choices[0].finish_reason is None
    ]
    assert empty == []


def test_a_count_takes_the_thinking_and_the_historys_blocks_to_anthropic(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    history = signed_history()
    raw = anthropic_client(running).messages.with_raw_response.count_tokens(
        model="claude", thinking=THINKING, messages=history
    )
    assert raw.headers["x-modelyard-token-count"] == "exact" and raw.parse().input_tokens > 0
    sent = claude_fake.requests[-1]
    assert sent.path == "/v1/messages/count_tokens" and sent.json["thinking"] == THINKING
    assert sent.json["messages"][1]["content"][0]["type"] == "thinking"


def test_openai_clients_reasoning_effort_reaches_each_provider_as_its_nearest_level(
    running: Running, upstream: FakeOpenAI, claude_fake: FakeAnthropic
) -> None:
    # Chat Completions' `reasoning_effort` and Responses' `reasoning.effort` had been a 400
    # (unknown field, not honoured): an o-series or gpt-5 client could not set its effort.
    import openai

    oa = openai.OpenAI(base_url=running.openai_url, api_key="anything", max_retries=0)
    asked: Any = QUESTION
    oa.chat.completions.create(model="thinker", messages=asked, reasoning_effort="minimal")
    assert upstream.requests[-1].json["reasoning_effort"] == "minimal"
    oa.chat.completions.create(
        model="claude", messages=asked, reasoning_effort="minimal", max_tokens=100
    )
    assert claude_fake.requests[-1].json["output_config"] == {"effort": "low"}  # its lowest
    response = oa.responses.create(model="thinker", input="hi", reasoning={"effort": "high"})
    assert upstream.requests[-1].json["reasoning_effort"] == "high"
    assert response.reasoning is not None and response.reasoning.effort == "high"
    # Anthropic's `max` is OpenAI's `xhigh`.
    anthropic_client(running).messages.create(
        model="thinker",
        max_tokens=100,
        messages=QUESTION,
        extra_body={"output_config": {"effort": "max"}},
    )
    assert upstream.requests[-1].json["reasoning_effort"] == "xhigh"


@pytest.mark.parametrize(
    ("api", "extra", "field"),
    [
        ("chat", {"reasoning_effort": "max"}, "reasoning_effort"),
        ("responses", {"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ("responses", {"reasoning": {"summary": "auto"}}, "reasoning.summary"),
    ],
)
def test_a_reasoning_effort_openai_does_not_take_is_a_400_naming_it(
    running: Running, api: str, extra: dict[str, Any], field: str
) -> None:
    import openai

    oa = openai.OpenAI(base_url=running.openai_url, api_key="anything", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        if api == "chat":
            oa.chat.completions.create(
                model="thinker", messages=[{"role": "user", "content": "hi"}], extra_body=extra
            )
        else:
            oa.responses.create(model="thinker", input="hi", extra_body=extra)
    assert caught.value.body["param"] == field  # type: ignore[index]
