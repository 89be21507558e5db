"""Checking request fields by hand: faster than a pydantic model on the hot path, and every
error names the exact field (`messages[2].content`) and what was expected."""

from __future__ import annotations

from typing import Any

from modelyard.gateway.errors import bad_request


def expect_object(value: Any, where: str) -> dict[str, Any]:
    """`value` if it is a JSON object."""
    if not isinstance(value, dict):
        raise bad_request(f"{where}: expected an object, got {_kind(value)}", where)
    return value


MAX_DEPTH = 64
"""The deepest nesting taken in a free-form value (a tool's JSON schema, a tool call's input).
Providers are sent it re-encoded by orjson, which refuses past 255 levels, and budgets read its
`repr`, which stops at Python's recursion limit: deeper, the request would fail as a 500 inside
the model graph (where no fallback takes it) instead of a 400 here."""


def shallow(value: Any, where: str) -> Any:
    """`value` if its arrays and objects nest at most `MAX_DEPTH` deep."""
    stack: list[tuple[Any, int]] = [(value, 1)] if isinstance(value, dict | list) else []
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        if depth > MAX_DEPTH:
            raise bad_request(f"{where}: nested more than {MAX_DEPTH} levels deep", where)
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return value


def expect_list(value: Any, where: str, *, non_empty: bool = False) -> list[Any]:
    """`value` if it is a JSON array (non-empty when asked)."""
    if not isinstance(value, list):
        raise bad_request(f"{where}: expected an array, got {_kind(value)}", where)
    if non_empty and not value:
        raise bad_request(f"{where}: must not be empty", where)
    return value


def expect_str(value: Any, where: str) -> str:
    """`value` if it is a string."""
    if not isinstance(value, str):
        raise bad_request(f"{where}: expected a string, got {_kind(value)}", where)
    return value


def optional_str(body: dict[str, Any], key: str, where: str = "") -> str | None:
    """`body[key]` as a string, or None when absent or null."""
    value = body.get(key)
    return None if value is None else expect_str(value, where + key)


def optional_number(
    body: dict[str, Any], key: str, low: float, high: float, where: str = ""
) -> float | None:
    """`body[key]` as a number within [low, high], or None."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{where}{key}: expected a number, got {_kind(value)}", where + key)
    if not low <= value <= high:
        raise bad_request(f"{where}{key}: must be between {low:g} and {high:g}, got {value}", key)
    return float(value)


def optional_int(
    body: dict[str, Any], key: str, low: int, high: int, where: str = ""
) -> int | None:
    """`body[key]` as an integer within [low, high], or None."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{where}{key}: expected an integer, got {_kind(value)}", where + key)
    if not low <= value <= high:
        raise bad_request(f"{where}{key}: must be between {low} and {high}, got {value}", key)
    return value


def optional_bool(body: dict[str, Any], key: str, where: str = "") -> bool | None:
    """`body[key]` as a boolean, or None."""
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"{where}{key}: expected true or false, got {_kind(value)}", where + key)
    return value


def string_map(value: Any, where: str) -> dict[str, str]:
    """An object whose values are all strings (OpenAI metadata)."""
    obj = expect_object(value, where)
    for key, item in obj.items():
        if not isinstance(item, str):
            raise bad_request(f"{where}.{key}: expected a string, got {_kind(item)}", where)
    return obj


def reject_unknown(
    body: dict[str, Any], known: frozenset[str], neutral: dict[str, Any], where: str = ""
) -> None:
    """Refuse fields we do not honour, unless they hold the API's neutral default (so clients that
    always send e.g. `presence_penalty: 0` still work, but nothing is silently ignored)."""
    for key in body.keys() - known:
        if key in neutral and body[key] in (None, neutral[key]):
            continue
        raise bad_request(f"{where}{key}: not supported by this gateway", where + key)


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "an array",
        dict: "an object",
    }.get(type(value), type(value).__name__)
