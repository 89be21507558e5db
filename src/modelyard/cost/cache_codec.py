"""Cached responses as bytes and back (JSON via orjson)."""

from __future__ import annotations

from typing import Any

import orjson

from modelyard.cost.cache_keys import canonical
from modelyard.types import (
    ChatResponse,
    Choice,
    FinishReason,
    ImagePart,
    Message,
    Part,
    Reasoning,
    RedactedThinkingPart,
    TextPart,
    ThinkingPart,
    TokenLogprob,
    ToolCall,
    Usage,
)


def encode(response: ChatResponse) -> bytes:
    """`response` without its decision (a hit gets a decision of its own)."""
    return orjson.dumps(
        {
            "id": response.id,
            "model": response.model,
            "provider_model": response.provider_model,
            "choices": canonical(response.choices),
            "usage": canonical(response.usage),
            "cost": response.cost,
            "created": response.created,
            "confidence": response.confidence,
            "system_fingerprint": response.system_fingerprint,
        }
    )


def _part(data: dict[str, Any]) -> Part:
    if data["type"] == "image":
        return ImagePart(url=data["url"], detail=data.get("detail"))
    return TextPart(text=data["text"])


def _reasoning(data: dict[str, Any]) -> Reasoning:
    if data["type"] == "redacted_thinking":
        return RedactedThinkingPart(data=data["data"])
    return ThinkingPart(text=data["text"], signature=data["signature"])


def _message(data: dict[str, Any]) -> Message:
    content = data["content"]
    return Message(
        role=data["role"],
        content=content if isinstance(content, str) else tuple(_part(p) for p in content),
        name=data.get("name"),
        tool_calls=tuple(ToolCall(**c) for c in data.get("tool_calls", ())),
        tool_call_id=data.get("tool_call_id"),
        thinking=tuple(_reasoning(r) for r in data.get("thinking", ())),
    )


def _choice(data: dict[str, Any]) -> Choice:
    logprobs = data.get("logprobs")
    return Choice(
        index=data["index"],
        message=_message(data["message"]),
        finish_reason=FinishReason(data["finish_reason"]),
        refusal=bool(data.get("refusal", False)),
        logprobs=None
        if logprobs is None
        else tuple(
            TokenLogprob(
                token=t["token"],
                logprob=t["logprob"],
                top=tuple((str(a), float(b)) for a, b in t.get("top", ())),
            )
            for t in logprobs
        ),
    )


def decode(blob: bytes) -> ChatResponse:
    """The response `encode` stored."""
    data = orjson.loads(blob)
    return ChatResponse(
        id=data["id"],
        model=data["model"],
        provider_model=data["provider_model"],
        choices=tuple(_choice(c) for c in data["choices"]),
        usage=Usage(**data["usage"]),
        cost=data["cost"],
        created=data["created"],
        confidence=data.get("confidence"),
        system_fingerprint=data.get("system_fingerprint"),
    )
