"""Prompt caching through the gateway: an Anthropic SDK client's `cache_control` breakpoints reach
an Anthropic upstream on the same blocks, and the cache reads and writes they cause come back
in the usage and are billed at the cache prices."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import pytest
from tests.fakes.anthropic_server import FakeAnthropic
from tests.gateway.conftest import Running

from modelyard.gateway.anthropic_api import parse_messages
from modelyard.types import TextPart

HOUR = {"type": "ephemeral", "ttl": "1h"}
FIVE = {"type": "ephemeral"}
TOOL = {
    "name": "lookup",
    "description": "find an order",
    "input_schema": {"type": "object", "properties": {"order": {"type": "integer"}}},
    "cache_control": HOUR,
}
SYSTEM = [
    {"type": "text", "text": "You are the order desk."},
    {"type": "text", "text": "The handbook: " + "ship fast, " * 300, "cache_control": HOUR},
]
MESSAGES: list[dict[str, Any]] = [
    {"role": "user", "content": [{"type": "text", "text": "where is order 7?"}]},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"order": 7}}],
    },
    {
        "role": "user",
        "content": [
            {
                "type": "tool_result",
                "tool_use_id": "t1",
                "content": "shipped",
                "cache_control": FIVE,
            },
            {"type": "text", "text": "and when does it arrive?", "cache_control": FIVE},
        ],
    },
]
PRICE = {"input": 1.0, "output": 5.0, "cached_input": 0.1, "cache_write": 1.25}


def client(running: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key="anything", max_retries=0)


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", "k-cache")
    with FakeAnthropic(api_key="k-cache").running() as fake:
        assert isinstance(fake, FakeAnthropic)
        yield fake


def claude(
    serve_gateway: Callable[..., Running],
    fake: FakeAnthropic,
    price: str = "{input: 1.0, output: 5.0, cached_input: 0.1, cache_write: 1.25}",
) -> Running:
    return serve_gateway(
        text=f"""
providers:
  anthropic: {{type: anthropic, base_url: "{fake.url}", api_key: "${{FAKE_ANTHROPIC_KEY}}"}}
models:
  claude:
    provider: anthropic
    id: claude-haiku-4-5-20251001
    price: {price}
"""
    )


def test_breakpoints_reach_the_upstream_on_the_same_blocks(
    serve_gateway: Callable[..., Running], upstream: FakeAnthropic
) -> None:
    running = claude(serve_gateway, upstream)
    client(running).messages.create(
        model="claude", max_tokens=50, system=SYSTEM, tools=[TOOL], messages=MESSAGES
    )
    sent = upstream.requests[-1].json
    assert sent["tools"][0]["cache_control"] == HOUR
    # One system prompt in modelyard: the marker sits at its end, where the client put it.
    assert sent["system"] == [
        {
            "type": "text",
            "text": "You are the order desk.\n" + SYSTEM[1]["text"],
            "cache_control": HOUR,
        }
    ]
    result, question = sent["messages"][2]["content"]
    assert result["type"] == "tool_result"
    assert result["content"] == [{"type": "text", "text": "shipped", "cache_control": FIVE}]
    assert question == {"type": "text", "text": "and when does it arrive?", "cache_control": FIVE}


def test_cache_writes_then_reads_come_back_and_are_billed_at_cache_prices(
    serve_gateway: Callable[..., Running], upstream: FakeAnthropic
) -> None:
    running = claude(serve_gateway, upstream)
    costs, usages = [], []
    for _ in range(2):
        raw = client(running).messages.with_raw_response.create(
            model="claude", max_tokens=50, system=SYSTEM, tools=[TOOL], messages=MESSAGES
        )
        costs.append(float(raw.headers["x-modelyard-cost"]))
        usages.append(raw.parse().usage)
    first, second = usages
    assert first.cache_creation_input_tokens and not first.cache_read_input_tokens
    assert second.cache_read_input_tokens == first.cache_creation_input_tokens
    assert not second.cache_creation_input_tokens
    for usage, cost in zip(usages, costs, strict=True):
        expected = (
            usage.input_tokens * PRICE["input"]
            + (usage.cache_read_input_tokens or 0) * PRICE["cached_input"]
            + (usage.cache_creation_input_tokens or 0) * PRICE["cache_write"]
            + usage.output_tokens * PRICE["output"]
        ) / 1e6
        assert cost == pytest.approx(expected, rel=1e-3)
    assert costs[1] < costs[0]


def test_a_streamed_answer_reports_the_cache_read_too(
    serve_gateway: Callable[..., Running], upstream: FakeAnthropic
) -> None:
    running = claude(serve_gateway, upstream)
    asked: dict[str, Any] = {"system": SYSTEM, "tools": [TOOL], "messages": MESSAGES}
    client(running).messages.create(model="claude", max_tokens=50, **asked)
    with client(running).messages.stream(model="claude", max_tokens=50, **asked) as stream:
        final = stream.get_final_message()
    assert final.usage.cache_read_input_tokens
    assert not final.usage.cache_creation_input_tokens


def test_prompt_cache_writes_pass_through_with_their_1_hour_share_and_price(
    serve_gateway: Callable[..., Running], upstream: FakeAnthropic
) -> None:
    upstream.cache_creation_tokens, upstream.cache_creation_1h_tokens = 40, 30
    price = "{input: 1.0, output: 5.0, cache_write: 1.25, cache_write_1h: 2.0}"
    running = claude(serve_gateway, upstream, price)
    raw = client(running).messages.with_raw_response.create(
        model="claude", max_tokens=50, messages=[{"role": "user", "content": "hi " * 200}]
    )
    usage = raw.parse().usage
    assert usage.cache_creation_input_tokens == 40
    assert usage.cache_creation is not None
    assert usage.cache_creation.ephemeral_1h_input_tokens == 30
    assert usage.cache_creation.ephemeral_5m_input_tokens == 10
    expected = (usage.input_tokens * 1.0 + 10 * 1.25 + 30 * 2.0 + usage.output_tokens * 5.0) / 1e6
    assert float(raw.headers["x-modelyard-cost"]) == pytest.approx(expected, rel=1e-3)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            lambda b: b["system"][0].update(cache_control={"type": "persistent"}),
            "system[0].cache_control.type",
        ),
        (
            lambda b: b["messages"][0]["content"][0].update(
                cache_control={"type": "ephemeral", "ttl": "10m"}
            ),
            "messages[0].content[0].cache_control.ttl",
        ),
        (lambda b: b["tools"][0].update(cache_control="ephemeral"), "tools[0].cache_control"),
        (
            lambda b: b["messages"][0]["content"].append(
                {"type": "text", "text": "one too many", "cache_control": FIVE}
            ),
            "messages[2].content[1].cache_control: at most 4",
        ),
    ],
)
def test_a_bad_marker_is_a_400_naming_the_field(
    serve_gateway: Callable[..., Running], change: Callable[[dict[str, Any]], None], field: str
) -> None:
    body: dict[str, Any] = {
        "system": [dict(b) for b in SYSTEM],
        "tools": [dict(TOOL)],
        "messages": [{**m, "content": [dict(b) for b in m["content"]]} for m in MESSAGES],
    }
    change(body)
    running = serve_gateway()
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(running).messages.create(model="support", max_tokens=50, **body)
    assert bad.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    assert field in bad.value.message


def test_parsed_breakpoints_land_on_images_tool_calls_and_tool_results() -> None:
    image = {"type": "image", "source": {"type": "url", "url": "https://x.test/a.png"}}
    turns = [
        {"role": "user", "content": [{**image, "cache_control": HOUR}]},
        {"role": "assistant", "content": [{**MESSAGES[1]["content"][0], "cache_control": HOUR}]},
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "t1",
                    "content": [
                        {"type": "text", "text": "a", "cache_control": FIVE},
                        {"type": "text", "text": "b"},
                    ],
                    "cache_control": FIVE,
                }
            ],
        },
    ]
    request = parse_messages(
        {"model": "m", "max_tokens": 5, "messages": turns}, max_messages=10
    ).request
    picture, call, result = request.messages
    assert isinstance(picture.content, tuple) and picture.content[0].cache == "1h"
    assert call.tool_calls[0].cache == "1h"
    assert result.content == (TextPart(text="a", cache="5m"), TextPart(text="b", cache="5m"))
    assert request.system_cache is None and request.system is None


def test_without_markers_nothing_changes_in_the_parsed_request() -> None:
    plain = [
        {
            **m,
            "content": [{k: v for k, v in b.items() if k != "cache_control"} for b in m["content"]],
        }
        for m in MESSAGES
    ]
    request = parse_messages(
        {"model": "m", "max_tokens": 5, "messages": plain, "system": "hi"}, max_messages=10
    ).request
    assert request.messages[2].content == "shipped"
    assert request.system == "hi" and request.system_cache is None
