"""OpenAI Chat Completions and Embeddings: pure translation to and from the wire, no I/O.

The same format serves every OpenAI-compatible server (vLLM, Ollama, llama.cpp server, Groq,
Together, OpenRouter, Azure OpenAI); where they differ from OpenAI the reader is lenient and
says so in a comment. Decisions worth knowing:

- The output cap goes out as `max_completion_tokens`, OpenAI's current name (its reasoning
  models reject `max_tokens`). Servers that only know the old name (Ollama silently ignores the
  new one) get `OpenAIWire(max_tokens_field="max_tokens")`.
- `ChatRequest.metadata` is ours (budgets, tracing) and is not sent: OpenAI accepts `metadata`
  only together with `store: true`, which would keep the conversation on OpenAI's side.
- A refusal (`message.refusal`, structured outputs) becomes the choice's text with finish
  reason `content_filter`, so callers can tell it from an answer without losing its words.
- A choice that carries tool calls finishes with `tool_calls` even when OpenAI says `stop`
  (it does so when `tool_choice` names a function); legacy `function_call` maps the same way.
- An unknown or missing finish reason is a BadResponseError: an answer whose end we cannot
  vouch for is never passed on as complete.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import orjson

from modelyard.errors import BadRequestError, BadResponseError, ModelError
from modelyard.providers.headers import RateLimitInfo, openai_rate_limits
from modelyard.providers.openai_errors import error_from_wire, read_error, stream_error
from modelyard.providers.sse import Event
from modelyard.providers.wire import ParsedEmbeddings, ParsedResponse, body_excerpt, require
from modelyard.types import (
    ChatRequest,
    Choice,
    Chunk,
    EmbeddingRequest,
    FinishReason,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    TokenLogprob,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
)

MaxTokensField = Literal["max_completion_tokens", "max_tokens"]

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}
"""OpenAI's finish reasons (every value its API documents) mapped onto ours."""

_TOOL_CHOICES = ("auto", "none", "required")

# --- request ---------------------------------------------------------------------------------


def to_wire(
    request: ChatRequest,
    model_id: str,
    *,
    stream: bool,
    max_tokens_field: MaxTokensField = "max_completion_tokens",
) -> dict[str, Any]:
    """The Chat Completions request body for `request`."""
    body: dict[str, Any] = {"model": model_id, "messages": messages_to_wire(request)}
    if request.tools:
        body["tools"] = [tool_to_wire(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice_to_wire(request.tool_choice)
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None:
        body["response_format"] = response_format_to_wire(request.response_format)
    optional: dict[str, Any] = {
        "temperature": request.temperature,
        "top_p": request.top_p,
        max_tokens_field: request.max_tokens,
        "seed": request.seed,
        "top_logprobs": request.top_logprobs,
    }
    body.update((key, value) for key, value in optional.items() if value is not None)
    if request.stop:
        body["stop"] = list(request.stop)
    if request.n != 1:
        body["n"] = request.n
    if request.logprobs:
        body["logprobs"] = True
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def messages_to_wire(request: ChatRequest) -> list[dict[str, Any]]:
    """The `messages` array: the request's system prompt first, then each message."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    out.extend(message_to_wire(m, i) for i, m in enumerate(request.messages))
    return out


def message_to_wire(message: Message, index: int = 0) -> dict[str, Any]:
    """One message in OpenAI's shape; BadRequestError for what the API cannot carry."""
    role = message.role
    out: dict[str, Any] = {"role": role}
    if role == "user":
        out["content"] = _user_content(message.content)
    elif role == "tool":
        if not message.tool_call_id:
            raise BadRequestError(f"messages[{index}]: a tool message needs tool_call_id")
        out["tool_call_id"] = message.tool_call_id
        out["content"] = _text_content(message.content, index)
    elif role == "assistant" and message.tool_calls:
        out["content"] = _text_content(message.content, index) or None
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in message.tool_calls
        ]
    else:
        out["content"] = _text_content(message.content, index)
    if message.name is not None and role != "tool":
        out["name"] = message.name
    return out


def _user_content(content: str | tuple[Part, ...]) -> str | list[dict[str, Any]]:
    if isinstance(content, str):
        return content
    return [_part(part) for part in content]


def _part(part: Part) -> dict[str, Any]:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    image: dict[str, Any] = {"url": part.url}
    if part.detail is not None:
        image["detail"] = part.detail
    return {"type": "image_url", "image_url": image}


def _text_content(content: str | tuple[Part, ...], index: int) -> str | list[dict[str, Any]]:
    """Content for roles that take text only (system, assistant, tool)."""
    if isinstance(content, str):
        return content
    if any(isinstance(part, ImagePart) for part in content):
        raise BadRequestError(
            f"messages[{index}]: only user messages may carry images in the OpenAI API"
        )
    return [_part(part) for part in content]


def tool_to_wire(tool: Tool) -> dict[str, Any]:
    """A function tool definition."""
    function: dict[str, Any] = {"name": tool.name}
    if tool.description:
        function["description"] = tool.description
    # OpenAI rejects an empty `parameters` object; leaving it out means "no parameters".
    if tool.parameters:
        function["parameters"] = dict(tool.parameters)
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def tool_choice_to_wire(choice: str) -> str | dict[str, Any]:
    """`auto`, `none`, `required`, or the named function the model must call."""
    if choice in _TOOL_CHOICES:
        return choice
    return {"type": "function", "function": {"name": choice}}


def response_format_to_wire(fmt: ResponseFormat) -> dict[str, Any]:
    """Plain text, JSON mode, or structured outputs with a JSON schema."""
    if fmt.type != "json_schema":
        return {"type": fmt.type}
    schema: dict[str, Any] = {"name": fmt.name or "response"}
    if fmt.schema is not None:
        schema["schema"] = dict(fmt.schema)
    if fmt.strict is not None:
        schema["strict"] = fmt.strict
    return {"type": "json_schema", "json_schema": schema}


# --- response --------------------------------------------------------------------------------


def from_wire(body: Any) -> ParsedResponse:
    """The answer in a decoded chat.completion body; BadResponseError naming what is wrong."""
    _raise_if_error(body, "choices")
    raw_choices = require(body, "choices", list, "response")
    if not raw_choices:
        raise BadResponseError("field response.choices is empty")
    choices = tuple(_choice(raw, f"response.choices[{i}]") for i, raw in enumerate(raw_choices))
    usage = body.get("usage")
    created = body.get("created")
    fingerprint = body.get("system_fingerprint")
    return ParsedResponse(
        id=require(body, "id", str, "response"),
        provider_model=require(body, "model", str, "response"),
        choices=tuple(sorted(choices, key=lambda c: c.index)),
        # Some compatible servers leave usage out; the adapter then estimates it.
        usage=usage_from_wire(usage, "response.usage") if usage else Usage(estimated=True),
        created=created if isinstance(created, int) else 0,
        system_fingerprint=fingerprint if isinstance(fingerprint, str) else None,
    )


def _raise_if_error(body: Any, expected: str) -> None:
    # Some proxies answer 200 with an error object instead of the answer.
    info = read_error(body) if isinstance(body, dict) and expected not in body else None
    if info is not None:
        raise stream_error(info)


def _choice(raw: Any, where: str) -> Choice:
    index = require(raw, "index", int, where)
    message = require(raw, "message", dict, where)
    content = _message_text(message.get("content"), f"{where}.message.content")
    refusal = message.get("refusal")
    calls = _tool_calls(message, f"{where}.message")
    if isinstance(refusal, str) and refusal:
        content = content or refusal
    reason = finish_reason(
        raw.get("finish_reason"),
        f"{where}.finish_reason",
        tool_calls=bool(calls),
        refused=bool(refusal),
    )
    logprobs = raw.get("logprobs")
    return Choice(
        index=index,
        message=Message(role="assistant", content=content, tool_calls=calls),
        finish_reason=reason,
        logprobs=logprobs_from_wire(logprobs, f"{where}.logprobs") if logprobs else None,
    )


def _message_text(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    # A few compatible servers answer with a list of text parts.
    if isinstance(content, list):
        return "".join(
            require(part, "text", str, f"{where}[{i}]")
            for i, part in enumerate(content)
            if isinstance(part, dict) and part.get("type") == "text"
        )
    raise BadResponseError(f"field {where} has type {type(content).__name__}, expected str")


def _tool_calls(message: dict[str, Any], where: str) -> tuple[ToolCall, ...]:
    raw_calls = message.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise BadResponseError(f"field {where}.tool_calls is not a list")
    calls = []
    for i, raw in enumerate(raw_calls):
        at = f"{where}.tool_calls[{i}]"
        function = require(raw, "function", dict, at)
        calls.append(
            ToolCall(
                id=require(raw, "id", str, at),
                name=require(function, "name", str, f"{at}.function"),
                arguments=require(function, "arguments", str, f"{at}.function"),
            )
        )
    legacy = message.get("function_call")
    if isinstance(legacy, dict) and not calls:
        at = f"{where}.function_call"
        calls.append(
            ToolCall(
                id="",
                name=require(legacy, "name", str, at),
                arguments=require(legacy, "arguments", str, at),
            )
        )
    return tuple(calls)


def finish_reason(value: Any, where: str, *, tool_calls: bool, refused: bool) -> FinishReason:
    """Our finish reason for OpenAI's; BadResponseError for a missing or unknown one."""
    if value is None:
        raise BadResponseError(f"{where} is missing: the answer may be incomplete")
    reason = FINISH_REASONS.get(value) if isinstance(value, str) else None
    if reason is None:
        raise BadResponseError(
            f"{where} is {value!r}, which the OpenAI API does not define; "
            f"expected one of {', '.join(FINISH_REASONS)}",
            code="unknown_finish_reason",
        )
    if refused and reason is FinishReason.STOP:
        return FinishReason.CONTENT_FILTER
    if tool_calls and reason is FinishReason.STOP:
        return FinishReason.TOOL_CALLS
    return reason


def usage_from_wire(raw: Any, where: str) -> Usage:
    """Token counts, with cached prompt tokens and reasoning tokens when reported."""
    prompt_details = raw.get("prompt_tokens_details") if isinstance(raw, dict) else None
    output_details = raw.get("completion_tokens_details") if isinstance(raw, dict) else None
    return Usage(
        input_tokens=require(raw, "prompt_tokens", int, where),
        output_tokens=require(raw, "completion_tokens", int, where),
        cached_tokens=_detail(prompt_details, "cached_tokens"),
        reasoning_tokens=_detail(output_details, "reasoning_tokens"),
    )


def _detail(details: Any, key: str) -> int:
    value = details.get(key) if isinstance(details, dict) else None
    return value if isinstance(value, int) else 0


def logprobs_from_wire(raw: Any, where: str) -> tuple[TokenLogprob, ...]:
    """The `logprobs.content` tokens with their top alternatives."""
    content = raw.get("content") if isinstance(raw, dict) else None
    if content is None:
        return ()
    if not isinstance(content, list):
        raise BadResponseError(f"field {where}.content is not a list")
    out = []
    for i, item in enumerate(content):
        at = f"{where}.content[{i}]"
        top = (item.get("top_logprobs") or []) if isinstance(item, dict) else []
        out.append(
            TokenLogprob(
                token=require(item, "token", str, at),
                logprob=float(require(item, "logprob", (int, float), at)),
                top=tuple(
                    (
                        require(alt, "token", str, f"{at}.top_logprobs[{j}]"),
                        float(require(alt, "logprob", (int, float), f"{at}.top_logprobs[{j}]")),
                    )
                    for j, alt in enumerate(top)
                ),
            )
        )
    return tuple(out)


# --- stream ----------------------------------------------------------------------------------


class StreamDecoder:
    """Turns chat.completion.chunk events into chunks; `[DONE]` ends the stream."""

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self.provider_model: str | None = None
        self.response_id: str | None = None
        self.created = 0
        self.system_fingerprint: str | None = None
        self._refused: set[int] = set()
        self._called: set[int] = set()

    def feed(self, event: Event) -> Sequence[Chunk]:
        """The chunks one event carries."""
        data = event.data.strip()
        if data == "[DONE]":
            self.done = True
            return ()
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError:
            raise BadResponseError(
                f"stream event is not JSON: {body_excerpt(data.encode())!r}",
                code="malformed_chunk",
            ) from None
        info = read_error(body)
        if info is not None:
            raise stream_error(info)
        raw_choices = require(body, "choices", list, "chunk")
        self._note(body)
        return [
            chunk
            for i, raw in enumerate(raw_choices)
            if (chunk := self._chunk(raw, f"chunk.choices[{i}]")) is not None
        ]

    def _note(self, body: dict[str, Any]) -> None:
        if self.response_id is None and isinstance(body.get("id"), str):
            self.response_id = body["id"]
        if self.provider_model is None and isinstance(body.get("model"), str):
            self.provider_model = body["model"]
        if not self.created and isinstance(body.get("created"), int):
            self.created = body["created"]
        if isinstance(body.get("system_fingerprint"), str):
            self.system_fingerprint = body["system_fingerprint"]
        usage = body.get("usage")
        groq = body.get("x_groq")
        if not usage and isinstance(groq, dict):
            usage = groq.get("usage")  # Groq reports stream usage here instead
        if usage:
            self.usage = usage_from_wire(usage, "chunk.usage")

    def _chunk(self, raw: Any, where: str) -> Chunk | None:
        index = require(raw, "index", int, where)
        delta = raw.get("delta") or {}
        if not isinstance(delta, dict):
            raise BadResponseError(f"field {where}.delta is not an object")
        text = delta.get("content") or ""
        refusal = delta.get("refusal")
        if isinstance(refusal, str) and refusal:
            self._refused.add(index)
            text += refusal
        if not isinstance(text, str):
            raise BadResponseError(f"field {where}.delta.content is not a string")
        calls = _tool_call_deltas(delta, f"{where}.delta")
        if calls:
            self._called.add(index)
        reason = None
        if raw.get("finish_reason") is not None:
            reason = finish_reason(
                raw["finish_reason"],
                f"{where}.finish_reason",
                tool_calls=index in self._called,
                refused=index in self._refused,
            )
        logprobs = raw.get("logprobs")
        tokens = logprobs_from_wire(logprobs, f"{where}.logprobs") if logprobs else ()
        if not (text or calls or reason or tokens):
            return None
        return Chunk(
            index=index, text=text, tool_calls=calls, finish_reason=reason, logprobs=tokens
        )


def _tool_call_deltas(delta: dict[str, Any], where: str) -> tuple[ToolCallDelta, ...]:
    raw_calls = delta.get("tool_calls") or []
    if not isinstance(raw_calls, list):
        raise BadResponseError(f"field {where}.tool_calls is not a list")
    out = []
    for i, raw in enumerate(raw_calls):
        at = f"{where}.tool_calls[{i}]"
        function = (raw.get("function") or {}) if isinstance(raw, dict) else {}
        call_id, name, arguments = raw.get("id"), function.get("name"), function.get("arguments")
        out.append(
            ToolCallDelta(
                index=require(raw, "index", int, at),
                id=call_id if isinstance(call_id, str) else None,
                name=name if isinstance(name, str) else None,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    legacy = delta.get("function_call")
    if isinstance(legacy, dict) and not out:
        name, arguments = legacy.get("name"), legacy.get("arguments")
        out.append(
            ToolCallDelta(
                index=0,
                name=name if isinstance(name, str) else None,
                arguments=arguments if isinstance(arguments, str) else "",
            )
        )
    return tuple(out)


# --- embeddings ------------------------------------------------------------------------------


def embeddings_to_wire(request: EmbeddingRequest, model_id: str) -> dict[str, Any]:
    """The embeddings request body: float vectors, `dimensions` when asked."""
    body: dict[str, Any] = {
        "model": model_id,
        "input": list(request.inputs),
        "encoding_format": "float",
    }
    if request.dimensions is not None:
        body["dimensions"] = request.dimensions
    return body


def embeddings_from_wire(body: Any) -> ParsedEmbeddings:
    """The vectors of a decoded embeddings body, in input order."""
    _raise_if_error(body, "data")
    data = require(body, "data", list, "response")
    indexed: dict[int, tuple[float, ...]] = {}
    for i, item in enumerate(data):
        at = f"response.data[{i}]"
        vector = require(item, "embedding", list, at)
        if not all(isinstance(x, int | float) for x in vector):
            raise BadResponseError(f"field {at}.embedding holds something other than numbers")
        indexed[require(item, "index", int, at)] = tuple(float(x) for x in vector)
    if sorted(indexed) != list(range(len(data))):
        raise BadResponseError(
            f"response.data has indexes {sorted(indexed)}; expected 0..{len(data) - 1}"
        )
    usage = body.get("usage")
    tokens = require(usage, "prompt_tokens", int, "response.usage") if usage else 0
    return ParsedEmbeddings(
        provider_model=require(body, "model", str, "response"),
        vectors=tuple(indexed[i] for i in range(len(data))),
        usage=Usage(input_tokens=tokens, estimated=not usage),
    )


# --- the wire format object ------------------------------------------------------------------


class OpenAIWire:
    """The OpenAI wire format as the adapters use it (`WireFormat` and `EmbeddingWireFormat`)."""

    name = "openai"
    requires_max_tokens = False

    def __init__(self, *, max_tokens_field: MaxTokensField = "max_completion_tokens") -> None:
        self.max_tokens_field: MaxTokensField = max_tokens_field

    def url(self, base_url: str, model_id: str, *, stream: bool) -> str:
        """`{base_url}/chat/completions`, for streams too."""
        return f"{base_url.rstrip('/')}/chat/completions"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """`Authorization: Bearer <key>`."""
        return {"Authorization": f"Bearer {api_key}"}

    def default_headers(self) -> dict[str, str]:
        """JSON in, JSON or SSE out."""
        return {"Content-Type": "application/json"}

    def to_wire(self, request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
        """The chat request body."""
        return to_wire(request, model_id, stream=stream, max_tokens_field=self.max_tokens_field)

    def from_wire(self, body: Any) -> ParsedResponse:
        """The parsed chat.completion."""
        return from_wire(body)

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for one stream."""
        return StreamDecoder()

    def error_from_wire(self, status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
        """The error an HTTP error response means."""
        return error_from_wire(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """The `x-ratelimit-*` quota."""
        return openai_rate_limits({k.lower(): v for k, v in headers.items()})

    def embeddings_url(self, base_url: str, model_id: str) -> str:
        """`{base_url}/embeddings`."""
        return f"{base_url.rstrip('/')}/embeddings"

    def embeddings_to_wire(self, request: EmbeddingRequest, model_id: str) -> dict[str, Any]:
        """The embeddings request body."""
        return embeddings_to_wire(request, model_id)

    def embeddings_from_wire(self, body: Any) -> ParsedEmbeddings:
        """The parsed embeddings."""
        return embeddings_from_wire(body)


WIRE = OpenAIWire()
"""The OpenAI wire format with OpenAI's own defaults."""

__all__ = [
    "FINISH_REASONS",
    "WIRE",
    "OpenAIWire",
    "StreamDecoder",
    "embeddings_from_wire",
    "embeddings_to_wire",
    "error_from_wire",
    "finish_reason",
    "from_wire",
    "logprobs_from_wire",
    "message_to_wire",
    "messages_to_wire",
    "response_format_to_wire",
    "to_wire",
    "tool_choice_to_wire",
    "tool_to_wire",
    "usage_from_wire",
]
