"""The fake Anthropic API's prompt cache: what `cache_control` breakpoints read and write.

Modelled on the API's rules, coarsely: the prompt is read in the order tools, system, messages;
each breakpoint names the prefix that ends with its block; a request reads the longest prefix an
earlier request wrote, and writes the rest up to its last breakpoint, at that breakpoint's ttl.
Tokens are the fake's usual estimate (JSON bytes / 4); the API's minimum cacheable length is not
modelled. A breakpoint inside a `tool_result`'s content counts as one on the `tool_result`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson

MAX_BREAKPOINTS = 4


def _blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt's blocks in cache order."""
    out: list[dict[str, Any]] = list(body.get("tools", []))
    system = body.get("system")
    if isinstance(system, list):
        out.extend(system)
    elif system:
        out.append({"type": "text", "text": system})
    for message in body["messages"]:
        content = message["content"]
        out.extend([{"type": "text", "text": content}] if isinstance(content, str) else content)
    return out


def _ttl(block: dict[str, Any]) -> str | None:
    """The breakpoint on `block` (or inside its content): "5m", "1h", or None."""
    inner = block.get("content")
    marks = [block, *inner] if isinstance(inner, list) else [block]
    found = [m["cache_control"] for m in marks if isinstance(m, dict) and "cache_control" in m]
    return (found[-1].get("ttl") or "5m") if found else None


def _unmarked(block: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in block.items() if k != "cache_control"}
    if isinstance(out.get("content"), list):
        out["content"] = [_unmarked(b) for b in out["content"]]
    return out


def count_breakpoints(body: dict[str, Any]) -> int:
    """How many blocks carry `cache_control` (the API allows at most MAX_BREAKPOINTS)."""
    total = 0
    for block in _blocks(body):
        inner = block.get("content")
        total += "cache_control" in block
        if isinstance(inner, list):
            total += sum(isinstance(b, dict) and "cache_control" in b for b in inner)
    return total


@dataclass(frozen=True, slots=True)
class CacheUse:
    """Prompt tokens a request read from the cache and wrote to it (the 1-hour part apart)."""

    read: int = 0
    written: int = 0
    written_1h: int = 0


@dataclass
class PromptCache:
    """The prefixes earlier requests wrote."""

    prefixes: set[str] = field(default_factory=set)

    def use(self, body: dict[str, Any]) -> CacheUse:
        """What `body`'s breakpoints read and write, remembering what it writes."""
        points = _points(body)
        if not points:
            return CacheUse()
        read = max((tokens for key, tokens, _ in points if key in self.prefixes), default=0)
        self.prefixes.update(key for key, _, _ in points)
        written = points[-1][1] - read
        return CacheUse(read=read, written=written, written_1h=written * (points[-1][2] == "1h"))


def _points(body: dict[str, Any]) -> list[tuple[str, int, str]]:
    """Each breakpoint's (prefix digest, prefix tokens, ttl), in cache order."""
    points: list[tuple[str, int, str]] = []
    prefix: list[dict[str, Any]] = []
    for block in _blocks(body):
        prefix.append(_unmarked(block))
        ttl = _ttl(block)
        if ttl is not None:
            text = orjson.dumps(prefix)
            points.append((hashlib.sha256(text).hexdigest(), len(text) // 4, ttl))
    return points


def marked_tokens(body: dict[str, Any]) -> int:
    """The tokens of the prefix `body`'s last breakpoint marks (0 without one): what a request
    reads from the cache and writes to it together, whatever the cache holds."""
    points = _points(body)
    return points[-1][1] if points else 0
