"""Wrappers that decorate a node without being a node of their own in trees and diagrams."""

from __future__ import annotations

from collections.abc import Sequence

from modelyard.model import Model, Wrapper


class Decoration(Wrapper):
    """A Wrapper that shows as the node it wraps: same name, same children, its `describe()`
    (to which a decoration may add a setting). Budget guards, caches and accounting are
    decorations; `modelyard check` draws each system once, not once per layer."""

    @property
    def children(self) -> Sequence[Model]:
        return self.inner.children

    @property
    def contenders(self) -> Sequence[Model]:
        return self.inner.contenders

    def describe(self) -> dict[str, object]:
        return self.inner.describe()
