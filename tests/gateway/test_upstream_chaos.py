"""Upstreams misbehaving, seen through the gateway by the official OpenAI and Anthropic SDKs, for
each provider wire (OpenAI, an OpenAI-compatible server, Anthropic, Gemini), whole and
streamed: a client gets a clear error in its API's shape (the status, the model and the fault
named, never the provider key) or the answer intact; a half-streamed answer never ends as a
finished one; nothing hangs.

One gateway serves the module, with retries, breakers and learned limits off so that each
fault reaches the client as it is (the resilience stack has its own tests in tests/resilience).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import httpx2
import openai
import orjson
import pytest
from tests.fakes.anthropic_reply import ToolUse, Turn
from tests.fakes.anthropic_server import FakeAnthropic
from tests.fakes.gemini_server import FakeGemini, GeminiAnswer
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.server import FakeUpstream, Fault
from tests.gateway.conftest import UPSTREAM_KEY, Running, start_gateway

from modelyard.providers import http

WIRES = ("openai", "compatible", "anthropic", "gemini")
CLIENTS = ("openai", "anthropic")
QUIET = "retry: {attempts: 0}, breaker: {enabled: false}, limits: {learn: false}"
TIMEOUTS = "timeouts: {connect: 1, total: 1, first_token: 0.5, stall: 0.2}"


@dataclass
class Yard:
    """The gateway and the fake behind each wire."""

    running: Running
    fakes: dict[str, FakeUpstream]


@pytest.fixture(scope="module")
def yard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Yard]:
    fakes: dict[str, FakeUpstream] = {
        "openai": FakeOpenAI(api_key=UPSTREAM_KEY),
        "compatible": FakeOpenAI(validate=False),  # vLLM, Ollama: no key, looser checks
        "anthropic": FakeAnthropic(api_key=UPSTREAM_KEY),
        "gemini": FakeGemini(api_key=UPSTREAM_KEY),
    }
    for fake in fakes.values():
        fake.start()
    url = {name: fake.url for name, fake in fakes.items()}
    config = tmp_path_factory.mktemp("chaos") / "config.yaml"
    config.write_text(
        f"""
providers:
  openai: {{type: openai, base_url: "{url["openai"]}/v1", api_key: {UPSTREAM_KEY},
           {TIMEOUTS}, {QUIET}}}
  compatible: {{type: openai, base_url: "{url["compatible"]}/v1", max_tokens_field: max_tokens,
               {TIMEOUTS}, {QUIET}}}
  anthropic: {{type: anthropic, base_url: "{url["anthropic"]}", api_key: {UPSTREAM_KEY},
              {TIMEOUTS}, {QUIET}}}
  gemini: {{type: gemini, base_url: "{url["gemini"]}/v1beta", api_key: {UPSTREAM_KEY},
           {TIMEOUTS}, {QUIET}}}
models:
  openai: {{provider: openai, id: gpt-4o-mini-2024-07-18, price: {{input: 1, output: 2}}}}
  compatible: {{provider: compatible, id: qwen2.5-7b, price: {{input: 1, output: 2}}}}
  anthropic: {{provider: anthropic, id: claude-sonnet-4-5, price: {{input: 1, output: 2}}}}
  gemini: {{provider: gemini, id: gemini-2.5-flash, price: {{input: 1, output: 2}}}}
ledger: {{flush_interval: 0.05}}
""",
        encoding="utf-8",
    )
    running, stop = start_gateway(config)
    try:
        for wire in WIRES:  # warm up each way in (pools, the SDKs' first imports, the ledger)
            for client in CLIENTS:
                for stream in (False, True):
                    assert ask(Yard(running, fakes), client, wire, stream=stream).error is None
        yield Yard(running, fakes)
    finally:
        stop()
        for fake in fakes.values():
            fake.stop()


@pytest.fixture
def fakes(yard: Yard) -> dict[str, FakeUpstream]:
    for fake in yard.fakes.values():
        fake.reset()
    gemini = yard.fakes["gemini"]
    assert isinstance(gemini, FakeGemini)
    gemini.retry_delay = ""  # its 429s say no RetryInfo: the headers decide
    return yard.fakes


@dataclass
class Seen:
    """What a client got: the text, how it finished, and the error it raised, if any."""

    text: str = ""
    finish: str | None = None
    error: openai.APIError | anthropic.APIError | None = None
    request_id: str | None = None

    @property
    def status(self) -> int | None:
        return getattr(self.error, "status_code", None)

    @property
    def message(self) -> str:
        """The error's message, as the client's API shapes it."""
        body: Any = getattr(self.error, "body", None)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            body = body["error"]  # Anthropic's {"type": "error", "error": {...}}
        assert isinstance(body, dict), self.error
        assert UPSTREAM_KEY not in str(body)
        return str(body["message"])

    @property
    def headers(self) -> Any:
        response = getattr(self.error, "response", None)
        return response.headers if response is not None else {}


PROMPT = "one two three"


def ask(yard: Yard, client: str, wire: str, *, stream: bool) -> Seen:
    """Ask model `wire` through the gateway with the `client` SDK (no retries, 5 s timeout)."""
    seen = Seen()
    try:
        if client == "openai":
            _ask_openai(yard, wire, stream, seen)
        else:
            _ask_anthropic(yard, wire, stream, seen)
    except (openai.APIError, anthropic.APIError) as exc:
        seen.error = exc
        response = getattr(exc, "response", None)
        if response is not None:
            seen.request_id = response.headers.get("x-request-id")
    return seen


def _ask_openai(yard: Yard, wire: str, stream: bool, seen: Seen) -> None:
    sdk = openai.OpenAI(base_url=yard.running.openai_url, api_key="x", max_retries=0, timeout=5)
    messages: Any = [{"role": "user", "content": PROMPT}]
    if not stream:
        reply = sdk.chat.completions.with_raw_response.create(model=wire, messages=messages)
        seen.request_id = reply.headers.get("x-request-id")
        answer = reply.parse()
        seen.text = answer.choices[0].message.content or ""
        seen.finish = answer.choices[0].finish_reason
        return
    with sdk.chat.completions.with_streaming_response.create(
        model=wire, messages=messages, stream=True
    ) as response:
        seen.request_id = response.headers.get("x-request-id")
        for chunk in response.parse():
            if chunk.choices:
                seen.text += chunk.choices[0].delta.content or ""
                seen.finish = chunk.choices[0].finish_reason or seen.finish


def _ask_anthropic(yard: Yard, wire: str, stream: bool, seen: Seen) -> None:
    sdk = anthropic.Anthropic(base_url=yard.running.url, api_key="x", max_retries=0, timeout=5)
    messages: Any = [{"role": "user", "content": PROMPT}]
    if not stream:
        reply = sdk.messages.with_raw_response.create(model=wire, max_tokens=100, messages=messages)
        seen.request_id = reply.headers.get("x-request-id")
        message = reply.parse()
        seen.text = "".join(block.text for block in message.content if block.type == "text")
        seen.finish = message.stop_reason
        return
    with sdk.messages.with_streaming_response.create(
        model=wire, max_tokens=100, messages=messages, stream=True
    ) as response:
        seen.request_id = response.headers.get("x-request-id")
        for event in response.parse():
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                seen.text += event.delta.text
            elif event.type == "message_delta":
                seen.finish = event.delta.stop_reason


def record(yard: Yard, request_id: str | None) -> dict[str, Any]:
    """The request log's record of `request_id`, once written (records go in batches)."""
    assert request_id
    for _ in range(100):
        reply = httpx2.get(f"{yard.running.url}/v1/requests/{request_id}")
        if reply.status_code == 200:
            return reply.json()  # type: ignore[no-any-return]
        time.sleep(0.01)
    raise AssertionError(f"no record of {request_id}")


every_way = pytest.mark.parametrize(
    ("wire", "client", "stream"),
    [(w, c, s) for w in WIRES for c in CLIENTS for s in (False, True)],
)


# --- a 200 that is not the API's answer -------------------------------------------------------

ERROR_OBJECTS = {
    "openai": b'{"error": {"message": "The server is overloaded", "type": "server_error"}}',
    "compatible": b'{"object": "error", "message": "busy", "type": "ServiceUnavailable", '
    b'"code": 503}',
    "anthropic": b'{"type": "error", "error": {"type": "overloaded_error", "message": '
    b'"Overloaded"}}',
    "gemini": b'{"error": {"code": 503, "message": "The model is overloaded.", '
    b'"status": "UNAVAILABLE"}}',
}


@every_way
@pytest.mark.parametrize(
    ("body", "content_type", "named"),
    [
        (b"upstream says hi", "text/plain", "upstream says hi"),
        (b'{"foo": [1, 2]}', "application/json", ""),
    ],
    ids=["not-json", "wrong-shape"],
)
def test_a_200_that_is_not_the_apis_answer_is_a_502_naming_the_model_and_the_body(
    yard: Yard,
    fakes: dict[str, FakeUpstream],
    wire: str,
    client: str,
    stream: bool,
    body: bytes,
    content_type: str,
    named: str,
) -> None:
    fakes[wire].always(Fault(body=body, content_type=content_type))
    seen = ask(yard, client, wire, stream=stream)
    assert seen.status == 502 and not seen.text
    assert f"(model {wire}, provider {wire})" in seen.message and named in seen.message
    assert record(yard, seen.request_id)["status"] == 502


@every_way
def test_a_200_carrying_the_providers_error_object_is_that_error(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str, stream: bool
) -> None:
    # A stream asked for and refused so read as "not a stream", a 502 nobody retries.
    fakes[wire].always(Fault(body=ERROR_OBJECTS[wire]))
    seen = ask(yard, client, wire, stream=stream)
    overloaded = client == "anthropic" and wire != "compatible"  # Anthropic's own 529
    assert seen.status == (529 if overloaded else 503), seen.message
    assert f"(model {wire}, provider {wire})" in seen.message
    assert "bad_response" not in str(seen.error)


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("client", CLIENTS)
def test_a_stream_answered_with_no_events_says_so_and_shows_the_body(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str
) -> None:
    # It was reported as "stream ended before every choice finished".
    fakes[wire].always(Fault(body=b"upstream says hi", content_type="text/plain"))
    seen = ask(yard, client, wire, stream=True)
    assert seen.status == 502
    assert "with no events (text/plain" in seen.message and "upstream says hi" in seen.message


# --- a server that ignores stream: true --------------------------------------------------------


@pytest.mark.parametrize("wire", ["openai", "compatible", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_whole_answer_to_a_stream_request_is_streamed_on(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str
) -> None:
    # Some vLLM, Ollama and proxy setups answer `stream: true` with the whole JSON answer;
    # it was a 502 ("upstream answered a stream request with application/json").
    whole = ask(yard, client, wire, stream=False)
    fakes[wire].always(Fault(unstreamed=True))
    seen = ask(yard, client, wire, stream=True)
    assert seen.error is None, seen.message
    assert (seen.text, seen.finish) == (whole.text, whole.finish) and seen.text
    assert fakes[wire].requests[-1].json["stream"] is True
    assert record(yard, seen.request_id)["status"] == 200


@pytest.mark.parametrize("client", CLIENTS)
def test_geminis_chunks_as_one_json_array_to_a_stream_request_are_streamed_on(
    yard: Yard, fakes: dict[str, FakeUpstream], client: str
) -> None:
    # streamGenerateContent as if without alt=sse answers so; it was a billed 502 ("got list").
    whole = ask(yard, client, "gemini", stream=False)
    fakes["gemini"].always(Fault(unstreamed=True))
    seen = ask(yard, client, "gemini", stream=True)
    assert seen.error is None, seen.message
    assert (seen.text, seen.finish) == (whole.text, whole.finish) and seen.text
    assert fakes["gemini"].requests[-1].path.endswith(":streamGenerateContent")
    logged = record(yard, seen.request_id)
    assert logged["status"] == 200 and logged["cost"] > 0


def test_geminis_json_array_streamed_on_carries_its_calls_and_its_own_usage(
    yard: Yard, fakes: dict[str, FakeUpstream]
) -> None:
    fake = fakes["gemini"]
    assert isinstance(fake, FakeGemini)
    fake.script(GeminiAnswer(text="", calls=(("get_weather", {"city": "Paris"}),)))
    fake.always(Fault(unstreamed=True))
    chunks = _stream_with_tools(yard, "gemini")
    calls = [
        (call.function.name, call.function.arguments)
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function
    ]
    assert calls == [("get_weather", '{"city":"Paris"}')]
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "tool_calls"
    usage = chunks[-1].usage  # the array's own usageMetadata (the fake's counts), no estimate
    contents = fake.requests[-1].json["contents"]
    assert usage is not None and usage.completion_tokens == 1  # one part: the call
    assert usage.prompt_tokens == max(1, len(orjson.dumps(contents)) // 4)


@pytest.mark.parametrize("client", CLIENTS)
def test_geminis_json_array_ending_in_an_error_is_that_error_after_the_text(
    yard: Yard, fakes: dict[str, FakeUpstream], client: str
) -> None:
    fake = fakes["gemini"]
    assert isinstance(fake, FakeGemini)
    fake.script(GeminiAnswer(error_after=1, error_status=503))
    fake.always(Fault(unstreamed=True))
    seen = ask(yard, client, "gemini", stream=True)
    assert seen.text and seen.finish is None
    assert seen.error is not None and "overloaded" in seen.message
    assert "(model gemini, provider gemini)" in seen.message
    assert record(yard, seen.request_id)["cost"] > 0  # billed for what it generated


TOOLS: Any = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
        },
    }
]


def _stream_with_tools(yard: Yard, model: str) -> list[Any]:
    """The chunks of a Chat Completions stream asking `model` with `TOOLS`, usage included."""
    sdk = openai.OpenAI(base_url=yard.running.openai_url, api_key="x", max_retries=0, timeout=5)
    stream = sdk.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": PROMPT}],
        tools=TOOLS,
        stream=True,
        stream_options={"include_usage": True},
    )
    return list(stream)


def test_a_whole_answer_streamed_on_carries_its_tool_calls_and_usage(
    yard: Yard, fakes: dict[str, FakeUpstream]
) -> None:
    fake = fakes["compatible"]
    assert isinstance(fake, FakeOpenAI)
    fake.script(Reply(tool_calls=(("get_weather", '{"city": "Paris"}'),)))
    fake.always(Fault(unstreamed=True))
    chunks = _stream_with_tools(yard, "compatible")
    deltas = [chunk.choices[0].delta for chunk in chunks if chunk.choices]
    calls = [call for delta in deltas for call in delta.tool_calls or []]
    assert [(c.function.name, c.function.arguments) for c in calls if c.function] == [
        ("get_weather", '{"city": "Paris"}')
    ]
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "tool_calls"
    usage = chunks[-1].usage
    assert usage is not None and usage.prompt_tokens > 0 and usage.completion_tokens > 0


def test_a_whole_answer_from_anthropic_streamed_on_carries_its_tool_use(
    yard: Yard, fakes: dict[str, FakeUpstream]
) -> None:
    fake = fakes["anthropic"]
    assert isinstance(fake, FakeAnthropic)
    fake.script(Turn(tool_uses=(ToolUse(name="get_weather", input={"city": "Paris"}),)))
    fake.always(Fault(unstreamed=True))
    sdk = anthropic.Anthropic(base_url=yard.running.url, api_key="x", max_retries=0, timeout=5)
    tool: Any = {"name": "get_weather", "input_schema": {"type": "object"}}
    with sdk.messages.stream(
        model="anthropic",
        max_tokens=100,
        messages=[{"role": "user", "content": PROMPT}],
        tools=[tool],
    ) as stream:
        message = stream.get_final_message()
    uses = [(b.name, b.input) for b in message.content if b.type == "tool_use"]
    assert uses == [("get_weather", {"city": "Paris"})] and message.stop_reason == "tool_use"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0


# --- proxies in front of the provider -------------------------------------------------------


@every_way
@pytest.mark.parametrize(("status", "expected"), [(502, 503), (503, 503), (504, 504)])
def test_a_proxys_html_error_page_is_its_status_with_the_page_quoted(
    yard: Yard,
    fakes: dict[str, FakeUpstream],
    wire: str,
    client: str,
    stream: bool,
    status: int,
    expected: int,
) -> None:
    page = f"<html><body><h1>{status} Bad Gateway</h1><p>nginx</p></body></html>".encode()
    fakes[wire].always(Fault(status=status, body=page, content_type="text/html"))
    seen = ask(yard, client, wire, stream=stream)
    # A proxy's 503 page is an outage, not the model overloaded: no Anthropic 529 on any wire
    # (Gemini's adapter took any 503 for an overload).
    assert seen.status == expected
    assert f"HTTP {status}" in seen.message and f"<h1>{status} Bad Gateway" in seen.message
    assert f"(model {wire}, provider {wire})" in seen.message


# --- rate limits and overload -----------------------------------------------------------------


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("headers", "after", "after_ms"),
    [
        ({"retry-after": "3"}, "3", "3000"),
        ({"retry-after-ms": "2500"}, "3", "2500"),  # rounded to 2 s, the retry came too soon
        ({"retry-after": "0.2"}, "1", "200"),
    ],
)
def test_a_429_tells_the_client_when_to_retry_never_too_soon(
    yard: Yard,
    fakes: dict[str, FakeUpstream],
    wire: str,
    stream: bool,
    headers: dict[str, str],
    after: str,
    after_ms: str,
) -> None:
    fakes[wire].always(Fault(status=429, message="slow down", headers=headers))
    seen = ask(yard, "openai", wire, stream=stream)
    assert seen.status == 429 and isinstance(seen.error, openai.RateLimitError)
    assert (seen.headers["retry-after"], seen.headers["retry-after-ms"]) == (after, after_ms)


@pytest.mark.parametrize("wire", ["anthropic", "gemini"])  # OpenAI's 429s carry reset headers
def test_a_429_without_a_wait_names_none(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str
) -> None:
    fakes[wire].always(Fault(status=429, message="slow down"))
    seen = ask(yard, "anthropic", wire, stream=False)
    assert seen.status == 429 and isinstance(seen.error, anthropic.RateLimitError)
    assert "retry-after" not in seen.headers and "retry-after-ms" not in seen.headers


@pytest.mark.parametrize("wire", ["openai", "compatible"])
def test_a_429_with_only_the_reset_headers_waits_for_the_exhausted_limit(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str
) -> None:
    reset = {
        "x-ratelimit-limit-tokens": "10000",
        "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "1.5s",
    }
    fakes[wire].always(Fault(status=429, message="Rate limit reached", headers=reset))
    seen = ask(yard, "openai", wire, stream=False)
    assert seen.status == 429
    assert (seen.headers["retry-after"], seen.headers["retry-after-ms"]) == ("2", "1500")


OVERLOADED = {
    "openai": Fault(status=503, message="The engine is currently overloaded"),
    "compatible": Fault(status=529),
    "anthropic": Fault(status=529),
    "gemini": Fault(status=503, message="The model is overloaded."),
}


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("stream", [False, True])
def test_an_overloaded_upstream_is_anthropics_529_to_messages_clients_and_a_503_to_openais(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str, stream: bool
) -> None:
    # Messages clients got a 503; Anthropic's API sends 529 `overloaded_error`, which its SDK
    # retries. The OpenAI API has no 529: its clients keep the 503.
    fakes[wire].always(OVERLOADED[wire])
    seen = ask(yard, client, wire, stream=stream)
    assert seen.status == (529 if client == "anthropic" else 503), seen.message
    assert "overloaded" in seen.message
    assert seen.headers.get("x-should-retry") != "false"
    assert record(yard, seen.request_id)["status"] == seen.status
    if client == "anthropic":
        assert isinstance(seen.error, anthropic.APIStatusError)
        assert seen.error.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


# --- streams that go wrong part-way -----------------------------------------------------------

AFTER_TEXT = {"openai": 2, "compatible": 2, "anthropic": 4, "gemini": 1}
"""The number of a stream's first event after some text went out (Anthropic's stream opens
with message_start, content_block_start and a ping)."""


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize(
    ("fault", "named"),
    [
        ("error_at", ""),  # the provider's own error event: its message, whatever it is
        ("half_at", "not JSON"),  # the body ends cleanly in the middle of an event
        ("cut_after", "connection broke mid-stream"),  # reset
        ("stall_after", "stream silent for 0.2s"),  # no bytes, connection open
    ],
)
def test_a_stream_failing_part_way_ends_in_an_error_never_a_finish(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str, fault: str, named: str
) -> None:
    fakes[wire].always(Fault(**{fault: AFTER_TEXT[wire]}))
    started = time.monotonic()
    seen = ask(yard, client, wire, stream=True)
    assert time.monotonic() - started < 1.0
    assert seen.text and seen.finish is None  # some text came, and no finish after it
    assert seen.error is not None and named in seen.message
    assert f"(model {wire}, provider {wire})" in seen.message
    logged = record(yard, seen.request_id)
    assert logged["status"] >= 500 and logged["cost"] > 0  # billed for what it generated


@pytest.mark.parametrize("wire", ["openai", "compatible", "anthropic"])
@pytest.mark.parametrize("client", CLIENTS)
def test_a_stream_missing_only_its_end_marker_is_finished_whole(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str
) -> None:
    # [DONE] or message_stop never came, but every choice had finished: the answer is whole.
    fakes[wire].always(Fault(no_final=True))
    seen = ask(yard, client, wire, stream=True)
    assert seen.error is None and seen.text.endswith(PROMPT) and seen.finish in ("stop", "end_turn")


@pytest.mark.parametrize("client", CLIENTS)
def test_a_gemini_stream_missing_its_finishing_chunk_is_incomplete(
    yard: Yard, fakes: dict[str, FakeUpstream], client: str
) -> None:
    fakes["gemini"].always(Fault(no_final=True))  # the last chunk carries finishReason
    seen = ask(yard, client, "gemini", stream=True)
    assert seen.text and seen.finish is None
    assert "the answer is incomplete" in seen.message


def test_a_stream_line_past_the_limit_is_dropped_not_held_without_end(
    yard: Yard, fakes: dict[str, FakeUpstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(http, "MAX_EVENT_BYTES", 2**20)
    fakes["openai"].always(Fault(huge_line=2 * 2**20))
    seen = ask(yard, "openai", "openai", stream=True)
    assert seen.status == 502 and "went past 1 MiB without ending" in seen.message


# --- whole bodies past the limit -------------------------------------------------------------

BODY_LIMIT = 2**20
"""The limit these tests set on a whole body (`http.MAX_BODY_BYTES`), not the 64 MiB default."""


def padded(size: int) -> bytes:
    """A JSON object of `size` bytes or more."""
    return b'{"pad": "' + b"x" * size + b'"}'


@pytest.fixture
def body_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http, "MAX_BODY_BYTES", BODY_LIMIT)


SENT = {
    "with-length": {},
    "chunked": {"chunked": True},  # no Content-Length: counted as it arrives
    "gzip": {"encoding": "gzip"},  # a Content-Length of a few KiB, inflating past the limit
}


@pytest.mark.usefixtures("body_limit")
@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("status", [200, 500])
@pytest.mark.parametrize("sent", list(SENT))
def test_a_body_past_the_limit_is_a_502_naming_the_limit_and_the_model(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, stream: bool, status: int, sent: str
) -> None:
    # It was read whole into memory, however large (a proxy's or a broken upstream's gigabytes).
    fakes[wire].always(Fault(status=status, body=padded(2 * BODY_LIMIT), **SENT[sent]))
    seen = ask(yard, "openai", wire, stream=stream)
    assert seen.status == 502 and not seen.text
    assert f"body (HTTP {status}) went past 1 MiB" in seen.message
    assert f"(model {wire}, provider {wire})" in seen.message
    assert record(yard, seen.request_id)["status"] == 502
    fakes[wire].always(None)  # the connection left unread is not used again
    assert ask(yard, "openai", wire, stream=stream).error is None


@pytest.mark.usefixtures("body_limit")
@pytest.mark.parametrize("client", CLIENTS)
@pytest.mark.parametrize("sent", list(SENT))
def test_a_body_within_the_limit_is_read_whole(
    yard: Yard, fakes: dict[str, FakeUpstream], client: str, sent: str
) -> None:
    # Anthropic's overloaded error, padded to nearly the limit: read (and parsed) whole.
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    body = orjson.dumps({**error, "pad": "x" * (BODY_LIMIT - 200)})
    fakes["anthropic"].always(Fault(status=529, body=body, **SENT[sent]))
    seen = ask(yard, client, "anthropic", stream=False)
    assert seen.status == (529 if client == "anthropic" else 503), seen.message
    assert "overloaded_error: Overloaded" in seen.message


@pytest.mark.usefixtures("body_limit")
@pytest.mark.parametrize("stream", [False, True])
def test_a_body_past_the_limit_is_counted_once_against_its_model(
    yard: Yard, fakes: dict[str, FakeUpstream], stream: bool
) -> None:
    before = _model_errors(yard, "openai")
    fakes["openai"].always(Fault(body=padded(2 * BODY_LIMIT), chunked=True))
    seen = ask(yard, "openai", "openai", stream=stream)
    assert seen.status == 502 and "went past 1 MiB" in seen.message
    assert _model_errors(yard, "openai") == before + 1


def test_a_long_stream_line_within_the_limit_is_read(
    yard: Yard, fakes: dict[str, FakeUpstream]
) -> None:
    fakes["openai"].always(Fault(huge_line=4 * 2**20))  # a comment line, then the answer
    seen = ask(yard, "openai", "openai", stream=True)
    assert seen.error is None and seen.text.endswith(PROMPT)


# --- the transport: compression, packets, connections ---------------------------------------


@every_way
@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_compressed_answer_is_read_as_it_comes(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str, stream: bool, encoding: str
) -> None:
    fakes[wire].always(Fault(encoding=encoding))
    seen = ask(yard, client, wire, stream=stream)
    assert seen.error is None and seen.text.endswith(PROMPT)
    assert seen.finish in ("stop", "end_turn")


UNICODE = "héllo wörld ✓ 你好 🙂"


def script(fake: FakeUpstream, text: str) -> None:
    """Have `fake` answer `text` next."""
    if isinstance(fake, FakeOpenAI):
        fake.script(Reply(text=text))
    elif isinstance(fake, FakeAnthropic):
        fake.script(Turn(text=text))
    else:
        assert isinstance(fake, FakeGemini)
        fake.script(GeminiAnswer(text=text))


@pytest.mark.parametrize("wire", WIRES)
@pytest.mark.parametrize("client", CLIENTS)
def test_characters_cut_across_packets_arrive_whole(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str
) -> None:
    script(fakes[wire], UNICODE)
    fakes[wire].always(Fault(packet=37))  # cuts lines, and some of the multi-byte characters
    seen = ask(yard, client, wire, stream=True)
    assert seen.error is None and seen.text == UNICODE


@every_way
def test_a_connection_the_provider_closes_after_answering_is_not_used_again(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str, stream: bool
) -> None:
    fakes[wire].push(Fault(close=True), Fault(close=True))
    first = ask(yard, client, wire, stream=stream)
    second = ask(yard, client, wire, stream=stream)
    assert first.error is None and second.error is None
    assert second.text.endswith(PROMPT) and len(fakes[wire].requests) == 2


@every_way
def test_a_connection_reset_before_any_answer_is_a_503(
    yard: Yard, fakes: dict[str, FakeUpstream], wire: str, client: str, stream: bool
) -> None:
    fakes[wire].always(Fault(reset=True))
    seen = ask(yard, client, wire, stream=stream)
    assert seen.status == 503 and f"(model {wire}, provider {wire})" in seen.message
    assert record(yard, seen.request_id)["status"] == 503


def _model_errors(yard: Yard, model: str) -> float:
    """The gateway's count of failed calls to `model`, of every kind."""
    text = httpx2.get(f"{yard.running.url}/metrics").text
    lines = [line for line in text.splitlines() if line.startswith("modelyard_model_errors_total")]
    return sum(float(line.rsplit(" ", 1)[1]) for line in lines if f'model="{model}"' in line)


@pytest.mark.parametrize("fault", [Fault(error_at=1), Fault(body=b"{}"), Fault(status=529)])
def test_every_upstream_fault_is_counted_against_its_model(
    yard: Yard, fakes: dict[str, FakeUpstream], fault: Fault
) -> None:
    before = _model_errors(yard, "gemini")
    fakes["gemini"].always(fault)
    assert ask(yard, "openai", "gemini", stream=True).error is not None
    assert _model_errors(yard, "gemini") == before + 1
