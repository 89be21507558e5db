"""The fake Anthropic API's request checks: why the Messages API (or its count_tokens) would
refuse a body.

The body is checked against the official SDK's request types, exactly (a field they do not know,
anywhere, is an extra input, as the API reports it); beta fields only with their beta named in
`anthropic-beta`; the legacy sampling fields by `anthropic-version`; then the turn rules the types
cannot express (tool results right after their calls, non-empty content, where a system message
may stand, the cache breakpoint limit), and the thinking rules (`anthropic_thinking.py`).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from anthropic.types.beta.beta_context_management_config_param import (
    BetaContextManagementConfigParam,
)
from anthropic.types.message_count_tokens_params import MessageCountTokensParams
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from pydantic import TypeAdapter, ValidationError

from tests.fakes import anthropic_thinking
from tests.fakes.anthropic_cache import MAX_BREAKPOINTS, count_breakpoints

LEGACY_VERSION = "2023-06-01"
LEGACY_FIELDS = ("temperature", "top_p", "top_k")

_NON_STREAMING = TypeAdapter(MessageCreateParamsNonStreaming)
_STREAMING = TypeAdapter(MessageCreateParamsStreaming)
_TOP_LEVEL = (
    MessageCreateParamsNonStreaming.__required_keys__
    | MessageCreateParamsNonStreaming.__optional_keys__
    | {"stream"}
)
BETA_FIELDS: dict[str, tuple[str, TypeAdapter[Any]]] = {
    "context_management": (
        "context-management-2025-06-27",
        TypeAdapter(BetaContextManagementConfigParam),
    ),
}
"""Fields the API takes only with their beta named in `anthropic-beta`, and their SDK type."""
_COUNT = TypeAdapter(MessageCountTokensParams)
_COUNT_TOP_LEVEL = (
    MessageCountTokensParams.__required_keys__ | MessageCountTokensParams.__optional_keys__
)


def validate_request(
    body: Any,
    *,
    version: str = LEGACY_VERSION,
    kind: str = "messages",
    betas: frozenset[str] = frozenset(),
) -> str | None:
    """Why the Messages API (`kind` "messages", or "count_tokens" for its token counting) would
    refuse this body, or None when it is valid.

    Checks the body against the official SDK's request types, exactly: a field the types do not
    know (anywhere in the body) is an error, as the API reports extra inputs. The count endpoint
    takes no `max_tokens`, `stream` or sampling settings at all. A beta field is known only
    with its beta in `betas` (the `anthropic-beta` header), and then checked against the SDK's
    beta type.
    """
    if not isinstance(body, dict):
        return "request body must be a JSON object"
    sent, body = body, dict(body)
    for name, (beta, adapter) in BETA_FIELDS.items():
        if name in body and beta in betas:
            problem = _validate_part(adapter, body.pop(name), name)
            if problem is not None:
                return problem
    counting = kind == "count_tokens"
    for name in () if counting else LEGACY_FIELDS:
        if name in body:
            if version != LEGACY_VERSION:
                return f"`{name}` is deprecated for this model."
            del body[name]
    unknown = sorted(set(body) - (_COUNT_TOP_LEVEL if counting else _TOP_LEVEL))
    if unknown:
        return f"{unknown[0]}: Extra inputs are not permitted"
    adapter = _COUNT if counting else _STREAMING if body.get("stream") else _NON_STREAMING
    try:
        validated = _drain(adapter.validate_python(body))
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    difference = _first_difference(body, validated, "")
    if difference is not None:
        return f"{difference}: Extra inputs are not permitted"
    return _turn_rules(body) or anthropic_thinking.check(sent)


def _validate_part(adapter: TypeAdapter[Any], value: Any, where: str) -> str | None:
    try:
        validated = _drain(adapter.validate_python(value))
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join([where, *(str(p) for p in first['loc'])])}: {first['msg']}"
    difference = _first_difference(value, validated, where)
    return None if difference is None else f"{difference}: Extra inputs are not permitted"


def _drain(value: Any) -> Any:
    # The SDK types use Iterable[...] fields, which pydantic validates lazily: consume them.
    if isinstance(value, dict):
        return {k: _drain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | Iterator):
        return [_drain(v) for v in value]
    return value


def _first_difference(sent: Any, kept: Any, where: str) -> str | None:
    if isinstance(sent, dict) and isinstance(kept, dict):
        for key in sent:
            if key not in kept:
                return f"{where}.{key}".lstrip(".")
            found = _first_difference(sent[key], kept[key], f"{where}.{key}")
            if found:
                return found
    elif isinstance(sent, list) and isinstance(kept, list):
        for index, (a, b) in enumerate(zip(sent, kept, strict=True)):
            found = _first_difference(a, b, f"{where}.{index}")
            if found:
                return found
    return None


def _turn_rules(body: dict[str, Any]) -> str | None:
    messages = body["messages"]
    if not messages:
        return "messages: at least one message is required"
    if "max_tokens" in body and body["max_tokens"] < 1:
        return "max_tokens: must be at least 1"
    pending: set[str] = set()
    for index, message in enumerate(messages):
        if message["role"] == "system" and (index == 0 or messages[index - 1]["role"] != "user"):
            return f"messages.{index}: a system message must come right after a user turn"
        content = message["content"]
        blocks = [{"type": "text", "text": content}] if isinstance(content, str) else content
        if not blocks:
            return f"messages.{index}: all messages must have non-empty content"
        for block in blocks:
            if block["type"] == "text" and not block["text"]:
                return f"messages.{index}: text content blocks must be non-empty"
        results = [b["tool_use_id"] for b in blocks if b["type"] == "tool_result"]
        if pending and set(results) != pending:
            return (
                f"messages.{index}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(pending - set(results)))}"
            )
        if results and blocks[0]["type"] != "tool_result":
            return f"messages.{index}: tool_result blocks must come first in the user message"
        pending = {b["id"] for b in blocks if b["type"] == "tool_use"}
    last = messages[-1]
    if last["role"] == "assistant":
        content = last["content"]
        text = content if isinstance(content, str) else (content[-1].get("text") or "x")
        if text != text.rstrip():
            return "messages: final assistant content cannot end with trailing whitespace"
    marked = count_breakpoints(body)
    if marked > MAX_BREAKPOINTS:
        return (
            f"A maximum of {MAX_BREAKPOINTS} blocks with cache_control may be provided. "
            f"Found {marked}."
        )
    names = {t["name"] for t in body.get("tools", [])}
    choice = body.get("tool_choice")
    if choice and choice["type"] == "tool" and choice["name"] not in names:
        return f"tool_choice.name: tool {choice['name']!r} not found in tools"
    return None
