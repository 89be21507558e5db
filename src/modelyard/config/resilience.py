"""Config for the resilience wrappers: retries, circuit breakers, client-side rate limits.

Each is set on a provider and may be overridden per model. Absurd values are refused at load.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from modelyard.config.base import Spec


class RetrySpec(Spec):
    """Retry a failed call that may succeed if repeated (rate limits, timeouts, outages)."""

    attempts: int = Field(default=2, ge=0, le=10)
    """Retries after the first try (0 disables)."""
    initial_backoff: PositiveFloat = 0.5
    max_backoff: PositiveFloat = Field(default=20.0, le=600)
    jitter: float = Field(default=0.5, ge=0, le=1)
    max_retry_after: PositiveFloat = Field(default=60.0, le=3600)
    """A provider's Retry-After longer than this is not waited for: the error goes up instead."""

    @model_validator(mode="after")
    def _ordered(self) -> RetrySpec:
        if self.initial_backoff > self.max_backoff:
            raise ValueError("initial_backoff must not exceed max_backoff")
        return self


class BreakerSpec(Spec):
    """Open the circuit when too many recent calls failed; probe it until the model recovers."""

    failure_rate: float = Field(default=0.5, gt=0, le=1)
    min_calls: PositiveInt = 5
    window: PositiveFloat = 30.0
    """Seconds of history the failure rate is computed over."""
    open_for: PositiveFloat = Field(default=15.0, le=3600)
    """Seconds the circuit stays open before a probe is let through."""
    probes: PositiveInt = 1
    """Successful probes in a row that close the circuit again."""


class LimitsSpec(Spec):
    """Client-side rate limits, so we slow down before the provider starts refusing us."""

    rpm: PositiveInt | None = None
    tpm: PositiveInt | None = None
    max_concurrency: PositiveInt | None = None
    when_limited: Literal["wait", "fail"] = "wait"
    max_wait: NonNegativeFloat = 10.0
    """Seconds a request may wait in the queue before it fails as rate limited."""
    max_queue: PositiveInt = 1000
