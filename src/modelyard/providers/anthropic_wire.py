"""Anthropic Messages API (`POST /v1/messages`, `anthropic-version: 2023-06-01`): the request.

`to_wire` turns a ChatRequest into a Messages body, its tools and JSON mode made in
`anthropic_tools.py`; answers, stream events and errors are read in `anthropic_answer.py` and
`anthropic_errors.py`, and token counts (`count_tokens`: the same body less what only an answer
needs) in `anthropic_count.py`. Choices this translation makes, since the two shapes do not map
one to one:

- **API version.** Pinned to 2023-06-01 with the key in `x-api-key`. The newer 2026-10-21 (the
  default of the official SDKs since 2.0) refuses `temperature`/`top_p` on every model, which
  OpenAI-shaped callers send routinely; on 2023-06-01 they still work on the models that take
  them (the newest models refuse them on any version: that 400 reaches the caller as a
  BadRequestError naming the field, so drop it for those models).

- **System.** `ChatRequest.system` and the system-role messages before the first turn, in
  order, joined by a blank line, become the top-level `system`. A system message after the
  first turn is sent where it stands, as a `{"role": "system"}` message (Anthropic's
  mid-conversation system messages: the cached prefix before it stays the same). Only models
  whose `capabilities.system_messages` is on get them there (off by default: Anthropic models
  before Claude Opus 4.8 refuse them); for the others `RemoteModel` moves them ahead of the
  first turn, into the top-level `system`.
- **Turns.** Tool-role messages become `tool_result` blocks in a user turn; consecutive
  same-role messages are merged into one turn (the API wants user and assistant to alternate),
  and in a merged user turn the `tool_result` blocks come first, as the API requires.
- **Prefill.** A trailing assistant message is sent as the start of the answer; the model
  continues it (capability `prefill`). Its trailing whitespace is stripped, which the API
  otherwise rejects; the answer returned is the continuation only, as the API returns it.
- **Tools and JSON mode.** `tools`, `tool_choice`, `parallel_tool_calls` and `response_format`
  are translated in `anthropic_tools.py`: JSON mode by a forced tool call, or with thinking on
  as native structured output (`output_config.format`).
- **Prompt caching.** A part's, tool call's or tool's `cache` and `ChatRequest.system_cache`
  become `cache_control: {"type": "ephemeral"}` on the same block (with `"ttl": "1h"` for the
  hour-long cache); a marked system prompt is sent as a list of text blocks, the marker on
  `ChatRequest.system`'s block, since a plain string cannot carry one. A text block that carries a
  marker is never folded into a plain-string `content`. The API refuses more than 4 breakpoints;
  that 400 reaches the caller as a BadRequestError.
- **Thinking.** `ChatRequest.thinking` goes out as `thinking` (`enabled` with its
  `budget_tokens`, `adaptive`, `disabled`, and `display` when set), and an assistant message's
  reasoning (`Message.thinking`) as its `thinking` / `redacted_thinking` blocks, unchanged and
  first in the turn, as the API requires when a tool-use turn is continued. The API's own rules
  (a budget of at least 1024 and below `max_tokens`, no temperature but 1, no forced tool use,
  no prefill) are left to its 400, which reaches the caller as a BadRequestError. JSON mode
  does not force a tool then (see `anthropic_tools.py`).
- **Effort.** `ChatRequest.effort` goes out as `output_config.effort` (OpenAI's `none` and
  `minimal`, which Anthropic does not take, as `low`).
- **Context management.** `ChatRequest.context_management` goes out as `context_management`,
  the JSON the caller gave, unchanged.
- **Betas.** The adapter sends the `anthropic-beta` names its own body needs (`beta_names`):
  context-management-2025-06-27 with `context_management`, interleaved-thinking-2025-05-14
  when the model thinks and has tools. A gateway client's own `anthropic-beta` is not
  forwarded: a beta can change the shapes of the answer (new block and event types) that
  `anthropic_answer.py` reads, so only the betas of fields this adapter writes are switched on.
  A provider's configured `headers` may add others; they are sent beside these.
- **End user.** The end user the request's metadata names goes out as `metadata.user_id`: a
  Messages caller's `user_id`, else an OpenAI caller's `safety_identifier` or `user`.
- **Refused, not dropped.** `n > 1`, `logprobs` and temperatures outside 0..1 raise
  BadRequestError, since the API cannot honour them. `seed`, a message's `name` and an image's
  `detail` are not sent: the API has none of them, and each is a hint that cannot make an
  answer wrong (a seed is best effort even at OpenAI); `RemoteModel` says so in the answer's
  decision (`unsent`, `request_fit`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import orjson

from modelyard.errors import BadRequestError, ModelError
from modelyard.providers import anthropic_answer, anthropic_count, anthropic_errors
from modelyard.providers.anthropic_blocks import Block, marked, message_blocks, plain_text
from modelyard.providers.anthropic_tools import native_format, native_json, tool_fields
from modelyard.providers.headers import RateLimitInfo, anthropic_rate_limits
from modelyard.providers.wire import ParsedResponse, StreamDecoder, check_logprobs
from modelyard.types import ChatRequest, Choice, Message, Thinking

API_VERSION = "2023-06-01"
CONTEXT_MANAGEMENT_BETA = "context-management-2025-06-27"
"""The beta `context_management` needs (the API refuses the field without it)."""
INTERLEAVED_THINKING_BETA = "interleaved-thinking-2025-05-14"
"""The beta that lets a model think between tool calls, not only before its first one."""
_LOWEST: dict[str, str] = {"none": "low", "minimal": "low"}
"""Effort levels Anthropic does not take, as the nearest one it does."""


@dataclass(slots=True)
class _Turn:
    role: str
    blocks: list[Block]


def to_wire(request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for `request`; BadRequestError for what the API cannot do."""
    _refuse_unsupported(request)
    check_logprobs(request)
    system: list[str] = []
    turns: list[_Turn] = []
    for position, message in enumerate(request.messages):
        if message.role == "system":
            _system_text(message, position)  # text only, wherever it stands
            if not turns:
                system.append(message.text)
                continue
        role = "user" if message.role == "tool" else message.role
        blocks = message_blocks(message, position)
        if not blocks:
            if role == "user":
                raise BadRequestError(
                    f"messages[{position}] ({message.role}) has no content; the Anthropic API "
                    "rejects empty messages",
                    code="empty_message",
                )
            continue  # an empty assistant turn carries nothing
        if turns and turns[-1].role == role:
            turns[-1].blocks.extend(blocks)
        else:
            turns.append(_Turn(role, blocks))
    if not turns:
        raise BadRequestError("the request has no user or assistant messages", code="no_messages")
    _strip_prefill(turns)
    body: dict[str, Any] = {
        "model": model_id,
        "max_tokens": request.max_tokens,
        "messages": [_turn_json(turn) for turn in turns],
    }
    if request.system or system:
        body["system"] = _system(request, system)
    body.update(tool_fields(request))
    if request.thinking is not None:
        body["thinking"] = _thinking(request.thinking)
    output_config = _output_config(request)
    if output_config:
        body["output_config"] = output_config
    if request.context_management is not None:
        body["context_management"] = orjson.loads(request.context_management.json)
    if request.temperature is not None:
        body["temperature"] = request.temperature
    if request.top_p is not None:
        body["top_p"] = request.top_p
    if request.stop:
        body["stop_sequences"] = list(request.stop)
    user_id = end_user_id(request.metadata)
    if user_id:
        body["metadata"] = {"user_id": user_id}
    if stream:
        body["stream"] = True
    return body


def end_user_id(metadata: Mapping[str, str]) -> str | None:
    """The end user `metadata` names, as `metadata.user_id` carries it: a Messages caller's
    `user_id`, else an OpenAI caller's `safety_identifier` or `user`."""
    for key in ("user_id", "safety_identifier", "user"):
        if metadata.get(key):
            return metadata[key]
    return None


def _output_config(request: ChatRequest) -> dict[str, Any]:
    # One object carries both the effort and a native JSON format.
    out: dict[str, Any] = {}
    if request.effort is not None:  # OpenAI's lowest levels are Anthropic's lowest
        out["effort"] = _LOWEST.get(request.effort, request.effort)
    fmt = native_format(request)
    if fmt is not None:
        out["format"] = fmt
    return out


def _refuse_unsupported(request: ChatRequest) -> None:
    if request.n != 1:
        raise BadRequestError(
            f"n={request.n}: the Anthropic Messages API returns one answer per request; "
            "send separate requests (or use an ensemble) for several",
            code="unsupported_parameter",
            param="n",
        )
    if request.logprobs:
        raise BadRequestError(
            "logprobs: the Anthropic Messages API does not return log-probabilities",
            code="unsupported_parameter",
            param="logprobs",
        )
    if request.max_tokens is None:
        raise BadRequestError(
            "max_tokens: the Anthropic Messages API requires it",
            code="missing_parameter",
            param="max_tokens",
        )
    if request.temperature is not None and not 0.0 <= request.temperature <= 1.0:
        raise BadRequestError(
            f"temperature={request.temperature}: the Anthropic API accepts 0 to 1",
            code="invalid_parameter",
            param="temperature",
        )


def _thinking(thinking: Thinking) -> dict[str, Any]:
    out: dict[str, Any] = {"type": thinking.type}
    if thinking.type == "enabled":
        if thinking.budget_tokens is None:
            raise BadRequestError(
                "thinking: type 'enabled' needs budget_tokens (or use type 'adaptive')",
                code="missing_parameter",
            )
        out["budget_tokens"] = thinking.budget_tokens
    if thinking.display is not None and thinking.type != "disabled":
        out["display"] = thinking.display
    return out


def _system(request: ChatRequest, others: list[str]) -> str | list[Block]:
    # `others`: the system-role messages' texts, which follow ChatRequest.system.
    texts = [request.system, *others] if request.system else others
    if not (request.system and request.system_cache):
        return "\n\n".join(texts)
    blocks: list[Block] = [{"type": "text", "text": text} for text in texts]
    marked(blocks[0], request.system_cache)
    return blocks


def _system_text(message: Message, position: int) -> str:
    if message.has_image:
        raise BadRequestError(
            f"messages[{position}] (system) has an image; the Anthropic system prompt is text only",
            code="invalid_content",
        )
    return message.text


def _strip_prefill(turns: list[_Turn]) -> None:
    # The API rejects a final assistant turn that ends in whitespace.
    last = turns[-1]
    if last.role != "assistant" or last.blocks[-1]["type"] != "text":
        return
    text = last.blocks[-1]["text"].rstrip()
    if text:
        last.blocks[-1] = {**last.blocks[-1], "text": text}
        return
    del last.blocks[-1]
    if not last.blocks:
        turns.pop()


def _turn_json(turn: _Turn) -> dict[str, Any]:
    blocks = turn.blocks
    if turn.role == "user":
        # tool_result blocks must open the user turn that answers a tool_use.
        blocks = sorted(blocks, key=lambda b: b["type"] != "tool_result")
    if plain_text(blocks):
        return {"role": turn.role, "content": blocks[0]["text"]}
    return {"role": turn.role, "content": blocks}


def beta_names(body: Mapping[str, Any]) -> list[str]:
    """The betas a Messages body needs: context-management when it carries
    `context_management`, interleaved-thinking when it thinks and has tools. Only these: a
    client's own betas are not forwarded (see the module docstring)."""
    betas = []
    if "context_management" in body:
        betas.append(CONTEXT_MANAGEMENT_BETA)
    thinking = body.get("thinking")
    if thinking and thinking["type"] != "disabled" and body.get("tools"):
        betas.append(INTERLEAVED_THINKING_BETA)
    return betas


class AnthropicWire:
    """The Anthropic Messages API as a `WireFormat`."""

    name = "anthropic"
    requires_max_tokens = True
    unsent = frozenset({"seed", "name", "detail"})

    def url(self, base_url: str, model_id: str, *, stream: bool) -> str:
        """`{base_url}/v1/messages` (a base URL already ending in /v1 is not doubled)."""
        base = base_url.rstrip("/")
        return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"

    def auth_headers(self, api_key: str) -> dict[str, str]:
        """The key travels in `x-api-key`."""
        return {"x-api-key": api_key}

    def default_headers(self) -> dict[str, str]:
        """The pinned API version and the JSON content type."""
        return {"anthropic-version": API_VERSION, "content-type": "application/json"}

    def to_wire(self, request: ChatRequest, model_id: str, *, stream: bool) -> dict[str, Any]:
        """The Messages body for `request`."""
        return to_wire(request, model_id, stream=stream)

    def body_headers(self, body: Mapping[str, Any]) -> dict[str, str]:
        """The `anthropic-beta` header the betas this body uses need (none: no header)."""
        betas = beta_names(body)
        return {"anthropic-beta": ",".join(betas)} if betas else {}

    def check_answer(self, request: ChatRequest, choices: Sequence[Choice]) -> None:
        """BadResponseError when a native JSON answer (`output_config.format`) that finished
        is not JSON; a forced tool's answer is checked as it is read."""
        if native_json(request):
            anthropic_answer.check_json(choices)

    def from_wire(self, body: Any) -> ParsedResponse:
        """The answer in a Messages response body."""
        return anthropic_answer.from_wire(body)

    def stream_decoder(self) -> StreamDecoder:
        """A decoder for one Messages event stream."""
        return anthropic_answer.StreamState()

    def error_from_wire(self, status: int, headers: Mapping[str, str], body: bytes) -> ModelError:
        """The error an Anthropic error response means."""
        return anthropic_errors.error_from_wire(status, headers, body)

    def rate_limits(self, headers: Mapping[str, str]) -> RateLimitInfo:
        """The `anthropic-ratelimit-*` quota."""
        return anthropic_rate_limits(headers)

    def count_tokens_url(self, base_url: str) -> str:
        """`{base_url}/v1/messages/count_tokens`."""
        return anthropic_count.count_url(self.url(base_url, "", stream=False))

    def count_tokens_to_wire(self, request: ChatRequest, model_id: str) -> dict[str, Any]:
        """The count_tokens body for `request`: its Messages body less what only an answer
        needs (to_wire insists on max_tokens, which the count endpoint refuses)."""
        body = to_wire(replace(request, max_tokens=1), model_id, stream=False)
        return anthropic_count.counted(body)

    def count_tokens_from_wire(self, body: Any) -> int:
        """The input tokens a count_tokens answer gives."""
        return anthropic_count.count_from_wire(body)


WIRE = AnthropicWire()
"""The Anthropic Messages wire format, as the registry loads it."""
