"""Prompt-cache breakpoints in a Messages request: `cache_control` read and checked as Anthropic
checks it, so a client's markers reach an Anthropic upstream instead of vanishing (and with them
the cache-read price of every prompt after the first)."""

from __future__ import annotations

from typing import Any

from modelyard.gateway.errors import bad_request
from modelyard.gateway.fields import expect_list, expect_object, expect_str
from modelyard.types import CacheTtl

MAX_BREAKPOINTS = 4
"""Anthropic refuses a request with more blocks carrying `cache_control` than this."""

_TTLS: dict[Any, CacheTtl] = {None: "5m", "5m": "5m", "1h": "1h"}


class Breakpoints:
    """The `cache_control` markers of one request, read block by block and counted."""

    __slots__ = ("count",)

    def __init__(self) -> None:
        self.count = 0

    def read(self, block: dict[str, Any], where: str) -> CacheTtl | None:
        """The ttl `block`'s marker asks for ("5m" when it names none), or None without one;
        400 naming the field when the marker is malformed or one too many."""
        raw = block.get("cache_control")
        if raw is None:
            return None
        here = f"{where}.cache_control"
        marker = expect_object(raw, here)
        unknown = sorted(marker.keys() - {"type", "ttl"})
        if unknown:
            raise bad_request(f"{here}.{unknown[0]}: unknown field", f"{here}.{unknown[0]}")
        if marker.get("type") != "ephemeral":
            raise bad_request(
                f"{here}.type: expected 'ephemeral', got {marker.get('type')!r}", f"{here}.type"
            )
        ttl = marker.get("ttl")
        if not isinstance(ttl, str | None) or ttl not in _TTLS:
            raise bad_request(f"{here}.ttl: expected '5m' or '1h', got {ttl!r}", f"{here}.ttl")
        self.count += 1
        if self.count > MAX_BREAKPOINTS:
            raise bad_request(
                f"{here}: at most {MAX_BREAKPOINTS} blocks may carry cache_control "
                f"(this is number {self.count})",
                here,
            )
        return _TTLS[ttl]


def system_prompt(raw: Any, marks: Breakpoints) -> tuple[str | None, CacheTtl | None]:
    """The `system` field as one prompt and its breakpoint. The prompt is one string in a
    ChatRequest, so a marker on any of its blocks becomes one at its end (the last marker's
    ttl): the cached prefix then ends with the system prompt, a little later than asked."""
    if not raw:
        return None, None
    if isinstance(raw, str):
        return raw, None
    texts: list[str] = []
    ttl: CacheTtl | None = None
    for i, item in enumerate(expect_list(raw, "system")):
        here = f"system[{i}]"
        block = expect_object(item, here)
        if block.get("type") != "text":
            raise bad_request(f"{here}.type: expected 'text' here", here)
        texts.append(expect_str(block.get("text"), f"{here}.text"))
        ttl = marks.read(block, here) or ttl
    return "\n".join(texts), ttl
