"""RemoteModel speaking Gemini, built from a YAML config by `modelyard.load`, against the fake
Gemini server over a real socket: answers, streams, tools, usage and cost, and every failure."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from tests.fakes.gemini_server import FakeGemini, GeminiAnswer
from tests.fakes.server import Fault

import modelyard
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
from modelyard.streaming import collect
from modelyard.types import (
    ChatRequest,
    Chunk,
    FinishReason,
    Message,
    ResponseFormat,
    Tool,
    user,
)
from modelyard.yard import Yard

KEY = "AIzaSyD-fake-key-0123456789abcdefghijk"

CONFIG = """
providers:
  google:
    type: gemini
    base_url: {url}/v1beta
    api_key: ${{GEMINI_API_KEY}}
    timeouts: {{connect: 2, total: 5, first_token: 5, stall: 5}}
    # The adapter bare: the resilience stack is tested in tests/resilience.
    retry: {{attempts: 0}}
    breaker: {{enabled: false}}
    limits: {{learn: false}}
models:
  flash:
    provider: google
    id: gemini-2.5-flash
    price: {{input: 0.30, output: 2.50, cached_input: 0.03}}
  quick:
    provider: google
    id: gemini-2.5-flash-lite
    price: {{input: 0.10, output: 0.40}}
    # Tight: only the tests about a time limit use quick.
    timeouts: {{connect: 2, total: 0.4, first_token: 0.4, stall: 0.3}}
embedders:
  embed:
    provider: google
    id: gemini-embedding-001
    price: {{input: 0.15}}
"""

WEATHER = Tool(
    name="get_weather",
    description="Weather in a city",
    parameters={"type": "object", "properties": {"city": {"type": "string"}}},
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeGemini]:
    server = FakeGemini(api_key=KEY)
    with server.running():
        yield server  # type: ignore[misc]


@pytest.fixture
async def yard(fake: FakeGemini, tmp_path: Path) -> AsyncIterator[Yard]:
    fake.reset()
    path = tmp_path / "gemini.yaml"
    path.write_text(CONFIG.format(url=fake.url), encoding="utf-8")
    async with modelyard.load(path, env={"GEMINI_API_KEY": KEY}) as loaded:
        yield loaded


def sent(fake: FakeGemini) -> Any:
    """The JSON body of the last request the fake received."""
    return fake.requests[-1].json


async def chunks_of(yard: Yard, prompt: Any, model: str = "flash", **fields: Any) -> list[Chunk]:
    return [c async for c in yard.stream(model, prompt, **fields)]


# --- answers ----------------------------------------------------------------------------------


async def test_answer_with_provider_model_usage_and_cost(yard: Yard, fake: FakeGemini) -> None:
    response = await yard.complete("flash", "What is 2+2?")
    assert response.text == "Gemini heard: What is 2+2?"
    assert (response.model, response.provider_model) == ("flash", "gemini-2.5-flash")
    assert response.id.startswith("fake-gemini-")
    usage = response.usage
    assert usage.input_tokens > 0 and usage.output_tokens == 5 and not usage.estimated
    assert response.cost == pytest.approx(
        (usage.input_tokens * 0.30 + usage.output_tokens * 2.50) / 1e6
    )
    assert response.decision is not None and response.decision.cost == response.cost


async def test_request_goes_to_generate_content_with_the_key_header(
    yard: Yard, fake: FakeGemini
) -> None:
    await yard.complete("flash", "hi")
    request = fake.requests[-1]
    assert request.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request.headers["x-goog-api-key"] == KEY
    assert request.headers["Content-Type"] == "application/json"
    assert "key" not in request.query


async def test_wrong_key_is_an_authentication_error(fake: FakeGemini, tmp_path: Path) -> None:
    path = tmp_path / "gemini.yaml"
    path.write_text(CONFIG.format(url=fake.url), encoding="utf-8")
    async with modelyard.load(path, env={"GEMINI_API_KEY": "AIzaSy-wrong-key-000000000000"}) as y:
        with pytest.raises(AuthenticationError) as caught:
            await y.complete("flash", "hi")
    assert caught.value.code == "API_KEY_INVALID" and caught.value.status == 400


async def test_system_instruction_is_sent_apart_from_the_contents(
    yard: Yard, fake: FakeGemini
) -> None:
    await yard.complete("flash", user("hi", system="Answer like a pirate."))
    body = sent(fake)
    assert body["systemInstruction"] == {"parts": [{"text": "Answer like a pirate."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]


async def test_json_mode_sets_the_response_mime_type(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text='{"answer": 4}'))
    response = await yard.complete(
        "flash", "2+2 as JSON", response_format=ResponseFormat(type="json_object")
    )
    assert orjson.loads(response.text) == {"answer": 4}
    assert sent(fake)["generationConfig"]["responseMimeType"] == "application/json"


async def test_two_candidates_are_two_choices(yard: Yard) -> None:
    response = await yard.complete("flash", "hi", n=2)
    assert [c.index for c in response.choices] == [0, 1]
    assert response.choices[1].message.text.endswith("(#1)")


async def test_logprobs_come_back_per_token(yard: Yard) -> None:
    response = await yard.complete("flash", "hi", logprobs=True, top_logprobs=2)
    tokens = response.choices[0].logprobs
    assert tokens is not None and tokens[0].token == "Gemini " and len(tokens[0].top) == 2


# --- tools ------------------------------------------------------------------------------------


async def test_function_call_round_trip(yard: Yard, fake: FakeGemini) -> None:
    signature = "c2lnbmF0dXJlLWJ5dGVz"
    fake.script(
        GeminiAnswer(
            text="", calls=(("get_weather", {"city": "Paris"}),), thought_signature=signature
        ),
        GeminiAnswer(text="It is 21°C in Paris."),
    )
    first = await yard.complete("flash", user("Weather in Paris?", tools=(WEATHER,)))
    (call,) = first.message.tool_calls
    assert (call.name, orjson.loads(call.arguments)) == ("get_weather", {"city": "Paris"})
    assert first.finish_reason is FinishReason.TOOL_CALLS
    follow_up = ChatRequest(
        messages=(
            Message(role="user", content="Weather in Paris?"),
            first.message,
            Message(role="tool", tool_call_id=call.id, content='{"celsius": 21}'),
        ),
        tools=(WEATHER,),
    )
    second = await yard.complete("flash", follow_up)
    assert second.text == "It is 21°C in Paris."
    contents = sent(fake)["contents"]
    assert contents[1]["parts"] == [
        {
            "functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
            "thoughtSignature": signature,
        }
    ]
    assert contents[2]["parts"] == [
        {"functionResponse": {"name": "get_weather", "response": {"celsius": 21}}}
    ]


async def test_declarations_and_tool_choice_reach_the_api(yard: Yard, fake: FakeGemini) -> None:
    await yard.complete("flash", user("x", tools=(WEATHER,), tool_choice="get_weather"))
    body = sent(fake)
    assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
    assert body["toolConfig"]["functionCallingConfig"]["allowedFunctionNames"] == ["get_weather"]


async def test_streamed_function_call(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="", calls=(("get_weather", {"city": "Oslo"}),)))
    response = await collect(yard.stream("flash", user("Oslo?", tools=(WEATHER,))))
    (call,) = response.message.tool_calls
    assert call.name == "get_weather" and orjson.loads(call.arguments) == {"city": "Oslo"}
    assert response.finish_reason is FinishReason.TOOL_CALLS


# --- streams ----------------------------------------------------------------------------------


async def test_stream_yields_deltas_then_the_whole_answer(yard: Yard, fake: FakeGemini) -> None:
    chunks = await chunks_of(yard, "tell me a story")
    assert fake.requests[-1].query == {"alt": "sse"}
    assert fake.requests[-1].path.endswith(":streamGenerateContent")
    deltas = [c for c in chunks if c.response is None]
    assert len(deltas) == 6
    assert "".join(c.text for c in deltas) == "Gemini heard: tell me a story"
    final = chunks[-1].response
    assert final is not None and final.text == "Gemini heard: tell me a story"
    assert final.usage.output_tokens == 6 and not final.usage.estimated
    assert final.provider_model == "gemini-2.5-flash"


async def test_a_stream_sent_as_one_json_array_is_its_chunks_and_told_once(
    yard: Yard, fake: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    # streamGenerateContent as if without alt=sse: one JSON array of the SSE events' objects.
    # It was a 502 ("expected a JSON object, got list").
    fake.always(Fault(unstreamed=True))
    caplog.set_level(logging.INFO, logger="modelyard.providers")
    for _ in range(2):
        chunks = await chunks_of(yard, "tell me a story")
        deltas = [c for c in chunks if c.response is None]
        assert len(deltas) == 6 and deltas[0].model == "flash"
        assert "".join(c.text for c in deltas) == "Gemini heard: tell me a story"
        assert deltas[-1].finish_reason is FinishReason.STOP
        final = chunks[-1].response
        assert final is not None and final.provider_model == "gemini-2.5-flash"
        assert final.usage.output_tokens == 6 and not final.usage.estimated
    told = [r for r in caplog.records if "one JSON array" in r.message]
    assert len(told) == 1 and "model flash" in told[0].message


async def test_stream_with_usage_only_on_the_last_chunk(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="one two three", usage_every_chunk=False))
    final = await collect(yard.stream("flash", "x"))
    assert final.usage.output_tokens == 3 and not final.usage.estimated


async def test_stream_without_usage_ends_at_eof_with_estimated_usage(
    yard: Yard, fake: FakeGemini
) -> None:
    fake.script(GeminiAnswer(text="one two three", usage=False))
    final = await collect(yard.stream("flash", "x"))
    assert final.text == "one two three"
    assert final.usage.estimated and final.cost > 0


async def test_slow_first_token_within_the_limit_still_answers(
    yard: Yard, fake: FakeGemini
) -> None:
    # Slower than all of quick's limits, which test_slow_first_token_times_out meets, and well
    # within flash's: a loaded machine cannot push it past them.
    fake.push(Fault(first_token_delay=0.5, delay=0.05))
    final = await collect(yard.stream("flash", "hi"))
    assert final.text == "Gemini heard: hi"


# --- usage and cost ---------------------------------------------------------------------------


async def test_cached_tokens_are_priced_at_the_cached_rate(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="ok", cached_tokens=1000))
    response = await yard.complete("flash", "hi")
    usage = response.usage
    assert usage.cached_tokens == 1000 and usage.input_tokens > 1000
    expected = (usage.input_tokens - 1000) * 0.30 + 1000 * 0.03 + usage.output_tokens * 2.50
    assert response.cost == pytest.approx(expected / 1e6)


async def test_answer_without_usage_is_priced_by_estimate(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="four words of answer", usage=False))
    response = await yard.complete("flash", "a question of some length")
    usage = response.usage
    assert usage.estimated and usage.input_tokens > 0 and usage.output_tokens > 0
    assert response.cost == pytest.approx(
        (usage.input_tokens * 0.30 + usage.output_tokens * 2.50) / 1e6
    )


async def test_thinking_tokens_are_billed_as_output(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="42", thoughts_tokens=200))
    usage = (await yard.complete("flash", "hi")).usage
    assert usage.reasoning_tokens == 200 and usage.output_tokens == 201


# --- safety -----------------------------------------------------------------------------------


async def test_safety_stop_is_an_answer_finishing_content_filter(
    yard: Yard, fake: FakeGemini
) -> None:
    fake.script(GeminiAnswer(text="", finish_reason="SAFETY"))
    response = await yard.complete("flash", "something dangerous")
    assert (response.text, response.finish_reason) == ("", FinishReason.CONTENT_FILTER)
    assert response.cost > 0  # the prompt was read and billed


async def test_blocked_prompt_is_content_filtered(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(block_reason="PROHIBITED_CONTENT"))
    with pytest.raises(ContentFilteredError, match="PROHIBITED_CONTENT"):
        await yard.complete("flash", "x")


async def test_safety_stop_mid_stream_finishes_content_filter_after_the_text_so_far(
    yard: Yard, fake: FakeGemini
) -> None:
    fake.script(GeminiAnswer(text="Here is how you", finish_reason="SAFETY"))
    seen: list[str] = []
    final = None
    async for chunk in yard.stream("flash", "x"):
        seen.append(chunk.text)
        final = chunk.response or final
    assert final is not None and final.finish_reason is FinishReason.CONTENT_FILTER
    assert "".join(seen) == "Here is how you" and final.cost > 0


async def test_blocked_prompt_in_a_stream_is_content_filtered(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(block_reason="SAFETY"))
    with pytest.raises(ContentFilteredError, match="blockReason SAFETY"):
        await collect(yard.stream("flash", "x"))


# --- error statuses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_type", "kind", "code"),
    [
        (400, None, BadRequestError, "INVALID_ARGUMENT"),
        (400, "FAILED_PRECONDITION", BadRequestError, "FAILED_PRECONDITION"),
        (400, "context_length", ContextLengthError, "INVALID_ARGUMENT"),
        (401, None, AuthenticationError, "UNAUTHENTICATED"),
        (403, None, PermissionDeniedError, "PERMISSION_DENIED"),
        (404, None, NotFoundError, "NOT_FOUND"),
        (429, None, RateLimitedError, "RESOURCE_EXHAUSTED"),
        (500, None, UnavailableError, "INTERNAL"),
        (503, None, OverloadedError, "UNAVAILABLE"),
        (504, None, ModelTimeoutError, "DEADLINE_EXCEEDED"),
    ],
)
async def test_error_status_with_its_real_body(
    yard: Yard,
    fake: FakeGemini,
    status: int,
    error_type: str | None,
    kind: type[ModelError],
    code: str,
) -> None:
    fake.push(Fault(status=status, error_type=error_type))
    with pytest.raises(ModelError) as caught:
        await yard.complete("flash", "hi")
    error = caught.value
    assert type(error) is kind
    assert (error.status, error.code, error.model) == (status, code, "flash")
    assert error.provider_message and error.provider_message in error.message


async def test_stream_request_refused_with_an_error_status(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(status=503))
    with pytest.raises(OverloadedError):
        await collect(yard.stream("flash", "hi"))


async def test_rate_limit_retry_after_comes_from_retry_info(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(status=429))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("flash", "hi")
    assert caught.value.retry_after == 17.0 and caught.value.retryable


async def test_rate_limit_without_retry_info_uses_retry_after(yard: Yard, fake: FakeGemini) -> None:
    fake.retry_delay = ""
    fake.push(Fault(status=429, headers={"Retry-After": "3"}))
    with pytest.raises(RateLimitedError) as caught:
        await yard.complete("flash", "hi")
    assert caught.value.retry_after == 3.0


async def test_key_never_appears_in_errors(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(status=403))
    with pytest.raises(PermissionDeniedError) as caught:
        await yard.complete("flash", "hi")
    error = caught.value
    assert "api_key:" in error.message  # the fake echoes the key, as Google does
    decision = error.decision
    assert decision is not None and decision.error is not None
    for text in (str(error), error.message, error.provider_message or "", decision.error):
        assert KEY not in text
    assert KEY not in orjson.dumps(error.to_dict()).decode()


# --- broken bodies ----------------------------------------------------------------------------


async def test_html_error_page_keeps_status_and_first_bytes(yard: Yard, fake: FakeGemini) -> None:
    page = b"<!DOCTYPE html><html><title>502 Bad Gateway</title></html>"
    fake.push(Fault(status=502, body=page, content_type="text/html"))
    with pytest.raises(UnavailableError) as caught:
        await yard.complete("flash", "hi")
    assert caught.value.status == 502 and "502 Bad Gateway" in caught.value.message


async def test_html_with_status_200_is_a_bad_response(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(body=b"<html>captive portal</html>", content_type="text/html"))
    with pytest.raises(BadResponseError, match="captive portal"):
        await yard.complete("flash", "hi")


async def test_truncated_json_is_a_bad_response(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(body=b'{"candidates": [{"content": {"parts": [{"text": "Hel'))
    with pytest.raises(BadResponseError, match="non-JSON"):
        await yard.complete("flash", "hi")


async def test_unknown_finish_reason_is_a_bad_response(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="x", finish_reason="BRAND_NEW_REASON"))
    with pytest.raises(BadResponseError, match="BRAND_NEW_REASON"):
        await yard.complete("flash", "hi")


# --- transport failures -----------------------------------------------------------------------


async def test_connection_reset_is_unavailable(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(reset=True))
    with pytest.raises(UnavailableError):
        await yard.complete("flash", "hi")


async def test_hang_times_out(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(hang=True))
    with pytest.raises(ModelTimeoutError):
        await yard.complete("quick", "hi")


async def test_slow_first_token_times_out(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(first_token_delay=1.0))
    with pytest.raises(ModelTimeoutError) as caught:
        await collect(yard.stream("quick", "hi"))
    assert caught.value.code == "first_token_timeout"


async def test_cut_stream_raises(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(cut_after=2))
    with pytest.raises((UnavailableError, StreamInterruptedError)) as caught:
        await collect(yard.stream("flash", "one two three four five"))
    assert caught.value.code in ("stream_broken", "stream_incomplete")
    assert caught.value.cost > 0


async def test_stalled_stream_times_out(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(stall_after=2))
    with pytest.raises(ModelTimeoutError) as caught:
        await collect(yard.stream("quick", "one two three four five"))
    assert caught.value.code == "stream_stalled"


async def test_malformed_stream_event_is_a_bad_response(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(malformed_at=1))
    with pytest.raises(BadResponseError, match="not JSON"):
        await collect(yard.stream("flash", "one two three"))


async def test_stream_without_its_finish_chunk_is_interrupted_and_costed(
    yard: Yard, fake: FakeGemini
) -> None:
    fake.push(Fault(no_final=True))
    with pytest.raises(StreamInterruptedError) as caught:
        await collect(yard.stream("flash", "one two three"))
    assert caught.value.cost > 0
    assert caught.value.decision is not None and caught.value.decision.cost == caught.value.cost


async def test_error_event_mid_stream_raises_its_error(yard: Yard, fake: FakeGemini) -> None:
    fake.script(GeminiAnswer(text="one two three", error_after=1, error_status=503))
    with pytest.raises(OverloadedError):
        await collect(yard.stream("flash", "x"))


# --- embeddings -------------------------------------------------------------------------------


async def test_embeddings_one_vector_per_input_with_estimated_cost(
    yard: Yard, fake: FakeGemini
) -> None:
    response = await yard.embed("embed", ["first text", "second text"])
    assert len(response.vectors) == 2 and len(response.vectors[0]) == 8
    assert response.vectors[0] != response.vectors[1]
    assert response.usage.estimated and response.usage.input_tokens > 0
    assert response.cost == pytest.approx(response.usage.input_tokens * 0.15 / 1e6)
    assert fake.requests[-1].path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"


async def test_embedding_error_is_mapped(yard: Yard, fake: FakeGemini) -> None:
    fake.push(Fault(status=429))
    with pytest.raises(RateLimitedError) as caught:
        await yard.embed("embed", "x")
    assert caught.value.retry_after == 17.0
