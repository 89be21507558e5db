"""RemoteModel speaking Anthropic Messages, built from YAML by `modelyard.load`, against the fake
Anthropic server on a real socket: answers, streams, every error class and every fault."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import orjson
import pytest
from tests.conftest import tight_limits
from tests.fakes.anthropic_server import FakeAnthropic, ToolUse, Turn, prompt_too_long, rate_limited
from tests.fakes.server import Fault

import modelyard
from modelyard.errors import (
    AuthenticationError,
    BadRequestError,
    BadResponseError,
    ContextLengthError,
    ModelError,
    ModelTimeoutError,
    NotFoundError,
    OverloadedError,
    PermissionDeniedError,
    RateLimitedError,
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.model import ModelInfo
from modelyard.providers.anthropic_wire import WIRE
from modelyard.providers.http import HttpClient, Timeouts
from modelyard.providers.remote import SETTLE_S, Endpoint, RemoteModel
from modelyard.streaming import collect
from modelyard.types import (
    ChatRequest,
    Chunk,
    FinishReason,
    Message,
    ResponseFormat,
    Tool,
    ToolCall,
)

KEY = "sk-ant-api03-secretsecret0123456789"
MODEL_ID = "claude-sonnet-4-5-20250929"
WEATHER = Tool(
    name="get_weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)

TIGHT = "{connect: 1.0, total: 0.6, first_token: 0.5, stall: 0.4}"
"""The limits the tests about them meet (marked `tight`)."""
tight = tight_limits(TIGHT)
CONFIG = """
providers:
  claude:
    type: anthropic
    base_url: {url}
    api_key: ${{ANTHROPIC_API_KEY}}
    timeouts: {timeouts}
    # The adapter bare: the resilience stack is tested in tests/resilience.
    retry: {{attempts: 0}}
    breaker: {{enabled: false}}
    limits: {{learn: false}}
models:
  sonnet:
    provider: claude
    id: {model_id}
    max_output_tokens: 1000
    price: {{input: 3.0, output: 15.0, cached_input: 0.3}}
"""


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeAnthropic]:
    server = FakeAnthropic(api_key=KEY)
    with server.running():
        yield server


@pytest.fixture
async def yard(
    fake: FakeAnthropic, write_config: Callable[[str], Path], timeouts: str
) -> AsyncIterator[modelyard.Yard]:
    fake.reset()
    fake.cache_read_tokens = fake.cache_creation_tokens = fake.cache_creation_1h_tokens = 0
    fake.final_events = 1
    fake.turns.clear()
    path = write_config(CONFIG.format(url=fake.url, model_id=MODEL_ID, timeouts=timeouts))
    async with modelyard.load(path, env={"ANTHROPIC_API_KEY": KEY}) as loaded:
        yield loaded


def sent(fake: FakeAnthropic) -> dict[str, object]:
    body = fake.requests[-1].json
    assert isinstance(body, dict)
    return body


async def chunks_of(yard: modelyard.Yard, prompt: object, **fields: object) -> list[Chunk]:
    return [chunk async for chunk in yard.stream("sonnet", prompt, **fields)]  # type: ignore[arg-type]


# --- answers ----------------------------------------------------------------------------------


async def test_complete_answers_with_usage_cost_and_the_reported_model(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    response = await yard.complete("sonnet", "hello there")
    assert response.text == "You said: hello there"
    assert response.model == "sonnet" and response.provider_model == MODEL_ID
    assert response.finish_reason is FinishReason.STOP
    assert response.usage.output_tokens == 4 and not response.usage.estimated
    usage = response.usage
    assert response.cost == pytest.approx((usage.input_tokens * 3.0 + 4 * 15.0) / 1e6)
    assert response.decision is not None and response.decision.cost == response.cost


async def test_requests_carry_the_key_the_api_version_and_the_configured_max_tokens(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    await yard.complete("sonnet", "hi")
    request = fake.requests[-1]
    assert request.path == "/v1/messages"
    assert request.headers["x-api-key"] == KEY
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert sent(fake)["max_tokens"] == 1000 and sent(fake)["model"] == MODEL_ID


async def test_system_prompt_goes_top_level(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "hi"}]
    await yard.complete("sonnet", messages, system="You are a pirate.")
    assert sent(fake)["system"] == "You are a pirate.\n\nBe terse."
    assert sent(fake)["messages"] == [{"role": "user", "content": "hi"}]


async def test_prefill_is_continued_and_only_the_continuation_returned(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    messages = [
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "One, two, "},
    ]
    response = await yard.complete("sonnet", messages)
    assert sent(fake)["messages"][-1] == {"role": "assistant", "content": "One, two,"}  # type: ignore[index]
    assert response.text == "and that is all."


async def test_forced_tool_answers_with_a_tool_call(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    response = await yard.complete(
        "sonnet", "weather?", tools=(WEATHER,), tool_choice="get_weather"
    )
    assert response.finish_reason is FinishReason.TOOL_CALLS
    call = response.message.tool_calls[0]
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "text"}


async def test_tool_results_round_trip_to_a_final_answer(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    call = ToolCall(id="toolu_1", name="get_weather", arguments='{"city": "Oslo"}')
    request = ChatRequest(
        messages=(
            Message(role="user", content="weather in Oslo?"),
            Message(role="assistant", tool_calls=(call,)),
            Message(role="tool", content="4C and rain", tool_call_id="toolu_1"),
        ),
        tools=(WEATHER,),
    )
    fake.script(Turn(text="It is 4C and raining in Oslo."))
    response = await yard.complete("sonnet", request)
    assert response.text == "It is 4C and raining in Oslo."
    assert response.finish_reason is FinishReason.STOP


async def test_json_schema_answer_is_json_text(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    fmt = ResponseFormat(type="json_schema", schema=schema, name="place")
    fake.script(Turn(tool_uses=(ToolUse(name="json_answer", input={"city": "Oslo"}),)))
    response = await yard.complete("sonnet", "where?", response_format=fmt)
    assert orjson.loads(response.text) == {"city": "Oslo"}
    assert response.finish_reason is FinishReason.STOP and response.message.tool_calls == ()


async def test_json_object_stream_is_json_text(yard: modelyard.Yard) -> None:
    fmt = ResponseFormat(type="json_object")
    chunks = await chunks_of(yard, "anything", response_format=fmt)
    response = chunks[-1].response
    assert response is not None and orjson.loads(response.text) == {}
    assert "".join(c.text for c in chunks[:-1]) == response.text


async def test_max_tokens_stop_is_length(yard: modelyard.Yard) -> None:
    response = await yard.complete("sonnet", "one two three four five", max_tokens=3)
    assert response.finish_reason is FinishReason.LENGTH
    assert response.text == "You said: one"


async def test_stop_sequence_cuts_the_text_and_is_a_stop(yard: modelyard.Yard) -> None:
    response = await yard.complete("sonnet", "alpha beta gamma", stop=("gamma",))
    assert response.text == "You said: alpha beta "
    assert response.finish_reason is FinishReason.STOP


async def test_refusal_is_content_filter(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    fake.script(Turn(text="I can't help with that.", stop_reason="refusal"))
    response = await yard.complete("sonnet", "something bad")
    assert response.finish_reason is FinishReason.CONTENT_FILTER


async def test_cached_tokens_are_billed_at_the_cached_price(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.cache_read_tokens = 10
    fake.cache_creation_tokens = 2
    response = await yard.complete("sonnet", "a long prompt that was cached " * 5)
    usage = response.usage
    body = orjson.loads(orjson.dumps(sent(fake)["messages"]))
    prompt = len(orjson.dumps(body)) // 4 + 1
    assert usage.input_tokens == prompt and usage.cached_tokens == 10
    expected = ((prompt - 10) * 3.0 + 10 * 0.3 + usage.output_tokens * 15.0) / 1e6
    assert response.cost == pytest.approx(expected)


# --- streams ----------------------------------------------------------------------------------


async def test_stream_yields_text_deltas_then_the_response(yard: modelyard.Yard) -> None:
    chunks = await chunks_of(yard, "stream me please")
    deltas, last = chunks[:-1], chunks[-1]
    assert len([c for c in deltas if c.text]) == 5
    assert "".join(c.text for c in deltas) == "You said: stream me please"
    assert last.response is not None and last.response.text == "You said: stream me please"
    assert last.response.provider_model == MODEL_ID and not last.response.usage.estimated
    assert last.response.cost > 0


async def test_stream_of_tool_use_assembles_the_call(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.script(
        Turn(text="Let me look.", tool_uses=(ToolUse(name="get_weather", input={"city": "Oslo"}),))
    )
    chunks = await chunks_of(yard, "weather?", tools=(WEATHER,))
    response = chunks[-1].response
    assert response is not None and response.text == "Let me look."
    assert response.message.tool_calls[0].name == "get_weather"
    assert orjson.loads(response.message.tool_calls[0].arguments) == {"city": "Oslo"}
    assert response.finish_reason is FinishReason.TOOL_CALLS
    assert sum(1 for c in chunks for d in c.tool_calls if d.arguments) >= 2


async def test_stream_without_message_stop_finishes_promptly_with_reported_usage(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(no_final=True))
    started = time.monotonic()
    response = await collect(yard.stream("sonnet", "no final event"))
    assert time.monotonic() - started < 0.8  # it did not wait for trailing events (SETTLE_S)
    assert response.text == "You said: no final event"
    assert not response.usage.estimated and response.usage.output_tokens == 5


@tight
async def test_stream_stalled_before_message_stop_finishes_once_the_answer_is_whole(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    # message_start, block start, ping, 3 deltas, block stop, message_delta: then silence.
    fake.push(Fault(stall_after=8))
    started = time.monotonic()
    response = await collect(yard.stream("sonnet", "stall"))
    assert time.monotonic() - started < 1.0
    assert response.text == "You said: stall"
    assert not response.usage.estimated and response.usage.output_tokens == 3


@tight
async def test_stream_trickling_past_the_deadline_times_out_at_the_deadline(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(chunk_delay=0.1))
    request = ChatRequest(messages=(Message(role="user", content="a b c d e f g h i j"),))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as caught:
        await collect(yard.stream("sonnet", request.with_budget(0.35)))
    assert caught.value.code == "deadline"
    assert time.monotonic() - started < 0.6


async def test_stream_without_its_stop_reason_is_interrupted_and_still_costed(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.final_events = 2
    fake.push(Fault(no_final=True))
    with pytest.raises(StreamInterruptedError) as caught:
        await collect(yard.stream("sonnet", "no stop reason"))
    assert caught.value.cost > 0
    assert caught.value.decision is not None and caught.value.decision.cost == caught.value.cost


async def test_error_event_mid_stream_raises_overloaded(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.script(Turn(error_after=5))  # message_start, block start, ping, 2 text deltas
    got: list[str] = []
    with pytest.raises(OverloadedError) as caught:
        async for chunk in yard.stream("sonnet", "one two three four"):
            got.append(chunk.text)
    assert "".join(got) == "You said:"  # what came before the error, and nothing after
    assert caught.value.retryable and caught.value.code == "overloaded_error"


async def test_cut_stream_raises_unavailable_with_cost(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(cut_after=5))
    with pytest.raises(UnavailableError) as caught:
        await collect(yard.stream("sonnet", "cut me off please"))
    assert caught.value.cost > 0


@tight
async def test_stalled_stream_times_out_at_the_stall_limit(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(stall_after=4))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as caught:
        await collect(yard.stream("sonnet", "stall here"))
    assert caught.value.code == "stream_stalled"
    assert 0.35 < time.monotonic() - started < 1.5


@tight
async def test_slow_first_token_times_out_at_the_first_token_limit(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(first_token_delay=2.0))
    with pytest.raises(ModelTimeoutError) as caught:
        await collect(yard.stream("sonnet", "slow"))
    assert caught.value.code == "first_token_timeout"


async def test_malformed_stream_event_is_a_bad_response(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(malformed_at=3))
    with pytest.raises(BadResponseError, match="not JSON"):
        await collect(yard.stream("sonnet", "garbage ahead"))


async def test_stream_refused_with_529_before_any_byte_is_overloaded(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(status=529))
    with pytest.raises(OverloadedError):
        await collect(yard.stream("sonnet", "busy?"))


async def test_stream_answered_with_html_is_a_bad_response_showing_it(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(body=b"<html><h1>Gateway</h1></html>", content_type="text/html"))
    with pytest.raises(BadResponseError, match="<html><h1>Gateway"):
        await collect(yard.stream("sonnet", "html?"))


# --- errors and faults ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (402, PermissionDeniedError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (413, BadRequestError),
        (429, RateLimitedError),
        (500, UnavailableError),
        (504, ModelTimeoutError),
        (529, OverloadedError),
    ],
)
async def test_error_status_raises_its_class_naming_the_model(
    yard: modelyard.Yard, fake: FakeAnthropic, status: int, cls: type[ModelError]
) -> None:
    fake.push(Fault(status=status))
    with pytest.raises(cls) as caught:
        await yard.complete("sonnet", "x")
    assert type(caught.value) is cls
    assert caught.value.model == "sonnet" and caught.value.provider == "claude"
    assert caught.value.status == status
    assert caught.value.decision is not None and caught.value.decision.error is not None


async def test_rate_limit_carries_retry_after(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    fake.push(rate_limited(retry_after=3))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("sonnet", "x")
    assert caught.value.retry_after == 3.0 and caught.value.retryable


async def test_prompt_too_long_is_a_context_length_error(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(prompt_too_long())
    with pytest.raises(ContextLengthError) as caught:
        await yard.complete("sonnet", "x")
    assert not caught.value.retryable and "prompt is too long" in str(caught.value)


async def test_html_body_is_a_bad_response_with_status_and_first_bytes(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(body=b"<!DOCTYPE html><title>Oops</title>", content_type="text/html"))
    with pytest.raises(BadResponseError) as caught:
        await yard.complete("sonnet", "x")
    assert "HTTP 200" in str(caught.value) and "<!DOCTYPE html>" in str(caught.value)


async def test_truncated_json_is_a_bad_response(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    fake.push(Fault(body=b'{"id": "msg_1", "type": "message", "content": [{"ty'))
    with pytest.raises(BadResponseError, match="non-JSON"):
        await yard.complete("sonnet", "x")


async def test_unknown_stop_reason_is_a_bad_response(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.script(Turn(stop_reason="daydreaming"))
    with pytest.raises(BadResponseError, match="daydreaming"):
        await yard.complete("sonnet", "x")


async def test_slow_answer_within_the_limit_still_answers(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(delay=0.2))
    started = time.monotonic()
    response = await yard.complete("sonnet", "take your time")
    assert response.text == "You said: take your time"
    assert time.monotonic() - started >= 0.2


async def test_connection_reset_is_unavailable(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    fake.push(Fault(reset=True))
    with pytest.raises(UnavailableError) as caught:
        await yard.complete("sonnet", "x")
    assert caught.value.retryable


@tight
async def test_silent_upstream_times_out_at_the_total_limit(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(hang=True))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        await yard.complete("sonnet", "x")
    assert 0.55 < time.monotonic() - started < 1.5


@tight
async def test_deadline_shorter_than_the_timeout_wins(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    fake.push(Fault(hang=True))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        await yard.complete(
            "sonnet", ChatRequest(messages=(Message(role="user", content="x"),)).with_budget(0.2)
        )
    assert time.monotonic() - started < 0.6


async def test_refused_request_names_the_field_from_the_api(
    yard: modelyard.Yard, fake: FakeAnthropic
) -> None:
    with pytest.raises(BadRequestError) as caught:
        await yard.complete("sonnet", "x", n=2)
    assert "n=2" in str(caught.value) and fake.requests == []


async def test_the_key_never_appears_in_errors(yard: modelyard.Yard, fake: FakeAnthropic) -> None:
    echo = f"invalid x-api-key: {KEY}"
    fake.push(Fault(status=401, message=echo), Fault(status=401, message=echo))
    with pytest.raises(AuthenticationError) as caught:
        await yard.complete("sonnet", "x")
    with pytest.raises(AuthenticationError) as streamed:
        await collect(yard.stream("sonnet", "x"))
    for error in (caught.value, streamed.value):
        assert error.decision is not None
        shown = [str(error), repr(error), str(error.to_dict()), str(error.decision.to_dict())]
        assert all(KEY not in text and KEY[8:] not in text for text in shown)


async def test_trailing_events_are_awaited_only_briefly_once_the_answer_is_whole(
    fake: FakeAnthropic,
) -> None:
    fake.reset()
    model = RemoteModel(
        ModelInfo(name="direct", kind="anthropic", model_id=MODEL_ID),
        endpoint=Endpoint(provider="claude", base_url=fake.url, headers={"x-api-key": KEY}),
        wire=WIRE,
        client=HttpClient(timeouts=Timeouts(stall=30.0)),
    )
    fake.push(Fault(stall_after=8))
    started = time.monotonic()
    try:
        response = await collect(
            model.stream(
                ChatRequest(messages=(Message(role="user", content="stall"),), max_tokens=50)
            )
        )
    finally:
        await model.aclose()
    assert SETTLE_S <= time.monotonic() - started < SETTLE_S + 0.5
    assert response.text == "You said: stall"
