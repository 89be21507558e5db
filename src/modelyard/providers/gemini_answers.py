"""Gemini's answers: GenerateContentResponse bodies and stream events into choices and chunks.

A candidate is a choice. Gemini gives function calls no id, so one is generated; when the part
carries a `thoughtSignature` (Gemini 3 requires it back on the next turn) it rides in the id
after `SIGNATURE_MARK`, so a caller returns it with the tool result without knowing, and
`gemini_wire` puts it back on the function call. Thinking tokens (`thoughtsTokenCount`) are
billed as output, so they are counted in `output_tokens` and reported again in
`reasoning_tokens`. A stream is one full response object per SSE event with no terminal marker:
it is done once every candidate has finished and usage has arrived.

A candidate a content policy stopped (`finishReason` SAFETY, RECITATION, BLOCKLIST,
PROHIBITED_CONTENT, SPII, IMAGE_SAFETY and their kin, `gemini_errors.FILTERED`) is an answer,
with whatever text came before the stop and finish reason `content_filter`, as OpenAI's filter
and Anthropic's `refusal` end one; only a prompt blocked before any candidate
(`promptFeedback.blockReason`) is an error, ContentFilteredError.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from modelyard.cost.prices import estimate_tokens
from modelyard.errors import BadResponseError, ModelError
from modelyard.providers.gemini_errors import FILTERED, api_error, blocked_error, finish_error
from modelyard.providers.sse import Event
from modelyard.providers.wire import ParsedResponse, body_excerpt, require
from modelyard.types import (
    Choice,
    Chunk,
    FinishReason,
    Message,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
    Usage,
)

SIGNATURE_MARK = "~sig~"
"""Separates a generated tool call id from the thought signature it carries (never in base64)."""


def split_call_id(call_id: str) -> tuple[str, str | None]:
    """A tool call id and the thought signature packed into it, if any."""
    base, sep, signature = call_id.partition(SIGNATURE_MARK)
    return base, (signature if sep and signature else None)


def token_count(meta: Mapping[str, Any], key: str) -> int:
    """The token count `meta[key]` (0 when absent); BadResponseError if it is not a count."""
    value = meta.get(key, 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadResponseError(f"usageMetadata.{key} is {value!r}, expected an integer")
    return value


def usage_from_wire(meta: Any) -> Usage:
    """Usage from `usageMetadata`; thinking tokens are output (billed so) and reasoning."""
    if not isinstance(meta, dict):
        raise BadResponseError(f"usageMetadata is {type(meta).__name__}, expected an object")
    thoughts = token_count(meta, "thoughtsTokenCount")
    return Usage(
        input_tokens=token_count(meta, "promptTokenCount")
        + token_count(meta, "toolUsePromptTokenCount"),
        output_tokens=token_count(meta, "candidatesTokenCount") + thoughts,
        cached_tokens=token_count(meta, "cachedContentTokenCount"),
        reasoning_tokens=thoughts,
    )


def _logprob(item: Any) -> tuple[str, float]:
    if not isinstance(item, dict) or not isinstance(item.get("logProbability", 0.0), int | float):
        raise BadResponseError(f"logprobsResult holds a malformed token: {item!r:.80}")
    return str(item.get("token", "")), float(item.get("logProbability", 0.0))


def _logprobs(candidate: Mapping[str, Any]) -> tuple[TokenLogprob, ...]:
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return ()
    chosen = result.get("chosenCandidates") or []
    tops = result.get("topCandidates") or []
    if not isinstance(chosen, list) or not isinstance(tops, list):
        raise BadResponseError("logprobsResult candidates are not lists")
    out = []
    for step, item in enumerate(chosen):
        token, logprob = _logprob(item)
        top = tops[step] if step < len(tops) else {}
        alternatives = top.get("candidates", []) if isinstance(top, dict) else []
        if not isinstance(alternatives, list):
            raise BadResponseError("logprobsResult.topCandidates holds a malformed step")
        out.append(
            TokenLogprob(token=token, logprob=logprob, top=tuple(map(_logprob, alternatives)))
        )
    return tuple(out)


def _index(candidate: Mapping[str, Any], position: int) -> int:
    index = candidate.get("index", position)
    if not isinstance(index, int) or isinstance(index, bool) or index < 0:
        raise BadResponseError(f"candidates[{position}].index is {index!r}, expected a count")
    return index


def error_status(error: Mapping[str, Any]) -> int:
    """The HTTP status an in-band `error` object names (500 when it names none)."""
    code = error.get("code")
    return code if isinstance(code, int) and 100 <= code <= 599 else 500


def _new_call_id(part: Mapping[str, Any]) -> str:
    call_id = f"call_{uuid.uuid4().hex[:24]}"
    signature = part.get("thoughtSignature")
    return call_id + SIGNATURE_MARK + signature if isinstance(signature, str) else call_id


def _content(candidate: Mapping[str, Any], where: str) -> tuple[str, list[ToolCall]]:
    """The candidate's answer text (thought summaries left out) and its function calls."""
    content = candidate.get("content")
    if content is None:
        return "", []
    if not isinstance(content, dict):
        raise BadResponseError(f"{where}.content is not an object")
    parts = require(content, "parts", list, f"{where}.content") if "parts" in content else []
    texts: list[str] = []
    calls: list[ToolCall] = []
    for i, part in enumerate(parts):
        if not isinstance(part, dict):
            raise BadResponseError(f"{where}.content.parts[{i}] is not an object")
        if "functionCall" in part:
            call = part["functionCall"]
            name = require(call, "name", str, f"{where}.content.parts[{i}].functionCall")
            args = call.get("args") or {}
            calls.append(
                ToolCall(id=_new_call_id(part), name=name, arguments=orjson.dumps(args).decode())
            )
        elif isinstance(part.get("text"), str) and not part.get("thought"):
            texts.append(part["text"])
    return "".join(texts), calls


def _finish(candidate: Mapping[str, Any], has_calls: bool) -> FinishReason:
    """Our finish reason for a candidate's `finishReason`; raises for the ones that are errors."""
    reason = candidate.get("finishReason")
    if reason == "STOP":
        return FinishReason.TOOL_CALLS if has_calls else FinishReason.STOP
    if reason in ("MAX_TOKENS", "CONTINUATION"):
        return FinishReason.LENGTH
    if reason in FILTERED:
        return FinishReason.CONTENT_FILTER
    raise finish_error(reason, candidate)


def _blocked(body: Mapping[str, Any]) -> ModelError:
    feedback = body.get("promptFeedback")
    if isinstance(feedback, dict) and feedback.get("blockReason"):
        return blocked_error(feedback)
    return BadResponseError(f"response has no candidates: {body_excerpt(orjson.dumps(body))}")


def from_wire(body: Any) -> ParsedResponse:
    """A GenerateContentResponse, translated; raises for a blocked prompt and broken answers."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        raise api_error(error_status(body["error"]), body["error"], {})
    if not isinstance(body, dict):
        raise BadResponseError(f"expected a JSON object, got {type(body).__name__}")
    candidates = body.get("candidates")
    if not candidates:
        raise _blocked(body)
    if not isinstance(candidates, list):
        raise BadResponseError("field candidates is not a list")
    choices = []
    texts = []
    for position, candidate in enumerate(candidates):
        where = f"candidates[{position}]"
        if not isinstance(candidate, dict):
            raise BadResponseError(f"{where} is not an object")
        text, calls = _content(candidate, where)
        texts.append(text)
        logprobs = _logprobs(candidate)
        choices.append(
            Choice(
                index=_index(candidate, position),
                message=Message(role="assistant", content=text, tool_calls=tuple(calls)),
                finish_reason=_finish(candidate, bool(calls)),
                logprobs=logprobs or None,
            )
        )
    if "usageMetadata" in body:
        usage = usage_from_wire(body["usageMetadata"])
    else:
        usage = Usage(output_tokens=sum(estimate_tokens(t) for t in texts), estimated=True)
    return ParsedResponse(
        id=str(body.get("responseId") or ""),
        provider_model=str(body.get("modelVersion") or ""),
        choices=tuple(sorted(choices, key=lambda c: c.index)),
        usage=usage,
    )


class GeminiStreamDecoder:
    """Turns streamGenerateContent SSE events (each a full response object) into chunks."""

    def __init__(self) -> None:
        self.done = False
        self.usage: Usage | None = None
        self.provider_model: str | None = None
        self.response_id: str | None = None
        self.stop_sequence: str | None = None  # the API does not say which one stopped it
        self._finished: dict[int, Mapping[str, Any] | None] = {}
        """Per candidate index: None while open, the finishing candidate once it finished."""
        self._calls: dict[int, int] = {}

    def feed(self, event: Event) -> Sequence[Chunk]:
        """The chunks one event carries."""
        try:
            body = orjson.loads(event.data)
        except orjson.JSONDecodeError:
            raise BadResponseError(
                f"malformed stream event, not JSON: {body_excerpt(event.data.encode())!r}"
            ) from None
        if not isinstance(body, dict):
            raise BadResponseError(f"stream event is {type(body).__name__}, expected an object")
        if isinstance(body.get("error"), dict):
            raise api_error(error_status(body["error"]), body["error"], {})
        if body.get("modelVersion"):
            self.provider_model = str(body["modelVersion"])
        if body.get("responseId"):
            self.response_id = str(body["responseId"])
        if "usageMetadata" in body:
            self.usage = usage_from_wire(body["usageMetadata"])
        candidates = body.get("candidates")
        if not candidates:
            feedback = body.get("promptFeedback")
            if isinstance(feedback, dict) and feedback.get("blockReason"):
                raise blocked_error(feedback)
            self._settle()  # a usage-only event
            return ()
        if not isinstance(candidates, list):
            raise BadResponseError("stream event field candidates is not a list")
        chunks = [self._chunk(c, position) for position, c in enumerate(candidates)]
        self._settle()
        return chunks

    def _chunk(self, candidate: Any, position: int) -> Chunk:
        where = f"stream candidates[{position}]"
        if not isinstance(candidate, dict):
            raise BadResponseError(f"{where} is not an object")
        index = _index(candidate, position)
        self._finished.setdefault(index, None)
        text, calls = _content(candidate, where)
        first = self._calls.get(index, 0)
        self._calls[index] = first + len(calls)
        finish = None
        if candidate.get("finishReason"):
            finish = _finish(candidate, self._calls[index] > 0)
            self._finished[index] = candidate
        return Chunk(
            index=index,
            text=text,
            tool_calls=tuple(
                ToolCallDelta(index=first + i, id=c.id, name=c.name, arguments=c.arguments)
                for i, c in enumerate(calls)
            ),
            finish_reason=finish,
            logprobs=_logprobs(candidate),
        )

    def _settle(self) -> None:
        if not self._finished or any(c is None for c in self._finished.values()):
            return
        self.done = self.usage is not None
