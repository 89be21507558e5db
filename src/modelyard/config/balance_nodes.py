"""Config for the balance pattern: equivalent members, the strategy that spreads requests over
them, and its settings."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field, NonNegativeFloat, PositiveFloat, PositiveInt, model_validator

from modelyard.config.base import AtLeast, Spec
from modelyard.config.node_base import ChildNodes, NodeBase, Probability

if TYPE_CHECKING:
    from modelyard.config.nodes import NodeSpec  # resolved by the rebuild in nodes.py


class CooldownSpec(Spec):
    """When a member rests (is left out of the balance, in this process) after trouble that did
    not say for how long; a 429's Retry-After always rests it that long."""

    seconds: NonNegativeFloat | None = None
    """How long a member rests after a 429 without Retry-After, and after `failures` in a row
    (default 5, as LiteLLM's Router); 0: never so. A lone member never rests so."""
    failures: PositiveInt | None = None
    """Failures of the member's own (an outage, a timeout, a 5xx) in a row that rest it, each
    within `within` seconds of the first; unset: failures never do (its circuit may open)."""
    within: PositiveFloat | None = None
    """Seconds a run of `failures` must fall within (default 60)."""

    @model_validator(mode="after")
    def _within_needs_failures(self) -> CooldownSpec:
        if self.within is not None and self.failures is None:
            raise ValueError("within applies to failures, and failures is unset; set both")
        return self


class BalanceSpec(NodeBase):
    """Spread requests over equivalent members (keys, regions, deployments, replicas of one
    model) by `strategy`; a member that fails as a fallback's would moves the request on to
    another."""

    type: Literal["balance"]
    members: Annotated[
        list[NodeSpec], AtLeast(1, "a balance needs at least one member to spread requests over")
    ]
    strategy: Literal["weighted", "round_robin", "least_busy", "fastest"] = "weighted"
    """`weighted`: random by `weights`; `round_robin`: in turn; `least_busy`: fewest requests
    in flight in this process; `fastest`: lowest recent latency, exploring now and then."""
    weights: list[NonNegativeFloat] | None = None
    """One per member, in order (strategy weighted; default equal). A weight of 0 drains a
    member: it is asked only when the others failed or are left out."""
    explore: Probability | None = None
    """Strategy fastest: the chance a request goes to another member than the fastest, so a
    slow one is measured again (default 0.1)."""
    seed: int | None = None
    """Seeds the random draws (weighted, and fastest's exploring), for tests and dry runs."""
    member_share: float = Field(default=0.5, gt=0, le=1)
    """Under a deadline, the share of the time left a member may use while others wait their
    turn (a stream: until its first content), as a fallback's."""
    cooldown: CooldownSpec | None = None
    """When a member rests after a 429 without Retry-After or after failures in a row."""

    @model_validator(mode="after")
    def _consistent(self) -> BalanceSpec:
        count = len(self.members)
        if self.weights is not None:
            if self.strategy != "weighted":
                raise ValueError(
                    f"weights apply to strategy weighted, and strategy is {self.strategy!r}; "
                    "drop weights or set strategy: weighted"
                )
            if len(self.weights) != count:
                raise ValueError(
                    f"{len(self.weights)} weights for {count} members; give one weight per "
                    "member, in the order of members"
                )
            if not all(math.isfinite(w) for w in self.weights):
                raise ValueError("weights must be finite numbers")
            if not any(w > 0 for w in self.weights):
                raise ValueError("every weight is 0, so no member would ever be chosen first")
        if self.explore is not None and self.strategy != "fastest":
            raise ValueError(
                f"explore applies to strategy fastest, and strategy is {self.strategy!r}"
            )
        return self

    def child_nodes(self) -> ChildNodes:
        for i, member in enumerate(self.members):
            yield member, ("members", i)
