"""Cached responses and semantic-cache vectors as bytes and back (JSON via orjson).

What is stored outlives the modelyard that stored it (a SQLite file, a Redis other replicas
share), so its shape is versioned: `ENTRY_FORMAT` is part of every cache key (`cache_keys`), and
a modelyard whose entries are shaped otherwise never reads them (they miss and expire). Bytes
that still cannot be read (a format bumped too late, a corrupted file) raise `UnreadableEntry`,
which the cache turns into a miss.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

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

LAYOUT = 1
"""The version of how `encode` and `pack_vector` lay an entry out, and `decode` and
`unpack_vector` read it back. Bump it whenever that changes (a key renamed or dropped, a value
stored another way, a field of the stored types read differently): `ENTRY_FORMAT` changes with
it, so no modelyard reads entries of another layout. A field added to, renamed in or removed
from the stored types changes `ENTRY_FORMAT` on its own."""

_STORED: tuple[type, ...] = (
    ChatResponse,
    Choice,
    Message,
    TextPart,
    ImagePart,
    ToolCall,
    ThinkingPart,
    RedactedThinkingPart,
    TokenLogprob,
    Usage,
)
"""Every type `decode` builds: a new one (a new kind of part) belongs here too."""


def _shape() -> str:
    """A digest of the fields (names and declared types) of every type an entry holds, and of
    the finish reasons: what decides whether a stored entry still decodes to the same answer."""
    fields = [[t.__name__, [(f.name, str(f.type)) for f in dataclasses.fields(t)]] for t in _STORED]
    fields.append(["FinishReason", [r.value for r in FinishReason]])
    return hashlib.sha256(orjson.dumps(fields)).hexdigest()[:16]


ENTRY_FORMAT = f"{LAYOUT}.{_shape()}"
"""The shape of a stored entry (`LAYOUT` and the stored types' fields): part of every cache key,
so an upgrade that changes it starts on an empty cache instead of misreading the old one."""

NOT_IN_FORM = frozenset({"cache"})
"""Fields of the values inside a request (parts, tool calls, tools) left out of its key: their
prompt-cache breakpoints, which change what a call is billed, not its answer."""


class UnreadableEntry(ValueError):
    """Stored bytes that do not decode to an entry of this modelyard's format."""


def canonical(value: Any) -> Any:
    """`value` as plain JSON data: dataclasses as dicts of their fields (prompt-cache breakpoints
    left out), tuples as lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: canonical(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if f.name not in NOT_IN_FORM
        }
    if isinstance(value, Mapping):
        return {str(k): canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [canonical(v) for v in value]
    return value


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
        stop_sequence=data.get("stop_sequence"),
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
    """The response `encode` stored; UnreadableEntry if `blob` is not one."""
    try:
        return _response(orjson.loads(blob))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableEntry(type(exc).__name__) from None


def _response(data: dict[str, Any]) -> ChatResponse:
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


@dataclass(frozen=True, slots=True, kw_only=True)
class VectorEntry:
    """A cached question in a semantic scope: its entry key, its text and its unit vector."""

    key: str
    text: str
    vector: np.ndarray


def pack_vector(text: str, vector: np.ndarray) -> bytes:
    """Text and float32 vector as one blob."""
    encoded = text.encode("utf-8")
    return struct.pack("<I", len(encoded)) + encoded + vector.astype("<f4").tobytes()


def unpack_vector(key: str, blob: bytes) -> VectorEntry:
    """The inverse of `pack_vector`; UnreadableEntry if `blob` is not one."""
    try:
        (size,) = struct.unpack_from("<I", blob)
        if 4 + size > len(blob):
            raise ValueError("text runs past the blob")
        text = blob[4 : 4 + size].decode("utf-8")
        vector = np.frombuffer(blob[4 + size :], dtype="<f4")
    except (struct.error, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise UnreadableEntry(type(exc).__name__) from None
    return VectorEntry(key=key, text=text, vector=vector)
