"""The Anthropic Messages API as the gateway serves it, so Anthropic SDK users reach the same
systems: Messages JSON in, ChatRequest out. The answers and their streaming event sequence are
written in `anthropic_render.py`."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from modelyard.gateway import anthropic_settings, anthropic_thinking
from modelyard.gateway.anthropic_cache import Breakpoints, system_prompt
from modelyard.gateway.errors import bad_request
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
)
from modelyard.types import (
    ChatRequest,
    ImagePart,
    Message,
    Part,
    Reasoning,
    TextPart,
    Tool,
    ToolCall,
)

_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "service_tier",
        "thinking",
        "output_config",
        "context_management",
    }
)
_NEUTRAL: dict[str, Any] = {"top_k": None}
_TOOL_FIELDS = frozenset(
    {"type", "name", "description", "input_schema", "cache_control", "strict"}
    | {"eager_input_streaming"}  # how the input streams, not what it says: taken, not sent
)
_TOOL_NEUTRAL: dict[str, Any] = {"defer_loading": False, "allowed_callers": ["direct"]}
"""A tool's fields that only say what every tool here is anyway; other values (a tool loaded
by tool search, called from code execution) and `input_examples` are refused, naming them."""
_TIERS = ("auto", "standard_only")
"""The service tiers Anthropic takes, both what every request gets here (no priority tier)."""


@dataclass(frozen=True, slots=True)
class MessagesCall:
    """A parsed Messages call."""

    target: str
    request: ChatRequest
    stream: bool


def _image(block: dict[str, Any], where: str) -> ImagePart:
    source = expect_object(block.get("source"), f"{where}.source")
    if source.get("type") == "base64":
        media = expect_str(source.get("media_type"), f"{where}.source.media_type")
        data = expect_str(source.get("data"), f"{where}.source.data")
        return ImagePart(url=f"data:{media};base64,{data}")
    if source.get("type") == "url":
        return ImagePart(url=expect_str(source.get("url"), f"{where}.source.url"))
    raise bad_request(f"{where}.source.type: expected 'base64' or 'url'", where)


def _tool_result(block: dict[str, Any], where: str, marks: Breakpoints) -> Message:
    """A tool_result block as a tool message: its text, or its text and image parts. Its
    breakpoints ride on its parts: the block's own on the last one, since the cached prefix
    ends with the result either way."""
    result = block.get("content") or ""
    call_id = expect_str(block.get("tool_use_id"), f"{where}.tool_use_id")
    parts: list[Part] = []
    if isinstance(result, str):
        parts.append(TextPart(text=result))
    for i, raw in enumerate(() if isinstance(result, str) else expect_list(result, where)):
        here = f"{where}.content[{i}]"
        inner = expect_object(raw, here)
        kind = inner.get("type")
        if kind == "text":
            text = expect_str(inner.get("text"), f"{here}.text")
            parts.append(TextPart(text=text, cache=marks.read(inner, here)))
        elif kind == "image":
            parts.append(replace(_image(inner, here), cache=marks.read(inner, here)))
        else:
            raise bad_request(f"{here}.type: expected 'text' or 'image' here", f"{here}.type")
    own = marks.read(block, where)
    if own is not None:
        parts[-1] = replace(parts[-1], cache=own)
    failed = bool(optional_bool(block, "is_error", f"{where}."))
    content: str | tuple[Part, ...] = tuple(parts)
    if all(isinstance(p, TextPart) and p.cache is None for p in parts):
        content = "\n".join(p.text for p in parts if isinstance(p, TextPart))
    return Message(role="tool", content=content, tool_call_id=call_id, tool_error=failed)


def _system_turn(body: dict[str, Any], where: str, marks: Breakpoints) -> Message:
    """A mid-conversation system message (text only), kept where it stands with its markers."""
    content = body.get("content")
    if isinstance(content, str):
        return Message(role="system", content=content)
    parts = []
    for i, raw in enumerate(expect_list(content, f"{where}.content")):
        here = f"{where}.content[{i}]"
        block = expect_object(raw, here)
        if block.get("type") != "text":
            raise bad_request(f"{here}.type: a system message takes text blocks only", here)
        text = expect_str(block.get("text"), f"{here}.text")
        parts.append(TextPart(text=text, cache=marks.read(block, here)))
    return Message(role="system", content=tuple(parts))


def _turn(raw: Any, where: str, marks: Breakpoints) -> list[Message]:
    """One Messages turn as our messages: tool results become tool messages, and a system
    message stays a system message where it stands."""
    body = expect_object(raw, where)
    role = body.get("role")
    if role == "system":
        return [_system_turn(body, where, marks)]
    if role not in ("user", "assistant"):
        raise bad_request(
            f"{where}.role: expected 'user', 'assistant' or 'system', got {role!r}", where
        )
    content = body.get("content")
    if isinstance(content, str):
        return [Message(role=role, content=content)]
    blocks = expect_list(content, f"{where}.content")
    out: list[Message] = []
    parts: list[Part] = []
    calls: list[ToolCall] = []
    thinking: list[Reasoning] = []
    for i, item in enumerate(blocks):
        here = f"{where}.content[{i}]"
        block = expect_object(item, here)
        kind = block.get("type")
        if not isinstance(kind, str):  # a list or object is no type, nor a set member
            raise bad_request(f"{here}.type: expected a block type, got {kind!r}", f"{here}.type")
        if kind == "text":
            text = expect_str(block.get("text"), f"{here}.text")
            parts.append(TextPart(text=text, cache=marks.read(block, here)))
        elif kind == "image":
            parts.append(replace(_image(block, here), cache=marks.read(block, here)))
        elif kind == "tool_use" and role == "assistant":
            calls.append(
                ToolCall(
                    id=expect_str(block.get("id"), f"{here}.id"),
                    name=expect_str(block.get("name"), f"{here}.name"),
                    arguments=orjson.dumps(
                        shallow(block.get("input", {}), f"{here}.input")
                    ).decode(),
                    cache=marks.read(block, here),
                )
            )
        elif kind == "tool_result" and role == "user":
            out.append(_tool_result(block, here, marks))
        elif kind in anthropic_thinking.BLOCK_TYPES and role == "assistant":
            thinking.append(anthropic_thinking.read_block(block, here))
        else:
            raise bad_request(f"{here}.type: {kind!r} is not supported in a {role} turn", here)
    if parts or calls or thinking or not out:
        out.append(
            Message(
                role=role,
                content=tuple(parts),
                tool_calls=tuple(calls),
                thinking=tuple(thinking),
            )
        )
    return out


def _tools(raw: Any, marks: Breakpoints) -> tuple[Tool, ...]:
    tools = []
    for i, item in enumerate(expect_list(raw, "tools")):
        tool = expect_object(item, f"tools[{i}]")
        kind = tool.get("type")
        if kind not in (None, "custom"):  # a server tool runs on Anthropic's side alone
            raise bad_request(
                f"tools[{i}].type: {kind!r} is not supported: this gateway takes the caller's "
                "own tools (name, description, input_schema), not server tools",
                f"tools[{i}].type",
            )
        reject_unknown(tool, _TOOL_FIELDS, _TOOL_NEUTRAL, f"tools[{i}].")
        tools.append(
            Tool(
                name=expect_str(tool.get("name"), f"tools[{i}].name"),
                description=optional_str(tool, "description") or "",
                parameters=expect_object(
                    shallow(tool.get("input_schema"), f"tools[{i}].input_schema"),
                    f"tools[{i}].input_schema",
                ),
                strict=optional_bool(tool, "strict", f"tools[{i}]."),
                cache=marks.read(tool, f"tools[{i}]"),
            )
        )
    return tuple(tools)


def _tool_choice(raw: Any) -> tuple[str | None, bool | None]:
    if raw is None:
        return None, None
    choice = expect_object(raw, "tool_choice")
    kind = choice.get("type")
    parallel = (
        None
        if choice.get("disable_parallel_tool_use") is None
        else not choice["disable_parallel_tool_use"]
    )
    if kind == "auto":
        return "auto", parallel
    if kind == "any":
        return "required", parallel
    if kind == "none":
        return "none", parallel
    if kind == "tool":
        return expect_str(choice.get("name"), "tool_choice.name"), parallel
    raise bad_request("tool_choice.type: expected auto, any, tool or none", "tool_choice.type")


def parse_messages(body: Any, *, max_messages: int) -> MessagesCall:
    """A Messages request body as a MessagesCall; 400 naming the field otherwise."""
    body = expect_object(body, "body")
    reject_unknown(body, _FIELDS, _NEUTRAL)
    target = expect_str(body.get("model"), "model")
    max_tokens = optional_int(body, "max_tokens", 1, 10_000_000)
    if max_tokens is None:
        raise bad_request("max_tokens: required", "max_tokens")
    metadata_raw = body.get("metadata")
    metadata: dict[str, str] = {}
    if metadata_raw is not None:
        user_id = optional_str(expect_object(metadata_raw, "metadata"), "user_id", "metadata.")
        if user_id:
            metadata["user_id"] = user_id
    tier = optional_str(body, "service_tier")
    if tier is not None and tier not in _TIERS:
        raise bad_request(
            f"service_tier: expected auto or standard_only, got {tier!r}", "service_tier"
        )
    stops = body.get("stop_sequences") or []
    request = prompt_request(
        body,
        max_messages=max_messages,
        temperature=optional_number(body, "temperature", 0, 1),
        top_p=optional_number(body, "top_p", 0, 1),
        max_tokens=max_tokens,
        stop=tuple(
            expect_str(s, f"stop_sequences[{i}]")
            for i, s in enumerate(expect_list(stops, "stop_sequences"))
        ),
        metadata=metadata,
    )
    return MessagesCall(target=target, request=request, stream=bool(optional_bool(body, "stream")))


def prompt_request(
    body: dict[str, Any],
    *,
    max_messages: int,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    stop: tuple[str, ...] = (),
    metadata: dict[str, str] | None = None,
) -> ChatRequest:
    """The prompt a Messages body carries (messages, system, tools, tool_choice, with their
    cache breakpoints; thinking, output_config, context_management) as a ChatRequest with the
    settings given; 400 naming the field otherwise. What /v1/messages and
    /v1/messages/count_tokens both read."""
    raw_turns = expect_list(body.get("messages"), "messages", non_empty=True)
    if len(raw_turns) > max_messages:
        raise bad_request(f"messages: at most {max_messages} messages", "messages")
    # Counted in the API's cache order (tools, system, messages), so the 400 for a fifth
    # breakpoint names the one Anthropic would.
    marks = Breakpoints()
    tools = _tools(body["tools"], marks) if body.get("tools") else ()
    system, system_cache = system_prompt(body.get("system"), marks)
    messages: list[Message] = []
    for i, turn in enumerate(raw_turns):
        messages.extend(_turn(turn, f"messages[{i}]", marks))
    tool_choice, parallel = _tool_choice(body.get("tool_choice"))
    effort, response_format = anthropic_settings.read_output_config(body.get("output_config"))
    return ChatRequest(
        messages=tuple(messages),
        system=system,
        system_cache=system_cache,
        thinking=anthropic_thinking.read_thinking(body.get("thinking")),
        effort=effort,
        context_management=anthropic_settings.read_context_management(
            body.get("context_management")
        ),
        response_format=response_format,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        metadata=metadata or {},
    )
