"""Answers in the Anthropic Messages API's shapes, as the gateway serves them: a ChatResponse as
a `message` object, a stream's chunks as the Messages event sequence (message_start, content
blocks opened, streamed and stopped, message_delta, message_stop), and Anthropic's error JSON."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from modelyard.gateway import anthropic_thinking
from modelyard.gateway.errors import ApiError
from modelyard.providers.anthropic_errors import ERROR_TYPES
from modelyard.types import ChatResponse, Chunk, FinishReason, ReasoningDelta, Usage

STOP_REASONS = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}


_UNKNOWN = {"input_tokens": 0, "output_tokens": 0}
"""A stream's usage before the upstream told any."""


def _usage(usage: Usage) -> dict[str, Any]:
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


def _stop_of(response: ChatResponse) -> dict[str, Any]:
    """The answer's `stop_reason` and `stop_sequence`, as Anthropic writes them."""
    sequence = response.choices[0].stop_sequence
    if sequence is not None and response.finish_reason is FinishReason.STOP:
        return {"stop_reason": "stop_sequence", "stop_sequence": sequence}
    return {"stop_reason": STOP_REASONS[response.finish_reason], "stop_sequence": None}


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
            **_stop_of(response),
            "usage": _usage(response.usage),
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

    def _start(self, usage: Usage | None) -> bytes:
        """`message_start`, with the prompt's tokens when the first chunk knows them (an
        Anthropic or Gemini upstream tells them before the answer). Otherwise (an
        OpenAI-compatible upstream tells them only at the end) they are 0 here, and
        `message_delta` carries them, as Anthropic's `MessageDeltaUsage` allows: the SDKs'
        accumulated message then has them."""
        self._started = True
        message: dict[str, Any] = {
            "id": self._id,
            "type": "message",
            "role": "assistant",
            "model": self._target,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": _UNKNOWN if usage is None else _usage(usage),
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
        out = b"" if self._started else self._start(chunk.usage)
        if chunk.response is not None:
            return out + self._finish(chunk.response)
        if chunk.index != 0:
            return out
        if chunk.reasoning is not None:
            out += self._reasoning(chunk.reasoning)
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

    def _reasoning(self, piece: ReasoningDelta) -> bytes:
        """A piece of reasoning: its thinking block opened if need be, a signature ending it
        (Anthropic sends it last), a redacted block whole."""
        out = b""
        if piece.text or piece.signature:
            if self._block_kind != "thinking":
                out += self._open("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            if piece.text:
                delta = {"type": "thinking_delta", "thinking": piece.text}
                out += _event("content_block_delta", {"index": self._block, "delta": delta})
            if piece.signature:
                delta = {"type": "signature_delta", "signature": piece.signature}
                out += _event("content_block_delta", {"index": self._block, "delta": delta})
                out += self._close_block()
        if piece.redacted:
            block = {"type": "redacted_thinking", "data": piece.redacted}
            out += self._open("redacted_thinking", block) + self._close_block()
        return out

    def _finish(self, response: ChatResponse) -> bytes:
        out = self._close_block()
        out += _event(
            "message_delta", {"delta": _stop_of(response), "usage": _usage(response.usage)}
        )
        return out + _event("message_stop", {})

    def error(self, error: ApiError) -> bytes:
        """The in-band error event that ends a broken stream."""
        return b"event: error\ndata: " + orjson.dumps(error_body(error)) + b"\n\n"


def model_object(name: str, created: int) -> dict[str, Any]:
    """A Models API object, as `GET /v1/models/{model_id}` answers and `GET /v1/models` lists
    it (`created`, the Unix time, as RFC 3339)."""
    at = datetime.fromtimestamp(created, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "type": "model",
        "id": name,
        "display_name": name,
        "created_at": at,
        "lifecycle": "active",
    }


def render_models(names: list[str], created: int) -> bytes:
    """`GET /v1/models` for an Anthropic client: one page holding them all."""
    return orjson.dumps(
        {
            "data": [model_object(name, created) for name in names],
            "has_more": False,
            "first_id": names[0] if names else None,
            "last_id": names[-1] if names else None,
        }
    )


def error_body(error: ApiError) -> dict[str, Any]:
    """Anthropic's error JSON."""
    # A 503 is `api_error`: an overload reaches a Messages caller as a 529 (`from_model_error`),
    # so a 503 is something else (a provider down, an open circuit, a shutdown).
    kind = ERROR_TYPES.get(error.status, "api_error")
    return {"type": "error", "error": {"type": kind, "message": error.message}}
