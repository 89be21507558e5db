"""The OpenAI API as the gateway reads it: Chat Completions request JSON in, ChatRequest out, and
the embeddings endpoint both ways. What it writes for chat is `openai_render.py`; together, the
mirror image of `providers/openai_wire.py`."""

from __future__ import annotations

import base64
import struct
from dataclasses import dataclass
from typing import Any, cast

import orjson

from modelyard.gateway.errors import ApiError, bad_request
from modelyard.gateway.fields import (
    expect_list,
    expect_object,
    expect_str,
    optional_bool,
    optional_int,
    optional_number,
    optional_str,
    reject_unknown,
    shallow,
    string_map,
)
from modelyard.suggest import did_you_mean
from modelyard.types import (
    ChatRequest,
    Effort,
    EmbeddingResponse,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    ToolCall,
    split_system,
)

_CHAT_FIELDS = frozenset(
    {
        "model",
        "messages",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "response_format",
        "temperature",
        "top_p",
        "max_tokens",
        "max_completion_tokens",
        "stop",
        "seed",
        "n",
        "logprobs",
        "top_logprobs",
        "metadata",
        "stream",
        "stream_options",
        "user",
        "safety_identifier",
        "service_tier",
        "reasoning_effort",
    }
)
_NEUTRAL = {
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logit_bias": {},
    "functions": [],
    "modalities": ["text"],
    "store": False,
}
_TIERS = frozenset({"auto", "default"})
"""The service tiers every request gets anyway (flex and priority change price and speed)."""
_ROLES = {
    "system": "system",
    "developer": "system",
    "user": "user",
    "assistant": "assistant",
    "tool": "tool",
}


@dataclass(frozen=True, slots=True)
class ChatCall:
    """A parsed chat completion call: which system or model, the request, how to answer."""

    target: str
    request: ChatRequest
    stream: bool
    include_usage: bool


def _parts(content: list[Any], where: str) -> tuple[Part, ...]:
    parts: list[Part] = []
    for i, raw in enumerate(content):
        part = expect_object(raw, f"{where}[{i}]")
        kind = part.get("type")
        if kind == "text":
            parts.append(TextPart(text=expect_str(part.get("text"), f"{where}[{i}].text")))
        elif kind == "image_url":
            image = expect_object(part.get("image_url"), f"{where}[{i}].image_url")
            url = expect_str(image.get("url"), f"{where}[{i}].image_url.url")
            parts.append(ImagePart(url=url, detail=optional_str(image, "detail")))
        else:
            raise bad_request(
                f"{where}[{i}].type: expected 'text' or 'image_url', got {kind!r}", where
            )
    return tuple(parts)


def text_only(content: str | tuple[Part, ...]) -> bool:
    """Whether message content holds text and nothing else."""
    return isinstance(content, str) or all(isinstance(part, TextPart) for part in content)


def text_only_system(role: str, raw_role: Any, content: str | tuple[Part, ...], where: str) -> None:
    """400 for a system (or developer) message holding an image: the system prompt is text, so
    the image would be dropped without a word."""
    if role == "system" and not text_only(content):
        raise bad_request(
            f"{where}.content: a {raw_role} message may hold text only", f"{where}.content"
        )


def _tool_calls(raw: Any, where: str) -> tuple[ToolCall, ...]:
    calls = []
    for i, item in enumerate(expect_list(raw, where)):
        call = expect_object(item, f"{where}[{i}]")
        function = expect_object(call.get("function"), f"{where}[{i}].function")
        calls.append(
            ToolCall(
                id=expect_str(call.get("id"), f"{where}[{i}].id"),
                name=expect_str(function.get("name"), f"{where}[{i}].function.name"),
                arguments=expect_str(
                    function.get("arguments", "{}"), f"{where}[{i}].function.arguments"
                ),
            )
        )
    return tuple(calls)


def _message(raw: Any, where: str) -> Message:
    body = expect_object(raw, where)
    raw_role = body.get("role")
    role = _ROLES.get(raw_role) if isinstance(raw_role, str) else None
    if role is None:
        raise bad_request(
            f"{where}.role: expected system, developer, user, assistant or tool, "
            f"got {body.get('role')!r}",
            f"{where}.role",
        )
    content = body.get("content")
    if content is None:
        text: str | tuple[Part, ...] = ""
        if role != "assistant":
            raise bad_request(f"{where}.content: required for a {role} message", f"{where}.content")
    elif isinstance(content, str):
        text = content
    elif isinstance(content, list):
        text = _parts(content, f"{where}.content")
        text_only_system(role, raw_role, text, where)
    else:
        raise bad_request(f"{where}.content: expected a string or an array of parts", where)
    calls = _tool_calls(body["tool_calls"], f"{where}.tool_calls") if body.get("tool_calls") else ()
    tool_call_id = optional_str(body, "tool_call_id", f"{where}.")
    if role == "tool" and not tool_call_id:
        raise bad_request(f"{where}.tool_call_id: required for a tool message", where)
    return Message(
        role=role,  # type: ignore[arg-type]
        content=text,
        name=optional_str(body, "name", f"{where}."),
        tool_calls=calls,
        tool_call_id=tool_call_id,
    )


def function_tool(function: dict[str, Any], where: str) -> Tool:
    """An OpenAI function definition (name, description, parameters, strict) as a Tool; Chat
    Completions nests it under `function`, Responses does not."""
    parameters = shallow(
        function.get("parameters") or {"type": "object", "properties": {}},
        f"{where}.parameters",
    )
    return Tool(
        name=expect_str(function.get("name"), f"{where}.name"),
        description=optional_str(function, "description") or "",
        parameters=expect_object(parameters, f"{where}.parameters"),
        strict=optional_bool(function, "strict"),
    )


def _tools(raw: Any) -> tuple[Tool, ...]:
    tools = []
    for i, item in enumerate(expect_list(raw, "tools")):
        tool = expect_object(item, f"tools[{i}]")
        if tool.get("type") != "function":
            raise bad_request(f"tools[{i}].type: only 'function' tools are supported", "tools")
        function = expect_object(tool.get("function"), f"tools[{i}].function")
        tools.append(function_tool(function, f"tools[{i}].function"))
    return tuple(tools)


def _tool_choice(raw: Any) -> str | None:
    if raw is None or raw in ("auto", "none", "required"):
        return raw  # type: ignore[no-any-return]
    choice = expect_object(raw, "tool_choice")
    function = expect_object(choice.get("function"), "tool_choice.function")
    return expect_str(function.get("name"), "tool_choice.function.name")


def _response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    body = expect_object(raw, "response_format")
    kind = body.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return ResponseFormat(type="json_object")
    if kind == "json_schema":
        spec = expect_object(body.get("json_schema"), "response_format.json_schema")
        schema = spec.get("schema")
        return ResponseFormat(
            type="json_schema",
            schema=(
                expect_object(
                    shallow(schema, "response_format.json_schema.schema"),
                    "response_format.json_schema.schema",
                )
                if schema
                else None
            ),
            name=optional_str(spec, "name"),
            strict=optional_bool(spec, "strict"),
        )
    raise bad_request(
        f"response_format.type: expected text, json_object or json_schema, got {kind!r}",
        "response_format.type",
    )


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    items = expect_list(raw, "stop")
    if len(items) > 4:
        raise bad_request("stop: at most 4 sequences", "stop")
    return tuple(expect_str(s, f"stop[{i}]") for i, s in enumerate(items))


def end_user(body: dict[str, Any], metadata: dict[str, str]) -> dict[str, str]:
    """`metadata` with the end user the request names, which routing rules can match: `user`,
    or `safety_identifier`, the name OpenAI's SDK now asks for instead."""
    if "user" not in body and "safety_identifier" not in body:  # most requests name neither
        return metadata
    named = {key: optional_str(body, key) for key in ("user", "safety_identifier")}
    return {**metadata, **{key: value for key, value in named.items() if value}}


def check_service_tier(body: dict[str, Any]) -> None:
    """400 naming `service_tier` unless it is absent or a tier every request gets anyway."""
    tier = optional_str(body, "service_tier")
    if tier is not None and tier not in _TIERS:
        raise bad_request(
            f"service_tier: {tier!r} is not supported by this gateway (auto or default)",
            "service_tier",
        )


def parse_chat(body: Any, *, max_messages: int) -> ChatCall:
    """A chat completion request body as a ChatCall; ApiError (400) naming the field otherwise."""
    body = expect_object(body, "body")
    reject_unknown(body, _CHAT_FIELDS, _NEUTRAL)
    target = expect_str(body.get("model"), "model")
    messages_raw = expect_list(body.get("messages"), "messages", non_empty=True)
    if len(messages_raw) > max_messages:
        raise bad_request(f"messages: at most {max_messages} messages", "messages")
    messages = [_message(m, f"messages[{i}]") for i, m in enumerate(messages_raw)]
    system, turns = split_system(messages)
    if not turns:
        raise bad_request("messages: needs at least one non-system message", "messages")
    check_service_tier(body)
    max_tokens = optional_int(body, "max_completion_tokens", 1, 10_000_000)
    if max_tokens is None:
        max_tokens = optional_int(body, "max_tokens", 1, 10_000_000)
    stream = bool(optional_bool(body, "stream"))
    options = body.get("stream_options")
    include_usage = bool(
        optional_bool(expect_object(options, "stream_options"), "include_usage", "stream_options.")
        if options is not None
        else False
    )
    metadata = end_user(
        body, string_map(body["metadata"], "metadata") if body.get("metadata") else {}
    )
    logprobs = bool(optional_bool(body, "logprobs"))
    top_logprobs = optional_int(body, "top_logprobs", 0, 20)
    if top_logprobs is not None and not logprobs:  # OpenAI's rule, kept for every provider
        raise bad_request("top_logprobs: only allowed when logprobs is true", "top_logprobs")
    request = ChatRequest(
        messages=turns,
        system=system,
        tools=_tools(body["tools"]) if body.get("tools") else (),
        tool_choice=_tool_choice(body.get("tool_choice")),
        parallel_tool_calls=optional_bool(body, "parallel_tool_calls"),
        response_format=_response_format(body.get("response_format")),
        temperature=optional_number(body, "temperature", 0, 2),
        top_p=optional_number(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        stop=_stop(body.get("stop")),
        seed=optional_int(body, "seed", -(2**63), 2**63 - 1),
        n=optional_int(body, "n", 1, 128) or 1,
        logprobs=logprobs,
        top_logprobs=top_logprobs,
        metadata=metadata,
        effort=reasoning_effort(body.get("reasoning_effort"), "reasoning_effort"),
    )
    return ChatCall(target=target, request=request, stream=stream, include_usage=include_usage)


REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh")
"""The levels OpenAI's `reasoning_effort` takes (and the Responses API's `reasoning.effort`)."""


def reasoning_effort(raw: Any, field: str) -> Effort | None:
    """An OpenAI reasoning effort as the request's effort (None when not given); 400 naming
    `field` otherwise. Sent only to models whose `capabilities.reasoning` is on; the others'
    decision says it was dropped."""
    if raw is None:
        return None
    if raw not in REASONING_EFFORTS:
        raise bad_request(
            f"{field}: expected one of {', '.join(REASONING_EFFORTS)}, got {raw!r}", field
        )
    return cast(Effort, raw)


@dataclass(frozen=True, slots=True)
class EmbeddingCall:
    """A parsed embeddings call."""

    target: str
    inputs: tuple[str, ...]
    dimensions: int | None
    base64: bool


def parse_embeddings(body: Any) -> EmbeddingCall:
    """An embeddings request body; texts only (token arrays are refused with a clear 400)."""
    body = expect_object(body, "body")
    reject_unknown(body, frozenset({"model", "input", "dimensions", "encoding_format", "user"}), {})
    if body.get("encoding_format") not in (None, "float", "base64"):
        raise bad_request("encoding_format: expected 'float' or 'base64'", "encoding_format")
    raw = body.get("input")
    if isinstance(raw, str):
        inputs: tuple[str, ...] = (raw,)
    else:
        items = expect_list(raw, "input", non_empty=True)
        inputs = tuple(expect_str(t, f"input[{i}]") for i, t in enumerate(items))
    return EmbeddingCall(
        target=expect_str(body.get("model"), "model"),
        inputs=inputs,
        dimensions=optional_int(body, "dimensions", 1, 100_000),
        base64=body.get("encoding_format") == "base64",
    )


def _packed(vector: tuple[float, ...]) -> str:
    """float32 little-endian, base64: what the OpenAI SDK asks for by default."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def render_embeddings(response: EmbeddingResponse, target: str, *, packed: bool) -> bytes:
    """An EmbeddingResponse as OpenAI's embeddings list."""
    return orjson.dumps(
        {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": _packed(vector) if packed else list(vector),
                }
                for i, vector in enumerate(response.vectors)
            ],
            "model": target,
            "usage": {
                "prompt_tokens": response.usage.input_tokens,
                "total_tokens": response.usage.input_tokens,
            },
        }
    )


def not_found(target: str, available: list[str]) -> ApiError:
    """404 for an unknown model, listing what exists."""
    return ApiError(
        404,
        f"The model {target!r} does not exist"
        + did_you_mean(target, available, listed="available"),
        "invalid_request_error",
        "model_not_found",
        "model",
    )
