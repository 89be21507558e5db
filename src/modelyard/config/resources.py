"""What outlives one config: connection pools, stateful services and loaded local models,
which a gateway keeps across hot reloads so an unchanged model is not loaded twice, and closes
once no generation of the config uses them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from modelyard.providers.http import HttpClient
from modelyard.state.base import StateStore

log = logging.getLogger("modelyard.config")

ResourceKey = tuple[str, str]
"""Which of `Resources`' dicts (`clients`, `loaded`, `services`) and the key in it."""

_KINDS = ("clients", "services", "loaded")
"""Closing order: pools first, then services, then local models."""

_BUILDING: ContextVar[set[ResourceKey] | None] = ContextVar("modelyard_building", default=None)
"""The keys the build running in this context asked for (see `Resources.tracking`)."""


@dataclass
class Resources:
    """What outlives one config: connection pools and loaded local models, keyed by their spec."""

    clients: dict[str, HttpClient] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)
    services: dict[str, Any] = field(default_factory=dict)
    """Stateful services with an `aclose()`: state stores, the spend ledger, caches, alerts."""
    state: StateStore | None = None
    """The state store of the config built last; budgets, rate limits and breakers share it
    (`state.factory.shared_store` makes it; `live_store` picks the store for counters that need
    no history)."""
    workers: int = 1
    """How many processes serve the config (`serve --workers N`). With more than one, the
    counters that need no history (rate windows, circuits, retry budgets) are kept in the
    shared state store even with the embedded default, so the workers count together
    (`state.factory.live_store`)."""
    pinned: set[ResourceKey] = field(default_factory=set)
    """Keys asked for outside a tracked build (the gateway's own stores for key limits and
    budgets, made once at start): `release` never closes them."""

    def client(self, key: str, factory: Callable[[], HttpClient]) -> HttpClient:
        """The pool for `key`, made on first use."""
        self._touch(("clients", key))
        if key not in self.clients:
            self.clients[key] = factory()
        return self.clients[key]

    def cached(self, key: str, factory: Callable[[], Any]) -> Any:
        """A loaded local resource (weights, indexes) for `key`, loaded on first use."""
        self._touch(("loaded", key))
        if key not in self.loaded:
            self.loaded[key] = factory()
        return self.loaded[key]

    def service(self, key: str, factory: Callable[[], Any]) -> Any:
        """The service for `key` (a spec's identity), made on first use, closed with these."""
        self._touch(("services", key))
        if key not in self.services:
            self.services[key] = factory()
        return self.services[key]

    @contextmanager
    def tracking(self) -> Iterator[set[ResourceKey]]:
        """Collect the key of everything a build in this context asks for: what one generation
        of a hot-reloaded config holds (its local models load lazily, but their keys are taken
        at build time)."""
        keys: set[ResourceKey] = set()
        token = _BUILDING.set(keys)
        try:
            yield keys
        finally:
            _BUILDING.reset(token)

    def _touch(self, key: ResourceKey) -> None:
        building = _BUILDING.get()
        if building is None:
            self.pinned.add(key)
        else:
            building.add(key)

    async def release(self, keys: Iterable[ResourceKey]) -> int:
        """Close and forget the resources at `keys` (ones no generation of the config uses any
        more), except pinned ones; returns how many were closed."""
        return await self._close(set(keys) - self.pinned)

    async def leave_loop(self) -> None:
        """Close what is bound to the running event loop, which is ending: the connection pools
        and the services' background writers (a service's `leave_loop`) made on it. They are
        made anew on the next loop that uses them; nothing queued is lost (the ledger writes
        its rows first). Newest first, as `aclose` closes them: a service writes to the ones
        made before it (counts batched for the state store), which stay open meanwhile."""
        for kind in _KINDS[:2]:
            for resource in reversed(list(getattr(self, kind).values())):
                if hasattr(resource, "leave_loop"):
                    try:
                        await resource.leave_loop()
                    except Exception:
                        log.exception("closing a resource (%s) at its loop's end failed", kind)

    async def aclose(self) -> None:
        """Close every pool, service and loaded model."""
        await self._close({(kind, key) for kind in _KINDS for key in getattr(self, kind)})

    async def _close(self, keys: set[ResourceKey]) -> int:
        closed = 0
        for kind in _KINDS:
            held: dict[str, Any] = getattr(self, kind)
            # Newest first: the spend ledger closes before the state store it writes to.
            for key in reversed([k for k in held if (kind, k) in keys]):
                await _close_one(held.pop(key), kind)
                closed += 1
        return closed


async def _close_one(resource: Any, kind: str) -> None:
    """Close a pool, a service (`aclose`) or a loaded model (`close`, which may block). A failing
    close is logged, not raised: the resource is forgotten either way, and the rest still close."""
    try:
        if hasattr(resource, "aclose"):
            await resource.aclose()
        elif hasattr(resource, "close"):
            await asyncio.to_thread(resource.close)
    except Exception:
        log.exception("closing a resource (%s) failed", kind)
