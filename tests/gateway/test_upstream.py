"""The gateway in front of a real OpenAI-shaped upstream (the fake on a socket): what the client
sends reaches the provider in its wire format, and what the provider says comes back, streamed
chunk by chunk, with upstream failures mapped to the right status."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anthropic
import httpx2
import openai
import pytest
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.server import Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running


def gateway_for(serve_gateway: Callable[..., Running], fake: FakeOpenAI) -> openai.OpenAI:
    running = serve_for(serve_gateway, fake)
    return openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)


def serve_for(serve_gateway: Callable[..., Running], fake: FakeOpenAI) -> Running:
    """The gateway serving system `main`: model `gpt` of provider `up`, on `fake`."""
    config = f"""
providers:
  up:
    type: openai
    base_url: {fake.url}/v1
    api_key: {UPSTREAM_KEY}
    timeouts: {{total: 2, first_token: 2, stall: 1}}
    retry: {{attempts: 0}}
models:
  gpt:
    provider: up
    id: gpt-4o-mini-2024-07-18
    price: {{input: 0.15, output: 0.6}}
systems:
  main: gpt
"""
    return serve_gateway(text=config)


def test_tools_round_trip(serve_gateway: Callable[..., Running], upstream: FakeOpenAI) -> None:
    client = gateway_for(serve_gateway, upstream)
    upstream.script(Reply(tool_calls=(("get_weather", '{"city": "Oslo"}'), ("get_time", "{}"))))
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
    ]
    reply = client.chat.completions.create(
        model="main",
        messages=[{"role": "user", "content": "weather?"}],
        tools=tools,  # type: ignore[arg-type]
    )
    calls = reply.choices[0].message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Oslo"}),
        ("get_time", {}),
    ]
    assert reply.choices[0].finish_reason == "tool_calls"
    sent = upstream.requests[-1].json
    assert [t["function"]["name"] for t in sent["tools"]] == ["get_weather", "get_time"]


def test_streamed_tool_calls(serve_gateway: Callable[..., Running], upstream: FakeOpenAI) -> None:
    client = gateway_for(serve_gateway, upstream)
    upstream.script(Reply(tool_calls=(("lookup", '{"id": 7}'),)))
    stream = client.chat.completions.create(
        model="main",
        stream=True,
        messages=[{"role": "user", "content": "find 7"}],
        tools=[
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ],
    )
    pieces: dict[int, list[str]] = {}
    names = {}
    finish = None
    for chunk in stream:
        for delta in chunk.choices[0].delta.tool_calls or []:
            pieces.setdefault(delta.index, []).append(delta.function.arguments or "")  # type: ignore[union-attr]
            if delta.function and delta.function.name:
                names[delta.index] = delta.function.name
        finish = chunk.choices[0].finish_reason or finish
    assert names == {0: "lookup"}
    assert json.loads("".join(pieces[0])) == {"id": 7}
    assert finish == "tool_calls"


def test_json_schema_passes_through(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    client = gateway_for(serve_gateway, upstream)
    upstream.script(Reply(text='{"answer": 4}'))
    schema = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    reply = client.chat.completions.create(
        model="main",
        messages=[{"role": "user", "content": "2+2"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": schema, "strict": True},
        },
    )
    assert json.loads(reply.choices[0].message.content or "") == {"answer": 4}
    sent = upstream.requests[-1].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema


def test_stream_relays_every_chunk(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    client = gateway_for(serve_gateway, upstream)
    upstream.script(Reply(text="one two three four"))
    chunks = list(
        client.chat.completions.create(
            model="main",
            stream=True,
            stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "count"}],
        )
    )
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert "".join(texts) == "one two three four"
    assert len(texts) >= 4
    assert chunks[-1].usage is not None


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (Fault(status=429, headers={"retry-after": "3"}), openai.RateLimitError, 429),
        (Fault(status=500), openai.InternalServerError, 503),
        (Fault(status=401), openai.APIStatusError, 502),
        (
            Fault(body=b"<html>bad gateway</html>", status=200, content_type="text/html"),
            openai.APIStatusError,
            502,
        ),
        (Fault(hang=True), openai.APIStatusError, 504),
        (Fault(status=400, error_type="context_length_exceeded"), openai.BadRequestError, 400),
    ],
)
def test_upstream_failures_map_to_statuses(
    serve_gateway: Callable[..., Running],
    upstream: FakeOpenAI,
    fault: Fault,
    error: type[openai.APIStatusError],
    status: int,
) -> None:
    client = gateway_for(serve_gateway, upstream)
    upstream.always(fault)
    with pytest.raises(error) as caught:
        client.chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == status
    assert (
        UPSTREAM_KEY not in str(caught.value.body)
        and UPSTREAM_KEY not in caught.value.response.text
    )


@pytest.mark.parametrize(
    "fault",
    [
        Fault(status=429),
        Fault(status=503),
        Fault(status=401),
        Fault(status=404, error_type="model_not_found"),
        Fault(hang=True),
        Fault(body=b"{}"),
    ],
    ids=["rate-limited", "unavailable", "bad-key", "unknown-model", "timeout", "bad-response"],
)
def test_an_upstream_failure_names_its_model_and_provider_never_its_url_or_key(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI, fault: Fault
) -> None:
    # Messages said "(model gpt)": which provider's account or endpoint failed was left out.
    running = serve_for(serve_gateway, upstream)
    upstream.always(fault)
    ask: Any = [{"role": "user", "content": "x"}]
    oai = openai.OpenAI(base_url=running.openai_url, api_key="x", max_retries=0)
    claude = anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as chat:
        oai.chat.completions.create(model="main", messages=ask)
    with pytest.raises(anthropic.APIStatusError) as messages:
        claude.messages.create(model="main", max_tokens=10, messages=ask)
    for error in (chat.value, messages.value):
        text = error.response.text
        assert "(model gpt, provider up)" in text, text
        assert upstream.url.removeprefix("http://") not in text and UPSTREAM_KEY not in text


def test_an_operator_side_failure_tells_the_sdk_not_to_retry(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    client = gateway_for(serve_gateway, upstream).with_options(max_retries=2)
    upstream.always(Fault(status=401))  # the gateway's provider key is wrong: a retry cannot help
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(upstream.requests) == 1  # the SDK asked once, not three times


def test_a_failed_request_says_what_it_was_billed_as_an_answer_does(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    client = gateway_for(serve_gateway, upstream)
    upstream.always(Fault(hang=True))  # sent, so the provider bills the input it read
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="main", messages=[{"role": "user", "content": "x"}])
    headers = caught.value.response.headers
    assert caught.value.status_code == 504 and float(headers["x-modelyard-cost"]) > 0
    record = httpx2.get(f"{client.base_url}requests/{headers['x-request-id']}").json()
    assert float(headers["x-modelyard-cost"]) == pytest.approx(record["cost"], rel=1e-6)
    assert headers["x-modelyard-config-version"] == record["config_version"]


CHAT_WITH_A_LATE_SYSTEM: Any = [
    {"role": "system", "content": "be brief"},
    {"role": "developer", "content": "answer in English"},
    {"role": "user", "content": "hi"},
    {"role": "assistant", "content": "hello"},
    {"role": "developer", "content": "from now on, answer in French"},
    {"role": "user", "content": "bye"},
]


def test_a_system_message_after_the_first_turn_reaches_the_model_where_it_stands(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    # Lifted into the system prompt, it would say something else ("from now on") and change
    # the prompt's first message, which OpenAI's automatic prefix cache keys on.
    client = gateway_for(serve_gateway, upstream)
    client.chat.completions.create(model="main", messages=CHAT_WITH_A_LATE_SYSTEM)
    sent = [(m["role"], m["content"]) for m in upstream.requests[-1].json["messages"]]
    assert sent == [
        ("system", "be brief\n\nanswer in English"),
        ("user", "hi"),
        ("assistant", "hello"),
        ("system", "from now on, answer in French"),
        ("user", "bye"),
    ]


def test_a_late_developer_item_of_the_responses_api_stays_where_it_stands(
    serve_gateway: Callable[..., Running], upstream: FakeOpenAI
) -> None:
    client = gateway_for(serve_gateway, upstream)
    client.responses.create(model="main", input=CHAT_WITH_A_LATE_SYSTEM, instructions="hello")
    sent = [(m["role"], m["content"]) for m in upstream.requests[-1].json["messages"]]
    assert sent[0] == ("system", "hello\n\nbe brief\n\nanswer in English")
    assert sent[3] == ("system", "from now on, answer in French")
