"""Config for the resilience wrappers: retries, circuit breakers, client-side rate limits.

Each is set on a provider and may be overridden per model. Negative and absurd values are
refused at load, with the field's place in the file. How each setting is used, and the defaults
a hosted model gets when the config says nothing, are in `resilience/stack.py`.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from modelyard.config.base import Spec


class RetryBudgetSpec(Spec):
    """How much retries may add to a provider's traffic, so an outage is not multiplied.

    Over each `window`, retries may number at most `ratio` times the requests sent to the
    provider, plus `min_retries` so a quiet provider can still be retried at all. Once spent,
    failed calls are not retried (fail fast, so fallbacks take over).
    """

    ratio: float = Field(default=0.2, ge=0, le=1)
    min_retries: NonNegativeFloat = Field(default=10.0, le=10_000)
    window: PositiveFloat = Field(default=10.0, le=3600)


class RetrySpec(Spec):
    """Retry a failed call that may succeed if repeated (rate limits, timeouts, outages)."""

    attempts: int = Field(default=2, ge=0, le=10)
    """Retries after the first try (0 disables)."""
    initial_backoff: PositiveFloat = Field(default=0.5, le=60)
    max_backoff: PositiveFloat = Field(default=20.0, le=600)
    jitter: Literal["full", "decorrelated", "none"] = "full"
    """`full`: uniform in [0, backoff]; `decorrelated`: uniform in [initial, 3 x previous];
    `none`: exactly the exponential backoff (tests, mostly)."""
    max_retry_after: PositiveFloat = Field(default=60.0, le=3600)
    """A provider's Retry-After longer than this is not waited for: the error goes up instead."""
    budget: RetryBudgetSpec = Field(default_factory=RetryBudgetSpec)

    @model_validator(mode="after")
    def _ordered(self) -> RetrySpec:
        if self.initial_backoff > self.max_backoff:
            raise ValueError(
                f"initial_backoff ({self.initial_backoff:g}) must not exceed "
                f"max_backoff ({self.max_backoff:g})"
            )
        return self


class BreakerSpec(Spec):
    """Open the circuit when too many recent calls failed; probe it until the model recovers.

    On a provider it applies to each of its models (a model's own `breaker` overrides it);
    `per: provider` makes it one circuit shared by all of them, for APIs that go down whole.
    """

    enabled: bool = True
    per: Literal["model", "provider"] = "model"
    failure_rate: float = Field(default=0.5, gt=0, le=1)
    """Open when at least this share of the calls in the window failed."""
    min_calls: PositiveInt = Field(default=5, le=10_000)
    """Calls the window must hold before the rate counts (one failure is not an outage)."""
    window: PositiveFloat = Field(default=30.0, le=3600)
    """Seconds of history the failure rate is computed over."""
    open_for: PositiveFloat = Field(default=15.0, le=3600)
    """Seconds the circuit stays open before a probe is let through."""
    probes: PositiveInt = Field(default=1, le=20)
    """Successful probes in a row that close the circuit again."""


class LimitsSpec(Spec):
    """Client-side rate limits, so we slow down before the provider starts refusing us.

    On a provider they count all its models' calls together; on a model, only that model's.
    """

    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    """Tokens per minute: the prompt (estimated) plus `max_tokens`, corrected after the call."""
    max_concurrency: PositiveInt | None = None
    """Calls in flight at once, per process."""
    when_limited: Literal["wait", "fail"] = "wait"
    max_wait: NonNegativeFloat = Field(default=10.0, le=3600)
    """Seconds a request may wait in the queue before it fails as rate limited."""
    max_queue: PositiveInt = 1000
    learn: bool = True
    """Hold requests while the provider's rate-limit headers or a 429's Retry-After say its
    quota is spent (hosted models; set on the provider or per model)."""

    @property
    def limits_anything(self) -> bool:
        """Whether any configured limit applies (not just learning)."""
        return any(v is not None for v in (self.rpm, self.tpm, self.max_concurrency))
