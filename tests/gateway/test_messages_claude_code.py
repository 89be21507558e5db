"""What Claude Code sends through the gateway's /v1/messages, with the official Anthropic SDK:
mid-conversation system messages, `output_config` (effort, format) and `context_management`
reach an Anthropic upstream as Claude Code wrote them (with the beta header the fake Anthropic
checks, as the API does), and an OpenAI model gets what it can take, the rest dropped and said.
The last test replays the shape of a real Claude Code first request."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
import pytest
from anthropic.types.beta import BetaRawMessageStreamEvent
from pydantic import TypeAdapter
from tests.fakes.anthropic_server import FakeAnthropic, validate_request
from tests.fakes.openai_server import FakeOpenAI
from tests.gateway.conftest import CLAUDE_KEY, UPSTREAM_KEY, Running, anthropic_client
from tests.gateway.test_keys import record_of

from modelyard.gateway.anthropic_api import parse_messages
from modelyard.gateway.errors import ApiError
from modelyard.providers.remote import CONTEXT_MANAGEMENT_DROPPED, THINKING_DROPPED
from modelyard.types import ContextManagement, Message, ResponseFormat, TextPart

BETA_EVENTS: TypeAdapter[Any] = TypeAdapter(BetaRawMessageStreamEvent)
CONTEXT: Any = {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]}
CONTEXT_BETA = "context-management-2025-06-27"
WITH_SYSTEM: Any = [
    {"role": "user", "content": "say hello"},
    {"role": "system", "content": "Answer in one word."},
]


@pytest.fixture
def running(
    serve_gateway: Callable[..., Running], claude_fake: FakeAnthropic, upstream: FakeOpenAI
) -> Running:
    return serve_gateway(
        text=f"""
providers:
  anthropic: {{type: anthropic, base_url: "{claude_fake.url}", api_key: {CLAUDE_KEY}}}
  oa: {{type: openai, base_url: "{upstream.url}/v1", api_key: {UPSTREAM_KEY}}}
x-price: &price {{input: 3.0, output: 15.0}}
models:
  claude:
    provider: anthropic
    id: claude-opus-4-8
    price: *price
    capabilities: {{system_messages: true}}
  sonnet: {{provider: anthropic, id: claude-sonnet-4-5-20250929, price: *price}}
  mini: {{provider: oa, id: gpt-4o-mini, price: *price}}
  thinker: {{provider: oa, id: o4-mini, price: *price, capabilities: {{reasoning: true}}}}
"""
    )


# --- mid-conversation system messages -----------------------------------------------------------


def test_a_mid_conversation_system_message_reaches_anthropic_where_it_stands(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    message = anthropic_client(running).messages.create(
        model="claude", max_tokens=100, system="You are terse.", messages=WITH_SYSTEM
    )
    assert message.content[0].type == "text"
    sent = claude_fake.requests[-1].json
    assert sent["system"] == "You are terse."
    assert sent["messages"] == WITH_SYSTEM


def test_a_model_without_system_messages_gets_them_in_its_system_prompt(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    anthropic_client(running).messages.create(
        model="sonnet", max_tokens=100, system="You are terse.", messages=WITH_SYSTEM
    )
    sent = claude_fake.requests[-1].json
    assert sent["system"] == "You are terse.\n\nAnswer in one word."
    assert sent["messages"] == WITH_SYSTEM[:1]
    anthropic_client(running).messages.count_tokens(model="sonnet", messages=WITH_SYSTEM)
    assert claude_fake.requests[-1].json["system"] == "Answer in one word."


def test_a_mid_conversation_system_message_stays_in_place_for_openai(
    running: Running, upstream: FakeOpenAI
) -> None:
    anthropic_client(running).messages.create(
        model="mini", max_tokens=100, system="You are terse.", messages=WITH_SYSTEM
    )
    assert upstream.requests[-1].json["messages"] == [
        {"role": "system", "content": "You are terse."},
        *WITH_SYSTEM,
    ]


def test_a_system_message_keeps_its_text_blocks_and_cache_markers() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": "hi"},
            {
                "role": "system",
                "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
            },
        ],
    }
    request = parse_messages(body, max_messages=10).request
    assert request.messages[1] == Message(role="system", content=(TextPart(text="x", cache="5m"),))


def test_an_image_in_a_system_message_is_a_400_naming_it() -> None:
    turn = {"role": "system", "content": [{"type": "image", "source": {}}]}
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "a"}, turn]}
    with pytest.raises(ApiError, match=r"messages\[1\]\.content\[0\]\.type"):
        parse_messages(body, max_messages=10)


# --- output_config ------------------------------------------------------------------------------


def test_effort_reaches_anthropic_as_output_config(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    anthropic_client(running).messages.create(
        model="claude",
        max_tokens=100,
        output_config={"effort": "xhigh"},
        messages=WITH_SYSTEM[:1],
    )
    assert claude_fake.requests[-1].json["output_config"] == {"effort": "xhigh"}


def test_effort_is_reasoning_effort_for_an_openai_reasoning_model(
    running: Running, upstream: FakeOpenAI
) -> None:
    anthropic_client(running).messages.create(
        model="thinker", max_tokens=100, output_config={"effort": "low"}, messages=WITH_SYSTEM[:1]
    )
    assert upstream.requests[-1].json["reasoning_effort"] == "low"


def test_effort_is_dropped_and_said_for_a_model_that_does_not_reason(
    running: Running, upstream: FakeOpenAI
) -> None:
    raw = anthropic_client(running).messages.with_raw_response.create(
        model="mini", max_tokens=100, output_config={"effort": "high"}, messages=WITH_SYSTEM[:1]
    )
    assert raw.parse().content[0].type == "text"
    assert "reasoning_effort" not in upstream.requests[-1].json
    record = record_of(running, raw.headers["x-request-id"])
    assert record["decision"]["details"]["effort"] == THINKING_DROPPED  # type: ignore[index]


def test_output_format_is_the_requests_structured_output(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    message = anthropic_client(running).messages.create(
        model="claude",
        max_tokens=100,
        output_config={"format": {"type": "json_schema", "schema": schema}},
        messages=WITH_SYSTEM[:1],
    )
    assert message.content[0].type == "text"
    assert orjson.loads(message.content[0].text) == {"word": "text"}
    request = parse_messages(
        {
            "model": "m",
            "max_tokens": 10,
            "messages": WITH_SYSTEM[:1],
            "output_config": {"format": {"type": "json_schema", "schema": schema}},
        },
        max_messages=10,
    ).request
    assert request.response_format == ResponseFormat(type="json_schema", schema=schema)


@pytest.mark.parametrize("streamed", [False, True])
def test_output_format_with_thinking_is_anthropics_own_structured_output(
    running: Running, claude_fake: FakeAnthropic, streamed: bool
) -> None:
    # A forced tool, which JSON mode is without thinking, would be the API's 400 here.
    schema = {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"]}
    asked: Any = {
        "model": "sonnet",
        "max_tokens": 4000,
        "thinking": {"type": "enabled", "budget_tokens": 2048},
        "output_config": {"effort": "high", "format": {"type": "json_schema", "schema": schema}},
        "messages": WITH_SYSTEM[:1],
    }
    if streamed:
        with anthropic_client(running).messages.stream(**asked) as events:
            message = events.get_final_message()
    else:
        message = anthropic_client(running).messages.create(**asked)
    assert [block.type for block in message.content] == ["thinking", "text"]
    assert message.content[1].type == "text"
    assert orjson.loads(message.content[1].text) == {"word": "text"}
    sent = claude_fake.requests[-1].json
    assert sent["output_config"] == asked["output_config"] and "tools" not in sent


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"effort": "huge"}, "output_config.effort"),
        ({"speed": "fast"}, "output_config.speed"),
        ({"format": {"type": "regex", "schema": {}}}, "output_config.format.type"),
        ({"format": {"type": "json_schema"}}, "output_config.format.schema"),
        ("high", "output_config"),
    ],
)
def test_a_malformed_output_config_is_a_400_naming_the_field(config: Any, named: str) -> None:
    body = {"model": "m", "max_tokens": 10, "messages": WITH_SYSTEM[:1], "output_config": config}
    with pytest.raises(ApiError) as caught:
        parse_messages(body, max_messages=10)
    assert caught.value.param == named


# --- context_management -------------------------------------------------------------------------


def test_context_management_reaches_anthropic_with_its_beta(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    anthropic_client(running).beta.messages.create(
        model="claude",
        max_tokens=100,
        betas=[CONTEXT_BETA],
        context_management=CONTEXT,
        messages=WITH_SYSTEM[:1],
    )
    sent = claude_fake.requests[-1]
    assert sent.json["context_management"] == CONTEXT
    assert CONTEXT_BETA in sent.headers["anthropic-beta"].split(",")


def test_context_management_is_dropped_and_said_for_openai(
    running: Running, upstream: FakeOpenAI
) -> None:
    raw = anthropic_client(running).beta.messages.with_raw_response.create(
        model="mini",
        max_tokens=100,
        betas=[CONTEXT_BETA],
        context_management=CONTEXT,
        messages=WITH_SYSTEM[:1],
    )
    assert raw.parse().content[0].type == "text"
    assert "context_management" not in upstream.requests[-1].json
    record = record_of(running, raw.headers["x-request-id"])
    details = record["decision"]["details"]  # type: ignore[index]
    assert details["context_management"] == CONTEXT_MANAGEMENT_DROPPED


def test_context_management_is_kept_as_sorted_json() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": WITH_SYSTEM[:1],
        "context_management": {"edits": [{"type": "clear_thinking_20251015", "keep": "all"}]},
    }
    request = parse_messages(body, max_messages=10).request
    assert request.context_management == ContextManagement(
        json='{"edits":[{"keep":"all","type":"clear_thinking_20251015"}]}'
    )


def test_an_edit_without_a_type_is_a_400_naming_it() -> None:
    body = {
        "model": "m",
        "max_tokens": 10,
        "messages": WITH_SYSTEM[:1],
        "context_management": {"edits": [{"keep": "all"}]},
    }
    with pytest.raises(ApiError) as caught:
        parse_messages(body, max_messages=10)
    assert caught.value.param == "context_management.edits[0].type"


def test_the_fake_takes_context_management_only_with_its_beta() -> None:
    body = {"model": "m", "max_tokens": 10, "messages": WITH_SYSTEM[:1], "context_management": {}}
    assert validate_request({**body, "context_management": CONTEXT}) == (
        "context_management: Extra inputs are not permitted"
    )
    assert (
        validate_request({**body, "context_management": CONTEXT}, betas=frozenset({CONTEXT_BETA}))
        is None
    )
    wrong = {"edits": [{"type": "clear_thinking_20251015", "keep": "all", "x": 1}]}
    assert "context_management.edits.0" in str(
        validate_request({**body, "context_management": wrong}, betas=frozenset({CONTEXT_BETA}))
    )


def test_a_count_takes_system_messages_effort_and_context_management_to_anthropic(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    raw = anthropic_client(running).beta.messages.with_raw_response.count_tokens(
        model="claude",
        betas=[CONTEXT_BETA],
        context_management=CONTEXT,
        output_config={"effort": "high"},
        messages=WITH_SYSTEM,
    )
    assert raw.headers["x-modelyard-token-count"] == "exact"
    sent = claude_fake.requests[-1]
    assert sent.path == "/v1/messages/count_tokens"
    assert sent.json["messages"] == WITH_SYSTEM
    assert sent.json["output_config"] == {"effort": "high"}
    assert sent.json["context_management"] == CONTEXT


# --- a Claude Code request, by shape ------------------------------------------------------------

CLAUDE_CODE_BETAS = [
    "claude-code-20250219",
    "interleaved-thinking-2025-05-14",
    "thinking-token-count-2026-05-13",
    "context-management-2025-06-27",
    "prompt-caching-scope-2026-01-05",
    "mid-conversation-system-2026-04-07",
    "effort-2025-11-24",
]


def _tool(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": f"The {name} tool.",
        "input_schema": {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "type": "object",
            "properties": {"file_path": {"type": "string", "description": "A path."}},
            "required": ["file_path"],
            "additionalProperties": False,
        },
    }


def claude_code_request(model: str, question: str) -> dict[str, Any]:
    """The shape of Claude Code 2.1.197's first request (its texts replaced by placeholders)."""
    ephemeral = {"type": "ephemeral"}
    return {
        "model": model,
        "max_tokens": 64000,
        "metadata": {"user_id": '{"device_id":"d","account_uuid":"","session_id":"s"}'},
        "thinking": {"type": "adaptive"},
        "context_management": CONTEXT,
        "output_config": {"effort": "high"},
        "system": [
            {"type": "text", "text": "billing header placeholder"},
            {"type": "text", "text": "agent identity placeholder", "cache_control": ephemeral},
            {"type": "text", "text": "instructions placeholder", "cache_control": ephemeral},
        ],
        "tools": [_tool(name) for name in ("Bash", "Edit", "Read", "Write")],
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "<system-reminder>context</system-reminder>"},
                    {"type": "text", "text": question, "cache_control": ephemeral},
                ],
            },
            {"role": "system", "content": "Available agent types placeholder"},
        ],
    }


def test_claude_codes_first_request_streams_through_to_anthropic(
    running: Running, claude_fake: FakeAnthropic
) -> None:
    body = claude_code_request("claude", "say hello")
    events = list(
        anthropic_client(running).beta.messages.create(betas=CLAUDE_CODE_BETAS, stream=True, **body)
    )
    for event in events:  # every event is one the SDK's own beta types accept
        BETA_EVENTS.validate_python(event.model_dump(mode="json", exclude_unset=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    blocks = [e.content_block.type for e in events if e.type == "content_block_start"]
    assert blocks == ["thinking", "text"]
    sent = claude_fake.requests[-1]
    assert sent.json["messages"] == body["messages"]
    assert sent.json["context_management"] == CONTEXT
    assert sent.json["output_config"] == {"effort": "high"}
    assert sent.json["thinking"] == {"type": "adaptive"}
    assert sorted(sent.headers["anthropic-beta"].split(",")) == [
        CONTEXT_BETA,
        "interleaved-thinking-2025-05-14",
    ]
