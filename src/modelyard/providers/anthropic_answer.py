"""Anthropic Messages answers, whole (`from_wire`) and streamed (`StreamState`).

Both read the same content blocks: `text` blocks are the answer's text, `tool_use` blocks are
tool calls (arguments as JSON text), and the `json_answer` tool that `anthropic_tools.py` uses for
JSON mode is read back as text (a native JSON answer, `output_config.format`, is a text block:
`check_json` checks it parses). `thinking` blocks (text and signature) and `redacted_thinking`
blocks (opaque data) become the message's `thinking`, streamed as `thinking_delta` and
`signature_delta` pieces; server-tool blocks carry nothing for the caller. Thinking is billed
as output and already counted in `output_tokens`.

**Usage.** Anthropic's `input_tokens` counts only the uncached part of the prompt; tokens read
from the prompt cache (`cache_read_input_tokens`) and written to it
(`cache_creation_input_tokens`) are reported apart. Our `Usage.input_tokens` counts all of them,
with cache reads as `cached_tokens` and cache writes as `cache_write_tokens`, so the price table
bills reads at `cached_input`, writes at `cache_write` (Anthropic charges 1.25x input for the
5-minute cache, 2x for the 1-hour one: set the rate of the one you use) and the rest at `input`.

**Stop reasons.** end_turn and stop_sequence → stop (the sequence matched kept as the choice's
`stop_sequence`, so the gateway's Messages clients are told it); max_tokens and
model_context_window_exceeded → length; tool_use → tool_calls (stop when the only tool called was
the JSON answer); refusal → content_filter; pause_turn (a server-tool turn the API paused) →
length, since the turn is unfinished and a caller must not take it for a whole answer. Any other
stop reason is a BadResponseError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from modelyard.errors import BadResponseError
from modelyard.providers.anthropic_errors import error_from_payload
from modelyard.providers.sse import Event
from modelyard.providers.wire import ParsedResponse, require
from modelyard.types import (
    Choice,
    Chunk,
    FinishReason,
    Message,
    Reasoning,
    ReasoningDelta,
    RedactedThinkingPart,
    ThinkingPart,
    ToolCall,
    ToolCallDelta,
    Usage,
)

JSON_TOOL = "json_answer"
"""The tool name that carries JSON-mode answers."""

_FINISH: dict[str, FinishReason] = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
    "pause_turn": FinishReason.LENGTH,
}


STOP_REASONS: dict[FinishReason, str] = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
}
"""The other way round, for serving the Messages API (the gateway's /v1/messages)."""


def finish_reason(stop_reason: Any, *, called_tools: bool) -> FinishReason:
    """Our finish reason for an Anthropic `stop_reason`."""
    reason = _FINISH.get(stop_reason) if isinstance(stop_reason, str) else None
    if reason is None:
        raise BadResponseError(
            f"unknown stop_reason {stop_reason!r} from the Anthropic API",
            code="bad_stop_reason",
            retryable=False,  # asking again gets the same answer, billed again
        )
    if reason is FinishReason.TOOL_CALLS and not called_tools:
        return FinishReason.STOP  # only the JSON answer tool was called
    return reason


def usage_from(raw: Mapping[str, Any], where: str) -> Usage:
    """Our Usage from an Anthropic `usage` object (input counts cache reads and writes)."""
    counts = {
        name: _count(raw, name, where)
        for name in (
            "input_tokens",
            "output_tokens",
            "cache_read_input_tokens",
            "cache_creation_input_tokens",
        )
    }
    written = raw.get("cache_creation")
    written_1h = (
        _count(written, "ephemeral_1h_input_tokens", f"{where}.cache_creation")
        if isinstance(written, dict)
        else 0
    )
    details = raw.get("output_tokens_details")
    thinking = details.get("thinking_tokens") if isinstance(details, dict) else None
    return Usage(
        input_tokens=counts["input_tokens"]
        + counts["cache_read_input_tokens"]
        + counts["cache_creation_input_tokens"],
        output_tokens=counts["output_tokens"],
        cached_tokens=counts["cache_read_input_tokens"],
        cache_write_tokens=counts["cache_creation_input_tokens"],
        cache_write_1h_tokens=min(written_1h, counts["cache_creation_input_tokens"]),
        reasoning_tokens=thinking if isinstance(thinking, int) else 0,
    )


def _count(raw: Mapping[str, Any], name: str, where: str) -> int:
    value = raw.get(name)
    if value is None:
        return 0
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadResponseError(f"field {where}.{name} is {value!r}, expected a token count")
    return value


def from_wire(body: Any) -> ParsedResponse:
    """The answer in a decoded Messages response body."""
    if isinstance(body, dict) and body.get("type") == "error":
        detail = body.get("error")
        raise error_from_payload(detail if isinstance(detail, dict) else {}, status=None)
    response_id = require(body, "id", str, "message")
    provider_model = require(body, "model", str, "message")
    blocks = require(body, "content", list, "message")
    usage = usage_from(require(body, "usage", dict, "message"), "message.usage")
    texts: list[str] = []
    calls: list[ToolCall] = []
    thinking: list[Reasoning] = []
    for index, block in enumerate(blocks):
        where = f"message.content[{index}]"
        kind = require(block, "type", str, where)
        if kind == "text":
            texts.append(require(block, "text", str, where))
        elif kind == "thinking":
            thinking.append(
                ThinkingPart(
                    text=require(block, "thinking", str, where),
                    signature=require(block, "signature", str, where),
                )
            )
        elif kind == "redacted_thinking":
            thinking.append(RedactedThinkingPart(data=require(block, "data", str, where)))
        elif kind == "tool_use":
            name = require(block, "name", str, where)
            arguments = orjson.dumps(require(block, "input", dict, where)).decode()
            if name == JSON_TOOL:
                texts.append(arguments)
            else:
                calls.append(
                    ToolCall(id=require(block, "id", str, where), name=name, arguments=arguments)
                )
    finish = finish_reason(body.get("stop_reason"), called_tools=bool(calls))
    sequence = body.get("stop_sequence")
    message = Message(
        role="assistant",
        content="".join(texts),
        tool_calls=tuple(calls),
        thinking=tuple(thinking),
    )
    return ParsedResponse(
        id=response_id,
        provider_model=provider_model,
        choices=(
            Choice(
                index=0,
                message=message,
                finish_reason=finish,
                stop_sequence=sequence if isinstance(sequence, str) else None,
            ),
        ),
        usage=usage,
    )


def check_json(choices: Sequence[Choice]) -> None:
    """BadResponseError when a finished (`stop`) answer to a native JSON request is not JSON. A
    cut or refused answer is left as it is: its finish reason already says it is not whole."""
    for choice in choices:
        if choice.finish_reason is not FinishReason.STOP:
            continue
        try:
            orjson.loads(choice.message.text)
        except orjson.JSONDecodeError:
            raise BadResponseError(
                f"the answer to a JSON request (output_config.format) is not JSON: "
                f"{choice.message.text[:80]!r}",
                code="bad_json_answer",
            ) from None


_TEXT, _IGNORED, _JSON, _THINKING = "text", "ignored", "json", "thinking"


class StreamState:
    """Decodes one Messages event stream: message_start, content_block_{start,delta,stop}*,
    message_delta, message_stop, with `ping`s anywhere and an `error` event on failure.

    Unknown event, block and delta types are skipped, as Anthropic asks of clients (it adds new
    ones over time); a delta for a block that never started is a malformed stream.
    """

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self.provider_model: str | None = None
        self.response_id: str | None = None
        self.stop_sequence: str | None = None
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, str | int] = {}
        """Block index → _TEXT, _JSON, _THINKING, _IGNORED, or the tool call's index."""
        self._tools = 0
        self._unread: dict[int, bytes] = {}
        """Tool block index → the input its start carried, as JSON, until a piece arrives."""

    def feed(self, event: Event) -> Sequence[Chunk]:
        """The chunks one event carries."""
        try:
            data = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise BadResponseError(
                f"malformed {event.event!r} event in the Anthropic stream: data is not JSON: "
                f"{event.data[:80]!r}",
                code="bad_stream_event",
            ) from None
        kind = data.get("type") if isinstance(data, dict) else None
        if not isinstance(kind, str):
            raise BadResponseError(
                f"malformed {event.event!r} event in the Anthropic stream: no type: "
                f"{event.data[:80]!r}",
                code="bad_stream_event",
            )
        handler = _HANDLERS.get(kind)
        return handler(self, data) if handler is not None else ()

    def _message_start(self, data: dict[str, Any]) -> Sequence[Chunk]:
        message = require(data, "message", dict, "message_start")
        self.response_id = require(message, "id", str, "message_start.message")
        self.provider_model = require(message, "model", str, "message_start.message")
        self._take_usage(message.get("usage"), "message_start.message.usage")
        return ()

    def _block_start(self, data: dict[str, Any]) -> Sequence[Chunk]:
        index = require(data, "index", int, "content_block_start")
        block = require(data, "content_block", dict, "content_block_start")
        kind = require(block, "type", str, "content_block_start.content_block")
        if kind == "text":
            self._blocks[index] = _TEXT
            text = block.get("text")
            return (Chunk(text=text),) if isinstance(text, str) and text else ()
        if kind == "thinking":
            self._blocks[index] = _THINKING
            return _thinking_start(block)
        if kind != "tool_use":
            self._blocks[index] = _IGNORED
            if kind == "redacted_thinking":  # whole in its start; no deltas follow
                hidden = require(block, "data", str, "content_block_start.content_block")
                return (Chunk(reasoning=ReasoningDelta(redacted=hidden)),)
            return ()
        name = require(block, "name", str, "content_block_start.content_block")
        start_input = block.get("input")
        self._unread[index] = orjson.dumps(start_input if isinstance(start_input, dict) else {})
        if name == JSON_TOOL:
            self._blocks[index] = _JSON
            return ()
        call_id = require(block, "id", str, "content_block_start.content_block")
        self._blocks[index] = self._tools
        self._tools += 1
        return (Chunk(tool_calls=(ToolCallDelta(index=self._tools - 1, id=call_id, name=name),)),)

    def _block_delta(self, data: dict[str, Any]) -> Sequence[Chunk]:
        # The hot path of every stream: plain lookups, with `require` only to explain a failure.
        delta = data.get("delta")
        index = data.get("index")
        if not isinstance(delta, dict) or not isinstance(index, int) or index not in self._blocks:
            require(data, "index", int, "content_block_delta")
            require(data, "delta", dict, "content_block_delta")
            raise BadResponseError(
                f"content_block_delta for block {index}, which never started", code="bad_stream"
            )
        target = self._blocks[index]
        kind = delta.get("type")
        if kind == "text_delta" and target == _TEXT:
            text = delta.get("text")
            if not isinstance(text, str):
                raise BadResponseError(f"text_delta without its text: {delta!r:.80}")
            return (Chunk(text=text),)
        if kind == "input_json_delta" and target not in (_TEXT, _IGNORED):
            piece = require(delta, "partial_json", str, "content_block_delta.delta")
            if not piece:
                return ()
            self._unread.pop(index, None)
            return _arguments(target, piece)
        if target == _THINKING:
            if kind == "thinking_delta":
                piece = require(delta, "thinking", str, "content_block_delta.delta")
                return (Chunk(reasoning=ReasoningDelta(text=piece)),) if piece else ()
            if kind == "signature_delta":
                signature = require(delta, "signature", str, "content_block_delta.delta")
                if not signature:
                    return ()
                return (Chunk(reasoning=ReasoningDelta(signature=signature)),)
        return ()  # citations and what is new: nothing for the caller

    def _block_stop(self, data: dict[str, Any]) -> Sequence[Chunk]:
        # A tool called without arguments streams no JSON (or only ""): its input is the one
        # its block started with, `{}`, as in a whole answer and in the SDK's accumulator.
        index = data.get("index")
        if not isinstance(index, int) or index not in self._unread:
            return ()
        return _arguments(self._blocks[index], self._unread.pop(index).decode())

    def _message_delta(self, data: dict[str, Any]) -> Sequence[Chunk]:
        delta = require(data, "delta", dict, "message_delta")
        self._take_usage(data.get("usage"), "message_delta.usage")
        stop_reason = delta.get("stop_reason")
        if stop_reason is None:
            return ()
        sequence = delta.get("stop_sequence")
        self.stop_sequence = sequence if isinstance(sequence, str) else None
        return (Chunk(finish_reason=finish_reason(stop_reason, called_tools=self._tools > 0)),)

    def _message_stop(self, data: dict[str, Any]) -> Sequence[Chunk]:
        self.done = True
        return ()

    def _error(self, data: dict[str, Any]) -> Sequence[Chunk]:
        detail = data.get("error")
        raise error_from_payload(detail if isinstance(detail, dict) else {}, status=None)

    def _take_usage(self, raw: Any, where: str) -> None:
        # message_delta's counts are cumulative and may repeat or update message_start's.
        if not isinstance(raw, dict):
            return
        self._usage.update({k: v for k, v in raw.items() if v is not None})
        self.usage = usage_from(self._usage, where)


def _thinking_start(block: dict[str, Any]) -> Sequence[Chunk]:
    """What a thinking block's start carries already (the API starts it empty)."""
    text, signature = block.get("thinking"), block.get("signature")
    piece = ReasoningDelta(
        text=text if isinstance(text, str) else "",
        signature=signature if isinstance(signature, str) else "",
    )
    return (Chunk(reasoning=piece),) if piece.text or piece.signature else ()


def _arguments(target: str | int, piece: str) -> Sequence[Chunk]:
    """A piece of a tool's input JSON: the answer's text for the JSON tool, else its call's."""
    if target == _JSON:
        return (Chunk(text=piece),)
    assert isinstance(target, int)
    return (Chunk(tool_calls=(ToolCallDelta(index=target, arguments=piece),)),)


_HANDLERS = {
    "message_start": StreamState._message_start,
    "content_block_start": StreamState._block_start,
    "content_block_delta": StreamState._block_delta,
    "content_block_stop": StreamState._block_stop,
    "message_delta": StreamState._message_delta,
    "message_stop": StreamState._message_stop,
    "error": StreamState._error,
}
