"""OpenAI chat completions read back: whole answers (`from_wire`) and streams (`StreamDecoder`).

Pure functions over decoded JSON, lenient where OpenAI-compatible servers differ harmlessly and
strict where a wrong reading would pass off a broken answer as a good one:

- A refusal (`message.refusal`, structured outputs) becomes the choice's text with finish
  reason `content_filter`, so callers can tell it from an answer without losing its words.
- A choice that carries tool calls finishes with `tool_calls` even when OpenAI says `stop`
  (it does so when `tool_choice` names a function); legacy `function_call` maps the same way.
- Compatible servers' own spellings are read as what they mean: `eos`/`eos_token` (Together,
  TGI, watsonx) and `stop_sequence` are a stop, `model_length`/`max_tokens` (Mistral) a length
  cut. A server that says it gave up (`abort` from vLLM, `error` from Mistral,
  `insufficient_system_resource` from DeepSeek) sent an incomplete answer: a retryable
  BadResponseError, so the retry or the fallback answers.
- An unknown or missing finish reason is a BadResponseError: an answer whose end we cannot
  vouch for is never passed on as complete.
- The reasoning compatible servers send beside the answer (`reasoning_content`: DeepSeek,
  vLLM; `reasoning`: newer vLLM, Ollama, OpenRouter) is the message's unsigned thinking, as an
  Anthropic model's is; OpenAI itself keeps its reasoning to itself.
- Malformed bodies raise BadResponseError naming the field (`response.choices[0].message`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from modelyard.errors import BadResponseError
from modelyard.providers.openai_errors import read_error, stream_error
from modelyard.providers.sse import Event
from modelyard.providers.wire import ParsedResponse, body_excerpt, require
from modelyard.types import (
    Choice,
    Chunk,
    FinishReason,
    Message,
    ReasoningDelta,
    ThinkingPart,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)

FINISH_REASONS: dict[str, FinishReason] = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}
"""OpenAI's finish reasons (every value its API documents) mapped onto ours."""

COMPATIBLE_FINISH_REASONS: dict[str, FinishReason] = {
    "eos": FinishReason.STOP,
    "eos_token": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "model_length": FinishReason.LENGTH,
    "max_tokens": FinishReason.LENGTH,
}
"""Other servers' spellings of the same reasons."""

GAVE_UP = frozenset({"abort", "error", "insufficient_system_resource"})
"""Reasons a compatible server gives when it stopped generating before the answer was done."""


# --- whole answers ---------------------------------------------------------------------------


def from_wire(body: Any) -> ParsedResponse:
    """The answer in a decoded chat.completion body; BadResponseError naming what is wrong."""
    raise_if_error(body, "choices")
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


def raise_if_error(body: Any, expected: str) -> None:
    """Raise the error an error object means when `body` lacks `expected` and is one."""
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
    refused = isinstance(refusal, str) and bool(refusal) and not content
    if refused:
        content = refusal
    reason = finish_reason(
        raw.get("finish_reason"),
        f"{where}.finish_reason",
        tool_calls=bool(calls),
        refused=bool(refusal),
    )
    logprobs = raw.get("logprobs")
    thought = reasoning_of(message, f"{where}.message")
    return Choice(
        index=index,
        message=Message(
            role="assistant",
            content=content,
            tool_calls=calls,
            thinking=(ThinkingPart(text=thought),) if thought else (),
        ),
        finish_reason=reason,
        logprobs=logprobs_from_wire(logprobs, f"{where}.logprobs") if logprobs else None,
        refusal=refused,
    )


REASONING_FIELDS = ("reasoning_content", "reasoning")
"""Where OpenAI-compatible servers put a model's reasoning, in a message or a stream's delta."""


def reasoning_of(body: dict[str, Any], where: str) -> str:
    """The reasoning a compatible server sent in a message or delta (`REASONING_FIELDS`), or
    "" when it sent none."""
    for key in REASONING_FIELDS:
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise BadResponseError(
                f"field {where}.{key} has type {type(value).__name__}, expected str"
            )
        return value
    return ""


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
    if isinstance(value, str) and value in GAVE_UP:  # (a list or object is unhashable)
        raise BadResponseError(
            f"{where} is {value!r}: the server stopped before the answer was complete",
            code="upstream_gave_up",
            retryable=True,  # the server's own failure (overload, preemption): ask again
        )
    reason = (
        FINISH_REASONS.get(value) or COMPATIBLE_FINISH_REASONS.get(value)
        if isinstance(value, str)
        else None
    )
    if reason is None:
        raise BadResponseError(
            f"{where} is {value!r}, which the OpenAI API does not define; "
            f"expected one of {', '.join(FINISH_REASONS)}",
            code="unknown_finish_reason",
            retryable=False,  # asking again gets the same answer, billed again
        )
    if refused and reason is FinishReason.STOP:
        return FinishReason.CONTENT_FILTER
    if tool_calls and reason is FinishReason.STOP:
        return FinishReason.TOOL_CALLS
    return reason


def usage_from_wire(raw: Any, where: str) -> Usage:
    """Token counts, with cached prompt tokens and reasoning tokens when reported. A count left
    out or null (some compatible servers report part of it) is 0 in a usage marked estimated,
    which the adapter completes: the answer itself is sound and already billed."""
    prompt, completion = (_count(raw, key, where) for key in ("prompt_tokens", "completion_tokens"))
    return Usage(
        input_tokens=prompt or 0,
        output_tokens=completion or 0,
        cached_tokens=_detail(raw.get("prompt_tokens_details"), "cached_tokens"),
        reasoning_tokens=_detail(raw.get("completion_tokens_details"), "reasoning_tokens"),
        estimated=prompt is None or completion is None,
    )


def _count(raw: Any, key: str, where: str) -> int | None:
    """`raw[key]`, a token count, or None when it is absent or null."""
    if isinstance(raw, dict) and raw.get(key) is None:
        return None
    count: int = require(raw, key, int, where)
    return count


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
        self.stop_sequence: str | None = None  # the API does not say which one stopped it
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
        # Azure opens its streams with its prompt filter results under an empty id and model.
        if self.response_id is None and isinstance(body.get("id"), str) and body["id"]:
            self.response_id = body["id"]
        if self.provider_model is None and isinstance(body.get("model"), str) and body["model"]:
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
        if not isinstance(text, str):
            raise BadResponseError(f"field {where}.delta.content is not a string")
        refusal = delta.get("refusal")
        # A refusal only where no answer text came with it, as in a whole answer (`_choice`).
        refused = isinstance(refusal, str) and bool(refusal) and not text
        if isinstance(refusal, str) and refusal:
            self._refused.add(index)
            text += refusal
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
        thought = reasoning_of(delta, f"{where}.delta")
        if not (text or calls or reason or tokens or thought):
            return None
        return Chunk(
            index=index,
            text=text,
            tool_calls=calls,
            finish_reason=reason,
            logprobs=tokens,
            refusal=refused,
            reasoning=ReasoningDelta(text=thought) if thought else None,
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
