"""Prices as data: what a call costs from its usage, and what it may cost at most before it runs."""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.types import ChatRequest, Usage

PER_MILLION = 1_000_000.0
CHARS_PER_TOKEN = 4.0
"""A deliberately coarse estimate (English text, BPE tokenizers); only used before a call."""


def estimate_tokens(text: str) -> int:
    """Tokens in `text`, estimated from its length (rounded up, at least 1 for non-empty text)."""
    if not text:
        return 0
    return max(1, int(len(text) / CHARS_PER_TOKEN + 0.999))


def estimate_input_tokens(request: ChatRequest) -> int:
    """Tokens the request's prompt will take, estimated, with a few per message for framing."""
    tokens = estimate_tokens(request.prompt_text) + 4 * len(request.messages)
    for tool in request.tools:
        tokens += estimate_tokens(tool.name + tool.description + str(tool.parameters))
    return tokens


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per million tokens. `cached_input` applies to input tokens served from the provider's
    prompt cache; when unset they are billed as normal input."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None

    @property
    def is_free(self) -> bool:
        """Whether every token costs nothing (local models)."""
        return self.input == 0 and self.output == 0 and not self.cached_input

    def cost(self, usage: Usage) -> float:
        """What `usage` costs in USD."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return (
            (usage.input_tokens - cached) * self.input
            + cached * cached_rate
            + usage.output_tokens * self.output
        ) / PER_MILLION

    def worst_case(self, request: ChatRequest, max_output_tokens: int) -> float:
        """The most this request can cost: estimated input, full `max_tokens` of output per choice.

        Budgets reserve this before the call and settle to the real cost after it.
        """
        output = (request.max_tokens or max_output_tokens) * max(1, request.n)
        usage = Usage(input_tokens=estimate_input_tokens(request), output_tokens=output)
        return self.cost(usage)
