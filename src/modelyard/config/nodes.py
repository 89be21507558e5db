"""Config for systems: each is a graph of nodes, and a node is a model or system name, or a
pattern that holds nodes. The `type` key picks the pattern.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat, field_validator

from modelyard.config.base import Spec
from modelyard.errors import ERROR_KINDS


class NodeBase(Spec):
    """What every pattern node may set."""

    name: str | None = None
    """What decisions and logs call this node (default: its place in the config)."""
    deadline: PositiveFloat | None = None
    """Seconds this node may take; tightens, never loosens, the request's own deadline."""

    def child_nodes(self) -> Iterator[tuple[NodeSpec, tuple[str | int, ...]]]:
        """Each node this one holds, with its place relative to this one (for errors)."""
        raise NotImplementedError


FallbackAction = Literal["next", "propagate", "larger_window"]


class FallbackSpec(NodeBase):
    """Try each node in order until one answers; `on_error` says what each error class does.

    `on_error` keys are error kinds (`errors.ERROR_KINDS`), several joined with `|`; values are
    `next` (the next member), `propagate` (stop: the caller gets this error),
    `larger_window` (the next members with a larger context window), or a list of nodes to
    try instead. Unlisted kinds keep the defaults of `resilience/fallback.py`.
    """

    type: Literal["fallback"]
    chain: list[NodeSpec] = Field(min_length=1)
    on_error: dict[str, FallbackAction | list[NodeSpec]] = Field(default_factory=dict)
    continue_streams: bool = False
    """After part of a stream reached the caller, let a fallback that supports assistant
    prefill continue it from the partial text (otherwise the stream ends with an error)."""
    member_share: float = Field(default=0.5, gt=0, le=1)
    """Share of the request's remaining time a member may use while others wait their turn
    (a stream: until its first content), so a silent member cannot eat the whole deadline."""

    @field_validator("on_error")
    @classmethod
    def _known_kinds(
        cls, rules: dict[str, FallbackAction | list[NodeSpec]]
    ) -> dict[str, FallbackAction | list[NodeSpec]]:
        for key, action in rules.items():
            for kind in key.split("|"):
                if kind.strip() not in ERROR_KINDS:
                    raise ValueError(
                        f"unknown error kind {kind.strip()!r} in rule {key!r}; "
                        f"expected one of {', '.join(ERROR_KINDS)}"
                    )
            if isinstance(action, list) and not action:
                raise ValueError(f"rule {key!r} lists no nodes; use 'propagate' to stop")
        return rules

    def child_nodes(self) -> Iterator[tuple[NodeSpec, tuple[str | int, ...]]]:
        for i, node in enumerate(self.chain):
            yield node, ("chain", i)
        for key, action in self.on_error.items():
            if isinstance(action, list):
                for i, node in enumerate(action):
                    yield node, ("on_error", key, i)


PatternSpec = Annotated[FallbackSpec, Field(discriminator="type")]
NodeSpec = str | PatternSpec
"""A model or system name, or an inline pattern."""

FallbackSpec.model_rebuild()
