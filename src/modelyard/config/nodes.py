"""Config for systems: each is a graph of nodes, and a node is a model or system name, or a
pattern that holds nodes. The `type` key picks the pattern.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Literal

from pydantic import Field, PositiveFloat

from modelyard.config.base import Spec


class NodeBase(Spec):
    """What every pattern node may set."""

    name: str | None = None
    """What decisions and logs call this node (default: its place in the config)."""
    deadline: PositiveFloat | None = None
    """Seconds this node may take; tightens, never loosens, the request's own deadline."""

    def child_nodes(self) -> Iterator[tuple[NodeSpec, tuple[str | int, ...]]]:
        """Each node this one holds, with its place relative to this one (for errors)."""
        raise NotImplementedError


class FallbackSpec(NodeBase):
    """Try each node in order until one answers."""

    type: Literal["fallback"]
    chain: list[NodeSpec] = Field(min_length=1)

    def child_nodes(self) -> Iterator[tuple[NodeSpec, tuple[str | int, ...]]]:
        for i, node in enumerate(self.chain):
            yield node, ("chain", i)


PatternSpec = Annotated[FallbackSpec, Field(discriminator="type")]
NodeSpec = str | PatternSpec
"""A model or system name, or an inline pattern."""

FallbackSpec.model_rebuild()
