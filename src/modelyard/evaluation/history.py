"""The last N applied versions of a config file, so a bad change can be rolled back.

Each applied version is kept as `<seq>-<version>.yaml` in the history folder (default
`.modelyard/history/<config file name>/` beside the config) with `index.json` listing them,
oldest first. Applying validates the new text first; the config file is replaced atomically.

The entries are read as a stack of deployments: an apply puts a version on top, a rollback
returns to one below it. `rollback --steps N` counts the versions deployed before the current
one (rollback entries are not among them), so two rollbacks in a row go two versions back
instead of toggling. The file is replaced only when its text is the newest entry's: a hand
edit since stops apply and rollback unless forced, and a forced one records the edited text
first, so it is never lost.
"""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.config.loader import parse, text_version
from modelyard.config.references import check_references
from modelyard.errors import ConfigError
from modelyard.state.folders import private_folder


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One applied version."""

    seq: int
    version: str
    applied_at: float
    note: str
    file: str
    restores: int | None = None
    """The seq of the entry a rollback restored (None for an apply)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "version": self.version,
            "applied_at": self.applied_at,
            "note": self.note,
            "file": self.file,
            "restores": self.restores,
        }


def write_atomic(path: Path, text: str, *, mode_of: Path | None = None) -> None:
    """Replace `path` with `text` in one step, keeping its permissions (or taking those of
    `mode_of`, the config a new file was derived from): a config that holds a key inline,
    readable by its owner alone, must not become readable by everyone."""
    try:
        mode: int | None = stat.S_IMODE((mode_of or path).stat().st_mode)
    except FileNotFoundError:
        mode = None  # a new file: what the umask allows, as open() makes it
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.unlink(missing_ok=True)
    # Owner-only while it is written, then the mode of the file it replaces.
    created = os.open(
        temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 if mode is None else 0o600
    )
    with os.fdopen(created, "w", encoding="utf-8") as handle:
        handle.write(text)
    if mode is not None:
        os.chmod(temporary, mode)
    os.replace(temporary, path)


def _stack(entries: list[Entry]) -> list[Entry]:
    """The deployments in `entries` (see `ConfigHistory.deployed`)."""
    stack: list[Entry] = []
    for entry in entries:
        seqs = [e.seq for e in stack]
        if entry.restores in seqs:
            del stack[seqs.index(entry.restores) + 1 :]
        else:
            stack.append(entry)
    return stack


def _beyond(entries: list[Entry], keep: int) -> list[Entry]:
    """The entries to prune so that `keep` remain. Versions rolled away from go first, oldest
    first (each before the rollback that left it, so the stack stays as it was), then the
    oldest deployed: a rollback's own entry never pushes out the version below the one it
    restored. The newest, the file's text, always stays."""
    excess = len(entries) - keep
    if excess <= 0:
        return []
    deployed = _stack(entries)
    older = entries[:-1]
    return ([e for e in older if e not in deployed] + [e for e in older if e in deployed])[:excess]


class ConfigHistory:
    """The applied versions of one config file."""

    def __init__(self, config: Path, folder: Path | None = None, keep: int = 10) -> None:
        if keep < 2:
            raise ConfigError("keep at least 2 versions, or there is nothing to roll back to")
        self.config = config
        self.folder = folder or config.parent / ".modelyard" / "history" / config.name
        self.keep = keep

    @property
    def _index(self) -> Path:
        return self.folder / "index.json"

    def entries(self) -> list[Entry]:
        """Applied versions, oldest first."""
        if not self._index.exists():
            return []
        try:
            data = json.loads(self._index.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"history index is corrupt: {exc.msg}", path=str(self._index)
            ) from None
        return [Entry(**row) for row in data]

    def deployed(self) -> list[Entry]:
        """The stack of deployments, oldest first, the current one last: each apply is put on
        top; a rollback takes the stack back to the entry it restored (or, when that entry was
        pruned, goes on top itself)."""
        return _stack(self.entries())

    def _save(self, entries: list[Entry]) -> None:
        write_atomic(self._index, json.dumps([e.to_dict() for e in entries], indent=1))

    def text(self, entry: Entry) -> str:
        """The config text `entry` recorded."""
        return (self.folder / entry.file).read_text(encoding="utf-8")

    def record(self, text: str, note: str, restores: int | None = None) -> Entry:
        """Keep `text` as the newest applied version (pruning beyond `keep`)."""
        version = text_version(text)
        private_folder(self.folder)
        entries = self.entries()
        seq = entries[-1].seq + 1 if entries else 1
        name = f"{seq:04d}-{version}.yaml"
        (self.folder / name).write_text(text, encoding="utf-8")
        entry = Entry(
            seq=seq,
            version=version,
            applied_at=time.time(),
            note=note,
            file=name,
            restores=restores,
        )
        entries.append(entry)
        dropped = _beyond(entries, self.keep)
        for old in dropped:
            (self.folder / old.file).unlink(missing_ok=True)
        self._save([e for e in entries if e not in dropped])
        return entry

    def require_unedited(self, force: bool = False) -> None:
        """ConfigError when the config file was edited since the newest applied version was
        written, unless `force` (commands call this before a long run, not just at the end)."""
        entries = self.entries()
        if force or not entries or not self.config.exists():
            return
        if self.config.read_text(encoding="utf-8") != self.text(entries[-1]):
            newest = entries[-1]
            raise ConfigError(
                f"{self.config} was edited since modelyard wrote version {newest.version} "
                f"(#{newest.seq}); replacing it would lose the edit. Pass --force to keep the "
                f"edited text in {self.folder} as the newest version, then replace the file",
            )

    def _keep_current(self, force: bool) -> None:
        """Record the file's text when no entry holds it yet: before the first apply, or a hand
        edit since the newest entry (only when `force`)."""
        self.require_unedited(force)
        if not self.config.exists():
            return
        current = self.config.read_text(encoding="utf-8")
        entries = self.entries()
        if not entries:
            self.record(current, "before the first apply")
        elif current != self.text(entries[-1]):
            self.record(current, "edited by hand; kept before it was replaced")

    def _validate(self, text: str) -> None:
        """ConfigError unless `text` is a config the gateway would load: valid, and every name
        it uses defined (what needs this host's variables, files or models is not checked)."""
        check_references(parse(text, path=str(self.config)))

    def apply(self, text: str, note: str, *, force: bool = False) -> Entry:
        """Validate `text`, make it the config file, and record it (the file's text is recorded
        first when no entry holds it: the first apply, or a forced one over a hand edit)."""
        self._validate(text)
        self._keep_current(force)
        write_atomic(self.config, text)
        return self.record(text, note)

    def rollback(self, steps: int = 1, version: str | None = None, *, force: bool = False) -> Entry:
        """Re-apply an earlier version: the one deployed `steps` before the current one, or the
        newest entry of the version named."""
        if not self.entries():
            raise ConfigError(f"cannot roll back: no version recorded in {self.folder}")
        self._keep_current(force)
        if version is not None:
            matches = [e for e in self.entries() if e.version.startswith(version)]
            if not matches:
                raise ConfigError(f"no applied version {version!r} in {self.folder}")
            versions = sorted({e.version for e in matches})
            if len(versions) > 1:
                raise ConfigError(
                    f"{version!r} matches {len(versions)} versions ({', '.join(versions)}); "
                    "give more of the one to restore"
                )
            target = matches[-1]
        else:
            stack = self.deployed()
            if steps < 1 or steps >= len(stack):
                raise ConfigError(
                    f"cannot roll back {steps} step(s): {len(stack) - 1} version(s) were "
                    f"deployed before the current one (see modelyard history)"
                )
            target = stack[-1 - steps]
        restored = target.seq if target.restores is None else target.restores
        text = self.text(target)
        # A version recorded long ago may not load any more (rules get stricter): refused
        # here with the loader's reason, rather than written for the next reload to refuse.
        self._validate(text)
        write_atomic(self.config, text)
        return self.record(text, f"rollback to {target.version} (#{restored})", restored)
