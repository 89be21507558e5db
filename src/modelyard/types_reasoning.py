"""The values of a model's reasoning: what a request asks of it (`Thinking`, `Effort`), the blocks
an answer carries (`ThinkingPart`, `RedactedThinkingPart`) and the pieces a stream sends
(`ReasoningDelta`).

Kept apart from `types.py`, which imports and re-exports them, because they stand alone: they
name nothing else of a request or a response. Import them from `modelyard.types`, as everything
else is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True, kw_only=True)
class Thinking:
    """Reasoning asked of the model before it answers (Anthropic's extended thinking).

    `enabled` lets it spend up to `budget_tokens` (part of `max_tokens`) on it, `adaptive` lets
    it decide how much, `disabled` asks for none. Models whose `capabilities.reasoning` is off
    never get it (their decision says it was dropped); the others get their own knob (see each
    wire format). `display` is Anthropic's: `omitted` returns only the signatures.
    """

    type: Literal["enabled", "adaptive", "disabled"] = "enabled"
    budget_tokens: int | None = None
    display: Literal["summarized", "omitted"] | None = None


Effort = Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"]
"""How much effort the model should put into its answer: the levels of OpenAI's
`reasoning_effort` and Anthropic's `output_config.effort` together; each wire sends the nearest
its API takes (OpenAI has no `max`, Anthropic no `none` or `minimal`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ThinkingPart:
    """Reasoning a model wrote before its answer, with the provider's `signature` over it: a
    later turn sends it back unchanged (Anthropic refuses one altered or unsigned)."""

    text: str
    signature: str = ""
    type: Literal["thinking"] = "thinking"


@dataclass(frozen=True, slots=True, kw_only=True)
class RedactedThinkingPart:
    """Reasoning the provider returned encrypted (`data` is opaque): sent back unchanged."""

    data: str
    type: Literal["redacted_thinking"] = "redacted_thinking"


Reasoning = ThinkingPart | RedactedThinkingPart
"""A block of a model's reasoning, readable or redacted."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ReasoningDelta:
    """A piece of a streamed answer's reasoning: text of the block being streamed, the
    signature that closes it (the next text starts another block), or a whole redacted block."""

    text: str = ""
    """A piece of the block's text (`ThinkingPart.text`)."""
    signature: str = ""
    """The block's signature (`ThinkingPart.signature`), which ends it."""
    redacted: str = ""
    """A whole redacted block's data (`RedactedThinkingPart.data`)."""
