"""The health registry: every circuit a config built, and their states on demand.

`modelyard health` prints it; the gateway's /readyz calls `HealthRegistry.report()`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from modelyard.resilience.breaker import BreakerHealth, CircuitBreaker, CircuitState


@dataclass(frozen=True, slots=True, kw_only=True)
class HealthReport:
    """Every circuit's state at one moment."""

    circuits: tuple[BreakerHealth, ...]

    @property
    def healthy(self) -> bool:
        """Whether every circuit is closed (traffic goes where the config sends it first)."""
        return all(c.state is CircuitState.CLOSED for c in self.circuits)

    @property
    def degraded(self) -> list[str]:
        """The scopes whose circuits are open or half-open."""
        return [c.scope for c in self.circuits if c.state is not CircuitState.CLOSED]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict (the /readyz body)."""
        return {
            "healthy": self.healthy,
            "degraded": self.degraded,
            "circuits": [c.to_dict() for c in self.circuits],
        }


class HealthRegistry:
    """The circuits of one built config, by scope."""

    def __init__(self) -> None:
        self._breakers: dict[str, CircuitBreaker] = {}

    def add(self, breaker: CircuitBreaker) -> CircuitBreaker:
        """Register a circuit (once per scope) and return the registered one."""
        return self._breakers.setdefault(breaker.scope, breaker)

    def get(self, scope: str) -> CircuitBreaker | None:
        """The circuit of `scope` (e.g. `model:gpt-4o`, `provider:openai`), if any."""
        return self._breakers.get(scope)

    def __iter__(self) -> Iterator[CircuitBreaker]:
        return iter(self._breakers.values())

    def __len__(self) -> int:
        return len(self._breakers)

    async def report(self) -> HealthReport:
        """Every circuit's state now, sorted by scope."""
        circuits = [await b.health() for _, b in sorted(self._breakers.items())]
        return HealthReport(circuits=tuple(circuits))
