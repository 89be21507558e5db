"""Prices as data: what a call costs from its usage, and what it may cost at most before it runs."""

from __future__ import annotations

from dataclasses import dataclass

from modelyard.types import ChatRequest, EmbeddingRequest, Usage

PER_MILLION = 1_000_000.0
CHARS_PER_TOKEN = 4.0
"""A deliberately coarse estimate (English text, BPE tokenizers); only used before a call."""


def estimate_tokens(text: str) -> int:
    """Tokens in `text`, estimated from its length (rounded up, at least 1 for non-empty text)."""
    return tokens_for_chars(len(text))


def tokens_for_chars(chars: int) -> int:
    """Tokens in a text of `chars` characters, estimated (what `estimate_tokens` counts)."""
    if chars <= 0:
        return 0
    return max(1, int(chars / CHARS_PER_TOKEN + 0.999))


def estimate_input_tokens(request: ChatRequest) -> int:
    """Tokens the request's prompt will take, estimated, with a few per message for framing."""
    tokens = estimate_tokens(request.prompt_text) + 4 * len(request.messages)
    for tool in request.tools:
        tokens += estimate_tokens(tool.name + tool.description + str(tool.parameters))
    return tokens


def estimate_embedding_tokens(request: EmbeddingRequest) -> int:
    """Tokens the texts of embedding `request` take, estimated."""
    return sum(estimate_tokens(text) for text in request.inputs)


def unanswered_embedding(request: EmbeddingRequest) -> Usage:
    """The usage of embedding `request` by its texts' estimated tokens: what a provider that
    received it and never answered still bills."""
    return Usage(input_tokens=estimate_embedding_tokens(request), estimated=True)


MESSAGE_FRAMING_TOKENS = 8
"""Most tokens a chat format adds around one message (role markers, separators)."""
IMAGE_TOKENS = 2_000
"""Most input tokens one image costs at the providers we know (a high-detail tile grid)."""


def bound_input_tokens(request: ChatRequest) -> int:
    """An upper bound on the request's input tokens, for reservations that must never fall short.

    A byte-level BPE token covers at least one byte of UTF-8, so the byte length of the text
    bounds its token count whatever the tokenizer; framing and images are added at their most.
    """
    size = len(request.prompt_text.encode("utf-8"))
    for tool in request.tools:
        size += len((tool.name + tool.description + str(tool.parameters)).encode("utf-8"))
    images = sum(
        1
        for message in request.messages
        if not isinstance(message.content, str)
        for part in message.content
        if part.type == "image"
    )
    return size + MESSAGE_FRAMING_TOKENS * (len(request.messages) + 1) + IMAGE_TOKENS * images


@dataclass(frozen=True, slots=True, kw_only=True)
class Price:
    """USD per million tokens. `cached_input` applies to input tokens served from the provider's
    prompt cache, `cache_write` to input tokens written to it; when unset they are billed as
    normal input. `cache_write_1h` bills writes to Anthropic's 1-hour cache; unset, they are
    billed as other writes."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None

    @property
    def is_free(self) -> bool:
        """Whether every token costs nothing (local models)."""
        return (
            self.input == 0
            and self.output == 0
            and not self.cached_input
            and not self.cache_write
            and not self.cache_write_1h
        )

    @property
    def dearest_input(self) -> float:
        """The most an input token can cost (a cache write can cost more than plain input)."""
        return max(self.input, self.cache_write or 0.0, self.cache_write_1h or 0.0)

    def worst_case_embedding(self, request: EmbeddingRequest) -> float:
        """The most embedding `request` can cost: each input's UTF-8 bytes (a token is at
        least one) and its framing, at the dearest input price."""
        tokens = sum(len(text.encode("utf-8")) + MESSAGE_FRAMING_TOKENS for text in request.inputs)
        return tokens * self.dearest_input / PER_MILLION

    def cost(self, usage: Usage) -> float:
        """What `usage` costs in USD."""
        cached = min(usage.cached_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        written_1h = min(usage.cache_write_1h_tokens, written)
        cached_rate = self.input if self.cached_input is None else self.cached_input
        write_rate = self.input if self.cache_write is None else self.cache_write
        write_1h_rate = write_rate if self.cache_write_1h is None else self.cache_write_1h
        return (
            (usage.input_tokens - cached - written) * self.input
            + cached * cached_rate
            + (written - written_1h) * write_rate
            + written_1h * write_1h_rate
            + usage.output_tokens * self.output
        ) / PER_MILLION

    def worst_case(self, request: ChatRequest, max_output_tokens: int) -> float:
        """The most this request can cost: input bounded by its byte length (`bound_input_tokens`),
        the full `max_tokens` (or the model's `max_output_tokens`) of output per choice.

        Budgets reserve this before the call and settle to the real cost after it.
        """
        output = (request.max_tokens or max_output_tokens) * max(1, request.n)
        return (
            bound_input_tokens(request) * self.dearest_input + output * self.output
        ) / PER_MILLION


def usd(amount: float) -> str:
    """Dollars to six decimals, or to three significant digits below half a millionth: a short
    embedding's or a cheap model's spend must not read as 0.000000."""
    if 0 < abs(amount) < 5e-7:
        return f"{amount:.3g}"
    return f"{amount:.6f}"
