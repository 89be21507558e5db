"""The Anthropic Messages API as the gateway serves it, so Anthropic SDK users reach the same
systems: Messages JSON in, ChatRequest out; ChatResponse and chunks in, Messages JSON and the
streaming event sequence out."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import orjson

from modelyard.gateway import anthropic_thinking
from modelyard.gateway.anthropic_cache import Breakpoints, system_prompt
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
)
from modelyard.types import (
    ChatRequest,
    ChatResponse,
    Chunk,
    FinishReason,
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
    }
)
_NEUTRAL: dict[str, Any] = {"top_k": None}

STOP_REASONS = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    503: "overloaded_error",
}


@dataclass(frozen=True, slots=True)
class MessagesCall:
    """A parsed Messages call."""

    target: str
    request: ChatRequest
    stream: bool


def _text_of(content: Any, where: str) -> str:
    if isinstance(content, str):
        return content
    blocks = expect_list(content, where)
    texts = []
    for i, raw in enumerate(blocks):
        block = expect_object(raw, f"{where}[{i}]")
        if block.get("type") != "text":
            raise bad_request(f"{where}[{i}].type: expected 'text' here", where)
        texts.append(expect_str(block.get("text"), f"{where}[{i}].text"))
    return "\n".join(texts)


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
    """A tool_result block as a tool message. Its breakpoints ride on its parts: the block's own
    on the last one, since the cached prefix ends with the result either way."""
    result = block.get("content") or ""
    call_id = expect_str(block.get("tool_use_id"), f"{where}.tool_use_id")
    text = _text_of(result, f"{where}.content")
    inner: list[dict[str, Any]] = result if isinstance(result, list) else [{"text": text}]
    ttls = [marks.read(b, f"{where}.content[{i}]") for i, b in enumerate(inner)]
    own = marks.read(block, where)
    if own is None and not any(ttls):
        return Message(role="tool", content=text, tool_call_id=call_id)
    parts = [TextPart(text=b["text"], cache=ttl) for b, ttl in zip(inner, ttls, strict=True)]
    if own is not None:
        parts[-1] = replace(parts[-1], cache=own)
    return Message(role="tool", content=tuple(parts), tool_call_id=call_id)


def _turn(raw: Any, where: str, marks: Breakpoints) -> list[Message]:
    """One Messages turn as our messages: tool results become tool messages."""
    body = expect_object(raw, where)
    role = body.get("role")
    if role not in ("user", "assistant"):
        raise bad_request(f"{where}.role: expected 'user' or 'assistant', got {role!r}", where)
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
        tools.append(
            Tool(
                name=expect_str(tool.get("name"), f"tools[{i}].name"),
                description=optional_str(tool, "description") or "",
                parameters=expect_object(
                    shallow(tool.get("input_schema"), f"tools[{i}].input_schema"),
                    f"tools[{i}].input_schema",
                ),
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
    cache breakpoints) as a ChatRequest with the settings given; 400 naming the field otherwise.
    What /v1/messages and /v1/messages/count_tokens both read."""
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
    return ChatRequest(
        messages=tuple(messages),
        system=system,
        system_cache=system_cache,
        thinking=anthropic_thinking.read_thinking(body.get("thinking")),
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        temperature=temperature,
        top_p=top_p,
        max_tokens=max_tokens,
        stop=stop,
        metadata=metadata or {},
    )


def _usage(response: ChatResponse) -> dict[str, Any]:
    usage = response.usage
    return {
        "input_tokens": usage.input_tokens - usage.cached_tokens - usage.cache_write_tokens,
        "output_tokens": usage.output_tokens,
        "cache_read_input_tokens": usage.cached_tokens,
        "cache_creation_input_tokens": usage.cache_write_tokens,
        "cache_creation": {
            "ephemeral_5m_input_tokens": usage.cache_write_tokens - usage.cache_write_1h_tokens,
            "ephemeral_1h_input_tokens": usage.cache_write_1h_tokens,
        },
    }


def _arguments(text: str) -> Any:
    try:
        return orjson.loads(text) if text else {}
    except orjson.JSONDecodeError:
        return {"_raw": text}


def render_message(response: ChatResponse, *, request_id: str, target: str) -> bytes:
    """A ChatResponse as a Messages `message` object (its first choice)."""
    message = response.message
    content = [anthropic_thinking.block(part) for part in message.thinking]
    if message.text:
        content.append({"type": "text", "text": message.text})
    for call in message.tool_calls:
        content.append(
            {
                "type": "tool_use",
                "id": call.id,
                "name": call.name,
                "input": _arguments(call.arguments),
            }
        )
    return orjson.dumps(
        {
            "id": f"msg_{request_id}",
            "type": "message",
            "role": "assistant",
            "model": target,
            "content": content,
            "stop_reason": STOP_REASONS[response.finish_reason],
            "stop_sequence": None,
            "usage": _usage(response),
        }
    )


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class EventRenderer:
    """Renders one stream's chunks as the Messages streaming event sequence."""

    def __init__(self, *, request_id: str, target: str) -> None:
        self._id = f"msg_{request_id}"
        self._target = target
        self._started = False
        self._block: int = -1
        self._block_kind: str | None = None
        self._tool_blocks: dict[int, int] = {}

    def _start(self) -> bytes:
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._target,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        return _event("message_start", {"message": message})

    def _close_block(self) -> bytes:
        if self._block_kind is None:
            return b""
        self._block_kind = None
        return _event("content_block_stop", {"index": self._block})

    def _open(self, kind: str, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block += 1
        self._block_kind = kind
        return out + _event("content_block_start", {"index": self._block, "content_block": block})

    def chunk(self, chunk: Chunk) -> bytes:
        """The events for one chunk (only the first choice exists in this API)."""
        out = b"" if self._started else self._start()
        if chunk.response is not None:
            return out + self._finish(chunk.response)
        if chunk.index != 0:
            return out
        if chunk.has_reasoning:
            out += self._reasoning(chunk)
        if chunk.text:
            if self._block_kind != "text":
                out += self._open("text", {"type": "text", "text": ""})
            out += _event(
                "content_block_delta",
                {"index": self._block, "delta": {"type": "text_delta", "text": chunk.text}},
            )
        for delta in chunk.tool_calls:
            if delta.index not in self._tool_blocks:
                out += self._open(
                    "tool_use",
                    {
                        "type": "tool_use",
                        "id": delta.id or "",
                        "name": delta.name or "",
                        "input": {},
                    },
                )
                self._tool_blocks[delta.index] = self._block
            if delta.arguments:
                out += _event(
                    "content_block_delta",
                    {
                        "index": self._tool_blocks[delta.index],
                        "delta": {"type": "input_json_delta", "partial_json": delta.arguments},
                    },
                )
        return out

    def _reasoning(self, chunk: Chunk) -> bytes:
        """A piece of reasoning: its thinking block opened if need be, a signature ending it
        (Anthropic sends it last), a redacted block whole."""
        out = b""
        if chunk.thinking or chunk.thinking_signature:
            if self._block_kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            if chunk.thinking:
                delta = {"type": "thinking_delta", "thinking": chunk.thinking}
                out += _event("content_block_delta", {"index": self._block, "delta": delta})
            if chunk.thinking_signature:
                delta = {"type": "signature_delta", "signature": chunk.thinking_signature}
                out += _event("content_block_delta", {"index": self._block, "delta": delta})
                out += self._close_block()
        if chunk.redacted_thinking:
            block = {"type": "redacted_thinking", "data": chunk.redacted_thinking}
            out += self._open("redacted_thinking", block) + self._close_block()
        return out

    def _finish(self, response: ChatResponse) -> bytes:
        out = self._close_block()
        delta = {"stop_reason": STOP_REASONS[response.finish_reason], "stop_sequence": None}
        out += _event("message_delta", {"delta": delta, "usage": _usage(response)})
        return out + _event("message_stop", {})

    def error(self, error: ApiError) -> bytes:
        """The in-band error event that ends a broken stream."""
        return b"event: error\ndata: " + orjson.dumps(error_body(error)) + b"\n\n"


def error_body(error: ApiError) -> dict[str, Any]:
    """Anthropic's error JSON."""
    kind = _ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}
