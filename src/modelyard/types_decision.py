"""`Decision`: what one node of a Model graph did for one request, and why.

Kept apart from `types.py`, which imports and re-exports it, because it stands alone (a tree of
itself) and carries its own rendering for the gateway and the decision log (`to_dict`). Import
it from `modelyard.types`, as everything else is.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelyard.types import Usage


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    """What one node of the graph did for one request, and why: the request's audit record.

    Leaves are model calls (kind "model"); patterns and wrappers add a node whose `children`
    are the attempts they made, in order. `cost` is what this node and its subtree spent,
    failed attempts included; `error` is set when this node failed. A leaf's `usage` is the
    tokens its call was billed for (a failed call's: the estimate its cost was worked out
    from), so the ledger and the metrics count every call's tokens under its model, not only
    the answering call's.
    """

    node: str
    kind: str
    chosen: str | None = None
    reason: str = ""
    scores: Mapping[str, float] = field(default_factory=dict)
    threshold: float | None = None
    latency_ms: float = 0.0
    cost: float = 0.0
    error: str | None = None
    children: tuple[Decision, ...] = ()
    details: Mapping[str, Any] = field(default_factory=dict)
    usage: Usage | None = None

    def walk(self) -> list[Decision]:
        """This decision and all below it, depth first."""
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the shape the gateway and the decision log store)."""
        out: dict[str, Any] = {
            "node": self.node,
            "kind": self.kind,
            "chosen": self.chosen,
            "reason": self.reason,
            "latency_ms": round(self.latency_ms, 3),
            "cost": self.cost,
        }
        if self.scores:
            out["scores"] = dict(self.scores)
        if self.threshold is not None:
            out["threshold"] = self.threshold
        if self.error is not None:
            out["error"] = self.error
        usage = self.usage
        if usage is not None:
            out["input_tokens"] = usage.input_tokens
            out["output_tokens"] = usage.output_tokens
            if usage.estimated:
                out["tokens_estimated"] = True
        if self.details:
            # Patterns record per-candidate vectors as lazy mappings: make them plain dicts.
            out["details"] = {
                k: dict(v) if isinstance(v, Mapping) else v for k, v in self.details.items()
            }
        if self.children:
            out["children"] = [c.to_dict() for c in self.children]
        return out
