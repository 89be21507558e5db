"""Gemini generateContent translation, without I/O: requests checked against the official
`google-genai` types (strict, camelCase, as sent on the wire), answers built in the documented
JSON shapes and checked the same way before they are translated."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from google.genai import types as gt

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
from modelyard.providers.gemini_answers import SIGNATURE_MARK, split_call_id
from modelyard.providers.gemini_wire import WIRE
from modelyard.providers.sse import Event
from modelyard.types import (
    ChatRequest,
    EmbeddingRequest,
    FinishReason,
    ImagePart,
    Message,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    user,
)

SIGNATURE = "c2lnbmF0dXJlLWJ5dGVz"  # base64, as Gemini sends thought signatures
_SDK_PARTS = {
    "contents": None,
    "systemInstruction": gt.Content,
    "toolConfig": gt.ToolConfig,
    "generationConfig": gt.GenerationConfig,
}


def wire(request: ChatRequest) -> dict[str, Any]:
    """The body we send, after checking every piece against the SDK's own types."""
    body = WIRE.to_wire(request, "gemini-2.5-flash", stream=False)
    assert set(body) <= {*_SDK_PARTS, "tools"}
    for content in body["contents"]:
        gt.Content.model_validate_json(orjson.dumps(content))
    for tool in body.get("tools", []):
        gt.Tool.model_validate_json(orjson.dumps(tool))
    for key, kind in _SDK_PARTS.items():
        if kind is not None and key in body:
            kind.model_validate_json(orjson.dumps(body[key]))
    return body


def answer(body: dict[str, Any]) -> Any:
    """`from_wire` on a body the SDK accepts as a GenerateContentResponse."""
    gt.GenerateContentResponse.model_validate_json(orjson.dumps(body))
    return WIRE.from_wire(body)


def candidate(*parts: dict[str, Any], finish: str = "STOP", **extra: Any) -> dict[str, Any]:
    return {
        "content": {"parts": list(parts), "role": "model"},
        "finishReason": finish,
        "index": 0,
        **extra,
    }


def response(*candidates: dict[str, Any], **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "candidates": list(candidates),
        "usageMetadata": {
            "promptTokenCount": 10,
            "candidatesTokenCount": 4,
            "totalTokenCount": 14,
        },
        "modelVersion": "gemini-2.5-flash",
        "responseId": "resp-1",
    }
    body.update(extra)
    return body


def event(body: dict[str, Any]) -> Event:
    gt.GenerateContentResponse.model_validate_json(orjson.dumps(body))
    return Event("message", orjson.dumps(body).decode())


def error_body(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = list(details)
    return orjson.dumps({"error": error})


CALL = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
WEATHER = Tool(
    name="get_weather",
    description="Weather in a city",
    parameters={
        "type": "object",
        "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
        "required": ["city"],
        "additionalProperties": False,
    },
)


# --- URLs and headers -------------------------------------------------------------------------


def test_url_puts_the_model_and_method_in_the_path() -> None:
    url = WIRE.url("https://g.example/v1beta/", "gemini-2.5-flash", stream=False)
    assert url == "https://g.example/v1beta/models/gemini-2.5-flash:generateContent"


def test_stream_url_asks_for_server_sent_events() -> None:
    url = WIRE.url("https://g.example/v1beta", "gemini-2.5-flash", stream=True)
    assert url == "https://g.example/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"


def test_url_keeps_a_full_resource_name() -> None:
    url = WIRE.url("https://g.example/v1beta", "tunedModels/my-tune", stream=False)
    assert url == "https://g.example/v1beta/tunedModels/my-tune:generateContent"


def test_key_goes_in_the_goog_api_key_header_and_bodies_are_json() -> None:
    assert WIRE.auth_headers("k") == {"x-goog-api-key": "k"}
    assert WIRE.default_headers()["Content-Type"] == "application/json"


def test_the_end_user_is_not_sent_since_gemini_has_no_field_for_one() -> None:
    metadata = {"user": "u-1", "safety_identifier": "h-1", "user_id": "c-1"}
    body = wire(ChatRequest(messages=(Message(role="user", content="hi"),), metadata=metadata))
    sent = orjson.dumps(body).decode()
    assert not any(value in sent for value in metadata.values())


def test_gemini_reports_no_quota_headers() -> None:
    assert WIRE.rate_limits({"x-ratelimit-remaining-requests": "5"}).empty


# --- requests ---------------------------------------------------------------------------------


def test_user_text_becomes_a_user_content_with_a_text_part() -> None:
    body = wire(user("Hello"))
    assert body == {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}]}


def test_system_prompt_and_system_messages_become_the_system_instruction_in_order() -> None:
    request = ChatRequest(
        system="Be brief.",
        messages=(Message(role="system", content="Answer in French."), Message(role="user")),
    )
    body = wire(request)
    assert body["systemInstruction"] == {
        "parts": [{"text": "Be brief."}, {"text": "Answer in French."}]
    }
    assert [c["role"] for c in body["contents"]] == ["user"]


def test_assistant_turns_are_sent_as_the_model_role() -> None:
    request = ChatRequest(
        messages=(
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"),
            Message(role="user", content="Again"),
        )
    )
    assert [c["role"] for c in wire(request)["contents"]] == ["user", "model", "user"]


def test_data_uri_image_becomes_inline_data() -> None:
    content = (TextPart(text="What is this?"), ImagePart(url="data:image/png;base64,iVBORw0KGgo="))
    parts = wire(ChatRequest(messages=(Message(role="user", content=content),)))["contents"][0][
        "parts"
    ]
    assert parts[1] == {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}


def test_percent_encoded_data_uri_is_sent_as_base64() -> None:
    content = (ImagePart(url="data:text/plain,hi%20there"),)
    part = wire(ChatRequest(messages=(Message(role="user", content=content),)))["contents"][0][
        "parts"
    ][0]
    assert part == {"inlineData": {"mimeType": "text/plain", "data": "aGkgdGhlcmU="}}


def test_http_image_becomes_file_data_with_its_guessed_type() -> None:
    content = (ImagePart(url="https://example.com/cat.jpg?size=large"),)
    part = wire(ChatRequest(messages=(Message(role="user", content=content),)))["contents"][0][
        "parts"
    ][0]
    assert part == {
        "fileData": {"fileUri": "https://example.com/cat.jpg?size=large", "mimeType": "image/jpeg"}
    }


def test_assistant_tool_calls_become_function_call_parts_with_object_args() -> None:
    request = ChatRequest(
        messages=(
            Message(role="user", content="Weather?"),
            Message(role="assistant", content="Let me check.", tool_calls=(CALL,)),
        )
    )
    parts = wire(request)["contents"][1]["parts"]
    assert parts == [
        {"text": "Let me check."},
        {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
    ]


def test_thought_signature_packed_in_a_call_id_goes_back_on_the_function_call() -> None:
    call = ToolCall(id=f"call_9{SIGNATURE_MARK}{SIGNATURE}", name="get_weather", arguments="{}")
    request = ChatRequest(
        messages=(Message(role="user", content="x"), Message(role="assistant", tool_calls=(call,)))
    )
    part = wire(request)["contents"][1]["parts"][0]
    assert part["thoughtSignature"] == SIGNATURE


def test_tool_arguments_that_are_not_a_json_object_are_refused() -> None:
    bad = ToolCall(id="c", name="f", arguments="[1, 2]")
    request = ChatRequest(
        messages=(Message(role="user", content="x"), Message(role="assistant", tool_calls=(bad,)))
    )
    with pytest.raises(BadRequestError, match="not a JSON object"):
        WIRE.to_wire(request, "m", stream=False)


def _tool_round(*results: tuple[str, str]) -> ChatRequest:
    calls = tuple(ToolCall(id=i, name=f"fn_{i}", arguments="{}") for i, _ in results)
    messages = [Message(role="user", content="go"), Message(role="assistant", tool_calls=calls)]
    messages += [Message(role="tool", tool_call_id=i, content=text) for i, text in results]
    return ChatRequest(messages=tuple(messages))


def test_tool_result_is_a_function_response_named_after_its_call() -> None:
    body = wire(_tool_round(("a", '{"temp": 21}')))
    assert body["contents"][2] == {
        "role": "user",
        "parts": [{"functionResponse": {"name": "fn_a", "response": {"temp": 21}}}],
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [("21", {"output": 21}), ('["x"]', {"output": ["x"]}), ("sunny", {"output": "sunny"})],
)
def test_tool_result_that_is_not_an_object_is_wrapped_as_output(
    text: str, expected: dict[str, Any]
) -> None:
    body = wire(_tool_round(("a", text)))
    assert body["contents"][2]["parts"][0]["functionResponse"]["response"] == expected


def test_results_of_parallel_calls_go_back_in_one_turn() -> None:
    body = wire(_tool_round(("a", "1"), ("b", "2")))
    assert len(body["contents"]) == 3
    names = [p["functionResponse"]["name"] for p in body["contents"][2]["parts"]]
    assert names == ["fn_a", "fn_b"]


def test_tool_result_for_an_unknown_call_without_a_name_is_refused() -> None:
    request = ChatRequest(
        messages=(
            Message(role="user", content="x"),
            Message(role="tool", tool_call_id="nope", content="1"),
        )
    )
    with pytest.raises(BadRequestError, match=r"messages\[1\].*'nope'"):
        WIRE.to_wire(request, "m", stream=False)


def test_an_image_in_a_tool_result_is_refused_not_dropped() -> None:
    request = ChatRequest(
        messages=(
            Message(role="user", content="x"),
            Message(role="assistant", tool_calls=(ToolCall(id="c1", name="shot", arguments="{}"),)),
            Message(
                role="tool",
                tool_call_id="c1",
                content=(TextPart(text="here"), ImagePart(url="data:image/png;base64,AAAA")),
            ),
        )
    )
    with pytest.raises(BadRequestError, match=r"messages\[2\].*image"):
        WIRE.to_wire(request, "m", stream=False)


def test_a_failed_tool_call_is_an_error_response() -> None:
    request = ChatRequest(
        messages=(
            Message(role="user", content="x"),
            Message(role="assistant", tool_calls=(ToolCall(id="c1", name="shot", arguments="{}"),)),
            Message(role="tool", tool_call_id="c1", content="no display", tool_error=True),
        )
    )
    body = WIRE.to_wire(request, "m", stream=False)
    response = body["contents"][2]["parts"][0]["functionResponse"]["response"]
    assert response == {"error": "no display"}  # Gemini's documented key for one


def test_tool_result_for_an_unknown_call_uses_the_message_name() -> None:
    request = ChatRequest(
        messages=(
            Message(role="user", content="x"),
            Message(role="tool", tool_call_id="other", name="lookup", content="1"),
        )
    )
    assert wire(request)["contents"][1]["parts"][0]["functionResponse"]["name"] == "lookup"


def test_tools_are_function_declarations_with_their_json_schema() -> None:
    body = wire(user("x", tools=(WEATHER, Tool(name="now"))))
    assert body["tools"] == [
        {
            "functionDeclarations": [
                {
                    "name": "get_weather",
                    "description": "Weather in a city",
                    "parametersJsonSchema": dict(WEATHER.parameters),
                },
                {"name": "now"},
            ]
        }
    ]


@pytest.mark.parametrize(
    ("choice", "config"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ("get_weather", {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}),
    ],
)
def test_tool_choice_becomes_the_function_calling_mode(choice: str, config: dict[str, Any]) -> None:
    body = wire(user("x", tools=(WEATHER,), tool_choice=choice))
    assert body["toolConfig"] == {"functionCallingConfig": config}


def test_tool_choice_naming_an_unknown_tool_is_refused() -> None:
    with pytest.raises(BadRequestError, match="'lookup'"):
        WIRE.to_wire(user("x", tools=(WEATHER,), tool_choice="lookup"), "m", stream=False)


def test_parallel_tool_calls_false_is_refused_only_when_a_call_may_come() -> None:
    with pytest.raises(BadRequestError) as caught:
        wire(user("x", tools=(WEATHER,), parallel_tool_calls=False))
    assert caught.value.param == "parallel_tool_calls"
    for moot in (
        user("x", tools=(WEATHER,), parallel_tool_calls=False, tool_choice="none"),
        user("x", parallel_tool_calls=False),
        user("x", tools=(WEATHER,), parallel_tool_calls=True),
    ):
        assert "parallel" not in orjson.dumps(wire(moot)).decode()


def test_sampling_options_go_in_generation_config() -> None:
    request = user("x", temperature=0.2, top_p=0.9, max_tokens=64, stop=("END",), seed=7, n=2)
    assert wire(request)["generationConfig"] == {
        "temperature": 0.2,
        "topP": 0.9,
        "maxOutputTokens": 64,
        "stopSequences": ["END"],
        "seed": 7,
        "candidateCount": 2,
    }


def test_json_mode_asks_for_a_json_mime_type() -> None:
    body = wire(user("x", response_format=ResponseFormat(type="json_object")))
    assert body["generationConfig"] == {"responseMimeType": "application/json"}


def test_json_schema_is_sent_as_response_json_schema() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    body = wire(user("x", response_format=ResponseFormat(type="json_schema", schema=schema)))
    assert body["generationConfig"] == {
        "responseMimeType": "application/json",
        "responseJsonSchema": schema,
    }


def test_logprobs_ask_for_response_logprobs_and_the_top_count() -> None:
    body = wire(user("x", logprobs=True, top_logprobs=3))
    assert body["generationConfig"] == {"responseLogprobs": True, "logprobs": 3}


def test_request_with_only_system_text_is_refused() -> None:
    with pytest.raises(BadRequestError, match="no user"):
        WIRE.to_wire(ChatRequest(messages=(), system="s"), "m", stream=False)


# --- answers ----------------------------------------------------------------------------------


def test_text_parts_are_joined_into_the_answer() -> None:
    parsed = answer(response(candidate({"text": "Hello, "}, {"text": "world."})))
    assert parsed.choices[0].message.text == "Hello, world."
    assert parsed.choices[0].finish_reason is FinishReason.STOP


def test_model_version_and_response_id_are_reported() -> None:
    parsed = answer(response(candidate({"text": "x"}), modelVersion="gemini-2.5-flash-001"))
    assert (parsed.provider_model, parsed.id) == ("gemini-2.5-flash-001", "resp-1")


def test_thought_summaries_are_not_part_of_the_answer() -> None:
    parsed = answer(response(candidate({"text": "thinking...", "thought": True}, {"text": "42"})))
    assert parsed.choices[0].message.text == "42"


def test_function_calls_become_tool_calls_with_fresh_ids() -> None:
    parsed = answer(
        response(
            candidate(
                {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"name": "get_weather", "args": {"city": "Rome"}}},
            )
        )
    )
    calls = parsed.choices[0].message.tool_calls
    assert [orjson.loads(c.arguments) for c in calls] == [{"city": "Paris"}, {"city": "Rome"}]
    assert len({c.id for c in calls}) == 2 and all(c.id.startswith("call_") for c in calls)
    assert parsed.choices[0].finish_reason is FinishReason.TOOL_CALLS


def test_thought_signature_rides_in_the_call_id_and_round_trips() -> None:
    part = {"functionCall": {"name": "f", "args": {}}, "thoughtSignature": SIGNATURE}
    call = answer(response(candidate(part))).choices[0].message.tool_calls[0]
    assert split_call_id(call.id)[1] == SIGNATURE
    request = ChatRequest(
        messages=(
            Message(role="user", content="x"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", tool_call_id=call.id, content="ok"),
        )
    )
    body = wire(request)
    assert body["contents"][1]["parts"][0] == part
    assert body["contents"][2]["parts"][0]["functionResponse"]["name"] == "f"


def test_max_tokens_means_length() -> None:
    parsed = answer(response(candidate({"text": "cut"}, finish="MAX_TOKENS")))
    assert parsed.choices[0].finish_reason is FinishReason.LENGTH


def test_a_safety_stop_with_nothing_written_is_an_empty_answer_finishing_content_filter() -> None:
    ratings = [
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True},
    ]
    body = response(candidate({"text": ""}, finish="SAFETY", safetyRatings=ratings))
    (choice,) = answer(body).choices
    assert (choice.message.text, choice.finish_reason) == ("", FinishReason.CONTENT_FILTER)
    assert not choice.refusal  # the filter's cut, not the model declining in words


@pytest.mark.parametrize(
    "reason",
    ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"],
)
def test_every_content_policy_stop_keeps_the_text_so_far_finishing_content_filter(
    reason: str,
) -> None:
    (choice,) = answer(response(candidate({"text": "partial"}, finish=reason))).choices
    assert (choice.message.text, choice.finish_reason) == ("partial", FinishReason.CONTENT_FILTER)


def test_one_filtered_candidate_among_good_ones_is_kept_as_content_filter() -> None:
    good = candidate({"text": "fine"})
    bad = {**candidate({"text": ""}, finish="SAFETY"), "index": 1}
    parsed = answer(response(good, bad))
    assert [c.finish_reason for c in parsed.choices] == [
        FinishReason.STOP,
        FinishReason.CONTENT_FILTER,
    ]


def test_malformed_function_call_is_a_bad_response() -> None:
    body = response(
        candidate(finish="MALFORMED_FUNCTION_CALL", finishMessage="Malformed function call: x(")
    )
    with pytest.raises(BadResponseError, match=r"MALFORMED_FUNCTION_CALL.*Malformed function call"):
        answer(body)


@pytest.mark.parametrize("reason", ["OTHER", "FINISH_REASON_UNSPECIFIED", "SOMETHING_NEW"])
def test_other_or_unknown_finish_reason_is_a_bad_response_naming_it(reason: str) -> None:
    body = response(candidate({"text": "x"}, finish="STOP"))
    body["candidates"][0]["finishReason"] = reason  # the SDK rejects values it does not know
    with pytest.raises(BadResponseError, match=reason):
        WIRE.from_wire(body)


def test_unsupported_language_is_a_bad_request() -> None:
    with pytest.raises(BadRequestError, match="LANGUAGE"):
        answer(response(candidate({"text": ""}, finish="LANGUAGE")))


def test_blocked_prompt_raises_content_filtered_naming_the_block_reason() -> None:
    body = {
        "promptFeedback": {
            "blockReason": "PROHIBITED_CONTENT",
            "safetyRatings": [
                {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "MEDIUM", "blocked": True}
            ],
        },
        "usageMetadata": {"promptTokenCount": 8, "totalTokenCount": 8},
    }
    with pytest.raises(ContentFilteredError) as caught:
        answer(body)
    assert "blocked the prompt" in str(caught.value)
    assert "PROHIBITED_CONTENT" in str(caught.value) and caught.value.param == "prompt"
    assert "HARM_CATEGORY_HATE_SPEECH=MEDIUM (blocked)" in str(caught.value)


def test_no_candidates_and_no_block_is_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match="no candidates"):
        answer({"modelVersion": "m"})


def test_parts_that_are_not_a_list_are_a_bad_response() -> None:
    body = response(candidate())
    body["candidates"][0]["content"]["parts"] = "oops"
    with pytest.raises(BadResponseError, match="parts"):
        WIRE.from_wire(body)


def test_a_body_that_is_not_an_object_is_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match="list"):
        WIRE.from_wire([1, 2])


def test_usage_counts_cached_thinking_and_tool_prompt_tokens() -> None:
    body = response(candidate({"text": "x"}))
    body["usageMetadata"] = {
        "promptTokenCount": 1000,
        "cachedContentTokenCount": 600,
        "toolUsePromptTokenCount": 50,
        "candidatesTokenCount": 20,
        "thoughtsTokenCount": 300,
        "totalTokenCount": 1370,
    }
    usage = answer(body).usage
    assert (usage.input_tokens, usage.cached_tokens) == (1050, 600)
    assert (usage.output_tokens, usage.reasoning_tokens) == (320, 300)
    assert usage.total_tokens == 1370 and not usage.estimated


def test_usage_that_is_not_a_count_is_a_bad_response() -> None:
    body = response(candidate({"text": "x"}))
    body["usageMetadata"]["promptTokenCount"] = "ten"
    with pytest.raises(BadResponseError, match="promptTokenCount"):
        WIRE.from_wire(body)


def test_missing_usage_is_estimated_from_the_answer() -> None:
    body = response(candidate({"text": "a fairly short answer"}))
    del body["usageMetadata"]
    usage = answer(body).usage
    assert usage.estimated and usage.output_tokens > 0


def test_logprobs_are_translated_per_token_with_alternatives() -> None:
    logprobs = {
        "chosenCandidates": [
            {"token": "Hi", "logProbability": -0.1},
            {"token": "!", "logProbability": -0.5},
        ],
        "topCandidates": [
            {"candidates": [{"token": "Hi", "logProbability": -0.1}]},
            {"candidates": [{"token": "!", "logProbability": -0.5}]},
        ],
    }
    body = response(candidate({"text": "Hi!"}, logprobsResult=logprobs))
    tokens = answer(body).choices[0].logprobs
    assert tokens is not None
    assert [(t.token, t.logprob) for t in tokens] == [("Hi", -0.1), ("!", -0.5)]
    assert tokens[1].top == (("!", -0.5),)


GARBAGE: list[Any] = [
    {"candidates": [{"content": "text", "finishReason": "STOP"}]},
    {"candidates": [{"content": {"parts": [{"functionCall": "f"}]}, "finishReason": "STOP"}]},
    {"candidates": [{"index": "first", "finishReason": "STOP"}]},
    {"candidates": [{"finishReason": "STOP", "logprobsResult": {"chosenCandidates": [1]}}]},
    {
        "candidates": [
            {
                "finishReason": "STOP",
                "logprobsResult": {"chosenCandidates": [{"logProbability": "low"}]},
            }
        ]
    },
    {"candidates": [{"finishReason": "STOP"}], "usageMetadata": [1]},
    {"candidates": {"0": {}}},
    {"candidates": ["x"]},
    {"error": {"code": "four hundred", "message": 7}},
]


@pytest.mark.parametrize("body", GARBAGE)
def test_malformed_answers_raise_model_errors_only(body: Any) -> None:
    with pytest.raises(ModelError):
        WIRE.from_wire(body)


@pytest.mark.parametrize("body", GARBAGE)
def test_malformed_stream_events_raise_model_errors_only(body: Any) -> None:
    with pytest.raises(ModelError):
        WIRE.stream_decoder().feed(Event("message", orjson.dumps(body).decode()))


def test_error_object_in_a_success_body_is_raised_as_its_error() -> None:
    body = {"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}}
    with pytest.raises(RateLimitedError):
        WIRE.from_wire(body)


# --- streams ----------------------------------------------------------------------------------


def chunk(text: str, *, finish: str | None = None, usage: bool = False, index: int = 0) -> Any:
    cand: dict[str, Any] = {"content": {"parts": [{"text": text}], "role": "model"}, "index": index}
    if finish:
        cand["finishReason"] = finish
    body: dict[str, Any] = {"candidates": [cand], "modelVersion": "gemini-2.5-flash"}
    body["responseId"] = "r-9"
    if usage:
        body["usageMetadata"] = {
            "promptTokenCount": 5,
            "candidatesTokenCount": 3,
            "totalTokenCount": 8,
        }
    return body


def test_stream_yields_text_deltas_and_finishes_on_the_last_chunk() -> None:
    decoder = WIRE.stream_decoder()
    out = [
        c
        for body in (chunk("Hel"), chunk("lo"), chunk("!", finish="STOP", usage=True))
        for c in decoder.feed(event(body))
    ]
    assert "".join(c.text for c in out) == "Hello!"
    assert [c.finish_reason for c in out] == [None, None, FinishReason.STOP]
    assert decoder.done and decoder.usage is not None and decoder.usage.input_tokens == 5
    assert (decoder.provider_model, decoder.response_id) == ("gemini-2.5-flash", "r-9")


def test_stream_is_not_done_before_the_finish_reason() -> None:
    decoder = WIRE.stream_decoder()
    decoder.feed(event(chunk("Hel", usage=True)))
    assert not decoder.done


def test_stream_with_cumulative_usage_keeps_the_latest() -> None:
    decoder = WIRE.stream_decoder()
    first = chunk("a", usage=True)
    last = chunk("b", finish="STOP", usage=True)
    last["usageMetadata"]["candidatesTokenCount"] = 9
    decoder.feed(event(first))
    decoder.feed(event(last))
    assert decoder.usage is not None and decoder.usage.output_tokens == 9


def test_stream_finished_without_usage_waits_for_it() -> None:
    decoder = WIRE.stream_decoder()
    decoder.feed(event(chunk("a", finish="STOP")))
    assert not decoder.done
    decoder.feed(event({"usageMetadata": {"promptTokenCount": 1, "totalTokenCount": 1}}))
    assert decoder.done


def test_stream_with_two_candidates_is_done_when_both_finished() -> None:
    decoder = WIRE.stream_decoder()
    both = chunk("a", usage=True)
    both["candidates"].append({**chunk("b")["candidates"][0], "index": 1})
    decoder.feed(event(both))
    decoder.feed(event(chunk("", finish="STOP", usage=True)))
    assert not decoder.done
    decoder.feed(event(chunk("", finish="STOP", usage=True, index=1)))
    assert decoder.done


def test_stream_function_call_becomes_a_tool_call_delta() -> None:
    decoder = WIRE.stream_decoder()
    body = chunk("", finish="STOP", usage=True)
    body["candidates"][0]["content"]["parts"] = [
        {"functionCall": {"name": "get_weather", "args": {"city": "Oslo"}}}
    ]
    (out,) = decoder.feed(event(body))
    (delta,) = out.tool_calls
    assert (delta.index, delta.name, orjson.loads(delta.arguments)) == (
        0,
        "get_weather",
        {"city": "Oslo"},
    )
    assert delta.id and out.finish_reason is FinishReason.TOOL_CALLS


def test_stream_safety_stop_mid_answer_finishes_content_filter() -> None:
    decoder = WIRE.stream_decoder()
    (first,) = decoder.feed(event(chunk("Here is how to")))
    (last,) = decoder.feed(event(chunk("", finish="SAFETY", usage=True)))
    assert first.text == "Here is how to"
    assert last.finish_reason is FinishReason.CONTENT_FILTER and decoder.done


def test_stream_blocked_prompt_raises_content_filtered() -> None:
    decoder = WIRE.stream_decoder()
    with pytest.raises(ContentFilteredError, match="blockReason SAFETY"):
        decoder.feed(event({"promptFeedback": {"blockReason": "SAFETY"}}))


@pytest.mark.parametrize(
    ("code", "status", "message", "kind"),
    [
        (503, "UNAVAILABLE", "The model is overloaded. Please try again later.", OverloadedError),
        (500, "INTERNAL", "An internal error has occurred.", UnavailableError),
        (429, "RESOURCE_EXHAUSTED", "quota", RateLimitedError),
    ],
)
def test_stream_error_event_raises_its_error(
    code: int, status: str, message: str, kind: type[ModelError]
) -> None:
    decoder = WIRE.stream_decoder()
    payload = {"error": {"code": code, "message": message, "status": status}}
    with pytest.raises(kind) as caught:
        decoder.feed(Event("message", orjson.dumps(payload).decode()))
    assert type(caught.value) is kind and caught.value.status == code


def test_a_json_array_of_chunks_is_the_events_sse_would_carry() -> None:
    # streamGenerateContent as if without alt=sse: the same objects, in one array.
    first = {"candidates": [{"content": {"parts": [{"text": "Hel"}], "role": "model"}}]}
    last = {
        "candidates": [
            {"content": {"parts": [{"text": "lo"}], "role": "model"}, "finishReason": "STOP"}
        ],
        "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2},
    }
    events = WIRE.array_events(
        b"\r\n [" + orjson.dumps(first) + b",\r\n" + orjson.dumps(last) + b"]"
    )
    assert events == [event(first), event(last)]
    decoder = WIRE.stream_decoder()
    chunks = [chunk for item in events or [] for chunk in decoder.feed(item)]
    assert "".join(chunk.text for chunk in chunks) == "Hello"
    assert chunks[-1].finish_reason is FinishReason.STOP and decoder.done


@pytest.mark.parametrize(
    "body", [b'{"candidates": []}', b"[]", b"[{truncated", b"<html>[</html>"], ids=repr
)
def test_anything_but_a_json_array_holds_no_events(body: bytes) -> None:
    assert WIRE.array_events(body) is None


def test_malformed_stream_event_is_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match="not JSON"):
        WIRE.stream_decoder().feed(Event("message", "{this is not json"))


# --- errors -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "status", "kind"),
    [
        (400, "INVALID_ARGUMENT", BadRequestError),
        (400, "FAILED_PRECONDITION", BadRequestError),
        (401, "UNAUTHENTICATED", AuthenticationError),
        (403, "PERMISSION_DENIED", PermissionDeniedError),
        (404, "NOT_FOUND", NotFoundError),
        (429, "RESOURCE_EXHAUSTED", RateLimitedError),
        (500, "INTERNAL", UnavailableError),
        (503, "UNAVAILABLE", UnavailableError),
        (504, "DEADLINE_EXCEEDED", ModelTimeoutError),
    ],
)
def test_error_status_maps_to_its_class(code: int, status: str, kind: type[ModelError]) -> None:
    error = WIRE.error_from_wire(code, {}, error_body(code, status, "Something went wrong."))
    assert type(error) is kind
    assert (error.status, error.code, error.provider_message) == (
        code,
        status,
        "Something went wrong.",
    )
    assert status in error.message and "Something went wrong." in error.message


def test_token_limit_message_is_context_length() -> None:
    message = (
        "The input token count (1200000) exceeds the maximum number of tokens allowed (1048576)."
    )
    error = WIRE.error_from_wire(400, {}, error_body(400, "INVALID_ARGUMENT", message))
    assert isinstance(error, ContextLengthError)


def test_a_400_names_the_field_its_bad_request_detail_names() -> None:
    violation = {"field": "generation_config.temperature", "description": "out of range"}
    detail = {"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]}
    message = "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), 7"
    error = WIRE.error_from_wire(400, {}, error_body(400, "INVALID_ARGUMENT", message, detail))
    assert type(error) is BadRequestError and error.param == "generation_config.temperature"
    assert WIRE.error_from_wire(400, {}, error_body(400, "INVALID_ARGUMENT", message)).param is None


def test_a_hostile_error_message_is_classified_in_linear_time() -> None:
    """'input token count' 20,000 times with no 'exceeds' took 20 s through `.*`."""
    message = "input token count " * 20_000
    error = WIRE.error_from_wire(400, {}, error_body(400, "INVALID_ARGUMENT", message))
    assert type(error) is BadRequestError


def test_overloaded_503_is_overloaded() -> None:
    body = error_body(503, "UNAVAILABLE", "The model is overloaded. Please try again later.")
    assert type(WIRE.error_from_wire(503, {}, body)) is OverloadedError


def test_invalid_api_key_is_authentication_although_gemini_says_400() -> None:
    info = {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}
    body = error_body(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", info
    )
    error = WIRE.error_from_wire(400, {}, body)
    assert isinstance(error, AuthenticationError) and error.code == "API_KEY_INVALID"


@pytest.mark.parametrize(("delay", "seconds"), [("30s", 30.0), ("0.250s", 0.25), ("2m", 120.0)])
def test_rate_limit_waits_the_retry_info_delay(delay: str, seconds: float) -> None:
    retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": delay}
    quota = {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": []}
    body = error_body(429, "RESOURCE_EXHAUSTED", "quota", quota, retry)
    error = WIRE.error_from_wire(429, {}, body)
    assert isinstance(error, RateLimitedError) and error.retry_after == seconds


def test_rate_limit_without_retry_info_uses_the_retry_after_header() -> None:
    body = error_body(429, "RESOURCE_EXHAUSTED", "quota")
    assert WIRE.error_from_wire(429, {"retry-after": "12"}, body).retry_after == 12.0


def test_error_wrapped_in_a_list_is_read() -> None:
    body = b"[" + error_body(404, "NOT_FOUND", "no such model") + b"]"
    assert isinstance(WIRE.error_from_wire(404, {}, body), NotFoundError)


@pytest.mark.parametrize(
    ("status", "kind"),
    [(502, UnavailableError), (429, RateLimitedError), (400, BadRequestError)],
)
def test_non_json_error_body_keeps_the_status_class_and_first_bytes(
    status: int, kind: type[ModelError]
) -> None:
    error = WIRE.error_from_wire(status, {}, b"<html><body>Bad Gateway</body></html>")
    assert isinstance(error, kind) and error.status == status
    assert "<html><body>Bad Gateway" in error.message


def test_a_bare_503_page_is_an_outage_not_an_overload() -> None:
    # It was an OverloadedError (Anthropic's 529 to a Messages client), as no other wire has it.
    page = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
    error = WIRE.error_from_wire(503, {"retry-after": "4"}, page)
    assert type(error) is UnavailableError and error.retryable
    assert (error.status, error.retry_after) == (503, 4.0) and "<h1>503" in error.message


@pytest.mark.parametrize(
    ("message", "kind"),
    [("The model is overloaded.", OverloadedError), ("Backend error.", UnavailableError)],
)
def test_a_503_error_object_without_a_status_name_is_an_overload_when_it_says_so(
    message: str, kind: type[ModelError]
) -> None:
    body = orjson.dumps({"error": {"code": 503, "message": message}})
    assert type(WIRE.error_from_wire(503, {}, body)) is kind


# --- embeddings -------------------------------------------------------------------------------


def test_embedding_request_names_the_model_for_each_input() -> None:
    body = WIRE.embeddings_to_wire(
        EmbeddingRequest(inputs=("a", "b"), dimensions=256), "gemini-embedding-001"
    )
    assert body == {
        "requests": [
            {
                "model": "models/gemini-embedding-001",
                "content": {"parts": [{"text": text}]},
                "outputDimensionality": 256,
            }
            for text in ("a", "b")
        ]
    }
    for item in body["requests"]:
        gt.Content.model_validate_json(orjson.dumps(item["content"]))


def test_embeddings_url_is_batch_embed_contents() -> None:
    url = WIRE.embeddings_url("https://g.example/v1beta", "gemini-embedding-001")
    assert url == "https://g.example/v1beta/models/gemini-embedding-001:batchEmbedContents"


def test_embeddings_are_read_in_order_with_estimated_usage() -> None:
    body = {"embeddings": [{"values": [0.1, 0.2]}, {"values": [0.3, -0.4]}]}
    gt.EmbedContentResponse.model_validate_json(orjson.dumps(body))
    parsed = WIRE.embeddings_from_wire(body)
    assert parsed.vectors == ((0.1, 0.2), (0.3, -0.4))
    assert parsed.usage.estimated


def test_embedding_values_that_are_not_numbers_are_a_bad_response() -> None:
    with pytest.raises(BadResponseError, match=r"embeddings\[0\]"):
        WIRE.embeddings_from_wire({"embeddings": [{"values": ["x"]}]})
