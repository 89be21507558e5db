"""Anthropic's token counting: the count_tokens body and answer (pure), and RemoteModel counting
against the fake Anthropic on a real socket, agreeing with what a Messages call reports."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
from tests.fakes.anthropic_server import FakeAnthropic, rate_limited, validate_request
from tests.fakes.server import Fault

from modelyard.errors import AuthenticationError, BadResponseError, RateLimitedError
from modelyard.model import ModelInfo
from modelyard.providers.anthropic_wire import WIRE
from modelyard.providers.http import HttpClient
from modelyard.providers.openai_wire import WIRE as OPENAI_WIRE
from modelyard.providers.remote import Endpoint, RemoteModel
from modelyard.types import ChatRequest, Message, TextPart, Tool

KEY = "sk-ant-api03-countcount0123456789"
MODEL_ID = "claude-haiku-4-5-20251001"
LOOKUP = Tool(
    name="lookup",
    description="find an order",
    parameters={"type": "object", "properties": {"order": {"type": "integer"}}},
)
REQUEST = ChatRequest(
    messages=(Message(role="user", content="where is order 7?"),),
    system="You are the order desk. " * 20,
    tools=(LOOKUP,),
    tool_choice="auto",
    temperature=0.5,
    top_p=0.9,
    stop=("END",),
    metadata={"user_id": "u1"},
    max_tokens=200,
)


def test_the_body_is_the_messages_body_without_what_only_an_answer_needs() -> None:
    body = WIRE.count_tokens_to_wire(REQUEST, MODEL_ID)
    messages = WIRE.to_wire(REQUEST, MODEL_ID, stream=False)
    assert set(body) == {"model", "messages", "system", "tools", "tool_choice"}
    assert all(body[name] == messages[name] for name in body)
    assert validate_request(body, kind="count_tokens") is None
    # What the endpoint refuses, as the fake checks it against the SDK's count params.
    assert validate_request(messages, kind="count_tokens") is not None


def test_a_request_without_max_tokens_is_counted_all_the_same() -> None:
    request = ChatRequest(messages=(Message(role="user", content="hi"),))
    body = WIRE.count_tokens_to_wire(request, MODEL_ID)
    assert body == {"model": MODEL_ID, "messages": [{"role": "user", "content": "hi"}]}


def test_the_url_sits_beside_the_messages_url() -> None:
    assert WIRE.count_tokens_url("https://api.anthropic.com") == (
        "https://api.anthropic.com/v1/messages/count_tokens"
    )
    assert WIRE.count_tokens_url("https://proxy.example/v1/") == (
        "https://proxy.example/v1/messages/count_tokens"
    )


@pytest.mark.parametrize("body", [{}, {"input_tokens": "12"}, {"input_tokens": -1}, [], None])
def test_an_answer_that_is_not_a_count_is_a_bad_response(body: object) -> None:
    with pytest.raises(BadResponseError):
        WIRE.count_tokens_from_wire(body)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=KEY)
    with server.running():
        yield server


@pytest.fixture
async def model(fake: FakeAnthropic) -> AsyncIterator[RemoteModel]:
    fake.reset()
    adapter = RemoteModel(
        ModelInfo(name="haiku", kind="anthropic", model_id=MODEL_ID),
        endpoint=Endpoint(
            provider="claude", base_url=fake.url, headers={"x-api-key": KEY}, secrets=(KEY,)
        ),
        wire=WIRE,
        client=HttpClient(),
    )
    yield adapter
    await adapter.aclose()


async def test_the_count_is_what_a_call_reports_as_its_input(
    model: RemoteModel, fake: FakeAnthropic
) -> None:
    assert model.counts_tokens
    counted = await model.count_tokens(REQUEST)
    answered = await model.complete(REQUEST)
    assert counted == answered.usage.input_tokens
    request = fake.requests[0]
    assert request.path == "/v1/messages/count_tokens"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert request.json["model"] == MODEL_ID


async def test_the_system_prompt_and_the_tools_count(model: RemoteModel) -> None:
    bare = ChatRequest(messages=REQUEST.messages)
    with_system = ChatRequest(messages=REQUEST.messages, system=REQUEST.system)
    with_tools = ChatRequest(messages=REQUEST.messages, system=REQUEST.system, tools=(LOOKUP,))
    counts = [await model.count_tokens(r) for r in (bare, with_system, with_tools)]
    assert counts[0] < counts[1] < counts[2]


async def test_a_marked_prompt_counts_its_cache_reads_and_writes_as_input(
    model: RemoteModel,
) -> None:
    handbook = TextPart(text="The handbook: " + "ship fast, " * 300, cache="5m")
    request = ChatRequest(messages=(Message(role="user", content=(handbook,)),))
    counted = await model.count_tokens(request)
    usage = (await model.complete(request)).usage
    assert usage.cache_write_tokens > 0
    assert counted == usage.input_tokens  # modelyard's input includes reads and writes


async def test_refusals_map_into_the_error_tree_without_the_key(
    model: RemoteModel, fake: FakeAnthropic
) -> None:
    fake.push(rate_limited(retry_after=3), Fault(status=401, message=f"invalid x-api-key {KEY}"))
    with pytest.raises(RateLimitedError) as limited:
        await model.count_tokens(REQUEST)
    assert limited.value.retry_after == 3.0 and limited.value.model == "haiku"
    with pytest.raises(AuthenticationError) as refused:
        await model.count_tokens(REQUEST)
    assert KEY not in str(refused.value) and refused.value.provider == "claude"


def test_an_api_without_a_count_endpoint_does_not_count() -> None:
    model = RemoteModel(
        ModelInfo(name="gpt", kind="openai", model_id="gpt-4o-mini"),
        endpoint=Endpoint(provider="openai", base_url="http://127.0.0.1:9"),
        wire=OPENAI_WIRE,
        client=HttpClient(),
    )
    assert not model.counts_tokens
