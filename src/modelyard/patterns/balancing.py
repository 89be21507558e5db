"""How a balancer orders its members for one request: the strategies, and what each member's
record in this process says (requests in flight, recent latency, a rest after a 429 or after
failures in a row, as `Cooldown` says).

The order's first member is the choice; the rest are who a failure moves on to. No I/O here:
the balancer (`balance.py`) decides which members may be asked at all and makes the calls.

    weighted     random, in proportion to `weights` (equal by default); the failover order is
                 drawn the same way from the members left
    round_robin  each member in turn, whatever happened to the last request
    least_busy   the fewest requests in flight in this process; ties go round in turn
    fastest      the lowest recent latency (an exponentially weighted mean); members not
                 measured yet first; with probability `explore` another member, so a slow one
                 is measured again and seen when it recovers
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Strategy = Literal["weighted", "round_robin", "least_busy", "fastest"]
STRATEGIES: tuple[Strategy, ...] = ("weighted", "round_robin", "least_busy", "fastest")

DEFAULT_COOLDOWN = 5.0
"""Seconds a member rests after a 429 that did not say how long (LiteLLM's default)."""
DEFAULT_FAILURE_WINDOW = 60.0
AFTER_429 = "a 429"
"""What a rest after a 429 is put down to (`MemberRecord.cooled_after`)."""

SMOOTHING = 0.3
"""The weight of the newest latency in a member's estimate: about the last five calls count."""
DEFAULT_EXPLORE = 0.1


@dataclass(frozen=True, slots=True, kw_only=True)
class Cooldown:
    """When a member rests (is left out) after trouble that did not say for how long."""

    seconds: float = DEFAULT_COOLDOWN
    """How long it rests after a 429 without Retry-After, and after `failures` in a row; 0:
    it never rests so (a 429's Retry-After still rests it that long)."""
    failures: int | None = None
    """Failures of its own (an outage, a timeout, a 5xx) in a row, each within `within`
    seconds of the first, that rest it; None: failures never do (its circuit breaker may)."""
    within: float = DEFAULT_FAILURE_WINDOW


@dataclass(slots=True)
class MemberRecord:
    """What this process knows about one member lately."""

    in_flight: int = 0
    latency: float | None = None
    """Seconds, an exponentially weighted mean of its recent calls; None until one finished."""
    cool_until: float = 0.0
    """The balancer's clock time before which it is not asked, and why (`cooled_after`): a
    429's Retry-After, or the cooldown after a 429 without one or after failures in a row."""
    cooled_after: str = ""
    run: int = 0
    """Its failures in a row, the first at `run_began`."""
    run_began: float = 0.0

    def observe(self, seconds: float) -> None:
        """Take one successful call's latency into the estimate; it ends a run of failures."""
        last = self.latency
        self.latency = seconds if last is None else last + SMOOTHING * (seconds - last)
        self.run = 0

    def rest(self, until: float, after: str) -> None:
        """Leave it out until `until` (unless already for longer), after `after`."""
        if until > self.cool_until:
            self.cool_until, self.cooled_after = until, after

    def rate_limited(self, now: float, retry_after: float | None, cooldown: Cooldown) -> None:
        """A 429: rest for its Retry-After (0: not at all), or without one for the cooldown's
        seconds."""
        seconds = cooldown.seconds if retry_after is None else retry_after
        if seconds > 0:
            self.rest(now + seconds, AFTER_429)

    def failed_again(self, now: float, cooldown: Cooldown) -> None:
        """A failure of its own: one more in the run (a new run when the first is older
        than `cooldown.within`), and a rest when the run reaches `cooldown.failures`."""
        if cooldown.failures is None:
            return
        if self.run == 0 or now - self.run_began > cooldown.within:
            self.run, self.run_began = 0, now
        self.run += 1
        if self.run >= cooldown.failures and cooldown.seconds > 0:
            after = "a failure" if self.run == 1 else f"{self.run} failures in a row"
            self.rest(now + cooldown.seconds, after)
            self.run = 0

    def failed(self, seconds: float) -> None:
        """A call that failed for the member's own reasons (an outage, a timeout): its estimate
        doubles (at least to the time the failure took), so a member that fails fast stops
        being the fastest after a few failures, and successes bring it back down."""
        last = self.latency if self.latency is not None else seconds
        self.latency = max(seconds, 2.0 * last)


@dataclass(frozen=True, slots=True)
class Pick:
    """One request's order over the members it may ask, and why the first comes first."""

    order: tuple[int, ...]
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    """What the strategy went by, per member: weight, requests in flight, latency in ms."""


class Balancer:
    """Orders members by one strategy; holds their records and the turn counter."""

    def __init__(
        self,
        names: Sequence[str],
        strategy: Strategy = "weighted",
        *,
        weights: Sequence[float] | None = None,
        explore: float = DEFAULT_EXPLORE,
        seed: int | None = None,
    ) -> None:
        if weights is not None and len(weights) != len(names):
            raise ValueError(f"{len(weights)} weights for {len(names)} members")
        self.names = tuple(names)
        self.strategy: Strategy = strategy
        self.weights = tuple(float(w) for w in weights) if weights else (1.0,) * len(names)
        self.explore = explore
        self.records = tuple(MemberRecord() for _ in names)
        self._random = random.Random(seed)
        self._turns = itertools.count()

    def order(self, eligible: Sequence[int]) -> Pick:
        """The order in which to ask the `eligible` members (indices, at least one)."""
        if self.strategy == "weighted":
            return self._weighted(eligible)
        if self.strategy == "round_robin":
            return self._round_robin(eligible)
        if self.strategy == "least_busy":
            return self._least_busy(eligible)
        return self._fastest(eligible)

    def _rotation(self, eligible: Sequence[int]) -> list[int]:
        """`eligible` starting from this request's turn among all members."""
        start = next(self._turns) % len(self.names)
        return sorted(eligible, key=lambda i: (i - start) % len(self.names))

    def _weighted(self, eligible: Sequence[int]) -> Pick:
        # Efraimidis–Spirakis: sorting by u ** (1 / w) draws without replacement in proportion
        # to the weights, the whole failover order in one pass. A weight of 0 comes last.
        keys = {i: self._key(self.weights[i]) for i in eligible}
        order = tuple(sorted(eligible, key=keys.__getitem__, reverse=True))
        total = sum(self.weights[i] for i in eligible)
        first = order[0]
        scores = {self.names[i]: self.weights[i] for i in eligible}
        reason = f"weighted: drew {self.names[first]} (weight {self.weights[first]:g} of {total:g})"
        return Pick(order, reason, scores)

    def _key(self, weight: float) -> float:
        return self._random.random() ** (1.0 / weight) if weight > 0 else -1.0

    def _round_robin(self, eligible: Sequence[int]) -> Pick:
        order = tuple(self._rotation(eligible))
        return Pick(order, f"round_robin: {self.names[order[0]]}'s turn")

    def _least_busy(self, eligible: Sequence[int]) -> Pick:
        busy = {i: self.records[i].in_flight for i in eligible}
        order = tuple(sorted(self._rotation(eligible), key=busy.__getitem__))
        first = order[0]
        scores = {self.names[i]: float(n) for i, n in busy.items()}
        reason = f"least_busy: {self.names[first]} had {busy[first]} request(s) in flight"
        if len(busy) > 1:
            others = ", ".join(f"{self.names[i]} {busy[i]}" for i in order[1:])
            reason += f" ({others})"
        return Pick(order, reason, scores)

    def _fastest(self, eligible: Sequence[int]) -> Pick:
        latency = {i: self.records[i].latency for i in eligible}
        unmeasured = [i for i in self._rotation(eligible) if latency[i] is None]
        measured = {i: s for i, s in latency.items() if s is not None}
        order = [*unmeasured, *sorted(measured, key=measured.__getitem__)]
        scores = {self.names[i]: round(s * 1000.0, 3) for i, s in measured.items()}
        if unmeasured:
            return Pick(tuple(order), f"fastest: {self.names[order[0]]} not measured yet", scores)
        first = order[0]
        if len(order) > 1 and self._random.random() < self.explore:
            scout = order[1 + self._random.randrange(len(order) - 1)]
            order.remove(scout)
            order.insert(0, scout)
            reason = (
                f"fastest: exploring {self.names[scout]} ({_ms(latency[scout])}) to measure it "
                f"again; {self.names[first]} was fastest ({_ms(latency[first])})"
            )
            return Pick(tuple(order), reason, scores)
        reason = f"fastest: {self.names[first]} had the lowest latency ({_ms(latency[first])})"
        return Pick(tuple(order), reason, scores)


def _ms(seconds: float | None) -> str:
    return "not measured" if seconds is None else f"{seconds * 1000.0:.0f} ms"
