"""The rate-limit headers a request's provider calls were answered with, kept for the gateway
to show the callers it trusts with them (`gateway.headers.upstream_quota`).

Held in a `ContextVar` the gateway sets for one request only when its caller may see them, so
it follows the request into the tasks its patterns spawn and never leaks into another; every
other call pays one lookup.

A request may call several providers, at once (an ensemble's members, a cascade's checkers) or
in turn (a fallback, a retry). What is shown is the tightest quota its replies reported, header
by header: the lowest `remaining` (or, in Anthropic's unified quota of a Claude subscription,
the highest `utilization`), with the `limit` of the same reply (so the two read as one
account's); the most severe `status` (`rejected`, then any word not known to allow, then
`allowed_warning`, then `allowed`), with the `representative-claim` of the same reply; and the
earliest `reset`. Headers are grouped by name, the kind word aside
(`x-ratelimit-remaining-tokens` with `x-ratelimit-limit-tokens` and `x-ratelimit-reset-tokens`;
`anthropic-ratelimit-unified-5h-status` with `...-5h-utilization` and `...-5h-reset`), so each
provider's own names (OpenAI's, Anthropic's) are kept apart, requests apart from tokens. A
group whose reset has passed when a newer reply comes (a 429 waited out, then an answer) is
taken from that reply alone: its window has been refilled since. Any other quota header
(`anthropic-ratelimit-unified-fallback-percentage`) is the last reply's.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field

from modelyard.providers.headers import parse_duration, parse_instant

PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
"""OpenAI's (and most OpenAI-compatible servers') quota headers, and Anthropic's."""

KINDS = ("remaining", "limit", "utilization", "reset", "status", "representative-claim")
"""The words that say what a quota header is; the rest of its name says of what."""

_PRESSURE = ("remaining", "limit", "utilization")
"""The kinds shown from the reply with the least left (or the most used)."""
_SEVERITY = ("status", "representative-claim")
"""The kinds shown from the reply with the most severe status."""
_STATUS_RANKS = {"allowed": 0, "allowed_warning": 1, "rejected": 3}
_UNKNOWN_STATUS = 2
"""A status word not known to allow: shown over the allowing ones, not over a rejection."""

_EPOCH_FROM = 1e9
"""A reset given as a number this large is a Unix time (some servers write one), not seconds."""


def _group(name: str) -> tuple[str, str | None]:
    """The group a header is in (its name with the kind words as `*`) and its kind."""
    words = name.split("-")
    for kind in KINDS:
        size = kind.count("-") + 1
        for i in range(len(words) - size + 1):
            if "-".join(words[i : i + size]) == kind:
                return "-".join([*words[:i], "*", *words[i + size :]]), kind
    return name, None


def _number(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def _reset_at(value: str, now: float) -> float | None:
    """The Unix time a reset names: a duration from `now` (`1.5s`, `6m0s`), an RFC 3339 instant
    or a Unix time; None if it is none of these."""
    seconds = parse_duration(value)
    if seconds is not None:
        return seconds if seconds >= _EPOCH_FROM else now + seconds
    return parse_instant(value)


@dataclass(slots=True)
class _Group:
    """The tightest quota of one group seen so far: the header values to show."""

    values: dict[str, str] = field(default_factory=dict)
    pressure: float | None = None
    """How tight: minus what `remaining` says is left, or what `utilization` says is used."""
    severity: int | None = None
    reset_at: float | None = None

    @classmethod
    def of(cls, quota: Mapping[str, str], now: float) -> _Group:
        group = cls(values=dict(quota))
        for name, value in quota.items():
            kind = _group(name)[1]
            if kind == "remaining":
                left = _number(value)
                group.pressure = None if left is None else -left
            elif kind == "utilization":
                group.pressure = _number(value)
            elif kind == "status":
                group.severity = _STATUS_RANKS.get(value.strip().lower(), _UNKNOWN_STATUS)
            elif kind == "reset":
                group.reset_at = _reset_at(value, now)
        return group

    def tighter(self, new: _Group, now: float) -> _Group:
        """This group with what `new` (a later reply's) has tighter."""
        if self.reset_at is not None and self.reset_at <= now:
            return new  # refilled since: what it said no longer holds
        merged = _Group(dict(self.values), self.pressure, self.severity, self.reset_at)
        if _above(new.pressure, self.pressure):
            merged.pressure = new.pressure
            merged.take(new, _PRESSURE)
        if _above(new.severity, self.severity):
            merged.severity = new.severity
            merged.take(new, _SEVERITY)
        if new.reset_at is not None and (self.reset_at is None or new.reset_at < self.reset_at):
            merged.reset_at = new.reset_at
            merged.take(new, ("reset",))
        for name, value in new.values.items():
            if _group(name)[1] is None:
                merged.values[name] = value  # no kind to compare by: the last reply's
            else:
                merged.values.setdefault(name, value)  # one only the new reply has
        return merged

    def take(self, new: _Group, kinds: tuple[str, ...]) -> None:
        """Show `new`'s headers of `kinds` (one reply's, so they read together)."""
        self.values.update((n, v) for n, v in new.values.items() if _group(n)[1] in kinds)


def _above(new: float | None, old: float | None) -> bool:
    """Whether `new` is known and tighter than `old` (tighter than nothing known)."""
    return new is not None and (old is None or new > old)


@dataclass(slots=True)
class QuotaSeen:
    """The tightest quota headers the provider replies of one request reported (see the
    module docstring), names lower-cased."""

    groups: dict[str, _Group] = field(default_factory=dict)

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """The headers to show, each group's together, in the order first seen."""
        return tuple(item for group in self.groups.values() for item in group.values.items())

    def note(self, quota: Mapping[str, str], now: float) -> None:
        """Take in one reply's quota headers (lower-cased names), received at Unix time `now`."""
        by_group: dict[str, dict[str, str]] = {}
        for name, value in quota.items():
            by_group.setdefault(_group(name)[0], {})[name] = value
        for key, values in by_group.items():
            new = _Group.of(values, now)
            old = self.groups.get(key)
            self.groups[key] = new if old is None else old.tighter(new, now)


CURRENT: ContextVar[QuotaSeen | None] = ContextVar("modelyard_upstream_quota", default=None)


def noted(headers: Mapping[str, str]) -> None:
    """Keep a provider reply's quota headers, if the request being served wants them."""
    seen = CURRENT.get()
    if seen is None:
        return
    quota = {k.lower(): v for k, v in headers.items() if k.lower().startswith(PREFIXES)}
    if quota:  # a reply without any (a proxy's error page) leaves the others standing
        seen.note(quota, time.time())


class watching:  # used as a function: `with watching() as seen:`
    """Keep the quota headers of the calls made in the body, in the `QuotaSeen` it gives."""

    __slots__ = ("_seen", "_token")

    def __init__(self) -> None:
        self._seen = QuotaSeen()

    def __enter__(self) -> QuotaSeen:
        self._token = CURRENT.set(self._seen)
        return self._seen

    def __exit__(self, *exc_info: object) -> None:
        CURRENT.reset(self._token)
