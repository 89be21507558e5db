"""What of a request a hosted model takes: the fields it cannot act on are left out before the
wire format writes the body, and said, so a drop is never silent.

A request's `thinking` and `effort` reach only a model whose `capabilities.reasoning` is on, and
its `context_management` only a wire format that takes it (Anthropic's); for the others they are
dropped, and the answer's decision says so (`details["thinking"]`, `["effort"]`,
`["context_management"]`). A model whose `capabilities.system_messages` is off gets a request's
later system messages moved ahead of its first turn, into its system prompt (no Anthropic model
before Claude Opus 4.8 takes them later): a move, not a drop, so nothing is said.
"""

from __future__ import annotations

from dataclasses import replace

from modelyard.model import Capabilities
from modelyard.types import ChatRequest

THINKING_DROPPED = "dropped: this model does not reason (capabilities.reasoning is off)"
"""What an answer's decision says (`details["thinking"]`) when the thinking asked was not sent
(and `details["effort"]` when the effort was not)."""

CONTEXT_MANAGEMENT_DROPPED = "dropped: only Anthropic's Messages API edits context server-side"
"""What an answer's decision says (`details["context_management"]`) when it was not sent."""


def fit(
    request: ChatRequest, capabilities: Capabilities, *, takes_context_management: bool
) -> tuple[ChatRequest, dict[str, str]]:
    """`request` as a model with these capabilities takes it, and what was dropped from it
    (field: why). A `disabled` thinking is what a model that does not reason does anyway, so
    it is dropped unsaid."""
    dropped: dict[str, str] = {}
    thinking, effort = request.thinking, request.effort
    if not capabilities.reasoning:
        if thinking is not None and thinking.type != "disabled":
            dropped["thinking"] = THINKING_DROPPED
        if effort is not None:
            dropped["effort"] = THINKING_DROPPED
        thinking = effort = None
    context = request.context_management
    if context is not None and not takes_context_management:
        dropped["context_management"] = CONTEXT_MANAGEMENT_DROPPED
        context = None
    if (thinking, effort, context) != (
        request.thinking,
        request.effort,
        request.context_management,
    ):
        request = replace(request, thinking=thinking, effort=effort, context_management=context)
    if not capabilities.system_messages:
        request = systems_first(request)
    return request, dropped


def systems_first(request: ChatRequest) -> ChatRequest:
    """`request` with its system messages moved ahead of the first turn, in order, where every
    wire format makes them part of the system prompt."""
    messages = request.messages
    first_turn = next((i for i, m in enumerate(messages) if m.role != "system"), len(messages))
    if all(m.role != "system" for m in messages[first_turn:]):
        return request
    systems = tuple(m for m in messages if m.role == "system")
    return replace(request, messages=systems + tuple(m for m in messages if m.role != "system"))
