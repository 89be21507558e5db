"""What the gateway refuses up front: values too deep to pass on."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import orjson
import pytest
from tests.gateway.conftest import Running

from modelyard.cost.prices import bound_input_tokens
from modelyard.gateway.anthropic_api import parse_messages
from modelyard.gateway.errors import ApiError
from modelyard.gateway.fields import MAX_DEPTH
from modelyard.gateway.openai_api import parse_chat
from modelyard.providers.openai_wire import OpenAIWire


def nested(depth: int) -> dict[str, Any]:
    """A JSON schema whose objects nest `depth` deep."""
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth - 1):
        schema = {"type": "object", "properties": {"a": schema}}
    return schema


def openai_body(parameters: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": "support",
        "messages": [{"role": "user", "content": "ping"}],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": parameters}}],
    }


def test_a_tool_schema_at_the_limit_is_taken_and_reaches_the_wire() -> None:
    call = parse_chat(openai_body(nested(MAX_DEPTH // 2)), max_messages=10)
    orjson.dumps(OpenAIWire().to_wire(call.request, "gpt-4o-mini", stream=False))  # as sent
    assert bound_input_tokens(call.request) > 0  # as a budget reads it
    assert call.request.tools[0].name == "f"


@pytest.mark.parametrize("depth", [300, 600])
def test_a_tool_schema_nested_too_deep_is_a_400_naming_it(depth: int) -> None:
    with pytest.raises(ApiError) as caught:
        parse_chat(openai_body(nested(depth)), max_messages=10)
    assert caught.value.status == 400
    assert caught.value.param == "tools[0].function.parameters"


def test_a_response_format_schema_nested_too_deep_is_a_400() -> None:
    body = {
        "model": "support",
        "messages": [{"role": "user", "content": "ping"}],
        "response_format": {"type": "json_schema", "json_schema": {"schema": nested(300)}},
    }
    with pytest.raises(ApiError) as caught:
        parse_chat(body, max_messages=10)
    assert caught.value.param == "response_format.json_schema.schema"


def test_anthropic_tool_schemas_and_tool_inputs_nested_too_deep_are_400s() -> None:
    tool = {"model": "support", "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]}
    tool["tools"] = [{"name": "f", "input_schema": nested(300)}]
    with pytest.raises(ApiError) as caught:
        parse_messages(tool, max_messages=10)
    assert caught.value.param == "tools[0].input_schema"
    turns = [
        {"role": "user", "content": "hi"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "t", "name": "f", "input": nested(300)}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t", "content": "ok"}]},
    ]
    with pytest.raises(ApiError) as caught:
        parse_messages({"model": "support", "max_tokens": 10, "messages": turns}, max_messages=10)
    assert caught.value.status == 400


def test_the_gateway_answers_a_too_deep_tool_schema_with_a_400(
    serve_gateway: Callable[..., Running],
) -> None:
    running = serve_gateway()
    schema = '{"type":"string"}'
    for _ in range(300):  # 601 levels: more than orjson encodes, as deep as Python reprs
        schema = '{"type":"object","properties":{"a":' + schema + "}}"
    tools = '[{"type":"function","function":{"name":"f","parameters":' + schema + "}}]"
    body = '{"model":"support","messages":[{"role":"user","content":"ping"}],"tools":' + tools
    reply = httpx2.post(f"{running.openai_url}/chat/completions", content=body + "}")
    assert reply.status_code == 400, reply.text
    assert "nested more than" in reply.json()["error"]["message"]
