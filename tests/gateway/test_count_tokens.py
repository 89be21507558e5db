"""POST /v1/messages/count_tokens with the official Anthropic SDK as the client: exact through an
Anthropic model (the fake Anthropic counts), estimated otherwise, and keys, scopes, limits and
errors as on /v1/messages."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import httpx2
import pytest
from anthropic.types import MessageTokensCount
from tests.fakes.anthropic_server import FakeAnthropic, rate_limited
from tests.fakes.server import Fault
from tests.gateway.conftest import Running

ADMIN = "admin-secret-123456"
UPSTREAM_KEY = "sk-ant-upstream-count-0123456789"
MODEL_ID = "claude-haiku-4-5-20251001"
SYSTEM = "You are the order desk. Answer in one line."
TOOLS: list[Any] = [
    {
        "name": "lookup",
        "description": "find an order by its number",
        "input_schema": {"type": "object", "properties": {"order": {"type": "integer"}}},
    }
]
MESSAGES: list[Any] = [
    {"role": "user", "content": "where is order 7?"},
    {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "lookup", "input": {"order": 7}}],
    },
    {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "shipped"},
            {"type": "text", "text": "and when does it arrive?"},
        ],
    },
]


@pytest.fixture
def upstream(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeAnthropic]:
    monkeypatch.setenv("FAKE_ANTHROPIC_KEY", UPSTREAM_KEY)
    with FakeAnthropic(api_key=UPSTREAM_KEY).running() as fake:
        assert isinstance(fake, FakeAnthropic)
        yield fake


@pytest.fixture
def running(serve_gateway: Callable[..., Running], upstream: FakeAnthropic) -> Running:
    """`claude` on the fake Anthropic (with the default retry, breaker and limit wrappers), a
    local fake model, and `desk`, a fallback from claude to the local one."""
    return serve_gateway(
        text=f"""
gateway:
  admin_key: {ADMIN}
providers:
  anthropic: {{type: anthropic, base_url: "{upstream.url}", api_key: "${{FAKE_ANTHROPIC_KEY}}"}}
models:
  claude:
    provider: anthropic
    id: {MODEL_ID}
    price: {{input: 1.0, output: 5.0}}
  local:
    local: {{type: fake, default: "the local answer"}}
    price: {{input: 10.0, output: 20.0}}
systems:
  desk: {{type: fallback, chain: [claude, local]}}
"""
    )


def client(running: Running, key: str = ADMIN) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key=key, max_retries=0)


def create_key(running: Running, **body: object) -> str:
    reply = httpx2.post(
        f"{running.url}/admin/keys", json=body, headers={"authorization": f"Bearer {ADMIN}"}
    )
    assert reply.status_code == 201, reply.text
    return str(reply.json()["key"])


def record_of(running: Running, request_id: str) -> dict[str, Any]:
    """The request log's record of `request_id`, once written (records go in batches)."""
    url = f"{running.url}/v1/requests/{request_id}"
    for _ in range(100):
        reply = httpx2.get(url, headers={"authorization": f"Bearer {ADMIN}"})
        if reply.status_code == 200:
            return reply.json()  # type: ignore[no-any-return]
        threading.Event().wait(0.05)
    raise AssertionError(f"no record of {request_id}")


# --- exact: the provider counts ----------------------------------------------------------------


def test_an_anthropic_model_is_counted_by_its_provider_as_a_call_would_bill_it(
    running: Running, upstream: FakeAnthropic
) -> None:
    raw = client(running).messages.with_raw_response.count_tokens(
        model="claude", system=SYSTEM, tools=TOOLS, messages=MESSAGES
    )
    counted = raw.parse()
    assert isinstance(counted, MessageTokensCount)
    assert raw.headers["x-modelyard-token-count"] == "exact"
    assert raw.headers["x-modelyard-model"] == "claude"
    message = client(running).messages.create(
        model="claude", max_tokens=50, system=SYSTEM, tools=TOOLS, messages=MESSAGES
    )
    usage = message.usage
    billed = (
        usage.input_tokens
        + (usage.cache_read_input_tokens or 0)
        + (usage.cache_creation_input_tokens or 0)
    )
    assert counted.input_tokens == billed
    asked = upstream.requests[0]
    assert asked.path == "/v1/messages/count_tokens"
    assert asked.headers["x-api-key"] == UPSTREAM_KEY  # the gateway's key, not the caller's
    assert asked.json["model"] == MODEL_ID
    assert "max_tokens" not in asked.json and "stream" not in asked.json


def test_the_system_prompt_and_the_tools_are_counted(running: Running) -> None:
    def count(**fields: Any) -> int:
        return client(running).messages.count_tokens(model="claude", **fields).input_tokens

    bare = count(messages=MESSAGES)
    with_system = count(messages=MESSAGES, system=SYSTEM)
    assert bare < with_system < count(messages=MESSAGES, system=SYSTEM, tools=TOOLS)


def test_the_beta_count_reaches_the_same_endpoint(running: Running) -> None:
    beta = client(running).beta.messages.count_tokens(
        model="claude", system=SYSTEM, tools=TOOLS, messages=MESSAGES
    )
    plain = client(running).messages.count_tokens(
        model="claude", system=SYSTEM, tools=TOOLS, messages=MESSAGES
    )
    assert beta.input_tokens == plain.input_tokens > 0


def test_an_upstream_refusal_reaches_the_client_in_anthropic_shape(
    running: Running, upstream: FakeAnthropic
) -> None:
    upstream.push(rate_limited(retry_after=3))
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(running).messages.count_tokens(model="claude", messages=MESSAGES)
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_an_overloaded_upstream_is_a_529_as_anthropic_sends_it(
    running: Running, upstream: FakeAnthropic
) -> None:
    upstream.push(Fault(status=529))  # it was a 503
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(running).messages.count_tokens(model="claude", messages=MESSAGES)
    assert caught.value.status_code == 529
    assert caught.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


@pytest.mark.parametrize("status", [404, 405])
def test_a_provider_behind_a_proxy_without_the_endpoint_is_estimated_and_says_so(
    running: Running, upstream: FakeAnthropic, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    # A proxy in front of Anthropic that does not serve count_tokens had made every count a
    # 404: Claude Code pointed at such a gateway got an error where an estimate would do.
    upstream.push(Fault(status=status, body=b"Not Found", content_type="text/plain"))
    raw = client(running).messages.with_raw_response.count_tokens(model="claude", messages=MESSAGES)
    assert raw.headers["x-modelyard-token-count"] == "estimated"
    assert raw.parse().input_tokens > 0
    assert f"does not serve count_tokens (HTTP {status})" in caplog.text


# --- estimated: no provider count on the way ----------------------------------------------------


def test_a_local_model_or_a_routing_system_is_estimated_and_says_so(
    running: Running, upstream: FakeAnthropic
) -> None:
    for target in ("local", "desk"):  # desk's fallback decides who answers: no one count holds
        short, long = (
            client(running).messages.with_raw_response.count_tokens(
                model=target,
                system=SYSTEM,
                messages=[{"role": "user", "content": "where is order 7? " * repeat}],
            )
            for repeat in (1, 50)
        )
        assert short.headers["x-modelyard-token-count"] == "estimated"
        assert "x-modelyard-model" not in short.headers
        assert 0 < short.parse().input_tokens < long.parse().input_tokens
    assert upstream.requests == []


# --- what /v1/messages refuses, refused the same way --------------------------------------------


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
        ({"tools": [{"name": "x"}]}, "tools[0].input_schema"),
        ({"tool_choice": {"type": "sometimes"}}, "tool_choice.type"),
        ({"thinking": {"type": "enabled"}}, "thinking.budget_tokens"),
        ({"extra_body": {"max_tokens": 10}}, "max_tokens"),
    ],
)
def test_a_bad_body_is_a_400_naming_the_field(
    running: Running, fields: dict[str, Any], named: str
) -> None:
    body: dict[str, Any] = {"model": "claude", "messages": MESSAGES, **fields}
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(running).messages.count_tokens(**body)
    error = caught.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"{named}:"), error


def test_an_unknown_model_is_the_404_messages_gives(running: Running) -> None:
    with pytest.raises(anthropic.NotFoundError) as counted:
        client(running).messages.count_tokens(model="nope", messages=MESSAGES)
    with pytest.raises(anthropic.NotFoundError) as asked:
        client(running).messages.create(model="nope", max_tokens=5, messages=MESSAGES)
    assert counted.value.body == asked.value.body
    assert "'nope' does not exist" in counted.value.message


def test_a_stranger_gets_401_before_the_body_is_read(running: Running) -> None:
    reply = httpx2.post(
        f"{running.url}/v1/messages/count_tokens",
        content=b"{not json",
        headers={"content-type": "application/json", "x-api-key": "nope"},
    )
    assert reply.status_code == 401
    assert reply.json()["error"]["type"] == "authentication_error"


def test_a_key_not_allowed_the_model_gets_the_403_messages_gives(running: Running) -> None:
    key = create_key(running, name="local-only", systems=["local"])
    assert client(running, key).messages.count_tokens(model="local", messages=MESSAGES)
    with pytest.raises(anthropic.PermissionDeniedError) as counted:
        client(running, key).messages.count_tokens(model="claude", messages=MESSAGES)
    with pytest.raises(anthropic.PermissionDeniedError) as asked:
        client(running, key).messages.create(model="claude", max_tokens=5, messages=MESSAGES)
    assert counted.value.body == asked.value.body
    record = record_of(running, counted.value.response.headers["x-request-id"])
    assert record["api"] == "count_tokens" and record["status"] == 403
    assert str(record["error"]).startswith("model_not_allowed")


def test_counts_take_from_the_keys_rate_limit_as_messages_calls_do(running: Running) -> None:
    key = create_key(running, name="slow", rpm=2)
    client(running, key).messages.count_tokens(model="local", messages=MESSAGES)
    client(running, key).messages.create(model="local", max_tokens=5, messages=MESSAGES)
    with pytest.raises(anthropic.RateLimitError) as caught:
        client(running, key).messages.count_tokens(model="local", messages=MESSAGES)
    assert int(caught.value.response.headers["retry-after"]) > 0


# --- a count costs nothing ----------------------------------------------------------------------


def test_a_count_holds_no_budget_and_is_no_chat_request(running: Running) -> None:
    # Any Messages call's worst case passes this budget; a count, which costs nothing, does not.
    key = create_key(running, name="broke", budget=0.000001)
    with pytest.raises(anthropic.RateLimitError):
        client(running, key).messages.create(model="claude", max_tokens=50, messages=MESSAGES)
    raw = client(running, key).messages.with_raw_response.count_tokens(
        model="claude", messages=MESSAGES
    )
    record = record_of(running, raw.headers["x-request-id"])
    assert record["api"] == "count_tokens" and record["status"] == 200
    assert record["cost"] == 0 and record["input_tokens"] == raw.parse().input_tokens
    assert record["model"] == "claude" and record["key_id"] is not None
    metrics = httpx2.get(f"{running.url}/metrics").text
    assert "modelyard_requests_total{" not in metrics
    assert 'modelyard_tokens_total{direction="input"' not in metrics
