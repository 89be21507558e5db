"""What every pattern node's config shares: `NodeBase` (a name and a deadline, and the nodes it
holds), and the value types their fields use."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated

from pydantic import Field, PositiveFloat

from modelyard.config.base import Spec
from modelyard.suggest import did_you_mean

if TYPE_CHECKING:
    from modelyard.config.nodes import NodeSpec

Probability = Annotated[float, Field(ge=0, le=1)]
"""A threshold, score or confidence: a number from 0 to 1."""
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")]
"""A Python callable as `package.module:function`."""
NormaliserName = Annotated[str, Field(pattern=r"^(exact|choice|number|json:[^\s.][^\s]*)$")]
"""How answers are compared: exact, choice (letter A–J), number, or json:<field path>."""

ChildNodes = Iterator[tuple["NodeSpec", tuple[str | int, ...]]]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][\w.]*)\}")
"""A `{name}` in a prompt template (JSON's `{"a": 1}` is not one: it is text)."""


def prompt_template(template: str | None, names: tuple[str, ...], needed: str) -> str | None:
    """`template` if it has `{needed}`, the text the model is asked about, and no slip of one
    of `names` (`{ouput}`): either had been sent as it stood, so the judge or checker read no
    answer and its verdict meant nothing. Raises ValueError saying which. Other braces are
    text (`{"a": 1}`, `${user.name}`), as `fill` leaves them."""
    if template is None:
        return None
    known = ", ".join(f"{{{name}}}" for name in names)
    for match in _PLACEHOLDER.finditer(template):
        hint = "" if match[1] in names else did_you_mean(match[1], names, listed=None)
        if hint:
            raise ValueError(f"unknown placeholder {match[0]}{hint} A prompt takes {known}")
    if f"{{{needed}}}" not in template:
        raise ValueError(
            f"the prompt has no {{{needed}}}, so the model asked would never see the answers "
            f"it is asked about; a prompt takes {known}"
        )
    return template


class NodeBase(Spec):
    """What every pattern node may set."""

    name: str | None = None
    """What decisions and logs call this node (default: its place in the config)."""
    deadline: PositiveFloat | None = None
    """Seconds this node may take; tightens, never loosens, the request's own deadline."""

    def child_nodes(self) -> ChildNodes:
        """Each node this one holds, with its place relative to this one (for errors)."""
        raise NotImplementedError
