"""The official Anthropic SDK as a client of the gateway's /v1/messages."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from anthropic.types import ModelInfo
from anthropic.types.shared import ErrorResponse
from tests.gateway.conftest import SYSTEMS, Running

from modelyard.errors import (
    ModelError,
    ModelTimeoutError,
    NoAnswerError,
    OverloadedError,
    UnavailableError,
)
from modelyard.gateway.anthropic_render import error_body
from modelyard.gateway.errors import from_model_error
from modelyard.topology import unwrap


def client(running: Running) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=running.url, api_key="anything", max_retries=0)


def test_message_through_a_system(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    message = client(running).messages.create(
        model="support",
        max_tokens=100,
        system="be brief",
        messages=[{"role": "user", "content": "ping"}],
    )
    assert message.content[0].type == "text" and message.content[0].text == "pong"
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


def test_stream_event_sequence(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    with client(running).messages.stream(
        model="support", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "the cheap answer"
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0


def test_tool_results_become_tool_messages(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    client(running).messages.create(
        model="strong",
        max_tokens=50,
        tools=[{"name": "lookup", "description": "find", "input_schema": {"type": "object"}}],
        messages=[
            {"role": "user", "content": "where is order 7?"},
            {
                "role": "assistant",
                "content": [
                    {"type": "tool_use", "id": "t1", "name": "lookup", "input": {"order": 7}}
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "t1", "content": "shipped"}],
            },
        ],
    )
    request = unwrap(running.app.live.current.models["strong"]).calls[-1]  # type: ignore[attr-defined]
    roles = [m.role for m in request.messages]
    assert roles == ["user", "assistant", "tool"]
    assert request.messages[1].tool_calls[0].arguments == '{"order":7}'
    assert request.messages[2].tool_call_id == "t1" and request.messages[2].text == "shipped"
    assert request.tools[0].name == "lookup"


def test_errors_come_in_anthropic_shape(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(running).messages.create(
            model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as bad:
        client(running).messages.create(
            model="support", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    assert "max_tokens" in str(bad.value)


def test_an_anthropic_route_the_gateway_lacks_answers_in_anthropic_shape(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(running).messages.batches.list()
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert "no route for GET /v1/messages/batches" in caught.value.message


@pytest.mark.parametrize("kind", [["text"], {"type": "text"}])
def test_a_block_type_that_is_not_a_string_is_a_400_naming_it(
    serve_gateway: Callable[..., Running], kind: object
) -> None:
    running = serve_gateway()
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(running).messages.create(
            model="support",
            max_tokens=5,
            messages=[{"role": "user", "content": [{"type": kind, "text": "x"}]}],  # type: ignore[list-item]
        )
    assert "messages[0].content[0].type" in caught.value.message


def test_an_internal_error_on_a_messages_route_answers_in_anthropic_shape(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()

    async def broken(call: object) -> None:
        raise RuntimeError("a bug")

    running.app._routes[("POST", "/v1/messages")] = broken
    with pytest.raises(anthropic.InternalServerError) as caught:
        client(running).messages.create(
            model="support", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "a bug" not in caught.value.message


def test_the_sdk_reads_the_request_id_of_answers_and_errors(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    sdk = client(running)
    raw = sdk.messages.with_raw_response.create(
        model="support", max_tokens=5, messages=[{"role": "user", "content": "ping"}]
    )
    # The id GET /v1/requests/{id} takes, where the SDK looks for it (`request-id`).
    assert raw.parse()._request_id == raw.headers["x-request-id"]
    with sdk.messages.stream(
        model="support", max_tokens=5, messages=[{"role": "user", "content": "ping"}]
    ) as stream:
        assert stream.request_id is not None
    with pytest.raises(anthropic.NotFoundError) as caught:
        sdk.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    assert caught.value.request_id is not None
    counted = sdk.messages.with_raw_response.count_tokens(
        model="support", messages=[{"role": "user", "content": "x"}]
    )
    assert counted.request_id == counted.headers["x-request-id"]


def test_the_sdk_lists_and_retrieves_models_in_anthropics_shape(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    listed = list(client(running).models.list())
    # Embedders answer no Messages call: only what /v1/messages takes is listed.
    assert {m.id for m in listed} == {"support", "cheap", "strong", "broken"}
    for model in listed:
        assert ModelInfo.model_validate(model.model_dump(mode="json")) == model
    model = client(running).models.retrieve("support")
    assert (model.type, model.id, model.display_name) == ("model", "support", "support")
    with pytest.raises(anthropic.NotFoundError) as caught:
        client(running).models.retrieve("hash")
    assert caught.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]


def test_a_deadline_passed_is_anthropics_timeout_error(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    with pytest.raises(anthropic.APIStatusError) as caught:
        client(running).messages.create(
            model="cheap",
            max_tokens=5,
            messages=[{"role": "user", "content": "slow"}],
            extra_headers={"x-modelyard-timeout": "0.05"},
        )
    assert caught.value.status_code == 504
    assert caught.value.body["error"]["type"] == "timeout_error"  # type: ignore[index]


def test_a_service_tier_is_taken_only_when_it_is_one_every_request_gets(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    ask: Any = [{"role": "user", "content": "ping"}]
    for tier in ("auto", "standard_only"):
        message = client(running).messages.create(
            model="support", max_tokens=5, messages=ask, extra_body={"service_tier": tier}
        )
        assert message.content[0].text == "pong"  # type: ignore[union-attr]
    for wrong in ("priority", 5):
        with pytest.raises(anthropic.BadRequestError) as caught:
            client(running).messages.create(
                model="support", max_tokens=5, messages=ask, extra_body={"service_tier": wrong}
            )
        assert "service_tier" in caught.value.message


def test_a_server_tool_is_a_400_naming_its_type(serve_gateway: Callable[..., Running]) -> None:
    running = serve_gateway()
    ask: Any = [{"role": "user", "content": "ping"}]
    with pytest.raises(anthropic.BadRequestError) as caught:
        client(running).messages.create(
            model="support",
            max_tokens=5,
            messages=ask,
            tools=[{"type": "web_search_20250305", "name": "web_search"}],
        )
    said = caught.value.body["error"]["message"]  # type: ignore[index]
    assert said.startswith("tools[0].type: 'web_search_20250305' is not supported")
    custom: Any = {"type": "custom", "name": "f", "input_schema": {"type": "object"}}
    message = client(running).messages.create(
        model="support", max_tokens=5, messages=ask, tools=[custom]
    )
    assert message.content[0].text == "pong"  # type: ignore[union-attr]


# --- the error type of a 503 ------------------------------------------------------------------

OVERLOADED = """
  busy:
    local: {type: fake, default: {error: overloaded}}
"""


def _ask(sdk: anthropic.Anthropic, model: str, *, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "x"}]
    if stream:
        with sdk.messages.stream(model=model, max_tokens=5, messages=messages) as events:
            events.get_final_message()
    else:
        sdk.messages.create(model=model, max_tokens=5, messages=messages)


@pytest.mark.parametrize("stream", [False, True])
def test_a_503_that_is_no_overload_is_an_api_error_and_an_overload_a_529(
    serve_gateway: Callable[..., Running], stream: bool
) -> None:
    # Every 503 was typed `overloaded_error`: a provider down is not an overload, and an SDK
    # user branching on `error.type` would have backed off from a model that was merely down.
    running = serve_gateway(
        text=SYSTEMS.replace("embedders:", OVERLOADED.lstrip("\n") + "embedders:")
    )
    sdk = client(running)
    with pytest.raises(anthropic.ServiceUnavailableError) as down:
        _ask(sdk, "broken", stream=stream)
    assert down.value.status_code == 503
    assert down.value.type == "api_error"
    assert down.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    with pytest.raises(anthropic.OverloadedError) as busy:
        _ask(sdk, "busy", stream=stream)
    assert busy.value.status_code == 529
    assert busy.value.type == "overloaded_error"


@pytest.mark.parametrize(
    ("error", "status", "kind"),
    [
        (UnavailableError("circuit open", code="circuit_open"), 503, "api_error"),
        (UnavailableError("shutting down", code="shutting_down"), 503, "api_error"),
        (NoAnswerError("no member answered"), 503, "api_error"),
        (OverloadedError("busy"), 529, "overloaded_error"),
        (ModelTimeoutError("late"), 504, "timeout_error"),
    ],
)
def test_a_messages_caller_gets_anthropics_error_type_for_each_failure(
    error: ModelError, status: int, kind: str
) -> None:
    refused = from_model_error(error, api="anthropic")
    body = error_body(refused)
    assert (refused.status, body["error"]["type"]) == (status, kind)
    ErrorResponse.model_validate(body)  # the SDK's own model of an error body
