"""What of a request a hosted model takes: the fields it cannot act on are left out before the
wire format writes the body, and said, so a drop is never silent.

A request's `thinking` and `effort` reach only a model whose `capabilities.reasoning` is on; the
fields a wire format has no place for are in its `unsent` (`context_management` everywhere but
Anthropic's; `seed`, a message's `name`, an image's `detail` and a tool's `strict` where the
API has none). For the others they are dropped, and the answer's decision says so, under the
field's name (`details["thinking"]`, `["effort"]`, `["context_management"]`, `["seed"]`,
`["name"]`, `["detail"]`, `["strict"]`). Each of the last four is a hint that cannot make an
answer wrong: a seed is best effort even at OpenAI, a detail trades cost for resolution, a name
tells speakers apart, and strict holds calls to a schema the model is given anyway. A field
whose drop would change what the caller gets is refused by the wire format instead.
A model whose `capabilities.system_messages` is off gets a request's later system messages moved
ahead of its first turn, into its system prompt (no Anthropic model before Claude Opus 4.8
takes them later): a move, not a drop, so nothing is said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from modelyard.model import Capabilities
from modelyard.types import ChatRequest, ImagePart

THINKING_DROPPED = "dropped: this model does not reason (capabilities.reasoning is off)"
"""What an answer's decision says (`details["thinking"]`) when the thinking asked was not sent
(and `details["effort"]` when the effort was not)."""

CONTEXT_MANAGEMENT_DROPPED = "dropped: only Anthropic's Messages API edits context server-side"
"""What an answer's decision says (`details["context_management"]`) when it was not sent."""


def _names(request: ChatRequest) -> bool:
    return any(m.name is not None for m in request.messages if m.role != "tool")


def _details(request: ChatRequest) -> bool:
    return any(
        isinstance(part, ImagePart) and part.detail not in (None, "auto")
        for message in request.messages
        if not isinstance(message.content, str)
        for part in message.content
    )


HINTS: dict[str, tuple[Callable[[ChatRequest], bool], str]] = {
    "seed": (
        lambda request: request.seed is not None,
        "dropped: the provider's API has no seed (best effort even at OpenAI)",
    ),
    "name": (_names, "dropped: the provider's API has no name for a message's speaker"),
    "detail": (
        _details,
        "dropped: the provider's API takes no image detail (a cost and resolution hint)",
    ),
    "strict": (
        lambda request: any(tool.strict for tool in request.tools),
        "dropped: the provider's API has no strict tools (calls follow the schema as the model "
        "does)",
    ),
}
"""The hints a wire format's `unsent` may name: whether a request uses it, and what its
answer's decision then says."""


def fit(
    request: ChatRequest, capabilities: Capabilities, *, unsent: frozenset[str]
) -> tuple[ChatRequest, dict[str, str]]:
    """`request` as a model with these capabilities, behind a wire format that cannot send
    `unsent`, takes it, and what was dropped from it (field: why). A `disabled` thinking is
    what a model that does not reason does anyway, so it is dropped unsaid."""
    dropped: dict[str, str] = {}
    thinking, effort = request.thinking, request.effort
    if not capabilities.reasoning:
        if thinking is not None and thinking.type != "disabled":
            dropped["thinking"] = THINKING_DROPPED
        if effort is not None:
            dropped["effort"] = THINKING_DROPPED
        thinking = effort = None
    context = request.context_management
    if context is not None and "context_management" in unsent:
        dropped["context_management"] = CONTEXT_MANAGEMENT_DROPPED
        context = None
    for name, (used, why) in HINTS.items():
        if name in unsent and used(request):
            dropped[name] = why  # the wire format leaves it out of the body
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
