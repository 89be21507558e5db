"""The config file's shape: providers, models, embedders and systems (graphs of Models).

Validated with pydantic; every section forbids unknown keys. Cross-references (a model's
provider, a system's members, cycles) are checked afterwards in `references.py`, where the
whole file is known. `modelyard schema` writes the JSON Schema generated from these classes.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    ConfigDict,
    Field,
    NonNegativeFloat,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    field_validator,
    model_validator,
)

from modelyard.config.base import Spec
from modelyard.config.local import LocalEmbedderSpec, LocalModelSpec
from modelyard.config.nodes import NodeSpec
from modelyard.config.operations import OperationsSpec
from modelyard.config.resilience import BreakerSpec, LimitsSpec, RetrySpec

WireKind = Literal["openai", "anthropic", "gemini"]

_BARE_VARIABLE = re.compile(r"\$([A-Za-z_][A-Za-z0-9_]*)|%([A-Za-z_][A-Za-z0-9_]*)%")


def _refuse_bare_variable(field: str, value: str) -> None:
    """Refuse a value that is only `$VAR` (a shell's way) or `%VAR%` (Windows'): the loader
    reads `${VAR}` alone, so it would be used as written (sent as the key, say)."""
    match = _BARE_VARIABLE.fullmatch(value.strip())
    if match is not None:
        name = match.group(1) or match.group(2)
        raise ValueError(
            f"{field} is {value.strip()!r}, which is taken as written, not read from the "
            f"environment; write ${{{name}}}"
        )


class TimeoutsSpec(Spec):
    """Seconds allowed per phase of a call to a provider."""

    connect: PositiveFloat = 10.0
    total: PositiveFloat = 120.0
    first_token: PositiveFloat = 30.0
    stall: PositiveFloat = 30.0


class AuthSpec(Spec):
    """How the API key travels, when not by the wire format's own convention."""

    header: str | None = None
    prefix: str = ""
    query: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> AuthSpec:
        if self.header and self.query:
            raise ValueError("set either header or query for the key, not both")
        return self


class ProviderSpec(Spec):
    """A connection to a hosted API: where it is, how to authenticate, how hard to push it.

    Any OpenAI-compatible server (vLLM, Ollama, llama.cpp server, Groq, Together, OpenRouter,
    Azure OpenAI) is `type: openai` with its own `base_url`, `auth`, `headers` and `query`.
    """

    type: WireKind
    base_url: str | None = None
    api_key: SecretStr | None = None
    optional: bool = False
    """When its `${ENV}` variables are unset, disable this provider (and say so) instead of
    refusing the whole config."""
    auth: AuthSpec | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    timeouts: TimeoutsSpec = Field(default_factory=TimeoutsSpec)
    max_connections: PositiveInt = 100
    retry: RetrySpec | None = None
    breaker: BreakerSpec | None = None
    limits: LimitsSpec | None = None
    max_tokens_field: Literal["max_completion_tokens", "max_tokens"] | None = None
    """`type: openai` only: the body field that carries the output cap. OpenAI's own is
    `max_completion_tokens` (the default; its reasoning models refuse `max_tokens`); servers
    that know only the old name need `max_tokens` (Ollama ignores the new one)."""

    @model_validator(mode="after")
    def _openai_only(self) -> ProviderSpec:
        if self.max_tokens_field is not None and self.type != "openai":
            raise ValueError("max_tokens_field applies to type: openai providers only")
        return self

    @field_validator("api_key", mode="before")
    @classmethod
    def _key_not_a_bare_variable(cls, value: object) -> object:
        if isinstance(value, str):
            _refuse_bare_variable("api_key", value)
        return value

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            _refuse_bare_variable("base_url", value)
        if value is not None and not value.startswith(("http://", "https://", "\x00")):
            # The value is never echoed: a misplaced secret (an API key, a URL with a
            # password) would be printed; at most its scheme is named.
            scheme = urlsplit(value).scheme
            got = f"got a {scheme!r} URL" if scheme else "got something that is not a URL"
            raise ValueError(f"base_url must start with http:// or https://; {got}")
        if value is not None and urlsplit(value).username is not None:
            # aiohttp refuses credentials in the URL beside an Authorization header, and only
            # at request time. The message must not echo the URL: it holds a password.
            raise ValueError(
                "base_url must not hold credentials (user:password@host); give the key as "
                "'api_key' (with 'auth' to choose its header or query parameter), or put the "
                "whole header in 'headers' (e.g. Authorization: Basic ...)"
            )
        return value.rstrip("/") if value else value


class LongContextSpec(Spec):
    """A long-context tier: a call whose prompt has more than `tokens` input tokens (cached
    and cache-written ones included, as Google and Anthropic count them) is billed, every token
    of it, at these rates instead. USD per million tokens."""

    tokens: PositiveInt
    """The threshold: the tier applies above it (200000 for Gemini 2.5 Pro and Claude Sonnet 4
    and 4.5 with 1M context)."""
    input: NonNegativeFloat
    output: NonNegativeFloat
    cached_input: NonNegativeFloat | None = None
    """Unset: the model's `cached_input` times this `input` over the model's `input` (the ratio
    Google and Anthropic keep in both tiers); this `input` if the model sets none."""
    cache_write: NonNegativeFloat | None = None
    """Unset: the model's `cache_write` scaled so; this `input` if the model sets none."""
    cache_write_1h: NonNegativeFloat | None = None
    """Unset: the model's `cache_write_1h` scaled so; this `cache_write` if the model sets
    none."""


class PriceSpec(Spec):
    """USD per million tokens."""

    input: NonNegativeFloat
    output: NonNegativeFloat = 0.0
    cached_input: NonNegativeFloat | None = None
    """Input tokens read from the provider's prompt cache; unset: the input price."""
    cache_write: NonNegativeFloat | None = None
    """Input tokens written to the provider's prompt cache (Anthropic: 1.25x input for the
    5-minute cache); unset: the input price."""
    cache_write_1h: NonNegativeFloat | None = None
    """Input tokens written to Anthropic's 1-hour prompt cache (2x input); unset: `cache_write`."""
    above: LongContextSpec | None = None
    """A long-context tier (Gemini 2.5 Pro, Claude Sonnet 4/4.5 with 1M context): the rates for
    a whole call whose prompt passes `above.tokens`; unset: these rates at any length."""


class CapabilitiesSpec(Spec):
    """What the model supports; unset fields take the wire format's defaults."""

    streaming: bool | None = None
    tools: bool | None = None
    vision: bool | None = None
    json_schema: bool | None = None
    logprobs: bool | None = None
    prefill: bool | None = None
    reasoning: bool | None = None
    system_messages: bool | None = None


class ModelSpec(Spec):
    """A model: hosted (`provider` + pinned `id` + `price`) or local (`local`)."""

    provider: str | None = None
    id: str | None = None
    local: LocalModelSpec | None = None
    price: PriceSpec | None = None
    context_window: PositiveInt | None = None
    max_output_tokens: PositiveInt = 4096
    capabilities: CapabilitiesSpec = Field(default_factory=CapabilitiesSpec)
    timeouts: TimeoutsSpec | None = None
    retry: RetrySpec | None = None
    breaker: BreakerSpec | None = None
    limits: LimitsSpec | None = None
    fallbacks: list[str] = Field(default_factory=list)
    """Models to try, in order, when this one fails: shorthand for a fallback system with the
    default rules (`resilience/fallback.py`) and `member_share: 0.5`. Wherever this model is
    used, its fallbacks come with it."""

    @model_validator(mode="after")
    def _hosted_or_local(self) -> ModelSpec:
        if self.provider is None and self.local is None:
            raise ValueError("needs 'provider' (a hosted model) or 'local'; neither is given")
        if self.provider is not None and self.local is not None:
            raise ValueError("give either 'provider' (a hosted model) or 'local', not both")
        if self.provider is not None:
            if not self.id:
                raise ValueError(
                    "a hosted model needs 'id', the provider's model id (pin a dated version)"
                )
            if self.price is None:
                raise ValueError(
                    "a hosted model needs 'price' (USD per million tokens: input, output)"
                )
        return self


class EmbedderSpec(Spec):
    """An embedding model: hosted (`provider` + `id` + `price`) or local (`local`)."""

    provider: str | None = None
    id: str | None = None
    local: LocalEmbedderSpec | None = None
    price: PriceSpec | None = None
    dimensions: PositiveInt | None = None
    timeouts: TimeoutsSpec | None = None

    @model_validator(mode="after")
    def _hosted_or_local(self) -> EmbedderSpec:
        if self.provider is None and self.local is None:
            raise ValueError("needs 'provider' (a hosted embedder) or 'local'; neither is given")
        if self.provider is not None and self.local is not None:
            raise ValueError("give either 'provider' (a hosted embedder) or 'local', not both")
        if self.provider is not None and (not self.id or self.price is None):
            raise ValueError("a hosted embedder needs 'id' and 'price'")
        return self


class Config(OperationsSpec):
    """A whole modelyard config file."""

    # Top-level `x-` keys hold YAML anchors and are ignored (config.loader): editors must
    # accept them too.
    model_config = ConfigDict(
        **OperationsSpec.model_config, json_schema_extra={"patternProperties": {"^x-": {}}}
    )

    version: Literal[1] = 1
    providers: dict[str, ProviderSpec] = Field(default_factory=dict)
    models: dict[str, ModelSpec] = Field(default_factory=dict)
    embedders: dict[str, EmbedderSpec] = Field(default_factory=dict)
    systems: dict[str, NodeSpec] = Field(default_factory=dict)
    default_deadline: PositiveFloat | None = None
    """Seconds every request gets unless it brings a tighter deadline."""
