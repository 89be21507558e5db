"""Anthropic Messages API: a request's tools, its `tool_choice` and its JSON mode.

`anthropic_wire.to_wire` puts what `tool_fields` returns into the body, and what `native_format`
returns into `output_config.format`. Choices this translation makes:

- **Tools.** A tool's parameters become its `input_schema` (an object schema; a bare one gains
  `"type": "object"`), with its description, `strict` and prompt-cache marker. `tool_choice`
  `auto` and `none` go as they are, `required` as `any`, a tool's name as that tool; a name the
  request's tools lack, or a choice other than auto/none with no tools, is a BadRequestError.
  `parallel_tool_calls=False` becomes `disable_parallel_tool_use`.
- **JSON mode.** `response_format` (json_schema or json_object) is delivered one of two ways.
  Without thinking, by a forced tool call, since not every model has native JSON output: a tool
  named `json_answer` whose `input_schema` is the requested schema (`{"type": "object"}` for
  `json_object`), with `tool_choice` forcing it. The model's tool input is turned back into the
  answer's text by `anthropic_answer.py`, so the caller sees JSON text and
  `finish_reason="stop"`. With the caller's own tools present the choice is `any` (call one of
  yours, or answer in JSON). The schema's top level must be an object, since a tool input is
  one; a schema for an array or a scalar is refused with a BadRequestError rather than
  silently wrapped. With thinking on (`enabled` or `adaptive`) the API refuses forced tool use,
  so JSON mode goes out as native structured output instead, `output_config.format`
  (`{"type": "json_schema", "schema": ...}`, in the same `output_config` as the effort): the
  request's schema unchanged, or `{"type": "object"}` for `json_object`. The answer is a plain
  text block holding the JSON; a finished answer that does not parse is a BadResponseError
  (`check_answer`). Only models with structured outputs take the field (Claude Sonnet 4.5,
  Opus 4.5, Haiku 4.5 and later); the API's schema rules (Anthropic documents that objects
  want `"additionalProperties": false`, so it may refuse the bare `{"type": "object"}` of
  `json_object`: ask for a json_schema then) come back as its 400, a BadRequestError.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from modelyard.errors import BadRequestError
from modelyard.providers.anthropic_answer import JSON_TOOL
from modelyard.providers.anthropic_blocks import marked
from modelyard.providers.wire import check_tool_choice
from modelyard.types import ChatRequest, ResponseFormat, Tool

_ANY_OBJECT: dict[str, Any] = {"type": "object"}


def native_json(request: ChatRequest) -> bool:
    """Whether `request`'s JSON mode goes out as `output_config.format` rather than a forced
    tool: when it thinks, since the API refuses forced tool use with thinking on."""
    fmt, thinking = request.response_format, request.thinking
    return (
        fmt is not None
        and fmt.type != "text"
        and thinking is not None
        and thinking.type in ("enabled", "adaptive")
    )


def native_format(request: ChatRequest) -> dict[str, Any] | None:
    """The `output_config.format` of `request`'s JSON mode when it goes out natively
    (`native_json`); None when it does not."""
    if not native_json(request):
        return None
    fmt = request.response_format
    assert fmt is not None
    if fmt.type == "json_schema" and not fmt.schema:
        raise BadRequestError(
            "response_format json_schema needs a schema", code="invalid_response_format"
        )
    # json_object: any object, the same schema the forced tool uses for it.
    schema = dict(fmt.schema) if fmt.type == "json_schema" and fmt.schema else dict(_ANY_OBJECT)
    return {"type": "json_schema", "schema": schema}


def tool_fields(request: ChatRequest) -> dict[str, Any]:
    """The body's `tools` and `tool_choice` for `request` (its JSON tool included when JSON
    mode is forced); empty when it has neither tools nor a forced JSON mode."""
    check_tool_choice(request)
    fmt = request.response_format
    json_mode = fmt is not None and fmt.type != "text" and not native_json(request)
    if not request.tools and not json_mode:
        return {}
    names = {tool.name for tool in request.tools}
    tools = [_tool_json(tool) for tool in request.tools]
    choice = _tool_choice(request.tool_choice)
    if json_mode:
        assert fmt is not None
        if JSON_TOOL in names:
            raise BadRequestError(
                f"a tool is named {JSON_TOOL!r}, the name reserved for JSON answers on Anthropic",
                code="invalid_tools",
            )
        tools.append(_json_tool(fmt))
        if choice is None or choice["type"] in ("auto", "any"):
            choice = {"type": "any"} if request.tools else {"type": "tool", "name": JSON_TOOL}
        elif choice["type"] == "none":
            choice = {"type": "tool", "name": JSON_TOOL}
    if request.parallel_tool_calls is False and choice is not None and choice["type"] != "none":
        choice["disable_parallel_tool_use"] = True
    elif request.parallel_tool_calls is False and choice is None:
        choice = {"type": "auto", "disable_parallel_tool_use": True}
    out: dict[str, Any] = {"tools": tools}
    if choice is not None:
        out["tool_choice"] = choice
    return out


def _tool_choice(choice: str | None) -> dict[str, Any] | None:
    # A name is one of the request's tools (`check_tool_choice`).
    if choice is None:
        return None
    if choice in ("auto", "none"):
        return {"type": choice}
    if choice == "required":
        return {"type": "any"}
    return {"type": "tool", "name": choice}


def _tool_json(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "input_schema": _object_schema(tool.parameters)}
    if tool.description:
        out["description"] = tool.description
    if tool.strict is not None:
        out["strict"] = tool.strict
    return marked(out, tool.cache)


def _object_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    if not schema:
        return {"type": "object", "properties": {}}
    if "type" not in schema:
        return {"type": "object", **schema}
    return dict(schema)


def _json_tool(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.type == "json_schema":
        if not fmt.schema:
            raise BadRequestError(
                "response_format json_schema needs a schema", code="invalid_response_format"
            )
        if fmt.schema.get("type", "object") != "object":
            raise BadRequestError(
                f"response_format schema has top-level type {fmt.schema.get('type')!r}; on "
                "Anthropic JSON answers arrive as a tool input, which must be an object",
                code="invalid_response_format",
            )
        schema = _object_schema(fmt.schema)
        about = f" matching the schema{f' {fmt.name!r}' if fmt.name else ''}"
    else:
        schema = dict(_ANY_OBJECT)
        about = ""
    tool: dict[str, Any] = {
        "name": JSON_TOOL,
        "description": f"Give your final answer by calling this tool: its input is the answer, "
        f"a JSON object{about}.",
        "input_schema": schema,
    }
    if fmt.strict:
        tool["strict"] = True
    return tool
