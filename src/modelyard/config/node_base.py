"""What every pattern node's config shares: `NodeBase` (a name and a deadline, and the nodes it
holds), and the value types their fields use."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, PositiveFloat

from modelyard.config.base import Spec

if TYPE_CHECKING:
    from modelyard.config.nodes import NodeSpec

Probability = Annotated[float, Field(ge=0, le=1)]
"""A threshold, score or confidence: a number from 0 to 1."""
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
"""A Python callable as `package.module:function`."""
NormaliserName = Annotated[str, Field(pattern=r"^(exact|choice|number|json:[^\s.][^\s]*)$")]
"""How answers are compared: exact, choice (letter A–J), number, or json:<field path>."""

ChildNodes = Iterator[tuple["NodeSpec", tuple[str | int, ...]]]


class NodeBase(Spec):
    """What every pattern node may set."""

    name: str | None = None
    """What decisions and logs call this node (default: its place in the config)."""
    deadline: PositiveFloat | None = None
    """Seconds this node may take; tightens, never loosens, the request's own deadline."""

    def child_nodes(self) -> ChildNodes:
        """Each node this one holds, with its place relative to this one (for errors)."""
        raise NotImplementedError
