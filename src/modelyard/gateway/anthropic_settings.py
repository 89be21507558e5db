"""Settings of a Messages request beyond its prompt and thinking: `output_config` (effort and
structured output) and `context_management` (Anthropic's context editing), as Claude Code sends
them, read into the ChatRequest.

`output_config.effort` becomes `ChatRequest.effort` and `output_config.format` (a JSON schema)
the request's `response_format`, which every provider already honours. `context_management` is
kept as its JSON text (`types.ContextManagement`): only Anthropic can act on its dated edits,
so the gateway checks its outline (an object whose `edits` are objects with a `type`) and leaves
the rest to Anthropic's own 400.
"""

from __future__ import annotations

from typing import Any, get_args

import orjson

from modelyard.gateway.errors import bad_request
from modelyard.gateway.fields import expect_list, expect_object, expect_str, reject_unknown
from modelyard.types import ContextManagement, Effort, ResponseFormat

EFFORTS: tuple[str, ...] = tuple(e for e in get_args(Effort) if e not in ("none", "minimal"))
"""The effort levels `output_config.effort` takes."""


def read_output_config(raw: Any) -> tuple[Effort | None, ResponseFormat | None]:
    """`output_config` as an effort and a response format (None for what it leaves out); 400
    naming the field otherwise."""
    if raw is None:
        return None, None
    config = expect_object(raw, "output_config")
    reject_unknown(config, frozenset({"effort", "format"}), {}, "output_config.")
    effort = config.get("effort")
    if effort is not None and effort not in EFFORTS:
        raise bad_request(
            f"output_config.effort: expected one of {', '.join(EFFORTS)}, got {effort!r}",
            "output_config.effort",
        )
    return effort, _format(config.get("format"))


def _format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    fmt = expect_object(raw, "output_config.format")
    reject_unknown(fmt, frozenset({"type", "schema"}), {}, "output_config.format.")
    if fmt.get("type") != "json_schema":
        raise bad_request(
            f"output_config.format.type: expected 'json_schema', got {fmt.get('type')!r}",
            "output_config.format.type",
        )
    schema = expect_object(fmt.get("schema"), "output_config.format.schema")
    return ResponseFormat(type="json_schema", schema=schema)


def read_context_management(raw: Any) -> ContextManagement | None:
    """`context_management` as its JSON text (None when absent); 400 naming the field when its
    outline is wrong."""
    if raw is None:
        return None
    config = expect_object(raw, "context_management")
    edits = config.get("edits")
    if edits is not None:
        for i, edit in enumerate(expect_list(edits, "context_management.edits")):
            here = f"context_management.edits[{i}]"
            expect_str(expect_object(edit, here).get("type"), f"{here}.type")
    return ContextManagement(json=orjson.dumps(config, option=orjson.OPT_SORT_KEYS).decode())
