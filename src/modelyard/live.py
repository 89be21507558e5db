"""The config a gateway or a library yard is serving, swapped atomically on reload.

A request (a library call) takes the current Yard once, at its start, and keeps it to the end, so
a reload never changes the config under a request in flight. An invalid new config is refused
with the reason and the old one keeps serving. Connection pools, services and loaded local
models live in `Resources`, shared by every generation of the config, so a reload does not drop
connections or reload weights that did not change. What a reload leaves unused (a pool, a
tracing exporter, the weights of a model whose spec changed) is closed once the last request of
every generation that used it has finished.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelyard.background import detached
from modelyard.config.build import build
from modelyard.config.loader import LoadedConfig, load_config
from modelyard.config.resources import ResourceKey, Resources
from modelyard.config.schema import Config
from modelyard.errors import ConfigError
from modelyard.loops import Slots

if TYPE_CHECKING:
    from modelyard.yard import Yard


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


def diff_configs(old: Config, new: Config) -> ConfigDiff:
    """Every provider, model, embedder and system added, removed or changed between two
    configs."""
    diff = ConfigDiff()
    # Compared as objects: secrets (the admin key) dump masked, so a rotated one would not show.
    if old.gateway != new.gateway:
        diff.changed.append("gateway")
        diff.restart_required.append("gateway")
    old_dump = old.model_dump(mode="json")
    new_dump = new.model_dump(mode="json")
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


def _refuse_cut_short(loaded: LoadedConfig, serving: str) -> None:
    """ConfigError when `loaded` lacks the final newline the serving text has. A write that
    failed midway (a full disk, a copy killed) leaves the file cut at some byte, rarely at a
    line's end; what is left may still validate (`limit: 500` read as `limit: 5`)."""
    if serving.endswith("\n") and loaded.text and not loaded.text.endswith("\n"):
        raise ConfigError(
            "the file does not end with a newline, as the one serving does: it may be cut "
            "short (a write that failed, a copy still under way), so it is not loaded; if it "
            "is complete, end it with a newline",
            path=str(loaded.path),
            line=loaded.text.count("\n") + 1,
        )


FileStamp = tuple[int, int] | None
"""A file as last seen: its modification time (ns) and size; None while it is missing."""


def file_stamp(path: Path) -> FileStamp:
    """`path` as it is now."""
    try:
        status = path.stat()
    except OSError:
        return None
    return status.st_mtime_ns, status.st_size


@dataclass(eq=False, slots=True)
class _Generation:
    """One build of the config, the resources it holds, and the requests still running on it."""

    yard: Yard
    keys: set[ResourceKey]
    written: Config
    """The config as the file has it (the yard runs on the state store started with)."""
    calls: set[_Serving] = field(default_factory=set)
    """The requests running on it: a set, whose add and discard threads at once (a yard
    serving several event loops) cannot lose, as they could an `n += 1`."""
    idle_since: float | None = None
    """When it was replaced with nothing running, or its last request ended after that (the
    loop's clock): its grace runs from then."""

    @property
    def in_flight(self) -> int:
        """How many requests run on it."""
        return len(self.calls)


def _now() -> str:
    """This second as an RFC 3339 instant in UTC."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Serving:
    """Holds one generation for one request (a class: a `@contextmanager` generator costs
    three times as much, on every request)."""

    __slots__ = ("generation", "live")

    def __init__(self, live: LiveConfig, generation: _Generation) -> None:
        self.live = live
        self.generation = generation

    def __enter__(self) -> Yard:
        self.generation.calls.add(self)
        return self.generation.yard

    def __exit__(self, *exc_info: object) -> None:
        self.generation.calls.discard(self)
        self.live._finished(self.generation)


class LiveConfig:
    """The yard being served. A request holds the yard it started with (`serving`), so a reload
    never changes a request midway; what the new config no longer uses is released when the
    older generations' requests have finished, `grace` seconds later (for work a request leaves
    running: a cancelled straggler's last read, a ledger write). `workers`: how many processes
    serve the file (`Resources.workers`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        env: Mapping[str, str] | None = None,
        grace: float = 5.0,
        workers: int = 1,
        resources: Resources | None = None,
        log: logging.Logger | None = None,
    ) -> None:
        self.path = Path(path)
        self.env = env
        self.grace = grace
        self.resources = resources or Resources(workers=workers)
        self.log = log or logging.getLogger("modelyard.config")
        """Where reloads are told of (the gateway's logger when it serves this)."""
        self.started: dict[str, Any] = {}
        """Sections read only at start: the `gateway:` settings, and the state store (key rate
        limits and budgets, the config's budgets and circuits: a reload that moved them would
        start every budget from zero mid-window)."""
        self._serving = self._load()
        self._draining: list[_Generation] = []
        self._releases: set[asyncio.Task[None]] = set()
        started = self._serving.written
        self.started = {"gateway": started.gateway, "state": started.state}
        self.history: list[dict[str, Any]] = []
        """What each reload did, oldest first, each `at` an RFC 3339 instant (UTC): refused
        (`version` None, `error`), loaded (`version`, `diff`), or none needed, the file back to
        the text serving after a refusal (`version`, `unchanged`)."""
        self.awaited: dict[Path, FileStamp] = {}
        """The files refused reloads named as missing since the config last loaded, each as it
        was at the latest refusal: a watching gateway tries again when one appears or changes."""
        self._lock = Slots(1)
        """Reloads one at a time, from whichever event loop (a library yard may serve several)."""
        self.advice: Callable[[Yard], list[str]] = lambda yard: []
        """What else to warn of for a config (the gateway's: keys naming what it lacks),
        logged with its build's warnings when a reload brings it in."""

    @property
    def current(self) -> Yard:
        """The yard new requests get."""
        return self._serving.yard

    def serving(self) -> _Serving:
        """The current yard, held for one request (`with live.serving() as yard:`): what it
        uses stays open until the request ends."""
        return _Serving(self, self._serving)

    def _finished(self, generation: _Generation) -> None:
        if not generation.calls and generation in self._draining:
            self._retired(generation)

    def _load(
        self, keys: set[ResourceKey] | None = None, *, serving: str | None = None
    ) -> _Generation:
        """Build the file anew; `keys` gets what the build took, also when it fails. On a
        reload, `serving` is the text it replaces."""
        from modelyard.yard import Yard  # here: yard.load builds on a LiveConfig

        state = self.resources.state
        with self.resources.tracking() as taken:
            try:
                written = load_config(self.path, env=self.env)
                if serving is not None:
                    _refuse_cut_short(written, serving)
                yard = Yard(build(self._on_started_state(written), self.resources), self.resources)
            except BaseException:
                # A refused build may have made a store of its own (closed with the rest of
                # what it made): /readyz and /metrics go on reporting the one in use.
                self.resources.state = state
                raise
            finally:
                if keys is not None:
                    keys |= taken
        return _Generation(yard, taken, written.config)

    def _on_started_state(self, loaded: LoadedConfig) -> LoadedConfig:
        """`loaded` on the state store this process started with, whatever its `state:` says
        (the reload reports that change as waiting for a restart)."""
        state = self.started.get("state")
        if state is None or loaded.config.state == state:
            return loaded
        return replace(loaded, config=loaded.config.model_copy(update={"state": state}))

    def _held(self) -> set[ResourceKey]:
        """What the generations still serving or draining hold."""
        return set(self._serving.keys).union(*(g.keys for g in self._draining))

    async def reload(self) -> ConfigDiff:
        """Validate and build the file anew, then swap it in. Raises ConfigError (and keeps the
        old config serving) when the new one is invalid."""
        async with self._lock:
            taken: set[ResourceKey] = set()
            try:
                new = await asyncio.to_thread(self._load, taken, serving=self.current.loaded.text)
            except ConfigError as exc:
                self.log.error("reload refused, still serving %s: %s", self.current.version, exc)
                self.history.append({"version": None, "error": str(exc), "at": _now()})
                self.awaited = {p: file_stamp(p) for p in {*self.awaited, *exc.missing}}
                # What the build made before it failed (a tracing exporter, say) serves nobody.
                await self.resources.release(taken - self._held())
                raise
            diff = diff_configs(self._serving.written, new.written)
            # Against what runs, not the last file loaded: a second reload must not hide a
            # change still waiting for its restart.
            diff.restart_required[:] = [
                name
                for name, section in self.started.items()
                if getattr(new.written, name) != section
            ]
            old_version = self.current.version
            known = {*self.current.built.warnings, *self.current.notes, *self.advice(self.current)}
            old, self._serving = self._serving, new
            self.awaited = {}
            self._draining.append(old)
            self.log.warning(
                "reloaded config %s -> %s: %s", old_version, new.yard.version, diff.summary()
            )
            # What `serve` says at start, newly true: a disabled provider (its variable unset in
            # this process), an unpinned model id.
            for note in new.yard.notes:
                if note not in known:
                    self.log.info("note: %s", note)
            for warning in [*new.yard.built.warnings, *self.advice(new.yard)]:
                if warning not in known:
                    self.log.warning("%s", warning)
            self.history.append({"version": new.yard.version, "diff": diff.to_dict(), "at": _now()})
        if not old.calls:
            self._retired(old)
        return diff

    async def try_reload(self) -> None:
        """`reload` for what runs unattended (a file watch, a signal): a refused config is
        logged (by `reload`), and so is any other failure; the old config keeps serving."""
        try:
            await self.reload()
        except ConfigError:
            pass
        except Exception:
            self.log.exception("reload failed, still serving %s", self.current.version)

    @property
    def refused(self) -> dict[str, str] | None:
        """The refusal of the file on disk while it stands, as `{"at", "error"}` (when, and
        why as the reload said it: a `ConfigError`, which never quotes a secret); None while
        the file is what serves: nothing refused since the start, or since a reload that loaded
        it or found it back at the serving text."""
        last = self.history[-1] if self.history else None
        if last is None or last["version"] is not None:
            return None
        return {"at": last["at"], "error": last["error"]}

    def back_to_serving(self) -> None:
        """The file holds the text being served again: if a refused reload was the last word,
        say (once) that the file matches the serving config, so the refusal is not read as
        still standing, and stop awaiting the files it named. There is nothing to apply."""
        if not self.history or self.history[-1]["version"] is not None:
            return
        version = self.current.version
        self.log.warning(
            "%s matches the serving config %s again: nothing to apply", self.path, version
        )
        self.history.append({"version": version, "unchanged": True, "at": _now()})
        self.awaited = {}

    def _retired(self, generation: _Generation) -> None:
        """`generation` serves nobody any more: release what only it held, `grace` from now."""
        generation.idle_since = asyncio.get_running_loop().time()
        task = detached(self._release_unused(generation.idle_since))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)

    async def _release_unused(self, since: float) -> None:
        """Close what the generations idle since `since` or before used, `grace` seconds on."""
        await asyncio.sleep(self.grace)
        async with self._lock:  # never while a reload is building (it may take a key back)
            # Not one that went idle later: its grace is not over (its own task comes for it).
            finished = [
                g for g in self._draining if g.idle_since is not None and g.idle_since <= since
            ]
            if not finished:
                return
            self._draining = [g for g in self._draining if g not in finished]
            unused = set().union(*(g.keys for g in finished)) - self._held()
            closed = await self.resources.release(unused)
        if closed:
            self.log.info("closed %d resource(s) no generation of the config uses any more", closed)

    async def aclose(self) -> None:
        """Close every pool, service and local model, of every generation."""
        # Under the lock: a release closing what it took from `resources` (a ledger writing
        # its last rows, an alert hub still sending) finishes; one only waiting is cancelled.
        async with self._lock:
            for task in list(self._releases):
                task.cancel()
            await self.current.aclose()
