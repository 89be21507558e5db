"""What an upstream says about a call reaches the gateway's clients as their SDKs expect it: the
prompt's tokens at the start of a Messages stream, the end user in each provider's own field,
the field a 400 names, and the upstream's quota headers for the callers trusted with them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
from tests.fakes.anthropic_reply import Turn
from tests.fakes.anthropic_server import FakeAnthropic, input_tokens, rate_limited
from tests.fakes.gemini_server import FakeGemini, GeminiAnswer
from tests.fakes.openai_server import FakeOpenAI, Reply
from tests.fakes.server import Fault
from tests.gateway.conftest import CLAUDE_KEY, UPSTREAM_KEY, Running, anthropic_client
from tests.gateway.test_keys import ADMIN, create_key, record_of

ASKED: Any = [{"role": "user", "content": "one two three four five"}]
ADMIN_KEY = "admin-secret-123456"  # as `ADMIN` sets it


GEMINI_KEY = "AIzaSyD-fake-key-0123456789abcdefghijk"


def config(claude: FakeAnthropic, gpt: FakeOpenAI, gemini: FakeGemini, extra: str = "") -> str:
    return f"""
providers:
  anthropic: {{type: anthropic, base_url: "{claude.url}", api_key: {CLAUDE_KEY}}}
  up: {{type: openai, base_url: "{gpt.url}/v1", api_key: {UPSTREAM_KEY}, retry: {{attempts: 0}}}}
  google: {{type: gemini, base_url: "{gemini.url}/v1beta", api_key: {GEMINI_KEY}}}
models:
  claude: {{provider: anthropic, id: claude-haiku-4-5-20251001, price: {{input: 1, output: 5}}}}
  gpt: {{provider: up, id: gpt-4o-mini-2024-07-18, price: {{input: 0.15, output: 0.6}}}}
  flash: {{provider: google, id: gemini-2.5-flash, price: {{input: 0.3, output: 2.5}}}}
{extra}"""


@pytest.fixture(scope="module")
def gemini_fake() -> Iterator[FakeGemini]:
    server = FakeGemini(api_key=GEMINI_KEY)
    with server.running():
        yield server  # type: ignore[misc]


@pytest.fixture
def running(
    serve_gateway: Callable[..., Running],
    claude_fake: FakeAnthropic,
    upstream: FakeOpenAI,
    gemini_fake: FakeGemini,
) -> Running:
    return serve_gateway(text=config(claude_fake, upstream, gemini_fake))


def openai_client(running: Running, key: str = "anything") -> openai.OpenAI:
    return openai.OpenAI(base_url=running.openai_url, api_key=key, max_retries=0)


# --- the prompt's tokens at the start of a Messages stream ------------------------------------


def test_a_messages_stream_from_anthropic_starts_with_the_prompts_tokens(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    # Claude Code reads message_start's usage to track how full the context is.
    events = list(
        anthropic_client(running).messages.create(
            model="claude", max_tokens=50, messages=ASKED, stream=True
        )
    )
    start = events[0]
    assert start.type == "message_start"
    prompt = input_tokens(claude_fake.requests[-1].json)
    assert prompt > 0 and start.message.usage.input_tokens == prompt
    delta = next(e for e in events if e.type == "message_delta")
    assert delta.usage.input_tokens == prompt


def test_a_messages_stream_from_gemini_starts_with_the_prompts_tokens(running: Running) -> None:
    # Gemini 2.x reports the usage so far on every event, the first one too.
    events = list(
        anthropic_client(running).messages.create(
            model="flash", max_tokens=50, messages=ASKED, stream=True
        )
    )
    start = events[0]
    assert start.type == "message_start"
    delta = next(e for e in events if e.type == "message_delta")
    assert start.message.usage.input_tokens == delta.usage.input_tokens
    assert start.message.usage.input_tokens > 0


def test_a_messages_stream_from_openai_gives_the_prompts_tokens_at_its_end(
    running: Running, upstream: FakeOpenAI
) -> None:
    # OpenAI tells them only with the last chunk: message_start cannot know them, and
    # message_delta's usage carries them, which the SDK's accumulated message takes.
    whole = anthropic_client(running).messages.create(model="gpt", max_tokens=50, messages=ASKED)
    with anthropic_client(running).messages.stream(
        model="gpt", max_tokens=50, messages=ASKED
    ) as stream:
        events = list(stream)
        final = stream.get_final_message()
    assert events[0].type == "message_start" and events[0].message.usage.input_tokens == 0
    assert whole.usage.input_tokens > 0
    assert final.usage.input_tokens == whole.usage.input_tokens


# --- the end user, in each provider's own field -----------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"), [("user", "u-42"), ("safety_identifier", "0f3a9c-hashed")]
)
def test_an_openai_callers_end_user_reaches_each_provider_in_its_own_field(
    running: Running,
    claude_fake: FakeAnthropic,
    upstream: FakeOpenAI,
    field: str,
    value: str,
) -> None:
    client = openai_client(running)
    for model in ("gpt", "claude"):
        client.chat.completions.create(model=model, messages=ASKED, extra_body={field: value})
    assert upstream.requests[-1].json[field] == value
    assert claude_fake.requests[-1].json["metadata"] == {"user_id": value}


def test_a_gemini_model_takes_a_request_naming_its_end_user_without_it(
    running: Running, gemini_fake: FakeGemini
) -> None:
    # generateContent has no field for one: the request goes on, the id not sent anywhere.
    reply = openai_client(running).chat.completions.create(
        model="flash", messages=ASKED, extra_body={"user": "u-42", "safety_identifier": "h-42"}
    )
    assert reply.choices[0].message.content
    sent = orjson.dumps(gemini_fake.requests[-1].json).decode()
    assert "u-42" not in sent and "h-42" not in sent


def test_a_messages_callers_user_id_reaches_openai_as_user(
    running: Running, claude_fake: FakeAnthropic, upstream: FakeOpenAI
) -> None:
    user_id = "user_5e1f_account_2b7c_session_9d04"  # Claude Code's shape
    client = anthropic_client(running)
    for model in ("gpt", "claude"):
        client.messages.create(
            model=model, max_tokens=20, messages=ASKED, metadata={"user_id": user_id}
        )
    assert upstream.requests[-1].json["user"] == user_id
    assert "safety_identifier" not in upstream.requests[-1].json
    assert claude_fake.requests[-1].json["metadata"] == {"user_id": user_id}


def test_a_responses_callers_safety_identifier_reaches_openai(
    running: Running, upstream: FakeOpenAI
) -> None:
    openai_client(running).responses.create(
        model="gpt", input="hi", store=False, extra_body={"safety_identifier": "h-7"}
    )
    assert upstream.requests[-1].json["safety_identifier"] == "h-7"


# --- the field a 400 names -----------------------------------------------------------------


def test_an_openai_400_passes_on_the_param_it_names(running: Running, upstream: FakeOpenAI) -> None:
    error = {
        "message": "Invalid value for 'temperature': must be at most 2.",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "invalid_value",
    }
    upstream.push(Fault(status=400, body=orjson.dumps({"error": error})))
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(running).chat.completions.create(model="gpt", messages=ASKED)
    assert caught.value.param == "temperature"
    assert caught.value.code == "invalid_value"


def test_an_anthropic_400_passes_on_the_field_its_message_leads_with(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    message = "max_tokens: 100000 > 64000, which is the maximum allowed number of output tokens"
    claude_fake.push(Fault(status=400, error_type="invalid_request_error", message=message))
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(running).chat.completions.create(model="claude", messages=ASKED)
    assert caught.value.param == "max_tokens"


# --- the upstream's quota headers ------------------------------------------------------------

QUOTA = {
    "gpt": ("x-modelyard-upstream-x-ratelimit-remaining-requests", "499"),
    "claude": ("x-modelyard-upstream-anthropic-ratelimit-requests-remaining", "49"),
}


@pytest.mark.parametrize("model", ["gpt", "claude"])
def test_a_gateway_without_keys_shows_the_upstream_quota(running: Running, model: str) -> None:
    # One operator's own gateway: nobody to hide the account's limits from.
    name, value = QUOTA[model]
    raw = openai_client(running).chat.completions.with_raw_response.create(
        model=model, messages=ASKED
    )
    assert raw.headers[name] == value
    assert not any(h.startswith("x-ratelimit-") for h in raw.headers)  # not as the gateway's own
    with openai_client(running).chat.completions.with_streaming_response.create(
        model=model, messages=ASKED, stream=True
    ) as streamed:
        assert streamed.headers[name] == value


EMBEDDER = "embedders:\n  emb: {provider: up, id: text-embedding-3-small, price: {input: 0.02}}\n"


@pytest.fixture
def keyed(
    serve_gateway: Callable[..., Running],
    claude_fake: FakeAnthropic,
    upstream: FakeOpenAI,
    gemini_fake: FakeGemini,
) -> Running:
    """A gateway with an admin key (and an embedder)."""
    return serve_gateway(text=config(claude_fake, upstream, gemini_fake, ADMIN + EMBEDDER))


def test_only_the_admin_key_sees_the_upstream_quota_on_a_keyed_gateway(keyed: Running) -> None:
    running = keyed
    team = str(create_key(running, name="team-a")["key"])
    name, value = QUOTA["claude"]
    for key, shown in ((team, None), (ADMIN_KEY, value)):
        raw = anthropic.Anthropic(
            base_url=running.url, api_key=key, max_retries=0
        ).messages.with_raw_response.create(model="claude", max_tokens=20, messages=ASKED)
        assert raw.headers.get(name) == shown


@pytest.mark.parametrize("admin", [False, True])
def test_an_upstream_429_tells_every_caller_when_to_retry_and_only_the_admin_the_quota(
    serve_gateway: Callable[..., Running],
    claude_fake: FakeAnthropic,
    upstream: FakeOpenAI,
    gemini_fake: FakeGemini,
    admin: bool,
) -> None:
    running = serve_gateway(text=config(claude_fake, upstream, gemini_fake, ADMIN))
    key = ADMIN_KEY if admin else str(create_key(running, name="team-a")["key"])
    upstream.push(Fault(status=429, headers={"retry-after": "7"}))
    with pytest.raises(openai.RateLimitError) as caught:
        openai_client(running, key).chat.completions.create(model="gpt", messages=ASKED)
    headers = caught.value.response.headers
    assert headers["retry-after"] == "7"
    quota = headers.get("x-modelyard-upstream-x-ratelimit-remaining-requests")
    assert quota == ("0" if admin else None)


def test_embeddings_and_token_counts_show_the_upstream_quota_to_whom_chat_shows_it(
    keyed: Running,
) -> None:
    running = keyed
    team = str(create_key(running, name="team-a")["key"])
    (openai_name, openai_value), (claude_name, claude_value) = QUOTA["gpt"], QUOTA["claude"]
    for key, shown in ((team, False), (ADMIN_KEY, True)):
        embedded = openai_client(running, key).embeddings.with_raw_response.create(
            model="emb", input="hello"
        )
        counted = anthropic.Anthropic(
            base_url=running.url, api_key=key, max_retries=0
        ).messages.with_raw_response.count_tokens(model="claude", messages=ASKED)
        assert counted.headers["x-modelyard-token-count"] == "exact"  # the provider counted
        assert embedded.headers.get(openai_name) == (openai_value if shown else None)
        assert counted.headers.get(claude_name) == (claude_value if shown else None)


def test_a_refused_token_count_shows_the_admin_the_upstream_quota(
    keyed: Running, claude_fake: FakeAnthropic
) -> None:
    running = keyed
    claude_fake.push(rate_limited())  # the count endpoint's own limit
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic.Anthropic(
            base_url=running.url, api_key=ADMIN_KEY, max_retries=0
        ).messages.count_tokens(model="claude", messages=ASKED)
    headers = caught.value.response.headers
    assert headers["x-modelyard-upstream-anthropic-ratelimit-requests-remaining"] == "0"


# --- a Messages caller's tool definitions -------------------------------------------------------

STRICT_TOOL: Any = {
    "name": "get_weather",
    "description": "The weather in a city",
    "input_schema": {
        "type": "object",
        "properties": {"city": {"type": "string"}},
        "required": ["city"],
        "additionalProperties": False,
    },
    "strict": True,
}


def test_a_messages_callers_strict_tool_stays_strict_on_anthropic_and_openai(
    running: Running, claude_fake: FakeAnthropic, upstream: FakeOpenAI
) -> None:
    client = anthropic_client(running)
    for model in ("claude", "gpt"):
        client.messages.create(model=model, max_tokens=20, messages=ASKED, tools=[STRICT_TOOL])
    assert claude_fake.requests[-1].json["tools"][0]["strict"] is True
    assert upstream.requests[-1].json["tools"][0]["function"]["strict"] is True


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"input_examples": [{"city": "Oslo"}]}, "tools[0].input_examples"),
        ({"defer_loading": True}, "tools[0].defer_loading"),
        ({"allowed_callers": ["code_execution_20250825"]}, "tools[0].allowed_callers"),
    ],
)
def test_a_messages_tool_field_the_gateway_cannot_carry_is_a_400_naming_it(
    running: Running, claude_fake: FakeAnthropic, extra: dict[str, Any], named: str
) -> None:
    sent = len(claude_fake.requests)
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client(running).messages.create(
            model="claude", max_tokens=20, messages=ASKED, tools=[{**STRICT_TOOL, **extra}]
        )
    said = caught.value.body["error"]["message"]  # type: ignore[index]
    assert said.startswith(named)
    assert len(claude_fake.requests) == sent  # refused before any upstream saw it


def test_a_messages_tools_neutral_fields_are_taken(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    neutral = {"defer_loading": False, "allowed_callers": ["direct"], "eager_input_streaming": True}
    message = anthropic_client(running).messages.create(
        model="claude", max_tokens=20, messages=ASKED, tools=[{**STRICT_TOOL, **neutral}]
    )
    assert message.stop_reason in ("end_turn", "tool_use")
    assert set(claude_fake.requests[-1].json["tools"][0]) == {
        "name",
        "description",
        "input_schema",
        "strict",
    }


# --- a tool choice no tool can satisfy ---------------------------------------------------------

LOOKUP: Any = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


@pytest.mark.parametrize("model", ["gpt", "claude", "flash"])
@pytest.mark.parametrize(
    ("choice", "tools"),
    [
        ("required", None),
        ({"type": "function", "function": {"name": "lookup"}}, None),
        ({"type": "function", "function": {"name": "nope"}}, [LOOKUP]),
    ],
)
def test_a_tool_choice_no_tool_can_satisfy_is_a_400_naming_it_on_every_provider(
    running: Running,
    upstream: FakeOpenAI,
    claude_fake: FakeAnthropic,
    gemini_fake: FakeGemini,
    model: str,
    choice: Any,
    tools: Any,
) -> None:
    # OpenAI refuses these; sent only with tools, the demand would vanish on the way.
    fakes = (upstream, claude_fake, gemini_fake)
    sent = [len(fake.requests) for fake in fakes]
    extra = {"tools": tools} if tools else {}
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(running).chat.completions.create(
            model=model, messages=ASKED, tool_choice=choice, **extra
        )
    assert caught.value.param == "tool_choice"
    assert [len(fake.requests) for fake in fakes] == sent


@pytest.mark.parametrize("model", ["gpt", "claude", "flash"])
def test_a_messages_callers_any_tool_without_tools_is_refused_on_every_provider(
    running: Running, model: str
) -> None:
    with pytest.raises(anthropic.BadRequestError) as caught:
        anthropic_client(running).messages.create(
            model=model, max_tokens=20, messages=ASKED, tool_choice={"type": "any"}
        )
    assert "tool_choice" in caught.value.body["error"]["message"]  # type: ignore[index]


@pytest.mark.parametrize("model", ["gpt", "claude", "flash"])
def test_auto_and_none_without_tools_are_taken_on_every_provider(
    running: Running, model: str
) -> None:
    for choice in ("auto", "none"):
        reply = openai_client(running).chat.completions.create(
            model=model, messages=ASKED, tool_choice=choice
        )
        assert reply.choices[0].message.content


@pytest.mark.parametrize("model", ["gpt", "claude", "flash"])
def test_top_logprobs_without_logprobs_is_a_400_naming_it_on_every_provider(
    running: Running, model: str
) -> None:
    # OpenAI's own rule; elsewhere the alternatives asked for would silently not come.
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(running).chat.completions.create(model=model, messages=ASKED, top_logprobs=2)
    assert caught.value.param == "top_logprobs"


SVG: Any = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "what is it"},
            {"type": "image_url", "image_url": {"url": "data:image/svg+xml;base64,PHN2Zz4="}},
        ],
    }
]


@pytest.mark.parametrize(
    ("asked", "named"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"temperature": 1.5}, "temperature"),
        ({"messages": SVG}, "messages[0].content[1]"),
    ],
)
def test_what_an_anthropic_model_cannot_do_is_a_400_whose_param_names_the_field(
    running: Running, claude_fake: FakeAnthropic, asked: dict[str, Any], named: str
) -> None:
    sent = len(claude_fake.requests)
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(running).chat.completions.create(
            **{"model": "claude", "messages": ASKED, **asked}
        )
    assert caught.value.param == named
    assert len(claude_fake.requests) == sent


# --- an answer a content filter cut ------------------------------------------------------------

CUT = "Here is how you"
GEMINI_FILTERS = ["SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY"]


def cut_by_a_filter(
    model: str, claude: FakeAnthropic, gpt: FakeOpenAI, gemini: FakeGemini, reason: str = "SAFETY"
) -> None:
    """Script `model`'s upstream to stop its next answer, `CUT` so far, by its content filter."""
    if model == "claude":
        claude.script(Turn(text=CUT, stop_reason="refusal"))
    elif model == "gpt":
        gpt.script(Reply(text=CUT, finish_reason="content_filter"))
    else:
        gemini.script(GeminiAnswer(text=CUT, finish_reason=reason))


@pytest.fixture
def fakes(
    claude_fake: FakeAnthropic, upstream: FakeOpenAI, gemini_fake: FakeGemini
) -> tuple[FakeAnthropic, FakeOpenAI, FakeGemini]:
    return claude_fake, upstream, gemini_fake


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("model", ["gpt", "claude", "flash"])
def test_an_answer_a_filter_cut_finishes_content_filter_on_every_provider(
    running: Running, fakes: Any, model: str, stream: bool
) -> None:
    # OpenAI answers with what it wrote and finish_reason content_filter; so must the others.
    cut_by_a_filter(model, *fakes)
    client = openai_client(running)
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=ASKED, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
    else:
        reply = client.chat.completions.create(model=model, messages=ASKED)
        text, finish = reply.choices[0].message.content or "", reply.choices[0].finish_reason
    assert (text.strip(), finish) == (CUT, "content_filter")


@pytest.mark.parametrize("reason", GEMINI_FILTERS)
def test_every_gemini_content_policy_stop_is_an_answer_finishing_content_filter(
    running: Running, fakes: Any, reason: str
) -> None:
    cut_by_a_filter("flash", *fakes, reason=reason)
    reply = openai_client(running).chat.completions.create(model="flash", messages=ASKED)
    assert reply.choices[0].finish_reason == "content_filter"
    assert reply.choices[0].message.content == CUT


@pytest.mark.parametrize("model", ["claude", "flash"])
def test_a_messages_answer_a_filter_cut_stops_as_a_refusal(
    running: Running, fakes: Any, model: str
) -> None:
    client = anthropic_client(running)
    cut_by_a_filter(model, *fakes)
    whole = client.messages.create(model=model, max_tokens=50, messages=ASKED)
    cut_by_a_filter(model, *fakes)
    with client.messages.stream(model=model, max_tokens=50, messages=ASKED) as stream:
        streamed = stream.get_final_message()
    for message in (whole, streamed):
        assert message.stop_reason == "refusal"
        assert "".join(b.text for b in message.content if b.type == "text").strip() == CUT


@pytest.mark.parametrize("model", ["gpt", "flash"])
def test_a_responses_answer_a_filter_cut_is_incomplete_for_content_filter(
    running: Running, fakes: Any, model: str
) -> None:
    client = openai_client(running)
    cut_by_a_filter(model, *fakes)
    whole = client.responses.create(model=model, input="one two three")
    cut_by_a_filter(model, *fakes)
    events = list(client.responses.create(model=model, input="one two three", stream=True))
    assert events[-1].type == "response.incomplete"  # the SDK's stream() wants `completed`
    streamed = events[-1].response
    for response in (whole, streamed):
        assert response.status == "incomplete"
        assert response.incomplete_details is not None
        assert response.incomplete_details.reason == "content_filter"
        assert response.output_text.strip() == CUT


def test_a_prompt_gemini_blocks_is_a_400_content_filter_naming_the_prompt(
    running: Running, gemini_fake: FakeGemini
) -> None:
    # No answer was begun: OpenAI (Azure's filter) refuses such a prompt with a 400 whose code
    # is content_filter and whose param is prompt.
    gemini_fake.script(GeminiAnswer(block_reason="PROHIBITED_CONTENT"))
    with pytest.raises(openai.BadRequestError) as caught:
        openai_client(running).chat.completions.create(model="flash", messages=ASKED)
    assert (caught.value.code, caught.value.param) == ("content_filter", "prompt")
    assert "PROHIBITED_CONTENT" in caught.value.message


# --- a field a provider has no place for ---------------------------------------------------------

PICTURE = "data:image/png;base64,iVBORw0KGgo="
LOOKUP_STRICT: Any = {
    "type": "function",
    "function": {"name": "lookup", "parameters": {"type": "object"}, "strict": True},
}
DROPS: Any = {
    "seed": {"seed": 7},
    "detail": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is it"},
                    {"type": "image_url", "image_url": {"url": PICTURE, "detail": "low"}},
                ],
            }
        ]
    },
    "name": {"messages": [{"role": "user", "content": "hello", "name": "ann"}]},
    "strict": {"tools": [LOOKUP_STRICT]},
}


def admin_client(running: Running) -> openai.OpenAI:
    return openai_client(running, ADMIN_KEY)


@pytest.mark.parametrize(
    ("model", "field"),
    [
        ("claude", "seed"),
        ("claude", "detail"),
        ("flash", "detail"),
        ("claude", "name"),
        ("flash", "name"),
        ("flash", "strict"),
    ],
)
def test_a_hint_a_provider_has_no_place_for_is_dropped_and_said(
    keyed: Running, fakes: Any, model: str, field: str
) -> None:
    # A best-effort or cost hint (seed, an image's detail, a speaker's name, a tool's strict)
    # cannot change whether the answer is right: it is taken, and the decision says it was not
    # sent, as for thinking and context_management.
    fake = fakes[0] if model == "claude" else fakes[2]
    asked = {"model": model, "messages": ASKED, **DROPS[field]}
    raw = admin_client(keyed).chat.completions.with_raw_response.create(**asked)
    assert raw.parse().choices[0].message
    assert field not in orjson.dumps(fake.requests[-1].json).decode()
    details = record_of(keyed, raw.headers["x-request-id"])["decision"]["details"]  # type: ignore[index]
    assert details[field].startswith("dropped: ")


@pytest.mark.parametrize("field", ["seed", "detail", "name", "strict"])
def test_openai_gets_the_hints_and_says_nothing_dropped(
    keyed: Running, upstream: FakeOpenAI, field: str
) -> None:
    asked = {"model": "gpt", "messages": ASKED, **DROPS[field]}
    raw = admin_client(keyed).chat.completions.with_raw_response.create(**asked)
    assert field in orjson.dumps(upstream.requests[-1].json).decode()
    details = record_of(keyed, raw.headers["x-request-id"])["decision"]["details"]  # type: ignore[index]
    assert field not in details


def test_parallel_tool_calls_false_is_a_400_naming_it_for_gemini(
    running: Running, gemini_fake: FakeGemini
) -> None:
    # Gemini has no switch for it and may call several functions at once: a caller whose loop
    # runs one call a turn would get two. Without a call possible (tool_choice none) it is moot.
    sent = len(gemini_fake.requests)
    client = openai_client(running)
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(
            model="flash", messages=ASKED, tools=[LOOKUP], parallel_tool_calls=False
        )
    assert caught.value.param == "parallel_tool_calls" and len(gemini_fake.requests) == sent
    client.chat.completions.create(
        model="flash", messages=ASKED, tools=[LOOKUP], parallel_tool_calls=False, tool_choice="none"
    )
    client.chat.completions.create(
        model="flash", messages=ASKED, tools=[LOOKUP], parallel_tool_calls=True
    )


def test_parallel_tool_calls_false_reaches_openai_and_anthropic(
    running: Running, claude_fake: FakeAnthropic, upstream: FakeOpenAI
) -> None:
    client = openai_client(running)
    for model in ("gpt", "claude"):
        client.chat.completions.create(
            model=model, messages=ASKED, tools=[LOOKUP], parallel_tool_calls=False
        )
    assert upstream.requests[-1].json["parallel_tool_calls"] is False
    assert claude_fake.requests[-1].json["tool_choice"]["disable_parallel_tool_use"] is True


def test_a_failed_tool_result_reaches_openai_said_to_be_an_error(
    running: Running, upstream: FakeOpenAI
) -> None:
    # Chat Completions has no is_error: the tool message's text says it, or the model reads the
    # error as the tool's output.
    called: Any = [
        {"role": "user", "content": "take a screenshot"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t1", "name": "screenshot", "input": {}}],
        },
    ]
    tool = {"name": "screenshot", "input_schema": {"type": "object"}}
    for failed, content in ((True, "Error: no display"), (False, "no display")):
        result = {"type": "tool_result", "tool_use_id": "t1", "content": "no display"}
        anthropic_client(running).messages.create(
            model="gpt",
            max_tokens=50,
            tools=[tool],  # type: ignore[list-item]
            messages=[*called, {"role": "user", "content": [{**result, "is_error": failed}]}],
        )
        (sent,) = [m for m in upstream.requests[-1].json["messages"] if m["role"] == "tool"]
        assert sent["content"] == content
