"""The Anthropic Messages wire format, as pure translation, checked against the official SDK's
types; and the fake Anthropic server, checked against the official SDK client."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import Message as SdkMessage
from anthropic.types import RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from pydantic import TypeAdapter
from tests.fakes.anthropic_server import (
    ERROR_TYPES,
    FakeAnthropic,
    ToolUse,
    Turn,
    quota_headers,
    validate_request,
)

from modelyard.cost.prices import Price
from modelyard.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContentFilteredError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitedError,
    UnavailableError,
)
from modelyard.providers.anthropic_answer import JSON_TOOL, STOP_REASONS, finish_reason
from modelyard.providers.anthropic_errors import error_to_wire
from modelyard.providers.anthropic_wire import WIRE
from modelyard.providers.sse import Event, EventParser
from modelyard.streaming import StreamAssembler
from modelyard.types import (
    ChatRequest,
    Chunk,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
)

WEATHER = Tool(
    name="get_weather",
    description="Current weather in a city.",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
    },
)
PNG = "iVBORw0KGgo="
EVENTS = TypeAdapter(RawMessageStreamEvent)


def ask(*messages: Message, **fields: Any) -> ChatRequest:
    fields.setdefault("max_tokens", 256)
    return ChatRequest(messages=messages, **fields)


def u(text: str) -> Message:
    return Message(role="user", content=text)


def body(request: ChatRequest, *, stream: bool = False) -> dict[str, Any]:
    out = WIRE.to_wire(request, "claude-test-1", stream=stream)
    problem = validate_request(out)
    assert problem is None, problem
    return out


# --- the request ------------------------------------------------------------------------------


def test_url_is_v1_messages_and_a_base_ending_in_v1_is_not_doubled() -> None:
    assert WIRE.url("https://api.anthropic.com", "m", stream=False) == (
        "https://api.anthropic.com/v1/messages"
    )
    assert WIRE.url("https://proxy.example/v1/", "m", stream=True) == (
        "https://proxy.example/v1/messages"
    )


def test_headers_pin_the_api_version_and_carry_the_key_in_x_api_key() -> None:
    assert WIRE.default_headers()["anthropic-version"] == "2023-06-01"
    assert WIRE.auth_headers("k-123") == {"x-api-key": "k-123"}
    assert WIRE.requires_max_tokens is True


def test_plain_request_matches_the_sdk_types_streaming_or_not() -> None:
    assert body(ask(u("hi"))) == {
        "model": "claude-test-1",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "hi"}],
    }
    assert body(ask(u("hi")), stream=True)["stream"] is True


def test_system_prompt_and_system_messages_join_into_the_top_level_system() -> None:
    request = ask(Message(role="system", content="Be brief."), u("hi"), system="You are kind.")
    out = body(request)
    assert out["system"] == "You are kind.\n\nBe brief."
    assert [m["role"] for m in out["messages"]] == ["user"]


def test_data_uri_image_becomes_a_base64_source_and_a_url_a_url_source() -> None:
    content = (
        TextPart(text="what is this?"),
        ImagePart(url=f"data:image/png;base64,{PNG}"),
        ImagePart(url="https://example.com/cat.jpg"),
    )
    out = body(ask(Message(role="user", content=content)))
    blocks = out["messages"][0]["content"]
    assert blocks[1] == {
        "type": "image",
        "source": {"type": "base64", "media_type": "image/png", "data": PNG},
    }
    assert blocks[2] == {
        "type": "image",
        "source": {"type": "url", "url": "https://example.com/cat.jpg"},
    }


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("data:image/tiff;base64,AAAA", "image/tiff"),
        ("data:image/png,rawbytes", "base64"),
        ("data:image/png;base64,not base64!", "not valid base64"),
        ("ftp://example.com/a.png", "http(s) URL"),
    ],
)
def test_images_anthropic_cannot_take_are_refused_naming_the_part(url: str, says: str) -> None:
    request = ask(Message(role="user", content=(ImagePart(url=url),)))
    with pytest.raises(BadRequestError) as caught:
        WIRE.to_wire(request, "m", stream=False)
    assert says in caught.value.message and "messages[0].content[0]" in caught.value.message


def conversation_with_tools() -> tuple[Message, ...]:
    return (
        u("Weather in Paris and Oslo?"),
        Message(
            role="assistant",
            content="Checking.",
            tool_calls=(
                ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),
                ToolCall(id="toolu_2", name="get_weather", arguments='{"city": "Oslo"}'),
            ),
        ),
        Message(role="tool", content="18C", tool_call_id="toolu_1"),
        Message(role="tool", content="4C", tool_call_id="toolu_2"),
        u("And tomorrow?"),
    )


def test_assistant_tool_calls_become_tool_use_blocks_with_parsed_input() -> None:
    out = body(ask(*conversation_with_tools(), tools=(WEATHER,)))
    assistant = out["messages"][1]
    assert assistant["content"][0] == {"type": "text", "text": "Checking."}
    assert assistant["content"][1] == {
        "type": "tool_use",
        "id": "toolu_1",
        "name": "get_weather",
        "input": {"city": "Paris"},
    }


def test_consecutive_tool_results_and_the_next_user_text_share_one_user_turn() -> None:
    out = body(ask(*conversation_with_tools(), tools=(WEATHER,)))
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]
    assert out["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "4C"},
        {"type": "text", "text": "And tomorrow?"},
    ]


def test_tool_results_are_moved_before_text_in_a_merged_user_turn() -> None:
    messages = (
        u("Weather?"),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="t1", name="get_weather", arguments='{"city": "Rome"}'),),
        ),
        u("(tool running)"),
        Message(role="tool", content="20C", tool_call_id="t1"),
    )
    out = body(ask(*messages, tools=(WEATHER,)))
    assert [b["type"] for b in out["messages"][2]["content"]] == ["tool_result", "text"]


def test_tool_result_with_an_image_keeps_its_blocks() -> None:
    call = ToolCall(id="t1", name="screenshot", arguments="")
    result = Message(
        role="tool",
        content=(TextPart(text="here"), ImagePart(url=f"data:image/png;base64,{PNG}")),
        tool_call_id="t1",
    )
    out = body(ask(u("look"), Message(role="assistant", tool_calls=(call,)), result))
    assert out["messages"][1]["content"][0]["input"] == {}
    block = out["messages"][2]["content"][0]
    assert [b["type"] for b in block["content"]] == ["text", "image"]


def test_malformed_tool_call_arguments_are_refused_naming_the_call() -> None:
    bad = Message(
        role="assistant",
        tool_calls=(ToolCall(id="toolu_9", name="get_weather", arguments='{"city": '),),
    )
    with pytest.raises(BadRequestError) as caught:
        WIRE.to_wire(ask(u("hi"), bad), "m", stream=False)
    assert "toolu_9" in caught.value.message and "get_weather" in caught.value.message


def test_tool_message_without_its_call_id_is_refused() -> None:
    with pytest.raises(BadRequestError, match="tool_call_id"):
        WIRE.to_wire(ask(u("hi"), Message(role="tool", content="x")), "m", stream=False)


def test_consecutive_same_role_messages_merge_into_one_turn() -> None:
    out = body(ask(u("one"), u("two"), Message(role="assistant", content="ok"), u("three")))
    assert out["messages"][0]["content"] == [
        {"type": "text", "text": "one"},
        {"type": "text", "text": "two"},
    ]
    assert [m["role"] for m in out["messages"]] == ["user", "assistant", "user"]


def test_trailing_assistant_message_is_sent_as_prefill_without_trailing_space() -> None:
    out = body(ask(u("Give me JSON"), Message(role="assistant", content='{"answer": ')))
    assert out["messages"][-1] == {"role": "assistant", "content": '{"answer":'}


def test_empty_user_message_is_refused_naming_it() -> None:
    with pytest.raises(BadRequestError, match=r"messages\[2\]"):
        WIRE.to_wire(ask(u("hi"), Message(role="assistant", content="x"), u("")), "m", stream=False)


def test_tools_carry_name_description_and_input_schema() -> None:
    out = body(ask(u("hi"), tools=(WEATHER, Tool(name="now"))))
    assert out["tools"] == [
        {
            "name": "get_weather",
            "description": "Current weather in a city.",
            "input_schema": dict(WEATHER.parameters),
        },
        {"name": "now", "input_schema": {"type": "object", "properties": {}}},
    ]


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", {"type": "auto"}),
        ("none", {"type": "none"}),
        ("required", {"type": "any"}),
        ("get_weather", {"type": "tool", "name": "get_weather"}),
    ],
)
def test_tool_choice_maps_onto_anthropic_kinds(choice: str, wire: dict[str, Any]) -> None:
    assert body(ask(u("hi"), tools=(WEATHER,), tool_choice=choice))["tool_choice"] == wire


def test_no_parallel_tool_calls_sets_disable_parallel_tool_use() -> None:
    out = body(ask(u("hi"), tools=(WEATHER,), tool_choice="required", parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    out = body(ask(u("hi"), tools=(WEATHER,), parallel_tool_calls=False))
    assert out["tool_choice"] == {"type": "auto", "disable_parallel_tool_use": True}


def test_tool_choice_naming_an_unknown_tool_is_refused() -> None:
    with pytest.raises(BadRequestError, match="not among the request's tools"):
        WIRE.to_wire(ask(u("hi"), tools=(WEATHER,), tool_choice="get_time"), "m", stream=False)


def test_sampling_stop_sequences_and_user_id_are_sent() -> None:
    request = ask(
        u("hi"),
        temperature=0.2,
        top_p=0.9,
        stop=("END", "\n\n"),
        metadata={"user_id": "user-7", "team": "x"},
        seed=4,
    )
    out = body(request)
    assert out["temperature"] == 0.2 and out["top_p"] == 0.9
    assert out["stop_sequences"] == ["END", "\n\n"]
    assert out["metadata"] == {"user_id": "user-7"}
    assert "seed" not in out


@pytest.mark.parametrize(
    "metadata",
    [{"safety_identifier": "u-7"}, {"user": "u-7"}, {"user": "other", "user_id": "u-7"}],
)
def test_an_openai_callers_end_user_goes_out_as_user_id(metadata: dict[str, str]) -> None:
    assert body(ask(u("hi"), metadata=metadata))["metadata"] == {"user_id": "u-7"}


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"n": 2}, "n=2"),
        ({"logprobs": True}, "logprobs"),
        ({"max_tokens": None}, "max_tokens"),
        ({"temperature": 1.5}, "temperature=1.5"),
    ],
)
def test_what_the_api_cannot_do_is_refused_saying_so(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(BadRequestError) as caught:
        WIRE.to_wire(ask(u("hi"), **fields), "m", stream=False)
    assert says in caught.value.message


SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
}


def test_json_schema_is_a_forced_tool_call_whose_input_schema_is_the_schema() -> None:
    fmt = ResponseFormat(type="json_schema", schema=SCHEMA, name="person")
    out = body(ask(u("Who?"), response_format=fmt))
    assert out["tools"][0]["name"] == JSON_TOOL
    assert out["tools"][0]["input_schema"] == SCHEMA
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_json_object_forces_a_tool_taking_any_object() -> None:
    out = body(ask(u("Who?"), response_format=ResponseFormat(type="json_object")))
    assert out["tools"] == [{**out["tools"][0], "input_schema": {"type": "object"}}]
    assert out["tool_choice"] == {"type": "tool", "name": JSON_TOOL}


def test_json_mode_with_own_tools_lets_the_model_call_any_tool() -> None:
    fmt = ResponseFormat(type="json_schema", schema=SCHEMA)
    out = body(ask(u("Who?"), tools=(WEATHER,), response_format=fmt))
    assert [t["name"] for t in out["tools"]] == ["get_weather", JSON_TOOL]
    assert out["tool_choice"] == {"type": "any"}


def test_json_schema_for_an_array_is_refused_not_wrapped() -> None:
    fmt = ResponseFormat(type="json_schema", schema={"type": "array", "items": {}})
    with pytest.raises(BadRequestError, match="must be an object"):
        WIRE.to_wire(ask(u("hi"), response_format=fmt), "m", stream=False)


def test_a_tool_named_like_the_json_tool_is_refused_in_json_mode() -> None:
    fmt = ResponseFormat(type="json_object")
    with pytest.raises(BadRequestError, match="reserved"):
        WIRE.to_wire(
            ask(u("hi"), tools=(Tool(name=JSON_TOOL),), response_format=fmt), "m", stream=False
        )


def test_cache_breakpoints_become_cache_control_on_the_same_blocks() -> None:
    request = ask(
        Message(role="system", content="Be brief."),
        Message(role="user", content=(TextPart(text="the manual", cache="1h"), TextPart(text="q"))),
        Message(
            role="assistant",
            content="looking",
            tool_calls=(ToolCall(id="t1", name="get_weather", arguments="{}", cache="1h"),),
        ),
        Message(role="tool", tool_call_id="t1", content=(TextPart(text="sunny", cache="5m"),)),
        u("and tomorrow?"),
        system="You are kind.",
        system_cache="1h",
    )
    out = body(request)
    hour, five = {"type": "ephemeral", "ttl": "1h"}, {"type": "ephemeral"}
    assert out["system"] == [
        {"type": "text", "text": "You are kind.", "cache_control": hour},
        {"type": "text", "text": "Be brief."},
    ]
    user, assistant, result = out["messages"]
    assert user["content"][0] == {"type": "text", "text": "the manual", "cache_control": hour}
    assert "cache_control" not in user["content"][1]
    assert assistant["content"][1]["cache_control"] == hour
    assert result["content"][0]["content"] == [
        {"type": "text", "text": "sunny", "cache_control": five}
    ]
    assert result["content"][1] == {"type": "text", "text": "and tomorrow?"}


def test_a_tool_breakpoint_is_sent_on_its_definition_and_a_fifth_is_refused_upstream() -> None:
    tool = Tool(name="get_weather", parameters=WEATHER.parameters, cache="1h")
    out = body(ask(u("hi"), tools=(tool,)))
    assert out["tools"][0]["cache_control"] == {"type": "ephemeral", "ttl": "1h"}
    marked = tuple(TextPart(text=f"part {i}", cache="5m") for i in range(4))
    over = WIRE.to_wire(ask(Message(role="user", content=marked), tools=(tool,)), "m", stream=False)
    assert validate_request(over) == (
        "A maximum of 4 blocks with cache_control may be provided. Found 5."
    )


def test_a_marked_lone_text_block_is_not_folded_into_a_string_even_as_prefill() -> None:
    marked = (TextPart(text="hi", cache="5m"),)
    out = body(ask(Message(role="user", content=marked), Message(role="assistant", content=marked)))
    block = {"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}
    assert [m["content"] for m in out["messages"]] == [[block], [block]]


def test_without_breakpoints_the_system_prompt_stays_a_string() -> None:
    assert body(ask(u("hi"), system="You are kind."))["system"] == "You are kind."


# --- the answer -------------------------------------------------------------------------------


def message_json(**overrides: Any) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": "msg_01",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-1-20260101",
        "content": [{"type": "text", "text": "Hello"}],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": {"input_tokens": 10, "output_tokens": 3},
    }
    out.update(overrides)
    SdkMessage.model_validate(out)  # every answer we test is one the real API could send
    return out


def test_answer_text_blocks_join_and_thinking_is_left_out() -> None:
    content = [
        {"type": "thinking", "thinking": "hmm", "signature": "sig"},
        {"type": "text", "text": "Hello, "},
        {"type": "text", "text": "world"},
    ]
    parsed = WIRE.from_wire(message_json(content=content))
    assert parsed.choices[0].message.text == "Hello, world"
    assert parsed.id == "msg_01" and parsed.provider_model == "claude-test-1-20260101"


def test_answer_tool_use_becomes_a_tool_call_with_json_arguments() -> None:
    content = [
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Oslo"}}
    ]
    parsed = WIRE.from_wire(message_json(content=content, stop_reason="tool_use"))
    choice = parsed.choices[0]
    assert choice.message.tool_calls == (
        ToolCall(id="toolu_1", name="get_weather", arguments='{"city":"Oslo"}'),
    )
    assert choice.finish_reason is FinishReason.TOOL_CALLS


def test_json_answer_tool_call_reads_back_as_text_with_a_stop() -> None:
    content = [{"type": "tool_use", "id": "toolu_1", "name": JSON_TOOL, "input": {"name": "Ada"}}]
    parsed = WIRE.from_wire(message_json(content=content, stop_reason="tool_use"))
    assert parsed.choices[0].message.text == '{"name":"Ada"}'
    assert parsed.choices[0].message.tool_calls == ()
    assert parsed.choices[0].finish_reason is FinishReason.STOP


@pytest.mark.parametrize(
    ("stop_reason", "finish"),
    [
        ("end_turn", FinishReason.STOP),
        ("stop_sequence", FinishReason.STOP),
        ("max_tokens", FinishReason.LENGTH),
        ("model_context_window_exceeded", FinishReason.LENGTH),
        ("refusal", FinishReason.CONTENT_FILTER),
        ("pause_turn", FinishReason.LENGTH),
    ],
)
def test_stop_reasons_map_onto_finish_reasons(stop_reason: str, finish: FinishReason) -> None:
    assert WIRE.from_wire(message_json(stop_reason=stop_reason)).choices[0].finish_reason is finish


def test_unknown_stop_reason_is_a_bad_response_naming_it() -> None:
    answer = message_json()
    answer["stop_reason"] = "sleepy"
    with pytest.raises(BadResponseError, match="sleepy"):
        WIRE.from_wire(answer)


def test_usage_input_counts_cache_reads_and_writes_and_bills_reads_at_the_cached_price() -> None:
    usage_json = {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_input_tokens": 1000,
        "cache_creation_input_tokens": 200,
    }
    usage = WIRE.from_wire(message_json(usage=usage_json)).usage
    assert (usage.input_tokens, usage.cached_tokens, usage.output_tokens) == (1300, 1000, 50)
    assert usage.cache_write_tokens == 200
    price = Price(input=3.0, output=15.0, cached_input=0.3)
    assert price.cost(usage) == pytest.approx((300 * 3.0 + 1000 * 0.3 + 50 * 15.0) / 1e6)
    # Cache writes are billed above the input price (1.25x for the 5-minute cache).
    writes = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75)
    assert writes.cost(usage) == pytest.approx(
        (100 * 3.0 + 200 * 3.75 + 1000 * 0.3 + 50 * 15.0) / 1e6
    )


def test_writes_to_the_1_hour_cache_are_billed_at_their_own_rate() -> None:
    usage_json = {
        "input_tokens": 100,
        "output_tokens": 50,
        "cache_read_input_tokens": 0,
        "cache_creation_input_tokens": 1000,
        "cache_creation": {"ephemeral_5m_input_tokens": 400, "ephemeral_1h_input_tokens": 600},
    }
    usage = WIRE.from_wire(message_json(usage=usage_json)).usage
    assert (usage.cache_write_tokens, usage.cache_write_1h_tokens) == (1000, 600)
    price = Price(input=3.0, output=15.0, cache_write=3.75, cache_write_1h=6.0)
    assert price.cost(usage) == pytest.approx(
        (100 * 3.0 + 400 * 3.75 + 600 * 6.0 + 50 * 15.0) / 1e6
    )
    # Without a 1-hour rate, every write is billed at `cache_write`.
    single = Price(input=3.0, output=15.0, cache_write=3.75)
    assert single.cost(usage) == pytest.approx((100 * 3.0 + 1000 * 3.75 + 50 * 15.0) / 1e6)
    assert price.dearest_input == 6.0


def test_a_malformed_cache_creation_count_is_a_bad_response_naming_it() -> None:
    answer = message_json()
    answer["usage"]["cache_creation"] = {"ephemeral_1h_input_tokens": "ten"}
    with pytest.raises(BadResponseError, match=r"usage\.cache_creation\.ephemeral_1h_input"):
        WIRE.from_wire(answer)


@pytest.mark.parametrize("missing", ["id", "model", "content", "usage"])
def test_answer_missing_a_field_is_a_bad_response_naming_it(missing: str) -> None:
    answer = message_json()
    del answer[missing]
    with pytest.raises(BadResponseError, match=f"message.{missing}"):
        WIRE.from_wire(answer)


def test_error_body_with_status_200_raises_its_error() -> None:
    with pytest.raises(OverloadedError):
        WIRE.from_wire({"type": "error", "error": {"type": "overloaded_error", "message": "x"}})


# --- the stream -------------------------------------------------------------------------------


def fake_stream(request: ChatRequest, *turns: Turn) -> list[Event]:
    """The events the fake server would stream for `request`, parsed, each checked against the
    SDK's stream event types."""
    fake = FakeAnthropic()
    fake.script(*turns)
    content, final = fake.events("messages", None, WIRE.to_wire(request, "claude-t", stream=True))  # type: ignore[arg-type]
    parser = EventParser()
    events = []
    for frame in content + final:
        for line in frame.splitlines(keepends=True):
            event = parser.feed(line)
            if event is not None:
                events.append(event)
    for event in events:
        data = orjson.loads(event.data)
        assert data["type"] == event.event
        if event.event == "error":
            ErrorResponse.model_validate(data)
        elif event.event != "ping":
            EVENTS.validate_python(data)
    return events


def decode(events: list[Event]) -> tuple[list[Chunk], Any]:
    decoder = WIRE.stream_decoder()
    chunks = [chunk for event in events for chunk in decoder.feed(event)]
    return chunks, decoder


def test_stream_of_text_yields_deltas_a_finish_and_usage() -> None:
    events = fake_stream(ask(u("hello there")))
    assert [e.event for e in events][:3] == ["message_start", "content_block_start", "ping"]
    chunks, decoder = decode(events)
    assert "".join(c.text for c in chunks) == "You said: hello there"
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert decoder.done and decoder.response_id.startswith("msg_")
    assert decoder.provider_model == "claude-t"
    assert decoder.usage.output_tokens == 4


def test_stream_of_tool_use_assembles_into_the_tool_call() -> None:
    turn = Turn(tool_uses=(ToolUse(name="get_weather", input={"city": "Oslo", "unit": "c"}),))
    chunks, _ = decode(fake_stream(ask(u("weather"), tools=(WEATHER,)), turn))
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    choice = assembler.choices()[0]
    assert choice.message.tool_calls[0].name == "get_weather"
    assert orjson.loads(choice.message.tool_calls[0].arguments) == {"city": "Oslo", "unit": "c"}
    assert choice.finish_reason is FinishReason.TOOL_CALLS


def test_stream_of_a_tool_called_without_arguments_gives_an_empty_object() -> None:
    # The API streams only an empty piece of input JSON; the whole answer says `"input": {}`.
    turn = Turn(tool_uses=(ToolUse(name="get_time", input={}),))
    assembler = StreamAssembler()
    for chunk in decode(fake_stream(ask(u("time?"), tools=(Tool(name="get_time"),)), turn))[0]:
        assembler.add(chunk)
    assert assembler.choices()[0].message.tool_calls[0].arguments == "{}"


def test_stream_of_a_tool_whose_start_carries_its_input_keeps_that_input() -> None:
    # Some Anthropic-compatible servers send the whole input in content_block_start.
    block = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "A"}}
    decoder = WIRE.stream_decoder()
    events = [
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_stop", "index": 0},
    ]
    chunks = [c for e in events for c in decoder.feed(Event(e["type"], orjson.dumps(e).decode()))]
    assert "".join(d.arguments for c in chunks for d in c.tool_calls) == '{"city":"A"}'


def test_stream_indexes_tool_calls_by_tool_block_order_skipping_text_and_thinking() -> None:
    turn = Turn(
        thinking="let me see",
        text="Checking both.",
        tool_uses=(
            ToolUse(name="get_weather", input={"city": "A"}),
            ToolUse(name="get_weather", input={"city": "B"}),
        ),
    )
    chunks, _ = decode(fake_stream(ask(u("weather"), tools=(WEATHER,)), turn))
    starts = [d for c in chunks for d in c.tool_calls if d.id]
    assert [d.index for d in starts] == [0, 1]
    assert "".join(c.text for c in chunks) == "Checking both."


def test_stream_of_a_json_answer_is_text() -> None:
    fmt = ResponseFormat(type="json_schema", schema=SCHEMA)
    chunks, _ = decode(fake_stream(ask(u("who"), response_format=fmt)))
    assert orjson.loads("".join(c.text for c in chunks)) == {"name": "text", "age": 1}
    assert chunks[-1].finish_reason is FinishReason.STOP


def test_stream_error_event_raises_its_error_class() -> None:
    events = fake_stream(ask(u("hi")), Turn(error_after=4))
    assert events[-1].event == "error"
    with pytest.raises(OverloadedError):
        decode(events)


def test_stream_ignores_pings_and_event_types_it_does_not_know() -> None:
    decoder = WIRE.stream_decoder()
    assert decoder.feed(Event("ping", '{"type": "ping"}')) == ()
    assert decoder.feed(Event("novelty", '{"type": "novelty", "x": 1}')) == ()


def test_stream_event_that_is_not_json_is_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match="not JSON"):
        WIRE.stream_decoder().feed(Event("message", "{this is not json"))


def test_stream_delta_for_a_block_that_never_started_is_a_bad_response() -> None:
    delta = (
        '{"type": "content_block_delta", "index": 3, "delta": {"type": "text_delta", "text": "x"}}'
    )
    with pytest.raises(BadResponseError, match="never started"):
        WIRE.stream_decoder().feed(Event("content_block_delta", delta))


def test_stream_usage_adds_cache_reads_from_message_start_to_message_delta_output() -> None:
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "m",
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 5, "output_tokens": 1, "cache_read_input_tokens": 90},
        },
    }
    delta = {
        "type": "message_delta",
        "delta": {"stop_reason": "end_turn"},
        "usage": {"output_tokens": 7},
    }
    decoder = WIRE.stream_decoder()
    for data in (start, delta):
        EVENTS.validate_python(data)
        decoder.feed(Event(data["type"], orjson.dumps(data).decode()))
    assert decoder.usage is not None
    assert (decoder.usage.input_tokens, decoder.usage.cached_tokens) == (95, 90)
    assert decoder.usage.output_tokens == 7
    assert not decoder.done


# --- errors -----------------------------------------------------------------------------------


def error_json(status: int, error_type: str | None = None, message: str | None = None) -> bytes:
    payload = FakeAnthropic().error_body(status, error_type, message)
    if payload["error"]["type"] != "request_too_large":  # the edge's type, not in the SDK union
        ErrorResponse.model_validate(payload)
    return orjson.dumps(payload)


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequestError, False),
        (401, AuthenticationError, False),
        (402, PermissionDeniedError, False),
        (403, PermissionDeniedError, False),
        (404, NotFoundError, False),
        (413, BadRequestError, False),
        (429, RateLimitedError, True),
        (500, UnavailableError, True),
        (504, ModelTimeoutError, True),
        (529, OverloadedError, True),
    ],
)
def test_error_statuses_map_onto_the_error_tree(
    status: int, cls: type[ModelError], retryable: bool
) -> None:
    error = WIRE.error_from_wire(status, {}, error_json(status))
    assert type(error) is cls
    assert error.retryable is retryable
    assert error.status == status
    assert error.code == ERROR_TYPES[status][0]
    assert error.provider_message == ERROR_TYPES[status][1]


def test_prompt_too_long_is_a_context_length_error() -> None:
    body_ = error_json(
        400, "invalid_request_error", "prompt is too long: 210000 tokens > 200000 maximum"
    )
    assert isinstance(WIRE.error_from_wire(400, {}, body_), ContextLengthError)


def test_output_blocked_by_content_filtering_is_a_content_filtered_error() -> None:
    body_ = error_json(400, "invalid_request_error", "Output blocked by content filtering policy")
    assert isinstance(WIRE.error_from_wire(400, {}, body_), ContentFilteredError)


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ("max_tokens: 100000 > 64000, which is the maximum allowed", "max_tokens"),
        (
            "messages.1.content.0.text: text content blocks must be non-empty",
            "messages.1.content.0.text",
        ),
        ("prompt is too long: 210000 tokens > 200000 maximum", None),
        ("`temperature` and `top_p` cannot both be specified for this model.", None),
    ],
)
def test_a_400_names_the_field_its_message_leads_with(message: str, param: str | None) -> None:
    # Anthropic's error object has no `param`; its messages start with the field's path.
    error = WIRE.error_from_wire(400, {}, error_json(400, "invalid_request_error", message))
    assert error.param == param


def test_rate_limit_waits_retry_after() -> None:
    error = WIRE.error_from_wire(429, {"retry-after": "7"}, error_json(429))
    assert error.retry_after == 7.0


def test_rate_limit_without_retry_after_waits_for_the_exhausted_quota_reset() -> None:
    headers = quota_headers(remaining=0, tokens_remaining=500, reset_in=20)
    error = WIRE.error_from_wire(429, headers, error_json(429))
    assert error.retry_after is not None and 15 < error.retry_after <= 20


def test_x_should_retry_false_makes_an_overload_not_retryable() -> None:
    error = WIRE.error_from_wire(529, {"x-should-retry": "false"}, error_json(529))
    assert isinstance(error, OverloadedError) and not error.retryable


@pytest.mark.parametrize(("status", "cls"), [(502, UnavailableError), (400, BadRequestError)])
def test_non_json_error_body_keeps_the_status_class_and_shows_the_first_bytes(
    status: int, cls: type[ModelError]
) -> None:
    error = WIRE.error_from_wire(status, {}, b"<html><body>Bad Gateway</body></html>")
    assert type(error) is cls
    assert "<html><body>Bad Gateway" in error.message and f"HTTP {status}" in error.message


def test_rate_limits_read_the_anthropic_quota_headers() -> None:
    info = WIRE.rate_limits(quota_headers(remaining=3, tokens_remaining=900, reset_in=30))
    assert (info.limit_requests, info.remaining_requests) == (50, 3)
    assert (info.limit_tokens, info.remaining_tokens) == (40000, 900)
    assert info.reset_requests_s is not None and 25 < info.reset_requests_s <= 30


# --- the fake, checked against the official SDK ------------------------------------------------


def test_fake_refuses_a_body_with_a_field_the_sdk_types_do_not_know() -> None:
    sent = body(ask(u("hi")))
    assert validate_request({**sent, "max_token": 5}) is not None
    sent["messages"][0] = {"role": "user", "content": [{"type": "text", "text": "x", "cache": 1}]}
    assert "cache" in (validate_request(sent) or "")


def test_fake_refuses_legacy_sampling_fields_on_newer_api_versions() -> None:
    sent = body(ask(u("hi"), temperature=0.5))
    assert (
        validate_request(sent, version="2026-10-21")
        == "`temperature` is deprecated for this model."
    )


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key="sk-ant-fake-0123456789")
    with server.running():
        yield server


@pytest.fixture
def client(fake: FakeAnthropic) -> anthropic.AsyncAnthropic:
    fake.reset()
    return anthropic.AsyncAnthropic(
        api_key="sk-ant-fake-0123456789", base_url=fake.url, max_retries=0
    )


async def test_official_client_creates_a_message_from_the_fake(
    client: anthropic.AsyncAnthropic,
) -> None:
    message = await client.messages.create(
        model="claude-t",
        max_tokens=64,
        system="Be brief.",
        messages=[{"role": "user", "content": "ping"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "You said: ping"
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 3


async def test_official_client_streams_from_the_fake(client: anthropic.AsyncAnthropic) -> None:
    async with client.messages.stream(
        model="claude-t", max_tokens=64, messages=[{"role": "user", "content": "stream this"}]
    ) as stream:
        text = "".join([piece async for piece in stream.text_stream])
        final = await stream.get_final_message()
    assert text == "You said: stream this"
    assert final.stop_reason == "end_turn"


async def test_official_client_gets_a_tool_use_when_the_tool_is_forced(
    client: anthropic.AsyncAnthropic, fake: FakeAnthropic
) -> None:
    tool = {"name": "get_weather", "input_schema": dict(WEATHER.parameters)}
    message = await client.messages.create(
        model="claude-t",
        max_tokens=64,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[tool],  # type: ignore[list-item]
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    block = message.content[0]
    assert block.type == "tool_use" and block.name == "get_weather"
    assert block.input == {"city": "text", "unit": "c"}
    assert message.stop_reason == "tool_use"


async def test_official_client_streams_a_tool_use_from_the_fake(
    client: anthropic.AsyncAnthropic, fake: FakeAnthropic
) -> None:
    fake.script(Turn(tool_uses=(ToolUse(name="get_weather", input={"city": "Oslo"}),)))
    tool = {"name": "get_weather", "input_schema": dict(WEATHER.parameters)}
    async with client.messages.stream(
        model="claude-t",
        max_tokens=64,
        messages=[{"role": "user", "content": "weather?"}],
        tools=[tool],  # type: ignore[list-item]
    ) as stream:
        final = await stream.get_final_message()
    assert final.content[0].type == "tool_use" and final.content[0].input == {"city": "Oslo"}


async def test_official_client_reads_the_fakes_529_as_overloaded(
    client: anthropic.AsyncAnthropic, fake: FakeAnthropic
) -> None:
    from tests.fakes.server import Fault

    fake.push(Fault(status=529))
    with pytest.raises(anthropic.OverloadedError):
        await client.messages.create(
            model="claude-t", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )


async def test_official_client_is_refused_with_a_wrong_key(fake: FakeAnthropic) -> None:
    wrong = anthropic.AsyncAnthropic(
        api_key="sk-ant-wrong-key-000", base_url=fake.url, max_retries=0
    )
    with pytest.raises(anthropic.AuthenticationError):
        await wrong.messages.create(
            model="claude-t", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )


# --- serving the Messages API (the gateway) ---------------------------------------------------


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (ContextLengthError("too long"), 400, "invalid_request_error"),
        (AuthenticationError("no key"), 401, "authentication_error"),
        (RateLimitedError("slow down"), 429, "rate_limit_error"),
        (OverloadedError("busy"), 529, "overloaded_error"),
        (ModelTimeoutError("late"), 504, "timeout_error"),
        (BadResponseError("garbage"), 502, "api_error"),
    ],
)
def test_errors_turn_into_the_apis_own_error_bodies(
    error: ModelError, status: int, kind: str
) -> None:
    got_status, payload = error_to_wire(error)
    assert (got_status, payload["error"]["type"]) == (status, kind)
    ErrorResponse.model_validate(payload)


@pytest.mark.parametrize("finish", list(FinishReason))
def test_every_finish_reason_has_a_stop_reason_that_maps_back(finish: FinishReason) -> None:
    answer = message_json(stop_reason=STOP_REASONS[finish])
    called = finish is FinishReason.TOOL_CALLS
    assert finish_reason(answer["stop_reason"], called_tools=called) is finish
