"""Anthropic's token counting (`POST /v1/messages/count_tokens`): what differs from a Messages call.

The body is the Messages body `anthropic_wire.to_wire` makes, kept to the fields the endpoint
takes (model, messages, system, tools, tool_choice, thinking, output_config,
context_management): it refuses `max_tokens`,
`stream` and the sampling settings as extra inputs. The answer is `{"input_tokens": N}`, the
whole prompt (system and tools included) as a Messages call would bill it before any
prompt-cache split. Counting is free and generates nothing.
"""

from __future__ import annotations

from typing import Any

from modelyard.errors import BadResponseError
from modelyard.providers.wire import require

COUNTED = frozenset(
    {
        "model",
        "messages",
        "system",
        "tools",
        "tool_choice",
        "thinking",
        "output_config",
        "context_management",
    }
)
"""The Messages fields the count endpoint takes."""


def count_url(messages_url: str) -> str:
    """The count endpoint beside the Messages endpoint at `messages_url`."""
    return messages_url + "/count_tokens"


def counted(messages_body: dict[str, Any]) -> dict[str, Any]:
    """A Messages body kept to what the count endpoint takes."""
    return {name: value for name, value in messages_body.items() if name in COUNTED}


def count_from_wire(body: Any) -> int:
    """The `input_tokens` of a count_tokens answer; BadResponseError if it is not a count."""
    tokens = require(body, "input_tokens", int, "response")
    if isinstance(tokens, bool) or tokens < 0:
        raise BadResponseError(f"field response.input_tokens is {tokens!r}, not a token count")
    return int(tokens)
