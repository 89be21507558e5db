"""OpenAI Chat Completions and Embeddings: the `WIRE` object and the requests it writes.

The same format serves every OpenAI-compatible server (vLLM, Ollama, llama.cpp server, Groq,
Together, OpenRouter, Azure OpenAI). Answers are read in `openai_response.py` and errors in
`openai_errors.py`; this module re-exports both, so it is the one place to import from.
Decisions worth knowing:

- The output cap goes out as `max_completion_tokens`, OpenAI's current name (its reasoning
  models reject `max_tokens`). Servers that only know the old name (Ollama silently ignores the
  new one) get `OpenAIWire(max_tokens_field="max_tokens")` (config: `max_tokens_field`).
- `ChatRequest.metadata` is ours (budgets, tracing) and is not sent: OpenAI accepts `metadata`
  only together with `store: true`, which would keep the conversation on OpenAI's side. The end
  user it names is sent (`end_user`): `user` and `safety_identifier` as the caller gave them,
  Anthropic's `user_id` as `user` (a Claude Code id is longer than the 128 characters
  `safety_identifier` takes, and OpenAI-compatible servers know `user`).
- `tool_choice` and `parallel_tool_calls` are sent only with tools: OpenAI refuses them alone.
  A `tool_choice` no tool can answer (`required` or a name, without tools or naming none of
  them) is a BadRequestError naming it (`wire.check_tool_choice`), as on every wire format.
- `ChatRequest.thinking` with a budget becomes `reasoning_effort` (under 4,096 tokens `low`,
  under 16,384 `medium`, else `high`: Claude Code's "think", "think hard" and "ultrathink"
  land on one each); `adaptive` and `disabled` leave the model's default. `ChatRequest.effort`
  (a client's `reasoning_effort`, or Anthropic's `output_config.effort`) is sent as
  `reasoning_effort` itself (Anthropic's `max` as `xhigh`) and wins over a budget's.
  `RemoteModel` sends either only to a model whose `capabilities.reasoning` is on (off by
  default: most models behind this wire refuse the field). Reasoning blocks in an assistant
  message's history (`Message.thinking`) are not sent: they are signed by the provider that
  wrote them, and Chat Completions has no place for them.
- System messages are sent where they stand, as `system` messages (`ChatRequest.system`
  first); `context_management` (Anthropic's) is never sent (`RemoteModel` drops it, and says so).
- A failed tool's result (`Message.tool_error`, Anthropic's `is_error`) has no mark in Chat
  Completions: its text says it, starting `Error: ` unless it already starts with "error", or
  the model would read the error as the tool's output.
- Prompt-cache breakpoints (`TextPart.cache`, `Tool.cache`, `ChatRequest.system_cache`...) are
  not sent: OpenAI caches long prompt prefixes on its own and takes no markers (its reads come
  back as `cached_tokens`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from modelyard.errors import BadRequestError, BadResponseError, ModelError
from modelyard.providers.headers import RateLimitInfo, openai_rate_limits
from modelyard.providers.openai_errors import error_from_wire
from modelyard.providers.openai_response import (
    FINISH_REASONS,
    StreamDecoder,
    finish_reason,
    from_wire,
    logprobs_from_wire,
    raise_if_error,
    usage_from_wire,
)
from modelyard.providers.wire import (
    ParsedEmbeddings,
    ParsedResponse,
    check_logprobs,
    check_tool_choice,
    require,
)
from modelyard.types import (
    ChatRequest,
    EmbeddingRequest,
    ImagePart,
    Message,
    Part,
    ResponseFormat,
    TextPart,
    Tool,
    Usage,
)

MaxTokensField = Literal["max_completion_tokens", "max_tokens"]

_TOOL_CHOICES = ("auto", "none", "required")

EFFORTS: tuple[tuple[int, str], ...] = ((4096, "low"), (16384, "medium"))
"""A thinking budget below each bound maps to that `reasoning_effort`; larger ones to `high`."""

# --- request ---------------------------------------------------------------------------------


def to_wire(
    request: ChatRequest,
    model_id: str,
    *,
    stream: bool,
    max_tokens_field: MaxTokensField = "max_completion_tokens",
) -> dict[str, Any]:
    """The Chat Completions request body for `request`."""
    check_tool_choice(request)
    check_logprobs(request)
    body: dict[str, Any] = {"model": model_id, "messages": messages_to_wire(request)}
    if request.tools:
        body["tools"] = [tool_to_wire(tool) for tool in request.tools]
        if request.tool_choice is not None:
            body["tool_choice"] = tool_choice_to_wire(request.tool_choice)
        if request.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = request.parallel_tool_calls
    if request.response_format is not None:
        body["response_format"] = response_format_to_wire(request.response_format)
    if request.effort is not None:
        body["reasoning_effort"] = "xhigh" if request.effort == "max" else request.effort
    elif request.thinking is not None and request.thinking.type == "enabled":
        body["reasoning_effort"] = reasoning_effort(request.thinking.budget_tokens)
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
    if request.metadata:
        body.update(end_user(request.metadata))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def end_user(metadata: Mapping[str, str]) -> dict[str, str]:
    """The fields naming the end user (for OpenAI's abuse monitoring) that `metadata` holds:
    `user` and `safety_identifier` as a Chat Completions or Responses caller sent them, else a
    Messages caller's `user_id` as `user`."""
    named = {key: metadata[key] for key in ("user", "safety_identifier") if metadata.get(key)}
    if not named and metadata.get("user_id"):
        named["user"] = metadata["user_id"]
    return named


def reasoning_effort(budget_tokens: int | None) -> str:
    """The `reasoning_effort` a thinking budget comes closest to (`medium` without one)."""
    if budget_tokens is None:
        return "medium"
    return next((effort for bound, effort in EFFORTS if budget_tokens < bound), "high")


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
        out["content"] = _text_content(message.content, index)  # refuses an image
        if message.tool_error:
            out["content"] = _said_failed(message.text)
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


FAILED_PREFIX = "Error: "
"""What a failed tool's result starts with (Chat Completions has no `is_error`)."""


def _said_failed(text: str) -> str:
    """A failed tool's result, its text saying so unless it starts by saying it."""
    return text if text.lstrip().lower().startswith("error") else FAILED_PREFIX + text


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
    raise_if_error(body, "data")
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
    unsent = frozenset({"context_management"})

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
    "end_user",
    "error_from_wire",
    "finish_reason",
    "from_wire",
    "logprobs_from_wire",
    "message_to_wire",
    "messages_to_wire",
    "reasoning_effort",
    "response_format_to_wire",
    "to_wire",
    "tool_choice_to_wire",
    "tool_to_wire",
    "usage_from_wire",
]
