"""The OpenAI wire format as pure translation, checked against the official SDK's own types;
and the fake OpenAI server checked the same way, and with the official client."""

from __future__ import annotations

import email.utils
import time
from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest
from tests.fakes.openai_server import AZURE_PROMPT_FILTER, FakeOpenAI, Reply
from tests.fakes.openai_types import check, check_request, problems

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
from modelyard.providers.openai_wire import (
    WIRE,
    OpenAIWire,
    StreamDecoder,
    embeddings_from_wire,
    embeddings_to_wire,
    error_from_wire,
    from_wire,
    message_to_wire,
    to_wire,
)
from modelyard.providers.sse import Event
from modelyard.streaming import StreamAssembler
from modelyard.types import (
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCall,
    Usage,
    user,
)

WEATHER = Tool(
    name="get_weather",
    description="Current weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
    strict=True,
)
TIME = Tool(
    name="get_time", parameters={"type": "object", "properties": {"tz": {"type": "string"}}}
)
SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}

FULL = ChatRequest(
    system="You are terse.",
    messages=(
        Message(
            role="user",
            name="ada",
            content=(
                TextPart(text="What is in this image?"),
                ImagePart(url="https://example.com/cat.png", detail="low"),
                ImagePart(url="data:image/png;base64,iVBORw0KGgo="),
            ),
        ),
        Message(
            role="assistant",
            tool_calls=(ToolCall(id="call_1", name="get_weather", arguments='{"city":"Oslo"}'),),
        ),
        Message(role="tool", tool_call_id="call_1", content='{"temp": 3}'),
        Message(role="assistant", content="It is 3 degrees.", name="helper"),
        Message(role="user", content="Thanks. And the time?"),
    ),
    tools=(WEATHER, TIME),
    tool_choice="get_time",
    parallel_tool_calls=False,
    response_format=ResponseFormat(type="json_schema", schema=SCHEMA, name="person", strict=True),
    temperature=0.2,
    top_p=0.9,
    max_tokens=64,
    stop=("END", "STOP"),
    seed=7,
    n=2,
    logprobs=True,
    top_logprobs=3,
    metadata={"team": "search"},
)


@pytest.fixture(scope="module")
def fake() -> FakeOpenAI:
    """The fake's answer builders, used without a socket."""
    return FakeOpenAI()


def feed_all(frames: list[dict[str, Any]] | list[bytes]) -> tuple[StreamDecoder, list[Chunk]]:
    decoder = StreamDecoder()
    chunks: list[Chunk] = []
    for frame in frames:
        data = frame if isinstance(frame, dict) else None
        text = orjson.dumps(data).decode() if data is not None else frame.decode()  # type: ignore[union-attr]
        chunks.extend(decoder.feed(Event("message", text)))
    return decoder, chunks


def streamed(fake: FakeOpenAI, body: dict[str, Any], reply: Reply | None = None) -> list[Any]:
    """The chunk objects the fake streams for `body`, each checked against the SDK type."""
    content, final = fake.chunks({**body, "stream": True}, reply)
    for chunk in content + final:
        check("chunk", chunk)
    return [*content, *final]


def assemble(chunks: list[Chunk], *, logprobs: bool = False) -> Any:
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.add(chunk)
    return assembler.choices(logprobs=logprobs)


# --- to_wire ---------------------------------------------------------------------------------


def test_minimal_request_is_model_and_messages_only() -> None:
    body = to_wire(user("hi"), "gpt-4o-mini", stream=False)
    assert body == {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    check_request(body)


def test_full_request_is_a_valid_sdk_request() -> None:
    check_request(to_wire(FULL, "gpt-4o", stream=False))


def test_full_streaming_request_is_a_valid_sdk_streaming_request() -> None:
    body = to_wire(FULL, "gpt-4o", stream=True)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    check_request(body)


def test_system_prompt_goes_first_as_a_system_message() -> None:
    messages = to_wire(FULL, "m", stream=False)["messages"]
    assert messages[0] == {"role": "system", "content": "You are terse."}
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
    ]


def test_multipart_user_content_carries_text_and_images_with_detail() -> None:
    content = to_wire(FULL, "m", stream=False)["messages"][1]["content"]
    assert content == [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
    ]


def test_assistant_tool_calls_have_null_content_and_tool_results_their_call_id() -> None:
    messages = to_wire(FULL, "m", stream=False)["messages"]
    assert messages[2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
            }
        ],
    }
    assert messages[3] == {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 3}'}


def test_names_are_sent() -> None:
    messages = to_wire(FULL, "m", stream=False)["messages"]
    assert messages[1]["name"] == "ada" and messages[4]["name"] == "helper"


def test_tools_carry_description_parameters_and_strict() -> None:
    tools = to_wire(FULL, "m", stream=False)["tools"]
    assert tools[0] == {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather in a city",
            "parameters": dict(WEATHER.parameters),
            "strict": True,
        },
    }


def test_a_tool_without_parameters_leaves_them_out() -> None:
    body = to_wire(user("x", tools=(Tool(name="ping"),)), "m", stream=False)
    assert body["tools"] == [{"type": "function", "function": {"name": "ping"}}]
    check_request(body)


@pytest.mark.parametrize(
    ("choice", "wire"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ("get_time", {"type": "function", "function": {"name": "get_time"}}),
    ],
)
def test_tool_choice(choice: str, wire: Any) -> None:
    body = to_wire(user("x", tools=(TIME,), tool_choice=choice), "m", stream=False)
    assert body["tool_choice"] == wire
    check_request(body)


def test_tool_choice_and_parallel_calls_are_left_out_without_tools() -> None:
    body = to_wire(user("x", tool_choice="auto", parallel_tool_calls=True), "m", stream=False)
    assert "tool_choice" not in body and "parallel_tool_calls" not in body


def test_parallel_tool_calls_is_sent_with_tools() -> None:
    body = to_wire(user("x", tools=(TIME,), parallel_tool_calls=False), "m", stream=False)
    assert body["parallel_tool_calls"] is False


@pytest.mark.parametrize(
    ("fmt", "wire"),
    [
        (ResponseFormat(type="text"), {"type": "text"}),
        (ResponseFormat(type="json_object"), {"type": "json_object"}),
        (
            ResponseFormat(type="json_schema", schema=SCHEMA, name="person", strict=True),
            {
                "type": "json_schema",
                "json_schema": {"name": "person", "schema": SCHEMA, "strict": True},
            },
        ),
        (
            ResponseFormat(type="json_schema", schema=SCHEMA),
            {"type": "json_schema", "json_schema": {"name": "response", "schema": SCHEMA}},
        ),
    ],
)
def test_response_format(fmt: ResponseFormat, wire: dict[str, Any]) -> None:
    body = to_wire(user("x", response_format=fmt), "m", stream=False)
    assert body["response_format"] == wire
    check_request(body)


def test_sampling_fields() -> None:
    body = to_wire(FULL, "m", stream=False)
    assert (body["temperature"], body["top_p"], body["seed"], body["n"]) == (0.2, 0.9, 7, 2)
    assert body["stop"] == ["END", "STOP"]
    assert body["logprobs"] is True and body["top_logprobs"] == 3


def test_output_cap_goes_out_as_max_completion_tokens() -> None:
    body = to_wire(FULL, "m", stream=False)
    assert body["max_completion_tokens"] == 64 and "max_tokens" not in body


def test_output_cap_can_use_the_old_name_for_older_servers() -> None:
    body = OpenAIWire(max_tokens_field="max_tokens").to_wire(FULL, "m", stream=False)
    assert body["max_tokens"] == 64 and "max_completion_tokens" not in body
    check_request(body)


def test_metadata_is_not_sent_because_openai_requires_store_with_it() -> None:
    assert "metadata" not in to_wire(FULL, "m", stream=False)


@pytest.mark.parametrize(
    ("metadata", "sent"),
    [
        ({"user": "u-42"}, {"user": "u-42"}),
        ({"safety_identifier": "h-42"}, {"safety_identifier": "h-42"}),
        (
            {"user": "u-42", "safety_identifier": "h-42"},
            {"user": "u-42", "safety_identifier": "h-42"},
        ),
        (
            {"user_id": "user_ab12_account_cd34_session_ef56"},
            {"user": "user_ab12_account_cd34_session_ef56"},
        ),
        ({"team": "search"}, {}),
    ],
)
def test_the_end_user_goes_out_in_openai_fields(
    metadata: dict[str, str], sent: dict[str, str]
) -> None:
    # An OpenAI caller's field as it sent it; a Messages caller's user_id as `user`.
    body = to_wire(user("hi", metadata=metadata), "gpt-4o", stream=False)
    assert {k: body[k] for k in ("user", "safety_identifier") if k in body} == sent
    assert "metadata" not in body
    check_request(body)


def test_an_image_in_an_assistant_message_is_refused() -> None:
    message = Message(role="assistant", content=(ImagePart(url="https://x/y.png"),))
    with pytest.raises(BadRequestError, match=r"messages\[0\].*only user messages"):
        to_wire(ChatRequest(messages=(message,)), "m", stream=False)


@pytest.mark.parametrize(
    ("content", "sent"),
    [
        ("no display", "Error: no display"),
        ("error: no display", "error: no display"),  # it says so already
        ((TextPart(text="no "), TextPart(text="display")), "Error: no display"),
    ],
)
def test_a_failed_tool_result_says_it_failed_in_its_text(content: Any, sent: Any) -> None:
    # Chat Completions has no is_error: without a word the model reads the error as output.
    message = Message(role="tool", tool_call_id="c1", content=content, tool_error=True)
    assert message_to_wire(message)["content"] == sent


def test_a_tool_message_without_call_id_is_refused() -> None:
    with pytest.raises(BadRequestError, match=r"messages\[1\].*tool_call_id"):
        to_wire(
            ChatRequest(messages=(Message(role="user"), Message(role="tool", content="4"))),
            "m",
            stream=False,
        )


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"model": "o3-mini", "max_tokens": 5}, "max_tokens"),
        ({"model": "gpt-5-mini-2025-08-07", "max_tokens": 5}, "max_tokens"),
        ({"metadata": {"team": "a"}}, "metadata"),
        ({"tool_choice": "auto"}, "tool_choice"),
        ({"parallel_tool_calls": True}, "parallel_tool_calls"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
    ],
)
def test_the_fake_refuses_what_the_real_api_refuses(
    fake: FakeOpenAI, extra: dict[str, Any], param: str
) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    assert fake.api_rules(body) is None
    refused = fake.api_rules({**body, **extra})
    assert refused is not None and refused[0] == 400
    assert refused[1]["error"]["param"] == param


def test_the_fake_refuses_fields_the_sdk_does_not_know() -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}
    assert not problems("request", body)
    assert problems("request", {**body, "bogus": 1})
    assert problems("request", {**body, "messages": [{"role": "user", "content": "x", "x": 1}]})


# --- from_wire -------------------------------------------------------------------------------

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]}


def completion(fake: FakeOpenAI, body: dict[str, Any], reply: Reply | None = None) -> Any:
    payload = fake.completion(body, reply)
    check("completion", payload)
    return payload


def test_plain_answer(fake: FakeOpenAI) -> None:
    payload = completion(fake, BODY, Reply(cached_tokens=2, reasoning_tokens=5))
    parsed = from_wire(payload)
    assert parsed.id == payload["id"] and parsed.id.startswith("chatcmpl-")
    assert parsed.provider_model == "gpt-4o-mini-2024-07-18"
    assert parsed.created == payload["created"]
    assert parsed.system_fingerprint == payload["system_fingerprint"]
    assert parsed.choices[0].message.text == "Echo: hello there"
    assert parsed.choices[0].finish_reason is FinishReason.STOP


def test_usage_with_cached_and_reasoning_tokens(fake: FakeOpenAI) -> None:
    payload = completion(fake, BODY, Reply(cached_tokens=2, reasoning_tokens=5))
    usage = from_wire(payload).usage
    assert usage.input_tokens == payload["usage"]["prompt_tokens"]
    assert usage.output_tokens == payload["usage"]["completion_tokens"]
    assert (usage.cached_tokens, usage.reasoning_tokens, usage.estimated) == (2, 5, False)


def test_missing_usage_is_marked_estimated(fake: FakeOpenAI) -> None:
    usage = from_wire(completion(fake, BODY, Reply(usage=False))).usage
    assert usage.estimated and usage.total_tokens == 0


@pytest.mark.parametrize(
    "usage",
    [{"prompt_tokens": 5, "total_tokens": 5}, {"prompt_tokens": 5, "completion_tokens": None}],
)
def test_usage_missing_a_count_is_estimated_not_a_bad_response(
    fake: FakeOpenAI, usage: dict[str, Any]
) -> None:
    payload = completion(fake, BODY, Reply(usage=False))
    parsed = from_wire({**payload, "usage": usage})
    assert parsed.usage == Usage(input_tokens=5, estimated=True)
    assert parsed.choices[0].message.text == "Echo: hello there"


def test_usage_count_of_the_wrong_type_is_a_bad_response(fake: FakeOpenAI) -> None:
    payload = completion(fake, BODY, Reply(usage=False))
    with pytest.raises(BadResponseError, match=r"usage\.completion_tokens"):
        from_wire({**payload, "usage": {"prompt_tokens": 5, "completion_tokens": "2"}})


def test_every_choice_is_read_in_index_order(fake: FakeOpenAI) -> None:
    payload = completion(fake, {**BODY, "n": 3})
    payload["choices"].reverse()
    choices = from_wire(payload).choices
    assert [c.index for c in choices] == [0, 1, 2]
    assert choices[2].message.text == "Echo: hello there (choice 3)"


def test_parallel_tool_calls_with_null_content(fake: FakeOpenAI) -> None:
    body = {**BODY, "tools": to_wire(FULL, "m", stream=False)["tools"], "tool_choice": "required"}
    payload = completion(fake, body)
    assert payload["choices"][0]["message"]["content"] is None
    choice = from_wire(payload).choices[0]
    assert [c.name for c in choice.message.tool_calls] == ["get_weather", "get_time"]
    assert orjson.loads(choice.message.tool_calls[0].arguments) == {
        "city": "hello there",
        "unit": "c",
    }
    assert choice.message.text == ""
    assert choice.finish_reason is FinishReason.TOOL_CALLS


def test_a_call_forced_by_name_finishes_with_tool_calls_though_openai_says_stop(
    fake: FakeOpenAI,
) -> None:
    body = {
        **BODY,
        "tools": [{"type": "function", "function": {"name": "get_time"}}],
        "tool_choice": {"type": "function", "function": {"name": "get_time"}},
    }
    payload = completion(fake, body)
    assert payload["choices"][0]["finish_reason"] == "stop"
    assert from_wire(payload).choices[0].finish_reason is FinishReason.TOOL_CALLS


def test_legacy_function_call_becomes_a_tool_call(fake: FakeOpenAI) -> None:
    payload = completion(fake, BODY)
    payload["choices"][0]["message"].update(
        content=None, function_call={"name": "f", "arguments": "{}"}
    )
    payload["choices"][0]["finish_reason"] = "function_call"
    check("completion", payload)
    choice = from_wire(payload).choices[0]
    assert choice.message.tool_calls == (ToolCall(id="", name="f", arguments="{}"),)
    assert choice.finish_reason is FinishReason.TOOL_CALLS


def test_a_refusal_is_the_text_with_finish_reason_content_filter(fake: FakeOpenAI) -> None:
    payload = completion(fake, BODY, Reply(refusal="I can't help with that."))
    choice = from_wire(payload).choices[0]
    assert choice.message.text == "I can't help with that."
    assert choice.finish_reason is FinishReason.CONTENT_FILTER and choice.refusal


@pytest.mark.parametrize(
    ("reported", "ours"),
    [
        ("stop", FinishReason.STOP),
        ("length", FinishReason.LENGTH),
        ("tool_calls", FinishReason.TOOL_CALLS),
        ("content_filter", FinishReason.CONTENT_FILTER),
    ],
)
def test_finish_reasons(fake: FakeOpenAI, reported: str, ours: FinishReason) -> None:
    payload = completion(fake, BODY, Reply(finish_reason=reported))
    assert from_wire(payload).choices[0].finish_reason is ours


def test_the_token_limit_finishes_with_length(fake: FakeOpenAI) -> None:
    payload = completion(fake, {**BODY, "max_completion_tokens": 2})
    choice = from_wire(payload).choices[0]
    assert (choice.message.text, choice.finish_reason) == ("Echo: hello", FinishReason.LENGTH)


def test_an_unknown_finish_reason_is_a_bad_response_naming_it(fake: FakeOpenAI) -> None:
    payload = fake.completion(BODY, Reply(finish_reason="done"))
    with pytest.raises(BadResponseError, match=r"choices\[0\]\.finish_reason is 'done'") as caught:
        from_wire(payload)
    assert caught.value.code == "unknown_finish_reason" and not caught.value.retryable


@pytest.mark.parametrize(
    ("reported", "ours"),
    [
        ("eos", FinishReason.STOP),  # Together
        ("eos_token", FinishReason.STOP),  # TGI, watsonx
        ("stop_sequence", FinishReason.STOP),
        ("model_length", FinishReason.LENGTH),  # Mistral
        ("max_tokens", FinishReason.LENGTH),
    ],
)
def test_compatible_servers_spellings_are_read_as_what_they_mean(
    fake: FakeOpenAI, reported: str, ours: FinishReason
) -> None:
    payload = fake.completion(BODY, Reply(finish_reason=reported))
    assert from_wire(payload).choices[0].finish_reason is ours
    content, _ = fake.chunks({**BODY, "stream": True}, Reply(finish_reason=reported))
    (choice,) = assemble(feed_all(content)[1])
    assert choice.finish_reason is ours


@pytest.mark.parametrize("reported", ["abort", "error", "insufficient_system_resource"])
def test_a_server_that_gave_up_sent_an_incomplete_answer_worth_asking_again(
    fake: FakeOpenAI, reported: str
) -> None:
    payload = fake.completion(BODY, Reply(finish_reason=reported))
    with pytest.raises(BadResponseError, match=f"'{reported}': the server stopped") as caught:
        from_wire(payload)
    assert caught.value.code == "upstream_gave_up" and caught.value.retryable
    content, _ = fake.chunks({**BODY, "stream": True}, Reply(finish_reason=reported))
    with pytest.raises(BadResponseError, match="the server stopped"):
        feed_all(content)


def test_a_finish_reason_that_is_a_list_is_a_bad_response_not_a_type_error(
    fake: FakeOpenAI,
) -> None:
    payload = completion(fake, BODY)
    payload["choices"][0]["finish_reason"] = ["stop"]
    with pytest.raises(BadResponseError, match=r"finish_reason is \['stop'\]"):
        from_wire(payload)


def test_a_streamed_content_that_is_not_text_is_a_bad_response_even_beside_a_refusal() -> None:
    frame = {"choices": [{"index": 0, "delta": {"content": 5, "refusal": "no"}}]}
    with pytest.raises(BadResponseError, match=r"delta\.content is not a string"):
        feed_all([frame])


def test_a_null_finish_reason_is_a_bad_response(fake: FakeOpenAI) -> None:
    payload = completion(fake, BODY)
    payload["choices"][0]["finish_reason"] = None
    with pytest.raises(BadResponseError, match=r"finish_reason is missing"):
        from_wire(payload)


def test_logprobs_with_top_alternatives(fake: FakeOpenAI) -> None:
    payload = completion(fake, {**BODY, "logprobs": True, "top_logprobs": 2})
    logprobs = from_wire(payload).choices[0].logprobs
    assert logprobs is not None
    assert [t.token for t in logprobs] == ["Echo:", " hello", " there"]
    assert logprobs[1].logprob == pytest.approx(-0.1)
    assert logprobs[1].top == ((" hello", pytest.approx(-0.1)), (" hello#1", pytest.approx(-1.1)))


def test_no_logprobs_when_not_asked(fake: FakeOpenAI) -> None:
    assert from_wire(completion(fake, BODY)).choices[0].logprobs is None


def _without(path: tuple[Any, ...]) -> Any:
    def mutate(payload: Any) -> None:
        target = payload
        for step in path[:-1]:
            target = target[step]
        del target[path[-1]]

    return mutate


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def mutate(payload: Any) -> None:
        target = payload
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_without(("choices",)), "response.choices"),
        (_set(("choices",), {}), "response.choices"),
        (_set(("choices",), []), "response.choices"),
        (_without(("model",)), "response.model"),
        (_without(("id",)), "response.id"),
        (_without(("choices", 0, "message")), "response.choices[0].message"),
        (_set(("choices", 0, "index"), "0"), "response.choices[0].index"),
        (_set(("choices", 0, "message", "content"), 5), "response.choices[0].message.content"),
        (_set(("usage", "prompt_tokens"), "12"), "response.usage.prompt_tokens"),
        (_set(("choices", 0, "logprobs"), {"content": [{"token": "a"}]}), "logprob"),
    ],
)
def test_malformed_bodies_name_the_field(fake: FakeOpenAI, mutate: Any, field: str) -> None:
    payload = fake.completion(BODY)
    mutate(payload)
    with pytest.raises(BadResponseError, match=field.replace("[", r"\[").replace("]", r"\]")):
        from_wire(payload)


def test_a_tool_call_without_a_name_is_malformed(fake: FakeOpenAI) -> None:
    body = {**BODY, "tools": [{"type": "function", "function": {"name": "f"}}]}
    payload = fake.completion({**body, "tool_choice": "required"})
    del payload["choices"][0]["message"]["tool_calls"][0]["function"]["name"]
    with pytest.raises(BadResponseError, match=r"tool_calls\[0\]\.function\.name"):
        from_wire(payload)


def test_a_non_object_body_is_malformed() -> None:
    with pytest.raises(BadResponseError, match="expected an object"):
        from_wire(["not", "an", "object"])


def test_an_error_object_answered_with_200_raises_that_error() -> None:
    body = {
        "error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}
    }
    with pytest.raises(RateLimitedError):
        from_wire(body)


# --- the stream ------------------------------------------------------------------------------


def test_stream_text_then_finish_then_usage_then_done(fake: FakeOpenAI) -> None:
    body = {**BODY, "stream_options": {"include_usage": True}}
    frames = streamed(fake, body, Reply(cached_tokens=1))
    assert frames[0]["choices"][0]["delta"]["role"] == "assistant"
    assert frames[-1]["choices"] == [] and frames[-1]["usage"]["prompt_tokens"] > 0
    decoder, chunks = feed_all(frames)
    assert "".join(c.text for c in chunks) == "Echo: hello there"
    assert chunks[-1].finish_reason is FinishReason.STOP
    assert decoder.usage is not None and decoder.usage.cached_tokens == 1
    assert not decoder.done
    assert decoder.feed(Event("message", "[DONE]")) == ()
    assert decoder.done
    assert decoder.provider_model == "gpt-4o-mini-2024-07-18"
    assert decoder.response_id == frames[0]["id"]


def test_stream_without_include_usage_has_no_usage(fake: FakeOpenAI) -> None:
    decoder, _ = feed_all(streamed(fake, BODY))
    assert decoder.usage is None


def test_stream_tool_call_deltas_assemble_into_whole_calls(fake: FakeOpenAI) -> None:
    body = {**BODY, "tools": to_wire(FULL, "m", stream=False)["tools"], "tool_choice": "required"}
    _, chunks = feed_all(streamed(fake, body))
    assert all(d.index in (0, 1) for c in chunks for d in c.tool_calls)
    (choice,) = assemble(chunks)
    expected = from_wire(fake.completion(body)).choices[0].message.tool_calls
    assert [(c.name, c.arguments) for c in choice.message.tool_calls] == [
        (c.name, c.arguments) for c in expected
    ]
    assert all(c.id.startswith("call_") for c in choice.message.tool_calls)
    assert choice.finish_reason is FinishReason.TOOL_CALLS


def test_stream_of_a_call_forced_by_name_finishes_with_tool_calls(fake: FakeOpenAI) -> None:
    body = {
        **BODY,
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "f"}},
    }
    _, chunks = feed_all(streamed(fake, body))
    assert chunks[-1].finish_reason is FinishReason.TOOL_CALLS


def test_stream_of_n_choices_interleaved(fake: FakeOpenAI) -> None:
    _, chunks = feed_all(streamed(fake, {**BODY, "n": 2}))
    assert chunks[0].index == 0 and chunks[1].index == 1
    choices = assemble(chunks)
    assert [c.message.text for c in choices] == [
        "Echo: hello there",
        "Echo: hello there (choice 2)",
    ]


def test_stream_logprobs(fake: FakeOpenAI) -> None:
    _, chunks = feed_all(streamed(fake, {**BODY, "logprobs": True, "top_logprobs": 1}))
    (choice,) = assemble(chunks, logprobs=True)
    assert [t.token for t in choice.logprobs] == ["Echo:", " hello", " there"]
    assert choice.logprobs[0].top == (("Echo:", pytest.approx(-0.05)),)


def test_stream_refusal_finishes_with_content_filter(fake: FakeOpenAI) -> None:
    _, chunks = feed_all(streamed(fake, BODY, Reply(refusal="I can't help with that.")))
    (choice,) = assemble(chunks)
    assert choice.message.text == "I can't help with that."
    assert choice.finish_reason is FinishReason.CONTENT_FILTER and choice.refusal
    assert all(c.refusal for c in chunks if c.text)


def test_stream_unknown_finish_reason_is_a_bad_response(fake: FakeOpenAI) -> None:
    content, _ = fake.chunks({**BODY, "stream": True}, Reply(finish_reason="done"))
    with pytest.raises(BadResponseError, match="'done'"):
        feed_all(content)


def test_stream_malformed_event_is_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match="not JSON") as caught:
        StreamDecoder().feed(Event("message", "{this is not json"))
    assert caught.value.code == "malformed_chunk"


def test_stream_chunk_without_choices_is_malformed() -> None:
    with pytest.raises(BadResponseError, match=r"chunk\.choices"):
        StreamDecoder().feed(Event("message", '{"id": "x", "object": "chat.completion.chunk"}'))


@pytest.mark.parametrize(
    ("error", "cls"),
    [
        ({"message": "The server had an error", "type": "server_error"}, UnavailableError),
        (
            {"message": "Rate limit", "type": "tokens", "code": "rate_limit_exceeded"},
            RateLimitedError,
        ),
        (
            {
                "message": "too long",
                "type": "invalid_request_error",
                "code": "context_length_exceeded",
            },
            ContextLengthError,
        ),
        ({"message": "That model is currently overloaded"}, OverloadedError),
    ],
)
def test_stream_error_event_raises_the_mapped_error(error: dict[str, Any], cls: type) -> None:
    with pytest.raises(cls) as caught:
        StreamDecoder().feed(Event("message", orjson.dumps({"error": error}).decode()))
    assert caught.value.provider_message == error["message"]


def test_stream_takes_its_id_and_model_from_the_first_chunk_that_names_them() -> None:
    frame = {"id": "chatcmpl-1", "model": "gpt-4o-2024-08-06", "created": 1, "choices": []}
    decoder, _ = feed_all([AZURE_PROMPT_FILTER, frame])
    assert (decoder.response_id, decoder.provider_model) == ("chatcmpl-1", "gpt-4o-2024-08-06")


def test_stream_usage_reported_the_groq_way() -> None:
    frame = {
        "id": "x",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        "x_groq": {"usage": {"prompt_tokens": 7, "completion_tokens": 3}},
    }
    decoder, _ = feed_all([frame])
    assert decoder.usage is not None and decoder.usage.input_tokens == 7


# --- errors ----------------------------------------------------------------------------------


def error(
    fake: FakeOpenAI, status: int, error_type: str | None = None, **headers: str
) -> ModelError:
    payload = fake.error_body(status, error_type, None)
    check("error", payload["error"])
    return error_from_wire(status, headers, orjson.dumps(payload))


@pytest.mark.parametrize(
    ("status", "error_type", "cls", "retryable"),
    [
        (400, None, BadRequestError, False),
        (400, "context_length_exceeded", ContextLengthError, False),
        (400, "invalid_prompt", ContentFilteredError, False),
        (400, "content_filter", ContentFilteredError, False),
        (401, None, AuthenticationError, False),
        (403, None, PermissionDeniedError, False),
        (404, None, NotFoundError, False),
        (408, None, ModelTimeoutError, True),
        (409, None, UnavailableError, True),
        (422, None, BadRequestError, False),
        (429, None, RateLimitedError, True),
        (429, "insufficient_quota", RateLimitedError, False),
        (500, None, UnavailableError, True),
        (502, None, UnavailableError, True),
        (503, None, OverloadedError, True),
        (504, None, ModelTimeoutError, True),
    ],
)
def test_error_statuses(
    fake: FakeOpenAI, status: int, error_type: str | None, cls: type, retryable: bool
) -> None:
    exc = error(fake, status, error_type)
    assert type(exc) is cls
    assert exc.status == status and exc.retryable is retryable
    assert exc.provider_message == fake.error_body(status, error_type, None)["error"]["message"]


def test_error_code_is_the_providers(fake: FakeOpenAI) -> None:
    assert error(fake, 400, "context_length_exceeded").code == "context_length_exceeded"
    assert error(fake, 401).code == "invalid_api_key"
    assert error(fake, 500).code == "server_error"


def test_the_param_an_error_names_is_kept(fake: FakeOpenAI) -> None:
    assert error(fake, 400, "context_length_exceeded").param == "messages"
    assert error(fake, 400).param is None


def test_quota_exhausted_says_so(fake: FakeOpenAI) -> None:
    exc = error(fake, 429, "insufficient_quota")
    assert "quota exhausted" in exc.message and "retrying will not help" in exc.message


def test_503_that_is_not_overload_is_unavailable() -> None:
    body = orjson.dumps({"error": {"message": "Service Unavailable", "type": "server_error"}})
    assert type(error_from_wire(503, {}, body)) is UnavailableError


def test_retry_after_seconds(fake: FakeOpenAI) -> None:
    assert error(fake, 429, **{"Retry-After": "7"}).retry_after == 7.0


def test_retry_after_ms(fake: FakeOpenAI) -> None:
    assert error(fake, 429, **{"retry-after-ms": "250"}).retry_after == 0.25


def test_retry_after_http_date(fake: FakeOpenAI) -> None:
    when = email.utils.formatdate(time.time() + 30, usegmt=True)
    retry_after = error(fake, 429, **{"retry-after": when}).retry_after
    assert retry_after is not None and 28 <= retry_after <= 31


def test_retry_after_from_the_exhausted_limits_reset(fake: FakeOpenAI) -> None:
    headers = fake.response_headers("chat", 429)
    body = {"error": {"message": "Rate limit reached", "type": "requests", "code": None}}
    exc = error_from_wire(429, headers, orjson.dumps(body))
    assert exc.retry_after == pytest.approx(1.5 / 500)  # one request's share of the refill


def test_the_messages_wait_beats_the_reset_headers_guess(fake: FakeOpenAI) -> None:
    # Tokens left (500) but fewer than this request asks (1,200): no header says which limit
    # was hit, and the full token refill they report is far longer than the wait OpenAI names.
    headers = {
        **fake.response_headers("chat", 429),
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-remaining-tokens": "500",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    body = fake.error_body(429, "rate_limit_exceeded", None)
    assert error_from_wire(429, headers, orjson.dumps(body)).retry_after == pytest.approx(0.21)


def test_retry_after_from_the_message_when_no_header_says(fake: FakeOpenAI) -> None:
    assert error(fake, 429, "rate_limit_exceeded").retry_after == pytest.approx(0.21)


def test_html_error_body_names_status_and_first_bytes() -> None:
    html = b"<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"
    exc = error_from_wire(502, {}, html)
    assert type(exc) is UnavailableError
    assert "HTTP 502" in exc.message and "502 Bad Gateway" in exc.message
    assert exc.code == "http_502" and exc.provider_message is not None


def test_html_429_is_still_rate_limited_with_retry_after() -> None:
    exc = error_from_wire(429, {"Retry-After": "3"}, b"<html>Too Many Requests</html>")
    assert type(exc) is RateLimitedError and exc.retry_after == 3.0


def test_truncated_error_json_falls_back_to_the_status() -> None:
    exc = error_from_wire(500, {}, b'{"error": {"message": "The server had')
    assert type(exc) is UnavailableError and '{"error"' in exc.message


def test_azure_content_filter_with_innererror() -> None:
    body = {
        "error": {
            "message": "The response was filtered",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            "innererror": {"code": "ResponsibleAIPolicyViolation"},
        }
    }
    exc = error_from_wire(400, {}, orjson.dumps(body))
    assert type(exc) is ContentFilteredError and exc.code == "content_filter"


def test_vllm_top_level_error_shape_with_context_message() -> None:
    body = {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you asked 5000",
        "type": "BadRequestError",
        "param": None,
        "code": 400,
    }
    exc = error_from_wire(400, {}, orjson.dumps(body))
    assert type(exc) is ContextLengthError and exc.code == "400"


def test_llama_cpp_context_error() -> None:
    body = {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
        }
    }
    assert type(error_from_wire(400, {}, orjson.dumps(body))) is ContextLengthError


def test_rate_limits_from_headers(fake: FakeOpenAI) -> None:
    info = WIRE.rate_limits(fake.response_headers("chat", 200))
    assert (info.limit_requests, info.remaining_requests) == (500, 499)
    assert info.reset_requests_s == pytest.approx(0.12)
    assert (info.remaining_tokens, info.reset_tokens_s) == (199000, pytest.approx(0.3))


# --- embeddings and the wire object ----------------------------------------------------------


def test_embeddings_request() -> None:
    body = embeddings_to_wire(EmbeddingRequest(inputs=("a", "b"), dimensions=256), "te-3")
    assert body == {
        "model": "te-3",
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 256,
    }
    check("embedding_request", body)


def test_embeddings_answer_in_input_order(fake: FakeOpenAI) -> None:
    payload = fake.embeddings({"model": "te-3", "input": ["a", "b", "c"]})
    check("embeddings", payload)
    payload["data"].reverse()
    parsed = embeddings_from_wire(payload)
    assert parsed.vectors[0] == pytest.approx(
        fake.embeddings({"model": "x", "input": "a"})["data"][0]["embedding"]
    )
    assert len(parsed.vectors) == 3 and parsed.usage.input_tokens == 3
    assert parsed.provider_model == "te-3"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (_without(("data",)), "response.data"),
        (_set(("data", 0, "embedding"), "AAAA"), "response.data[0].embedding"),
        (_set(("data", 0, "embedding"), ["x"]), "response.data[0].embedding"),
        (_set(("data", 1, "index"), 5), "indexes"),
    ],
)
def test_malformed_embeddings(fake: FakeOpenAI, mutate: Any, field: str) -> None:
    payload = fake.embeddings({"model": "te-3", "input": ["a", "b"]})
    mutate(payload)
    with pytest.raises(BadResponseError, match=field.replace("[", r"\[").replace("]", r"\]")):
        embeddings_from_wire(payload)


def test_wire_urls_and_auth() -> None:
    assert WIRE.url("https://api.openai.com/v1", "m", stream=True) == (
        "https://api.openai.com/v1/chat/completions"
    )
    assert WIRE.embeddings_url("http://h/v1/", "m") == "http://h/v1/embeddings"
    assert WIRE.auth_headers("sk-x") == {"Authorization": "Bearer sk-x"}
    assert (WIRE.name, WIRE.requires_max_tokens) == ("openai", False)


# --- the fake is faithful: every answer is a valid SDK object --------------------------------

SHAPES: list[dict[str, Any]] = [
    BODY,
    {**BODY, "n": 3, "logprobs": True, "top_logprobs": 5},
    {**BODY, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"},
    {**BODY, "response_format": {"type": "json_object"}},
    {
        **BODY,
        "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": SCHEMA}},
    },
    {**BODY, "max_completion_tokens": 1, "stop": ["there"]},
]


@pytest.mark.parametrize("body", SHAPES)
def test_fake_answers_are_valid_chat_completions(fake: FakeOpenAI, body: dict[str, Any]) -> None:
    check("completion", fake.completion(body))


@pytest.mark.parametrize("body", SHAPES)
def test_fake_stream_chunks_are_valid(fake: FakeOpenAI, body: dict[str, Any]) -> None:
    streamed(fake, {**body, "stream_options": {"include_usage": True}})


def test_fake_json_schema_answer_matches_the_schema(fake: FakeOpenAI) -> None:
    text = from_wire(fake.completion(SHAPES[4])).choices[0].message.text
    assert orjson.loads(text) == {"name": "hello there", "age": 1}


# --- the official client talks to the fake ---------------------------------------------------

KEY = "sk-fake-sdk-0123456789"


@pytest.fixture(scope="module")
def served() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(api_key=KEY)
    with fake.running():
        yield fake


@pytest.fixture
def client(served: FakeOpenAI) -> openai.AsyncOpenAI:
    served.reset()
    return openai.AsyncOpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)


async def test_sdk_completion(client: openai.AsyncOpenAI) -> None:
    answer = await client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], n=2, logprobs=True
    )
    assert answer.choices[0].message.content == "Echo: hi"
    assert answer.choices[1].logprobs is not None and answer.usage is not None


async def test_sdk_stream(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi there"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    parts, usage = [], None
    async for chunk in stream:
        parts.extend(c.delta.content or "" for c in chunk.choices)
        usage = chunk.usage or usage
    assert "".join(parts) == "Echo: hi there" and usage is not None


async def test_sdk_tools(client: openai.AsyncOpenAI) -> None:
    body = to_wire(
        user("Oslo", tools=(WEATHER, TIME), tool_choice="required"), "gpt-4o", stream=False
    )
    answer = await client.chat.completions.create(**body)
    calls = answer.choices[0].message.tool_calls or []
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]  # type: ignore[union-attr]


async def test_sdk_embeddings_base64_and_float(
    client: openai.AsyncOpenAI, served: FakeOpenAI
) -> None:
    packed = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    floats = await client.embeddings.create(
        model="text-embedding-3-small", input=["a", "b"], encoding_format="float"
    )
    assert served.requests[0].json["encoding_format"] == "base64"
    assert packed.data[1].embedding == pytest.approx(floats.data[1].embedding, abs=1e-6)


async def test_sdk_models_list(client: openai.AsyncOpenAI, served: FakeOpenAI) -> None:
    models = await client.models.list()
    assert [m.id for m in models.data] == served.models


async def test_sdk_sees_the_fakes_errors(client: openai.AsyncOpenAI) -> None:
    wrong = openai.AsyncOpenAI(
        base_url=str(client.base_url), api_key="sk-wrong-key-00000", max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        await wrong.models.list()
    with pytest.raises(openai.BadRequestError, match="max_completion_tokens"):
        await client.chat.completions.create(
            model="o3-mini", messages=[{"role": "user", "content": "x"}], max_tokens=5
        )


def test_a_stream_with_answer_text_is_no_refusal_as_a_whole_answer_is_not() -> None:
    # `_choice` counts a refusal only when no content came: the stream must agree.
    frames = [
        {"delta": {"content": "Sure, ", "refusal": None}},
        {"delta": {"content": "here", "refusal": " but no"}},
        {"delta": {"refusal": " more"}, "finish_reason": "stop"},
    ]
    chunks = []
    decoder = StreamDecoder()
    for frame in frames:
        body = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, **frame}]}
        chunks.extend(decoder.feed(Event("message", orjson.dumps(body).decode())))
    assert [c.refusal for c in chunks] == [False, False, True]
    (choice,) = assemble(chunks)
    assert not choice.refusal and choice.message.text == "Sure, here but no more"


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_a_compatible_servers_reasoning_is_the_messages_unsigned_thinking(field: str) -> None:
    # DeepSeek and vLLM send `reasoning_content`, newer vLLM and Ollama `reasoning`: it had
    # been dropped, so an Anthropic client of the gateway never saw an R1 model think.
    body = {
        "id": "c",
        "object": "chat.completion",
        "model": "deepseek-reasoner",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "42", field: "6 times 7"},
                "finish_reason": "stop",
            }
        ],
    }
    (choice,) = from_wire(body).choices
    assert choice.message.text == "42"
    assert choice.message.thinking == (ThinkingPart(text="6 times 7"),)

    frames = [
        {"delta": {"role": "assistant", field: "6 times"}},
        {"delta": {field: " 7"}},
        {"delta": {"content": "42"}, "finish_reason": "stop"},
    ]
    decoder = StreamDecoder()
    chunks = []
    for frame in frames:
        chunk = {"id": "c", "object": "chat.completion.chunk", "choices": [{"index": 0, **frame}]}
        chunks.extend(decoder.feed(Event("message", orjson.dumps(chunk).decode())))
    (streamed_choice,) = assemble(chunks)
    assert streamed_choice.message.thinking == (ThinkingPart(text="6 times 7"),)
    assert streamed_choice.message.text == "42"


def test_reasoning_that_is_not_text_is_a_bad_response_naming_it() -> None:
    message = {"role": "assistant", "content": "42", "reasoning_content": ["6", "7"]}
    choices = [{"index": 0, "message": message, "finish_reason": "stop"}]
    body = {"id": "c", "model": "deepseek-reasoner", "choices": choices}
    with pytest.raises(BadResponseError, match=r"choices\[0\]\.message\.reasoning_content"):
        from_wire(body)
