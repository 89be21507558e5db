"""Extended thinking in a Messages request and answer, as the gateway serves them: the `thinking`
field read into a `Thinking`, an assistant turn's thinking blocks into its reasoning (kept
unchanged, signature and all, since Anthropic refuses a block sent back altered), and an answer's
reasoning written back as the blocks Anthropic sends, whole or streamed.

The API's own limits (a budget of at least 1024 and below `max_tokens`, no temperature but 1)
are not checked here: an Anthropic upstream answers them with its 400, and other providers take
the budget as they can (see `providers/remote.py`).
"""

from __future__ import annotations

from typing import Any

from modelyard.gateway.errors import bad_request
from modelyard.gateway.fields import expect_object, expect_str, optional_int
from modelyard.types import Reasoning, RedactedThinkingPart, Thinking, ThinkingPart

_KEYS = {
    "enabled": {"type", "budget_tokens", "display"},
    "adaptive": {"type", "display"},
    "disabled": {"type"},
}
_DISPLAYS = ("summarized", "omitted")

BLOCK_TYPES = frozenset({"thinking", "redacted_thinking"})
"""The content block types that carry reasoning."""


def read_thinking(raw: Any) -> Thinking | None:
    """The `thinking` field as a Thinking (None when absent); 400 naming what is wrong."""
    if raw is None:
        return None
    config = expect_object(raw, "thinking")
    kind = config.get("type")
    if not isinstance(kind, str) or kind not in _KEYS:
        raise bad_request(
            f"thinking.type: expected 'enabled', 'adaptive' or 'disabled', got {kind!r}",
            "thinking.type",
        )
    unknown = sorted(config.keys() - _KEYS[kind])
    if unknown:
        field = f"thinking.{unknown[0]}"
        raise bad_request(f"{field}: not allowed with type {kind!r}", field)
    budget = optional_int(config, "budget_tokens", 1, 10_000_000, "thinking.")
    if kind == "enabled" and budget is None:
        raise bad_request("thinking.budget_tokens: required with type 'enabled'", "thinking")
    display = config.get("display")
    if display is not None and display not in _DISPLAYS:
        raise bad_request(
            f"thinking.display: expected 'summarized' or 'omitted', got {display!r}",
            "thinking.display",
        )
    return Thinking(type=kind, budget_tokens=budget, display=display)  # type: ignore[arg-type]


def read_block(block: dict[str, Any], where: str) -> Reasoning:
    """A `thinking` or `redacted_thinking` block of an assistant turn, as it came."""
    if block["type"] == "redacted_thinking":
        return RedactedThinkingPart(data=expect_str(block.get("data"), f"{where}.data"))
    return ThinkingPart(
        text=expect_str(block.get("thinking"), f"{where}.thinking"),
        signature=expect_str(block.get("signature"), f"{where}.signature"),
    )


def block(part: Reasoning) -> dict[str, Any]:
    """A reasoning block as the Messages API writes it in an answer."""
    if isinstance(part, RedactedThinkingPart):
        return {"type": "redacted_thinking", "data": part.data}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}
