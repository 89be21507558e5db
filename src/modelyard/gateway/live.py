"""The config a gateway is serving, swapped atomically on reload.

A request takes the current Yard once, at its start, and keeps it to the end, so a reload never
changes the config under a request in flight. An invalid new config is refused with the reason
and the old one keeps serving. Connection pools and loaded local models live in `Resources`,
shared by every generation of the config, so a reload does not drop connections or reload
weights that did not change.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.config.build import Resources, build
from modelyard.config.loader import load_config
from modelyard.errors import ConfigError
from modelyard.yard import Yard

log = logging.getLogger("modelyard.gateway")


@dataclass(frozen=True, slots=True)
class ConfigDiff:
    """What a reload changed, section by section."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    restart_required: list[str] = field(default_factory=list)
    """Changed sections a running gateway reads only at start (`gateway`: port, keys, limits)."""

    @property
    def empty(self) -> bool:
        """Whether nothing changed."""
        return not (self.added or self.removed or self.changed)

    def summary(self) -> str:
        """One line a person reads in the log."""
        if self.empty:
            return "no changes"
        parts = []
        for word, items in (
            ("added", self.added),
            ("removed", self.removed),
            ("changed", self.changed),
        ):
            if items:
                parts.append(f"{word} {', '.join(items)}")
        if self.restart_required:
            parts.append(f"NOT applied until a restart: {', '.join(self.restart_required)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, list[str]]:
        """JSON-ready."""
        return {
            "added": self.added,
            "removed": self.removed,
            "changed": self.changed,
            "restart_required": self.restart_required,
        }


def diff_configs(old: Yard, new: Yard) -> ConfigDiff:
    """Every provider, model, embedder and system added, removed or changed between two yards."""
    diff = ConfigDiff()
    # Compared as objects: secrets (the admin key) dump masked, so a rotated one would not show.
    if old.loaded.config.gateway != new.loaded.config.gateway:
        diff.changed.append("gateway")
        diff.restart_required.append("gateway")
    old_dump = old.loaded.config.model_dump(mode="json")
    new_dump = new.loaded.config.model_dump(mode="json")
    for section in sorted(set(old_dump) | set(new_dump)):
        before, after = old_dump.get(section), new_dump.get(section)
        if section == "gateway":
            continue
        if isinstance(before, dict) and isinstance(after, dict):
            for name in sorted(set(before) | set(after)):
                label = f"{section}.{name}"
                if name not in before:
                    diff.added.append(label)
                elif name not in after:
                    diff.removed.append(label)
                elif before[name] != after[name]:
                    diff.changed.append(label)
        elif before != after:
            diff.changed.append(section)
    return diff


class LiveConfig:
    """The yard being served. A request holds the yard it started with, so a reload never
    changes a request midway; services shared through `resources` outlive every generation
    (one whose spec a reload changed is closed only at shutdown)."""

    def __init__(
        self, path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
    ) -> None:
        self.path = Path(path)
        self.env = env
        self.resources = Resources()
        self.current = self._load()
        started = self.current.loaded.config
        self.started = {"gateway": started.gateway, "state": started.state}
        """Sections read only at start: the `gateway:` settings, and the store that key rate
        limits and key budgets keep (budgets and circuits in the config follow a reload)."""
        self.history: list[dict[str, Any]] = []
        self._lock = asyncio.Lock()

    def _load(self) -> Yard:
        return Yard(build(load_config(self.path, env=self.env), self.resources), self.resources)

    async def reload(self) -> ConfigDiff:
        """Validate and build the file anew, then swap it in. Raises ConfigError (and keeps the
        old config serving) when the new one is invalid."""
        async with self._lock:
            try:
                new = await asyncio.to_thread(self._load)
            except ConfigError as exc:
                log.error("reload refused, still serving %s: %s", self.current.version, exc)
                self.history.append({"version": None, "error": str(exc)})
                raise
            diff = diff_configs(self.current, new)
            # Against what runs, not the last file loaded: a second reload must not hide a
            # change still waiting for its restart.
            config = new.loaded.config
            diff.restart_required[:] = [
                name for name, section in self.started.items() if getattr(config, name) != section
            ]
            old_version = self.current.version
            self.current = new
            log.warning("reloaded config %s -> %s: %s", old_version, new.version, diff.summary())
            self.history.append({"version": new.version, "diff": diff.to_dict()})
            return diff

    async def aclose(self) -> None:
        """Close every pool and local model."""
        await self.current.aclose()
