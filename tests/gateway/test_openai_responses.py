"""The official OpenAI SDK's Responses client, and the OpenAI Agents SDK, against the
gateway's /v1/responses."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import BaseModel, TypeAdapter
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.gateway.conftest import UPSTREAM_KEY, Running
from tests.gateway.test_capture import captured
from tests.gateway.test_keys import ADMIN, create_key

from modelyard.errors import BadResponseError
from modelyard.gateway import responses_api, responses_render
from modelyard.gateway.errors import ApiError
from modelyard.topology import unwrap
from modelyard.types import Chunk, ToolCallDelta

EVENTS: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "the weather in a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
    },
}


def client(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_url, api_key="anything", max_retries=0)


@pytest.fixture
def hosted(
    upstream: FakeOpenAI,
    serve_gateway: Callable[..., Running],
    monkeypatch: pytest.MonkeyPatch,
) -> Running:
    """A gateway in front of the fake OpenAI upstream (for tool calls)."""
    monkeypatch.setenv("FAKE_OPENAI_KEY", UPSTREAM_KEY)
    return serve_gateway(
        text=f"""
providers:
  oa: {{type: openai, base_url: "{upstream.url}/v1", api_key: "${{FAKE_OPENAI_KEY}}"}}
models:
  mini:
    provider: oa
    id: gpt-4o-mini-2024-07-18
    price: {{input: 0.15, output: 0.60}}
"""
    )


def strict(response: Response) -> Response:
    """The response re-read with validation (the SDK builds it without)."""
    return Response.model_validate(
        response.model_dump(mode="json", exclude_unset=True, by_alias=True)
    )


def test_a_text_answer_through_a_system(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    raw = client(running).responses.with_raw_response.create(
        model="support", input="ping", instructions="be brief", max_output_tokens=50
    )
    response = strict(raw.parse())
    assert response.output_text == "pong" and response.status == "completed"
    assert response.model == "support" and response.instructions == "be brief"
    assert response.usage is not None and response.usage.output_tokens > 0
    assert raw.headers["x-modelyard-model"] == "cheap"
    assert float(raw.headers["x-modelyard-cost"]) == pytest.approx(
        (response.usage.input_tokens * 1.0 + response.usage.output_tokens * 2.0) / 1e6
    )
    calls = unwrap(running.app.live.current.models["cheap"]).calls  # type: ignore[attr-defined]
    assert calls[-1].system == "be brief" and calls[-1].max_tokens == 50


def test_input_items_become_the_conversation(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    client(running).responses.create(
        model="strong",
        instructions="be brief",
        input=[
            {"role": "developer", "content": "and kind"},
            {"role": "user", "content": [{"type": "input_text", "text": "hello"}]},
            {"type": "message", "role": "assistant", "content": "hi"},
            {"role": "user", "content": "again"},
        ],
        temperature=0.3,
        metadata={"team": "support"},
    )
    request = unwrap(running.app.live.current.models["strong"]).calls[-1]  # type: ignore[attr-defined]
    assert request.system == "be brief\n\nand kind"
    assert [(m.role, m.text) for m in request.messages] == [
        ("user", "hello"),
        ("assistant", "hi"),
        ("user", "again"),
    ]
    assert request.temperature == 0.3 and request.metadata["team"] == "support"


def test_a_stream_is_the_responses_event_sequence(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    events = list(client(running).responses.create(model="support", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text == "the cheap answer"
    final = strict(events[-1].response)  # type: ignore[union-attr]
    assert final.output_text == text and final.usage is not None
    for event in events:  # every event is one the SDK's own types accept
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))


def test_the_sdks_stream_helper_assembles_the_answer(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    with client(running).responses.stream(model="support", input="ping") as stream:
        final = stream.get_final_response()
    assert final.output_text == "pong" and final.status == "completed"


def test_tool_calls_and_their_results_round_trip(hosted: Running, upstream: FakeOpenAI) -> None:
    sdk = client(hosted)
    upstream.script(Reply(tool_calls=(("get_weather", '{"city": "Oslo"}'),)))
    first = strict(
        sdk.responses.create(model="mini", input="weather in Oslo?", tools=[WEATHER])  # type: ignore[list-item]
    )
    (call,) = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.arguments == '{"city": "Oslo"}'
    # Stateless: the client sends the whole conversation back, the call and its output too.
    second = sdk.responses.create(
        model="mini",
        tools=[WEATHER],  # type: ignore[list-item]
        input=[
            {"role": "user", "content": "weather in Oslo?"},
            *[item.model_dump(exclude_none=True) for item in first.output],
            {"type": "function_call_output", "call_id": call.call_id, "output": "12 C, rain"},
        ],
    )
    assert second.output_text
    sent = upstream.requests[-1].json["messages"]
    assert sent[1]["tool_calls"][0]["id"] == call.call_id
    assert sent[2] == {"role": "tool", "tool_call_id": call.call_id, "content": "12 C, rain"}


def test_a_streamed_tool_call_ends_with_its_arguments(
    hosted: Running, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(tool_calls=(("get_weather", '{"city": "Oslo"}'),)))
    with client(hosted).responses.stream(
        model="mini",
        input="weather?",
        tools=[WEATHER],  # type: ignore[list-item]
    ) as stream:
        events = list(stream)
        final = stream.get_final_response()
    (call,) = final.output
    assert call.type == "function_call" and call.arguments == '{"city": "Oslo"}'
    done = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert [e.arguments for e in done] == ['{"city": "Oslo"}']


def test_a_length_cut_is_incomplete_and_so_is_the_item_it_cut(
    hosted: Running, upstream: FakeOpenAI
) -> None:
    cut = Reply(text="a long answer", finish_reason="length")
    upstream.script(cut, cut)
    response = strict(client(hosted).responses.create(model="mini", input="go on"))
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert [item.status for item in response.output] == ["incomplete"]  # type: ignore[union-attr]
    events = list(client(hosted).responses.create(model="mini", input="go on", stream=True))
    (done,) = [e for e in events if e.type == "response.output_item.done"]
    assert done.item.status == "incomplete"  # type: ignore[union-attr]
    assert events[-1].type == "response.incomplete"
    assert events[-1].response.output[0].status == "incomplete"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type"),
        ({"input": [{"type": "reasoning", "summary": []}]}, "input[0].type"),
        ({"input": [{"role": "robot", "content": "x"}]}, "input[0].role"),
        ({"text": {"format": {"type": "yaml"}}}, "text.format.type"),
        ({"input": []}, "input"),
        ({"include": ["file_search_call.results"]}, "include[0]"),
        (
            {
                "input": [
                    {
                        "type": "function_call_output",
                        "call_id": "c1",
                        "output": [{"type": "input_image", "image_url": "https://x/y.png"}],
                    }
                ]
            },
            "input[0]",
        ),
        ({"frequency": 1}, "frequency"),
        ({"tools": [{**WEATHER, "defer_loading": True}]}, "tools[0].defer_loading"),
        (
            {"text": {"format": {"type": "json_schema", "name": "n", "schema": {}, "x": 1}}},
            "text.format.x",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_text", "text": "a", "b": 1}]}]},
            "input[0].content[0].b",
        ),
        (  # a Chat Completions part: its type is what is wrong
            {"input": [{"role": "user", "content": [{"type": "text", "text": "a"}]}]},
            "input[0].content[0]",
        ),
        ({"input": [{"type": "text", "text": "a"}]}, "input[0].type"),
        (
            {
                "input": [
                    {"role": "user", "content": "weather?"},
                    {
                        "type": "function_call",
                        "call_id": "c1",
                        "name": "get_weather",
                        "arguments": "{}",
                        "namespace": "crm",
                    },
                ]
            },
            "input[1].namespace",
        ),
        (
            {
                "input": [
                    {
                        "role": "developer",
                        "content": [{"type": "input_image", "image_url": "https://x/y.png"}],
                    },
                    {"role": "user", "content": "hi"},
                ]
            },
            "input[0].content",
        ),
    ],
)
def test_what_the_gateway_cannot_honour_is_a_400_naming_it(
    serve_gateway: Callable[..., Running], fields: dict[str, Any], named: str
) -> None:
    running = serve_gateway()
    with pytest.raises(openai.BadRequestError) as caught:
        client(running).responses.create(model="support", input="hi", extra_body=fields)
    assert caught.value.body["param"] == named  # type: ignore[index]
    assert named.split("[")[0] in str(caught.value)


@pytest.mark.parametrize("tier", ["auto", "default"])
def test_the_service_tiers_every_request_gets_are_taken_as_on_chat(
    serve_gateway: Callable[..., Running], tier: Any
) -> None:
    sdk = client(serve_gateway())
    assert sdk.responses.create(model="support", input="ping", service_tier=tier).output_text == (
        "pong"
    )
    with pytest.raises(openai.BadRequestError, match="'flex' is not supported") as caught:
        sdk.responses.create(model="support", input="ping", service_tier="flex")
    assert caught.value.body["param"] == "service_tier"  # type: ignore[index]


def test_a_failure_before_the_answer_is_an_http_error(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    with pytest.raises(openai.RateLimitError):
        client(running).responses.create(model="cheap", input="limited")
    with pytest.raises(openai.NotFoundError, match="support"):
        client(running).responses.create(model="nope", input="x")


def test_a_stream_broken_midway_ends_failed_with_the_error_and_what_was_sent(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(
        text="""
models:
  flaky:
    local: {type: fake, default: {text: "one two three four five", cut_after: 2}}
"""
    )
    events = list(client(running).responses.create(model="flaky", input="hi", stream=True))
    kinds = [e.type for e in events]
    assert "response.output_text.delta" in kinds and kinds[-1] == "response.failed"
    assert "response.completed" not in kinds
    for event in events:
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))
    failed = events[-1].response  # type: ignore[union-attr]
    assert failed.status == "failed" and failed.error is not None and failed.error.message
    sent = "".join(e.delta for e in events if e.type == "response.output_text.delta")  # type: ignore[union-attr]
    assert sent and failed.output[0].content[0].text == sent  # type: ignore[union-attr]
    assert failed.output[0].status == "incomplete"


def test_a_keys_scope_and_budget_hold_here_as_on_chat(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway(ADMIN)
    key = str(create_key(running, name="narrow", systems=["support"], budget=0.01)["key"])
    sdk = openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)
    assert sdk.responses.create(model="support", input="ping").output_text == "pong"
    with pytest.raises(openai.PermissionDeniedError):
        sdk.responses.create(model="strong", input="ping")
    with pytest.raises(openai.RateLimitError) as caught:  # its worst case passes the budget
        sdk.responses.create(model="support", input="ping", max_output_tokens=5_000_000)
    assert caught.value.body["type"] == "budget_exceeded"  # type: ignore[index]


def test_parallel_streamed_calls_are_one_output_item_after_another(
    hosted: Running, upstream: FakeOpenAI
) -> None:
    upstream.script(Reply(tool_calls=(("get_weather", '{"city": "Oslo"}'), ("get_weather", "{}"))))
    events = list(
        client(hosted).responses.create(
            model="mini",
            input="weather?",
            tools=[WEATHER],  # type: ignore[list-item]
            stream=True,
        )
    )
    # As OpenAI streams them: an item is done before the next is added, its arguments too.
    items = [
        (e.type.removeprefix("response."), e.output_index)  # type: ignore[union-attr]
        for e in events
        if e.type.startswith("response.output_item") or e.type.endswith("arguments.done")
    ]
    assert items == [
        ("output_item.added", 0),
        ("function_call_arguments.done", 0),
        ("output_item.done", 0),
        ("output_item.added", 1),
        ("function_call_arguments.done", 1),
        ("output_item.done", 1),
    ]
    final = strict(events[-1].response)  # type: ignore[union-attr]
    assert [item.arguments for item in final.output] == ['{"city": "Oslo"}', "{}"]  # type: ignore[union-attr]


def test_a_stream_going_back_to_an_earlier_call_is_a_broken_answer() -> None:
    call = responses_api.parse_responses({"model": "m", "input": "hi"}, max_messages=10)
    shape = responses_render.ResponseShape(request_id="r1", target="m", created=0, echo=call.echo)
    events = responses_render.EventRenderer(shape)
    for index in (0, 1):
        events.chunk(Chunk(tool_calls=(ToolCallDelta(index=index, id=f"c{index}", name="f"),)))
    with pytest.raises(BadResponseError, match="went back to tool call 0"):
        events.chunk(Chunk(tool_calls=(ToolCallDelta(index=0, arguments="{}"),)))


@pytest.mark.parametrize("streamed", [False, True])
async def test_an_agents_sdk_agent_runs_its_tools_through_the_gateway(
    hosted: Running, upstream: FakeOpenAI, streamed: bool
) -> None:
    """The OpenAI Agents SDK speaks the Responses API by default: two parallel calls, their
    outputs sent back, then the answer."""
    import agents  # here, not at the top: it takes 1.5 s to import, for these two tests only

    asked: list[str] = []

    @agents.function_tool
    def get_weather(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return f"12 C in {city}"

    sdk = openai.AsyncOpenAI(base_url=hosted.openai_url, api_key="anything", max_retries=0)
    agent = agents.Agent(
        name="forecaster",
        instructions="be brief",
        tools=[get_weather],
        model=agents.OpenAIResponsesModel(model="mini", openai_client=sdk),
    )
    calls = (("get_weather", '{"city": "Oslo"}'), ("get_weather", '{"city": "Rome"}'))
    upstream.script(Reply(tool_calls=calls), Reply(text="Both 12 C."))
    config = agents.RunConfig(tracing_disabled=True)
    if streamed:
        result: agents.RunResult | agents.RunResultStreaming = agents.Runner.run_streamed(
            agent, "weather in Oslo and Rome?", run_config=config
        )
        async for _ in result.stream_events():
            pass
    else:
        result = await agents.Runner.run(agent, "weather in Oslo and Rome?", run_config=config)
    assert result.final_output == "Both 12 C." and asked == ["Oslo", "Rome"]
    sent = upstream.requests[-1].json["messages"]
    assert [m["role"] for m in sent] == ["system", "user", "assistant", "tool", "tool"]
    assert [m["content"] for m in sent[3:]] == ["12 C in Oslo", "12 C in Rome"]


def test_a_stream_is_named_logged_and_captured_as_a_chat_stream_is(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway("\ngateway:\n  capture: {}\n")
    with client(running).responses.with_streaming_response.create(
        model="support", input="ping", instructions="be brief", stream=True
    ) as streamed:
        assert streamed.headers["x-modelyard-model"] == "cheap"  # the fallback that answered
        assert streamed.headers["x-modelyard-config-version"]
        request_id = streamed.headers["x-request-id"]
        assert [e.type for e in streamed.parse()][-1] == "response.completed"
    record = httpx2.get(f"{running.url}/v1/requests/{request_id}", timeout=5).json()
    assert (record["api"], record["stream"], record["status"]) == ("responses", True, 200)
    assert record["model"] == "cheap" and record["cost"] > 0
    (kept,) = captured(running, 1)
    assert (
        kept["messages"] == [["system", "be brief"], ["user", "ping"]] and kept["answer"] == "pong"
    )


class Verdict(BaseModel):
    answer: str


def test_a_refusal_is_a_refusal_part_streamed_or_not(hosted: Running, upstream: FakeOpenAI) -> None:
    sdk = client(hosted)
    no = "I can't help with that."
    upstream.script(Reply(refusal=no), Reply(refusal=no), Reply(refusal=no))
    parsed = sdk.responses.parse(model="mini", input="something bad", text_format=Verdict)
    assert parsed.status == "completed" and parsed.output_parsed is None
    (item,) = parsed.output
    assert item.type == "message" and [p.type for p in item.content] == ["refusal"]
    assert item.content[0].refusal == no  # type: ignore[union-attr]
    with sdk.responses.stream(model="mini", input="something bad", text_format=Verdict) as stream:
        events = list(stream)
        final = stream.get_final_response()
    assert "".join(e.delta for e in events if e.type == "response.refusal.delta") == no
    assert final.status == "completed" and final.output_parsed is None
    for event in sdk.responses.create(model="mini", input="something bad", stream=True):
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))


def test_a_refusal_reaches_chat_clients_as_openai_sends_it(
    hosted: Running, upstream: FakeOpenAI
) -> None:
    sdk = client(hosted)
    no = "I can't help with that."
    upstream.script(Reply(refusal=no), Reply(refusal=no))
    message = [{"role": "user", "content": "something bad"}]
    completion = sdk.chat.completions.parse(
        model="mini",
        messages=message,  # type: ignore[arg-type]
        response_format=Verdict,
    )
    choice = completion.choices[0]
    assert (choice.message.refusal, choice.message.content) == (no, None)
    assert choice.finish_reason == "stop" and choice.message.parsed is None
    chunks = list(sdk.chat.completions.create(model="mini", messages=message, stream=True))  # type: ignore[arg-type]
    deltas = [c.choices[0] for c in chunks if c.choices]
    assert "".join(d.delta.refusal or "" for d in deltas) == no
    assert not any(d.delta.content for d in deltas) and deltas[-1].finish_reason == "stop"


def test_logprobs_asked_with_include_come_back_on_the_text_streamed_or_not(
    hosted: Running, upstream: FakeOpenAI
) -> None:
    sdk = client(hosted)
    tokens = (("Hel", -0.1), ("lo", -0.2))
    upstream.script(Reply(logprobs=tokens), Reply(logprobs=tokens))
    asked: dict[str, Any] = {"include": ["message.output_text.logprobs"], "top_logprobs": 2}
    response = strict(sdk.responses.create(model="mini", input="hi", **asked))
    sent = upstream.requests[-1].json
    assert sent["logprobs"] is True and sent["top_logprobs"] == 2
    part = response.output[0].content[0]  # type: ignore[union-attr]
    assert [(t.token, t.logprob) for t in part.logprobs] == list(tokens)  # type: ignore[union-attr]
    events = list(sdk.responses.create(model="mini", input="hi", stream=True, **asked))
    deltas = [t.token for e in events if e.type == "response.output_text.delta" for t in e.logprobs]
    assert deltas == ["Hel", "lo"]
    final = strict(events[-1].response)  # type: ignore[union-attr]
    assert [t.token for t in final.output[0].content[0].logprobs] == ["Hel", "lo"]  # type: ignore[union-attr]
    for event in events:
        EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))


@pytest.mark.parametrize(
    ("raw_input", "named"),
    [
        ([{"type": ["message"], "role": "user", "content": "hi"}], "input[0].type"),
        ([{"role": "user", "content": [{"type": {"x": 1}}]}], "input[0].content[0]"),
    ],
)
def test_a_type_that_is_not_a_string_is_a_400_not_a_crash(raw_input: Any, named: str) -> None:
    with pytest.raises(ApiError) as caught:
        responses_api.parse_responses({"model": "m", "input": raw_input}, max_messages=10)
    assert caught.value.status == 400
    assert caught.value.param == named
