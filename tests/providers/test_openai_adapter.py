"""RemoteModel with the OpenAI wire, built from config, against the fake OpenAI on a real socket:
answers, streams, tools, costs, every error class, and every fault the fake can inject."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.conftest import EXAMPLES, ROOMY, tight_limits
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.server import Fault, sse
from typer.testing import CliRunner

import modelyard
from modelyard.cli import app
from modelyard.cost.prices import estimate_input_tokens, estimate_tokens
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
    StreamInterruptedError,
    UnavailableError,
)
from modelyard.providers.headers import RateLimitInfo
from modelyard.providers.remote import RemoteModel
from modelyard.streaming import collect
from modelyard.topology import unwrap
from modelyard.types import (
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    FinishReason,
    ResponseFormat,
    Tool,
    Usage,
    user,
)
from modelyard.yard import Yard

KEY = "sk-modelyard-TEST-5ecr3t-7f3a9c0d"
TIGHT = "{connect: 1.0, total: 1.0, first_token: 0.5, stall: 0.4}"
"""The limits the tests about them meet (marked `tight`)."""
tight = tight_limits(TIGHT)
CONFIG = """
providers:
  oa:
    type: openai
    base_url: {url}/v1
    api_key: ${{OPENAI_KEY}}
    timeouts: {timeouts}
    # The adapter bare: the resilience stack is tested in tests/resilience.
    retry: {{attempts: 0}}
    breaker: {{enabled: false}}
    limits: {{learn: false}}
models:
  mini:
    provider: oa
    id: gpt-4o-mini
    price: {{input: 0.15, output: 0.60, cached_input: 0.075}}
embedders:
  emb:
    provider: oa
    id: text-embedding-3-small
    price: {{input: 0.02}}
"""
WEATHER = Tool(
    name="get_weather",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
)
TIME = Tool(
    name="get_time", parameters={"type": "object", "properties": {"tz": {"type": "string"}}}
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    server = FakeOpenAI(api_key=KEY)
    with server.running():
        yield server


@pytest.fixture
async def yard(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path], timeouts: str
) -> AsyncIterator[Yard]:
    fake.reset()
    path = write_config(CONFIG.format(url=fake.url, timeouts=timeouts), "config.yaml")
    async with modelyard.load(path, env={"OPENAI_KEY": KEY}) as loaded:
        yield loaded


async def chunks_of(yard: Yard, request: ChatRequest) -> list[Chunk]:
    return [chunk async for chunk in yard.models["mini"].stream(request)]


def price(usage: Any) -> float:
    return (
        (usage.input_tokens - usage.cached_tokens) * 0.15
        + usage.cached_tokens * 0.075
        + usage.output_tokens * 0.60
    ) / 1e6


# --- answers ---------------------------------------------------------------------------------


async def test_answer_with_reported_model_usage_and_cost(yard: Yard, fake: FakeOpenAI) -> None:
    response = await yard.complete("mini", "hello there")
    assert response.text == "Echo: hello there"
    assert response.model == "mini" and response.provider_model == "gpt-4o-mini-2024-07-18"
    assert response.id.startswith("chatcmpl-") and response.system_fingerprint
    assert response.usage.input_tokens > 0 and not response.usage.estimated
    assert response.cost == pytest.approx(price(response.usage))
    assert response.decision is not None and response.decision.kind == "model"


async def test_request_reaches_the_fake_with_bearer_auth(yard: Yard, fake: FakeOpenAI) -> None:
    await yard.complete("mini", "hi", max_tokens=50)
    (seen,) = fake.requests
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.json["model"] == "gpt-4o-mini" and seen.json["max_completion_tokens"] == 50


async def test_cached_tokens_cost_the_cached_price(yard: Yard, fake: FakeOpenAI) -> None:
    fake.script(Reply(cached_tokens=6))
    response = await yard.complete("mini", "a prompt with several words in it")
    usage = response.usage
    assert usage.cached_tokens == 6
    expected = ((usage.input_tokens - 6) * 0.15 + 6 * 0.075 + usage.output_tokens * 0.60) / 1e6
    assert response.cost == pytest.approx(expected)
    assert response.cost < (usage.input_tokens * 0.15 + usage.output_tokens * 0.60) / 1e6


async def test_stream_with_usage(yard: Yard, fake: FakeOpenAI) -> None:
    chunks = await chunks_of(yard, user("hello stream"))
    assert "".join(c.text for c in chunks) == "Echo: hello stream"
    final = chunks[-1].response
    assert final is not None and final.text == "Echo: hello stream"
    assert not final.usage.estimated and final.usage.input_tokens > 0
    assert final.cost == pytest.approx(price(final.usage))
    assert fake.requests[0].json["stream_options"] == {"include_usage": True}


async def test_a_whole_answer_to_a_stream_request_is_streamed_on_and_told_once(
    yard: Yard, fake: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # Some vLLM, Ollama and proxy setups ignore `stream: true` and answer whole.
    fake.always(Fault(unstreamed=True))
    caplog.set_level(logging.INFO, logger="modelyard.providers")
    for _ in range(2):
        chunks = await chunks_of(yard, user("hello stream"))
        final = chunks[-1].response
        assert "".join(c.text for c in chunks) == "Echo: hello stream"
        assert chunks[0].model == "mini" and chunks[-2].finish_reason is FinishReason.STOP
        assert final is not None and not final.usage.estimated
        assert final.cost == pytest.approx(price(final.usage))
    told = [r for r in caplog.records if "ignores stream: true" in r.message]
    assert len(told) == 1 and "model mini" in told[0].message


async def test_a_stream_names_its_model_on_its_first_chunk_only(yard: Yard) -> None:
    chunks = await chunks_of(yard, user("hello stream"))
    final = chunks[-1].response
    assert final is not None
    assert [c.model for c in chunks] == [final.model] + [None] * (len(chunks) - 1)


async def test_parallel_tool_calls(yard: Yard) -> None:
    response = await yard.complete(
        "mini", "Oslo", tools=(WEATHER, TIME), tool_choice="required", parallel_tool_calls=True
    )
    calls = response.message.tool_calls
    assert [c.name for c in calls] == ["get_weather", "get_time"]
    assert orjson.loads(calls[0].arguments) == {"city": "Oslo"}
    assert response.finish_reason is FinishReason.TOOL_CALLS


async def test_streamed_parallel_tool_calls(yard: Yard) -> None:
    request = user("Oslo", tools=(WEATHER, TIME), tool_choice="required")
    final = (await chunks_of(yard, request))[-1].response
    assert final is not None
    assert [c.name for c in final.message.tool_calls] == ["get_weather", "get_time"]
    assert orjson.loads(final.message.tool_calls[1].arguments) == {"tz": "Oslo"}


async def test_scripted_tool_calls(yard: Yard, fake: FakeOpenAI) -> None:
    fake.script(Reply(tool_calls=(("get_weather", '{"city": "Rome"}'),)))
    response = await yard.complete("mini", "x", tools=(WEATHER,))
    assert response.message.tool_calls[0].arguments == '{"city": "Rome"}'


async def test_json_schema(yard: Yard, fake: FakeOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat(type="json_schema", schema=schema, name="trip", strict=True)
    response = await yard.complete("mini", "Lisbon", response_format=fmt)
    assert orjson.loads(response.text) == {"city": "Lisbon", "days": 1}
    assert fake.requests[0].json["response_format"]["json_schema"]["name"] == "trip"


async def test_logprobs(yard: Yard, fake: FakeOpenAI) -> None:
    fake.script(Reply(logprobs=(("Yes", -0.01), (".", -0.2))))
    response = await yard.complete("mini", "x", logprobs=True, top_logprobs=2)
    logprobs = response.choices[0].logprobs
    assert logprobs is not None and [(t.token, t.logprob) for t in logprobs] == [
        ("Yes", -0.01),
        (".", -0.2),
    ]
    assert len(logprobs[0].top) == 2


async def test_n_choices(yard: Yard) -> None:
    response = await yard.complete("mini", "hi", n=2)
    assert [c.message.text for c in response.choices] == ["Echo: hi", "Echo: hi (choice 2)"]


async def test_streamed_n_choices(yard: Yard) -> None:
    final = (await chunks_of(yard, user("hi", n=2)))[-1].response
    assert final is not None and [c.message.text for c in final.choices] == [
        "Echo: hi",
        "Echo: hi (choice 2)",
    ]


async def test_embeddings(yard: Yard, fake: FakeOpenAI) -> None:
    response = await yard.embed("emb", ["one", "two words"])
    assert len(response.vectors) == 2 and len(response.vectors[0]) == fake.embedding_dimensions
    assert response.usage.input_tokens == 3
    assert response.cost == pytest.approx(3 * 0.02 / 1e6)
    assert fake.requests[0].path == "/v1/embeddings"
    assert fake.requests[0].json["encoding_format"] == "float"


async def test_usage_left_out_is_estimated_and_still_costs(yard: Yard, fake: FakeOpenAI) -> None:
    fake.script(Reply(usage=False))
    response = await yard.complete("mini", "hello there")
    assert response.usage.estimated and response.usage.input_tokens > 0
    assert response.cost > 0


async def test_partial_usage_keeps_the_answer_and_estimates_what_is_missing(
    yard: Yard, fake: FakeOpenAI
) -> None:
    answer = fake.completion(
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    )
    fake.script(Reply(raw={**answer, "usage": {"prompt_tokens": 9, "completion_tokens": None}}))
    response = await yard.complete("mini", "hi")
    assert response.text == "Echo: hi"
    assert response.usage.input_tokens == 9 and response.usage.output_tokens > 0
    assert response.usage.estimated and response.cost > 0


async def test_stream_with_partial_usage_keeps_the_answer_and_estimates_what_is_missing(
    yard: Yard, fake: FakeOpenAI
) -> None:
    frames = fake.chunks({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})[
        0
    ]
    usage = {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 9}}
    fake.script(Reply(events=(*(sse(f) for f in frames), sse(usage))))
    final = (await chunks_of(yard, user("hi")))[-1].response
    assert final is not None and final.text == "Echo: hi"
    assert final.usage.input_tokens == 9 and final.usage.output_tokens > 0
    assert final.usage.estimated


async def test_rate_limit_headers_reach_listeners(yard: Yard) -> None:
    model = unwrap(yard.models["mini"])
    assert isinstance(model, RemoteModel)
    seen: list[RateLimitInfo] = []
    model.rate_limit_listeners.append(seen.append)
    await model.complete(user("x"))
    assert seen[0].remaining_requests == 499 and seen[0].limit_tokens == 200000


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "cls", "code"),
    [
        (400, None, BadRequestError, "invalid_request_error"),
        (400, "context_length_exceeded", ContextLengthError, "context_length_exceeded"),
        (400, "invalid_prompt", ContentFilteredError, "invalid_prompt"),
        (401, None, AuthenticationError, "invalid_api_key"),
        (403, None, PermissionDeniedError, "unsupported_country_region_territory"),
        (404, None, NotFoundError, "model_not_found"),
        (429, None, RateLimitedError, "rate_limit_exceeded"),
        (429, "insufficient_quota", RateLimitedError, "insufficient_quota"),
        (500, None, UnavailableError, "server_error"),
        (503, None, OverloadedError, "server_error"),
        (504, None, ModelTimeoutError, "server_error"),
    ],
)
async def test_error_status_maps_to_its_class(
    yard: Yard, fake: FakeOpenAI, status: int, error_type: str | None, cls: type, code: str
) -> None:
    fake.push(Fault(status=status, error_type=error_type))
    with pytest.raises(cls) as caught:
        await yard.complete("mini", "x")
    exc = caught.value
    assert type(exc) is cls
    assert (exc.status, exc.code, exc.model, exc.provider) == (status, code, "mini", "oa")
    assert exc.provider_message
    assert exc.decision is not None and exc.decision.error


async def test_streamed_request_maps_errors_too(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(status=400, error_type="context_length_exceeded"))
    with pytest.raises(ContextLengthError) as caught:
        await chunks_of(yard, user("x"))
    assert caught.value.cost == 0  # refused: the provider generated nothing and bills nothing


async def test_a_refused_stream_costs_nothing_and_a_cut_one_costs_what_it_made(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.push(Fault(status=429), Fault(cut_after=3))
    with pytest.raises(RateLimitedError) as refused:
        await chunks_of(yard, user("one two three four"))
    with pytest.raises(ModelError) as cut:
        await chunks_of(yard, user("one two three four"))
    assert refused.value.cost == 0 and refused.value.decision is not None
    assert refused.value.decision.cost == 0
    assert cut.value.cost > 0


async def test_429_takes_its_wait_from_the_message_else_the_reset_headers(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.push(Fault(status=429), Fault(status=429, message="Rate limit reached for requests"))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("mini", "x")
    assert caught.value.retry_after == pytest.approx(0.12)  # "Please try again in 120ms."
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("mini", "x")
    # 0 of 500 requests left, full refill in 1.5 s: the next request is due in 1.5 / 500 s.
    assert caught.value.retry_after == pytest.approx(1.5 / 500) and caught.value.retryable


async def test_retry_after_seconds(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(status=429, headers={"Retry-After": "20"}))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("mini", "x")
    assert caught.value.retry_after == 20.0


async def test_retry_after_http_date(yard: Yard, fake: FakeOpenAI) -> None:
    when = email.utils.formatdate(time.time() + 40, usegmt=True)
    fake.push(Fault(status=429, headers={"Retry-After": when}))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("mini", "x")
    assert caught.value.retry_after is not None and 37 <= caught.value.retry_after <= 41


async def test_quota_exhausted_is_not_retryable(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(status=429, error_type="insufficient_quota"))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("mini", "x")
    assert not caught.value.retryable and "quota exhausted" in str(caught.value)


async def test_html_body_from_a_proxy(yard: Yard, fake: FakeOpenAI) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1>nginx</body></html>"
    fake.push(Fault(status=502, body=page, content_type="text/html"))
    with pytest.raises(UnavailableError) as caught:
        await yard.complete("mini", "x")
    assert "HTTP 502" in str(caught.value) and "<h1>502 Bad Gateway" in str(caught.value)


async def test_html_body_with_200(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(body=b"<html>Please log in</html>", content_type="text/html"))
    with pytest.raises(BadResponseError) as caught:
        await yard.complete("mini", "x")
    assert "HTTP 200" in str(caught.value) and "Please log in" in str(caught.value)


async def test_truncated_json(yard: Yard, fake: FakeOpenAI) -> None:
    whole = orjson.dumps(fake.completion({"model": "m", "messages": []}))
    fake.push(Fault(body=whole[: len(whole) // 2]))
    with pytest.raises(BadResponseError) as caught:
        await yard.complete("mini", "x")
    assert '{"id":"chatcmpl-' in str(caught.value)


async def test_unknown_finish_reason(yard: Yard, fake: FakeOpenAI) -> None:
    fake.script(Reply(finish_reason="done"))
    with pytest.raises(BadResponseError, match="'done'") as caught:
        await yard.complete("mini", "x")
    # Generated and billed, but unusable, and it would come back the same: not retried, and
    # its cost is on the error rather than lost.
    assert not caught.value.retryable
    assert caught.value.cost > 0 and len(fake.requests) == 1


async def test_a_server_that_aborted_the_answer_is_asked_again(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path]
) -> None:
    # vLLM finishes a preempted or cancelled request with "abort": the text is cut short.
    fake.reset()
    text = CONFIG.format(url=fake.url, timeouts=ROOMY).replace("attempts: 0", "attempts: 1")
    fake.script(Reply(text="half an ans", finish_reason="abort"), Reply(text="whole answer"))
    async with modelyard.load(write_config(text, "config.yaml"), env={"OPENAI_KEY": KEY}) as yard:
        response = await yard.complete("mini", "x")
    assert response.text == "whole answer" and len(fake.requests) == 2


async def test_an_error_object_sent_with_a_200_is_a_refusal_that_costs_nothing(
    yard: Yard, fake: FakeOpenAI
) -> None:
    body = b'{"error": {"message": "slow down", "type": "rate_limit_error", "code": null}}'
    fake.push(Fault(body=body))
    with pytest.raises(ModelError) as caught:
        await yard.complete("mini", "x")
    assert not isinstance(caught.value, BadResponseError) and caught.value.cost == 0


async def test_streamed_unknown_finish_reason(yard: Yard, fake: FakeOpenAI) -> None:
    fake.script(Reply(finish_reason="end_turn"))
    with pytest.raises(BadResponseError, match="'end_turn'"):
        await chunks_of(yard, user("x"))


async def test_the_api_key_never_appears_in_an_error(yard: Yard, fake: FakeOpenAI) -> None:
    leaky = f"Invalid header 'Authorization: Bearer {KEY}' for key {KEY}"
    fake.push(Fault(status=401, message=leaky))
    with pytest.raises(AuthenticationError) as caught:
        await yard.complete("mini", "x")
    exc = caught.value
    assert exc.decision is not None
    for text in (str(exc), repr(exc), exc.provider_message, str(exc.to_dict()), exc.decision.error):
        assert KEY not in str(text) and KEY[10:] not in str(text)


async def test_a_key_quoted_without_its_prefix_or_in_part_is_scrubbed(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.push(Fault(status=400, message=f"bad key {KEY[3:]} / {KEY[8:26]} near it"))
    with pytest.raises(BadRequestError) as caught:
        await yard.complete("mini", "x")
    for text in (str(caught.value), caught.value.provider_message):
        assert KEY[8:20] not in str(text) and KEY[14:26] not in str(text)
        assert "near it" in str(text)  # the rest of the message is kept


async def test_a_wrong_key_is_an_authentication_error(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path]
) -> None:
    fake.reset()
    wrong = "sk-wrong-key-abcdef0123456789"
    path = write_config(CONFIG.format(url=fake.url, timeouts=ROOMY), "config.yaml")
    async with modelyard.load(path, env={"OPENAI_KEY": wrong}) as yard:
        with pytest.raises(AuthenticationError) as caught:
            await yard.complete("mini", "x")
    assert wrong not in str(caught.value) and caught.value.code == "invalid_api_key"


async def test_embedding_errors_are_mapped_and_scrubbed(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(status=401, message=f"bad key {KEY}"))
    with pytest.raises(AuthenticationError) as caught:
        await yard.embed("emb", "x")
    assert KEY not in str(caught.value) and KEY not in str(caught.value.provider_message)


# --- faults ----------------------------------------------------------------------------------


async def test_reset_before_headers(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(reset=True))
    with pytest.raises(UnavailableError):
        await yard.complete("mini", "x")


async def test_streamed_reset_before_headers(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(reset=True))
    with pytest.raises(UnavailableError):
        await chunks_of(yard, user("x"))


@tight
async def test_no_response_at_all_times_out_within_the_limit(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(hang=True))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as caught:
        await yard.complete("mini", "x")
    assert time.monotonic() - started < 1.5
    # The provider received it and bills its input, answered or not.
    assert caught.value.request_sent
    assert caught.value.cost == pytest.approx(input_cost(yard, user("x")))
    assert caught.value.decision is not None and caught.value.decision.cost == caught.value.cost


def input_cost(yard: Yard, request: ChatRequest) -> float:
    price = yard.models["mini"].info.price
    return price.cost(Usage(input_tokens=estimate_input_tokens(request)))


async def test_a_request_still_waiting_for_a_connection_costs_nothing_when_time_runs_out(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path]
) -> None:
    fake.reset()
    text = CONFIG.format(url=fake.url, timeouts=TIGHT).replace(
        "    retry:", "    max_connections: 1\n    retry:"
    )
    fake.push(Fault(hang=True))
    async with modelyard.load(write_config(text, "config.yaml"), env={"OPENAI_KEY": KEY}) as yard:
        hanging = asyncio.create_task(yard.complete("mini", "x"))
        for _ in range(200):  # until the only connection is taken
            if fake.requests:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(ModelTimeoutError) as caught:
            await yard.models["mini"].complete(user("y").with_budget(0.2))
        with pytest.raises(ModelTimeoutError):
            await hanging
    assert not caught.value.request_sent and caught.value.cost == 0
    assert len(fake.requests) == 1


@tight
async def test_the_deadline_shortens_the_wait(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(hang=True))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError):
        await yard.models["mini"].complete(user("x").with_budget(0.2))
    assert time.monotonic() - started < 0.6


@tight
async def test_an_embedding_call_past_its_deadline_costs_its_texts_once_sent(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.push(Fault(hang=True))
    texts = ("one", "two words")
    request = EmbeddingRequest(inputs=texts, deadline=time.monotonic() + 0.2)
    with pytest.raises(ModelTimeoutError) as caught:
        await yard.embedders["emb"].embed(request)
    assert caught.value.code == "deadline" and caught.value.request_sent
    # The provider received the texts and bills them, answered or not.
    tokens = sum(estimate_tokens(text) for text in texts)
    assert caught.value.cost == pytest.approx(tokens * 0.02 / 1e6)
    assert caught.value.cost > 0


@tight
async def test_slow_first_token(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(first_token_delay=2.0))
    with pytest.raises(ModelTimeoutError) as caught:
        await chunks_of(yard, user("x"))
    assert caught.value.code == "first_token_timeout"
    assert caught.value.cost == pytest.approx(input_cost(yard, user("x")))


@tight
async def test_slow_headers_on_a_stream(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(delay=2.0))
    with pytest.raises(ModelTimeoutError) as caught:
        await chunks_of(yard, user("x"))
    assert caught.value.cost == pytest.approx(input_cost(yard, user("x")))


async def test_stream_cut_part_way_raises(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(cut_after=3))
    seen: list[Chunk] = []
    with pytest.raises(ModelError) as caught:
        async for chunk in yard.models["mini"].stream(user("one two three four")):
            seen.append(chunk)
    assert all(c.response is None for c in seen)
    assert "".join(c.text for c in seen) == "Echo: one"
    assert caught.value.cost > 0


@tight
async def test_stalled_stream_is_stopped_by_the_watchdog(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(stall_after=2))
    started = time.monotonic()
    with pytest.raises(ModelTimeoutError) as caught:
        await chunks_of(yard, user("one two three"))
    assert caught.value.code == "stream_stalled"
    assert time.monotonic() - started < 1.5


async def test_malformed_chunk_mid_stream(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(malformed_at=2))
    seen: list[Chunk] = []
    with pytest.raises(BadResponseError, match="not JSON"):
        async for chunk in yard.models["mini"].stream(user("one two three")):
            seen.append(chunk)
    assert [c.text for c in seen] == ["Echo:"]


@tight
async def test_stream_without_its_final_events_is_finished_with_estimated_usage(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.push(Fault(no_final=True))
    started = time.monotonic()
    final = (await chunks_of(yard, user("hello there")))[-1].response
    assert final is not None and final.text == "Echo: hello there"
    assert final.usage.estimated and final.cost > 0
    assert time.monotonic() - started < 0.3


@tight
async def test_stream_stalling_after_every_choice_finished_is_finished(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.push(Fault(stall_after=5))  # role, 3 words, finish; then silence before usage
    final = (await chunks_of(yard, user("hello there")))[-1].response
    assert final is not None and final.finish_reason is FinishReason.STOP
    assert final.usage.estimated


async def test_stream_ending_without_a_finish_is_interrupted_and_billed(
    yard: Yard, fake: FakeOpenAI
) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "one two"}]}
    content, _ = fake.stream_events({**body, "stream": True})
    fake.script(Reply(events=tuple(content[:-1])))  # everything but the finish chunk
    fake.push(Fault(no_final=True))
    with pytest.raises(StreamInterruptedError) as caught:
        await chunks_of(yard, user("one two"))
    assert caught.value.cost > 0 and caught.value.model == "mini"


@tight
async def test_slow_but_steady_chunks_are_not_a_stall(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(chunk_delay=0.1))
    final = (await chunks_of(yard, user("one two")))[-1].response
    assert final is not None and final.text == "Echo: one two"


@tight
async def test_the_pool_is_healthy_after_broken_streams(yard: Yard, fake: FakeOpenAI) -> None:
    fake.push(Fault(cut_after=2), Fault(stall_after=2), Fault(malformed_at=1))
    for _ in range(3):
        with pytest.raises(ModelError):
            await chunks_of(yard, user("one two three"))
    assert (await yard.complete("mini", "still there?")).text == "Echo: still there?"
    final = (await chunks_of(yard, user("and streaming?")))[-1].response
    assert final is not None and final.text == "Echo: and streaming?"


async def test_in_stream_error_event(yard: Yard, fake: FakeOpenAI) -> None:
    error = {"error": {"message": "The server had an error", "type": "server_error"}}
    fake.script(Reply(events=(b"data: " + orjson.dumps(error) + b"\n\n",)))
    with pytest.raises(UnavailableError, match="server had an error"):
        await chunks_of(yard, user("x"))


# --- configuration variants ------------------------------------------------------------------

AZURE = """
providers:
  azure:
    type: openai
    base_url: {url}/openai/deployments/{{model}}
    api_key: ${{AZURE_KEY}}
    auth: {{header: api-key}}
    query: {{api-version: "2024-10-21"}}
models:
  prod:
    provider: azure
    id: gpt4o-mini-prod
    price: {{input: 0.15, output: 0.60}}
embedders:
  emb:
    provider: azure
    id: embed-prod
    price: {{input: 0.02}}
"""


async def test_azure_deployment_path_header_and_api_version(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path]
) -> None:
    fake.reset()
    path = write_config(AZURE.format(url=fake.url), "azure.yaml")
    async with modelyard.load(path, env={"AZURE_KEY": KEY}) as yard:
        response = await yard.complete("prod", "hi")
        fake.script(Reply(model="gpt-4o-mini-2024-07-18"))
        whole = await collect(yard.models["prod"].stream(user("hi")))
        await yard.embed("emb", "hi")
    assert response.text == "Echo: hi" == whole.text
    # The stream's first chunk (Azure's prompt filter results) names no id and no model.
    assert whole.id.startswith("chatcmpl-")
    assert whole.provider_model == "gpt-4o-mini-2024-07-18"
    chat, streamed, embedded = fake.requests
    assert chat.path == streamed.path == "/openai/deployments/gpt4o-mini-prod/chat/completions"
    assert embedded.path == "/openai/deployments/embed-prod/embeddings"
    assert chat.query == {"api-version": "2024-10-21"}
    assert chat.headers["api-key"] == KEY and "Authorization" not in chat.headers


async def test_old_servers_get_max_tokens(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path]
) -> None:
    fake.reset()
    text = CONFIG.format(url=fake.url, timeouts=ROOMY).replace(
        "type: openai", "type: openai\n    max_tokens_field: max_tokens"
    )
    async with modelyard.load(write_config(text, "c.yaml"), env={"OPENAI_KEY": KEY}) as yard:
        response = await yard.complete("mini", "one two three", max_tokens=2)
    assert fake.requests[0].json["max_tokens"] == 2
    assert response.finish_reason is FinishReason.LENGTH


def test_max_tokens_field_is_for_openai_providers_only(
    write_config: Callable[[str, str], Path],
) -> None:
    text = "providers:\n  a: {type: anthropic, max_tokens_field: max_tokens}\n"
    with pytest.raises(modelyard.ConfigError, match="max_tokens_field"):
        modelyard.load(write_config(text, "c.yaml"), env={})


# --- the example config ----------------------------------------------------------------------


def test_openai_compatible_example_builds_with_no_keys() -> None:
    yard = modelyard.load(EXAMPLES / "openai-compatible.yaml", env={})
    assert {"openai", "groq", "together", "openrouter", "azure"} <= set(
        yard.built.loaded.config.providers
    )
    assert yard.built.disabled  # the hosted ones, whose keys are unset
    assert yard.systems


def test_openai_compatible_example_passes_check() -> None:
    names = ("OPENAI_API_KEY", "GROQ_API_KEY", "TOGETHER_API_KEY", "OPENROUTER_API_KEY")
    env: dict[str, str | None] = dict.fromkeys(
        (*names, "AZURE_OPENAI_API_KEY", "AZURE_OPENAI_RESOURCE")
    )
    result = CliRunner().invoke(app, ["check", str(EXAMPLES / "openai-compatible.yaml")], env=env)
    assert result.exit_code == 0, result.output
    assert "ok" in result.output


async def test_finished_streams_reuse_one_pooled_connection(yard: Yard, fake: FakeOpenAI) -> None:
    # The body's end comes a little after [DONE] (as through a proxy): still reused.
    fake.always(Fault(chunk_delay=0.01))
    for _ in range(3):
        await collect(yard.models["mini"].stream(user("hello")))
    client = unwrap(yard.models["mini"]).client  # type: ignore[attr-defined]
    connector = client._sessions[asyncio.get_running_loop()].connector
    assert connector is not None
    idle = sum(len(conns) for conns in connector._conns.values())
    assert idle == 1  # each stream gave its connection back; none was dropped and reopened


async def test_a_pinned_model_answered_by_another_id_is_flagged_as_drift(
    fake: FakeOpenAI, write_config: Callable[[str, str], Path], caplog: pytest.LogCaptureFixture
) -> None:
    fake.reset()
    text = CONFIG.format(url=fake.url, timeouts=ROOMY).replace(
        "id: gpt-4o-mini\n", "id: gpt-4o-mini-2024-07-18\n", 1
    )
    async with modelyard.load(write_config(text, "pinned.yaml"), env={"OPENAI_KEY": KEY}) as yard:
        fake.script(Reply(model="gpt-4o-mini-2024-07-18"), Reply(model="gpt-4o-mini-2025-01-01"))
        steady = await yard.complete("mini", "hi")
        moved = await yard.complete("mini", "hi")
    assert steady.decision is not None and "model_drift" not in steady.decision.details
    assert moved.provider_model == "gpt-4o-mini-2025-01-01"
    assert moved.decision is not None
    assert "gpt-4o-mini-2025-01-01" in str(moved.decision.details["model_drift"])
    assert any("gpt-4o-mini-2025-01-01" in r.message for r in caplog.records)


async def test_an_alias_resolving_to_its_dated_id_is_not_drift(
    yard: Yard, fake: FakeOpenAI
) -> None:
    fake.script(Reply(model="gpt-4o-mini-2024-07-18"))
    response = await yard.complete("mini", "hi")
    assert response.decision is not None and "model_drift" not in response.decision.details
