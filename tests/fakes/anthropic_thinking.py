"""The fake Anthropic API's extended thinking: the thinking blocks it answers with, signed, and
the checks the API makes of a request that asks for thinking or sends thinking blocks back.

Signatures are the fake's own (a digest of the block's text under the fake's secret), so a
block sent back altered, or one the fake never issued, is refused as the API refuses it: that is
what proves a client kept the blocks it was given. The rule messages follow the API's.
"""

from __future__ import annotations

import base64
import hmac
from typing import Any

_SECRET = b"fake-anthropic-thinking"

MIN_BUDGET = 1024
"""The smallest `budget_tokens` the API takes."""


def sign(text: str) -> str:
    """The signature the fake gives a thinking block with this text."""
    return base64.b64encode(hmac.digest(_SECRET, text.encode(), "sha256")).decode()


def redacted_data(tag: str) -> str:
    """The opaque `data` of a redacted thinking block the fake issues (it can check it later)."""
    return base64.b64encode(f"{tag}|{sign('redacted:' + tag)}".encode()).decode()


def _issued(data: str) -> bool:
    try:
        tag, _, signature = base64.b64decode(data, validate=True).decode().partition("|")
    except ValueError:
        return False
    return hmac.compare_digest(signature, sign("redacted:" + tag))


def thinking_on(body: dict[str, Any]) -> bool:
    """Whether the request asks the model to think."""
    thinking = body.get("thinking")
    return isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive")


def thinking_blocks(body: dict[str, Any], text: str | None, redacted: bool) -> list[dict[str, Any]]:
    """The blocks that open an answer: a signed thinking block (`text`, else a default when the
    request asks for thinking), then a redacted one when asked."""
    if text is None and thinking_on(body):
        text = "Let me think about what they asked."
    blocks: list[dict[str, Any]] = []
    if text is not None:
        if body.get("thinking", {}).get("display") == "omitted":
            text = ""  # the API returns the signature only
        blocks.append({"type": "thinking", "thinking": text, "signature": sign(text)})
    if redacted:
        blocks.append({"type": "redacted_thinking", "data": redacted_data(str(len(blocks)))})
    return blocks


def check(body: dict[str, Any]) -> str | None:
    """Why the API would refuse the thinking in this request (its config, or a block sent back
    altered), or None."""
    return _config(body) or _history(body)


def _config(body: dict[str, Any]) -> str | None:
    thinking = body.get("thinking")
    if not thinking_on(body):
        return None
    assert isinstance(thinking, dict)
    budget = thinking.get("budget_tokens")
    if thinking["type"] == "enabled":
        if budget < MIN_BUDGET:
            return (
                f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                f"{MIN_BUDGET}"
            )
        if "max_tokens" in body and budget >= body["max_tokens"]:  # count_tokens has none
            return "`max_tokens` must be greater than `thinking.budget_tokens`."
    temperature = body.get("temperature")
    if temperature is not None and temperature != 1:
        return "`temperature` may only be set to 1 when thinking is enabled or in adaptive mode."
    choice = body.get("tool_choice") or {}
    if choice.get("type") in ("any", "tool"):
        return "Thinking may not be enabled when tool_choice forces tool use."
    return None


def _history(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    for index, message in enumerate(messages):
        content = message["content"]
        if isinstance(content, str):
            continue
        for position, block in enumerate(content):
            where = f"messages.{index}.content.{position}"
            if block["type"] == "thinking" and not hmac.compare_digest(
                block["signature"], sign(block["thinking"])
            ):
                return f"{where}: Invalid `signature` in `thinking` block"
            if block["type"] == "redacted_thinking" and not _issued(block["data"]):
                return f"{where}: Invalid `data` in `redacted_thinking` block"
    return _continued_tool_turn(body) if thinking_on(body) else None


def _continued_tool_turn(body: dict[str, Any]) -> str | None:
    """With thinking on, the assistant turn a tool result answers must open with its thinking."""
    messages = body["messages"]
    last = messages[-1]
    if last["role"] != "user" or isinstance(last["content"], str) or len(messages) < 2:
        return None
    if not any(b["type"] == "tool_result" for b in last["content"]):
        return None
    turn = messages[-2]
    first = "text" if isinstance(turn["content"], str) else turn["content"][0]["type"]
    if first in ("thinking", "redacted_thinking"):
        return None
    return (
        f"messages.{len(messages) - 2}.content.0.type: Expected `thinking` or "
        f"`redacted_thinking`, but found `{first}`. When `thinking` is enabled, a final "
        "`assistant` message must start with a thinking block (preceding the lastmost set of "
        "`tool_use` and `tool_result` blocks). We recommend you include thinking blocks from "
        "previous turns. To avoid this requirement, disable `thinking`."
    )
