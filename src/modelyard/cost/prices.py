"""Prices as data: what a call costs from its usage, and what it may cost at most before it runs."""

from __future__ import annotations

from dataclasses import dataclass, replace

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
    billed as other writes. `above`, when set, is the long-context tier: a call whose prompt
    has more input tokens than its threshold is billed, whole, at its rates (`with_tier`)."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
    cache_write_1h: float | None = None
    above: LongContext | None = None

    @property
    def is_free(self) -> bool:
        """Whether every token costs nothing (local models)."""
        return (
            self.input == 0
            and self.output == 0
            and not self.cached_input
            and not self.cache_write
            and not self.cache_write_1h
            and (self.above is None or self.above.rates.is_free)
        )

    @property
    def dearest_input(self) -> float:
        """The most an input token can cost at these rates (a cache write can cost more than
        plain input); for a call's own tier, see `at`."""
        return max(self.input, self.cache_write or 0.0, self.cache_write_1h or 0.0)

    def at(self, input_tokens: int) -> Price:
        """The rates a call whose prompt has `input_tokens` input tokens (cached and written
        ones included, as providers count them) is billed at: the long-context tier's above
        its threshold, these otherwise."""
        if self.above is not None and input_tokens > self.above.tokens:
            return self.above.rates
        return self

    def up_to(self, input_tokens: int) -> tuple[Price, ...]:
        """Every set of rates a call of at most `input_tokens` input tokens may be billed at:
        the worst case takes the dearest, whichever side of the threshold the call lands."""
        tier = self.at(input_tokens)
        return (self,) if tier is self else (self, tier)

    def worst_case_embedding(self, request: EmbeddingRequest) -> float:
        """The most embedding `request` can cost: each input's UTF-8 bytes (a token is at
        least one) and its framing, at the dearest input price."""
        tokens = sum(len(text.encode("utf-8")) + MESSAGE_FRAMING_TOKENS for text in request.inputs)
        return tokens * max(r.dearest_input for r in self.up_to(tokens)) / PER_MILLION

    def cost(self, usage: Usage) -> float:
        """What `usage` (one call's) costs in USD, at the rates of its tier (`at`)."""
        rates = self.at(usage.input_tokens)
        cached = min(usage.cached_tokens, usage.input_tokens)
        written = min(usage.cache_write_tokens, usage.input_tokens - cached)
        written_1h = min(usage.cache_write_1h_tokens, written)
        cached_rate = rates.input if rates.cached_input is None else rates.cached_input
        write_rate = rates.input if rates.cache_write is None else rates.cache_write
        write_1h_rate = write_rate if rates.cache_write_1h is None else rates.cache_write_1h
        return (
            (usage.input_tokens - cached - written) * rates.input
            + cached * cached_rate
            + (written - written_1h) * write_rate
            + written_1h * write_1h_rate
            + usage.output_tokens * rates.output
        ) / PER_MILLION

    def worst_case(self, request: ChatRequest, max_output_tokens: int) -> float:
        """The most this request can cost: input bounded by its byte length (`bound_input_tokens`),
        the full `max_tokens` (or the model's `max_output_tokens`) of output per choice, at the
        long-context tier's rates when that bound passes its threshold.

        Budgets reserve this before the call and settle to the real cost after it.
        """
        tokens = bound_input_tokens(request)
        output = (request.max_tokens or max_output_tokens) * max(1, request.n)
        most = max(tokens * r.dearest_input + output * r.output for r in self.up_to(tokens))
        return most / PER_MILLION

    def with_tier(
        self,
        *,
        tokens: int,
        input: float,
        output: float,
        cached_input: float | None = None,
        cache_write: float | None = None,
        cache_write_1h: float | None = None,
    ) -> Price:
        """These rates with a long-context tier: a call of more than `tokens` input tokens is
        billed whole at `input` and `output`. A cache rate the tier leaves unset keeps its ratio
        to input (the tier's input over this input, or 1 when this input is 0), as Google and
        Anthropic price theirs: a cache read is 0.1x input and a write 1.25x (2x for an hour)
        in both tiers. One unset in both falls back as usual: to the tier's input (a 1-hour write
        to the tier's `cache_write`)."""
        if tokens <= 0:
            raise ValueError(f"a long-context threshold must be above 0 tokens, not {tokens}")
        scale = input / self.input if self.input else 1.0

        def scaled(own: float | None, base: float | None) -> float | None:
            return own if own is not None or base is None else base * scale

        rates = Price(
            input=input,
            output=output,
            cached_input=scaled(cached_input, self.cached_input),
            cache_write=scaled(cache_write, self.cache_write),
            cache_write_1h=scaled(cache_write_1h, self.cache_write_1h),
        )
        return replace(self, above=LongContext(tokens=tokens, rates=rates))


@dataclass(frozen=True, slots=True, kw_only=True)
class LongContext:
    """A long-context tier: a call whose prompt has more than `tokens` input tokens (cached
    and written ones included) is billed, every token of it, at `rates` (Gemini 2.5 Pro and
    Claude Sonnet 4/4.5 with 1M context: above 200,000)."""

    tokens: int
    rates: Price


def usd(amount: float) -> str:
    """Dollars to six decimals, or to three significant digits below half a millionth: a short
    embedding's or a cheap model's spend must not read as 0.000000."""
    if 0 < abs(amount) < 5e-7:
        return f"{amount:.3g}"
    return f"{amount:.6f}"
