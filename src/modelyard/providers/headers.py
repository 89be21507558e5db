"""Reading what providers say in response headers: when to retry, how much quota is left."""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

_NUMBER = r"(\d+(?:\.\d+)?)"
_DURATION = re.compile(
    # Go's time.Duration format, which prints fractions below a second too: 8.5ms, 750µs.
    rf"(?:{_NUMBER}h)?(?:{_NUMBER}m(?!s))?(?:{_NUMBER}s)?(?:{_NUMBER}ms)?"
    rf"(?:{_NUMBER}(?:µs|μs|us))?(?:{_NUMBER}ns)?$"
)
_UNIT_SECONDS = (3600.0, 60.0, 1.0, 1e-3, 1e-6, 1e-9)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait, from `retry-after-ms`, or `retry-after` as seconds or an HTTP-date."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI-style reset duration (`1s`, `6m0s`, `250ms`, `8.5ms`) or a number."""
    if not value:
        return None
    value = value.strip()
    try:
        return float(value)
    except ValueError:
        pass
    match = _DURATION.match(value)
    if match is None or not any(match.groups()):
        return None
    return sum(float(g) * unit for g, unit in zip(match.groups(), _UNIT_SECONDS, strict=True) if g)


def parse_instant(value: str | None) -> float | None:
    """The Unix time of an RFC 3339 instant (`2026-11-30T19:14:12Z`, as Anthropic writes a
    reset); None if it is not one."""
    if not value:
        return None
    try:
        return datetime.fromisoformat(value.strip().replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _int(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


@dataclass(frozen=True, slots=True, kw_only=True)
class RateLimitInfo:
    """The quota a provider reported on its last response; None where it said nothing."""

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests_s: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens_s: float | None = None

    @property
    def empty(self) -> bool:
        """Whether the headers carried no quota at all."""
        return (
            self.limit_requests is None
            and self.limit_tokens is None
            and (self.remaining_requests is None and self.remaining_tokens is None)
        )


def openai_rate_limits(headers: Mapping[str, str]) -> RateLimitInfo:
    """OpenAI's `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` headers."""
    return RateLimitInfo(
        limit_requests=_int(headers.get("x-ratelimit-limit-requests")),
        remaining_requests=_int(headers.get("x-ratelimit-remaining-requests")),
        reset_requests_s=parse_duration(headers.get("x-ratelimit-reset-requests")),
        limit_tokens=_int(headers.get("x-ratelimit-limit-tokens")),
        remaining_tokens=_int(headers.get("x-ratelimit-remaining-tokens")),
        reset_tokens_s=parse_duration(headers.get("x-ratelimit-reset-tokens")),
    )


def anthropic_rate_limits(headers: Mapping[str, str], *, now: float | None = None) -> RateLimitInfo:
    """Anthropic's `anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}` headers
    (reset is an RFC 3339 instant)."""

    def reset(name: str) -> float | None:
        instant = parse_instant(headers.get(name))
        if instant is None:
            return None
        return max(0.0, instant - (time.time() if now is None else now))

    return RateLimitInfo(
        limit_requests=_int(headers.get("anthropic-ratelimit-requests-limit")),
        remaining_requests=_int(headers.get("anthropic-ratelimit-requests-remaining")),
        reset_requests_s=reset("anthropic-ratelimit-requests-reset"),
        limit_tokens=_int(headers.get("anthropic-ratelimit-tokens-limit")),
        remaining_tokens=_int(headers.get("anthropic-ratelimit-tokens-remaining")),
        reset_tokens_s=reset("anthropic-ratelimit-tokens-reset"),
    )
