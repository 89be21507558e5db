"""The last N applied versions of a config file, so a bad change can be rolled back.

Each applied version is kept as `<seq>-<version>.yaml` in the history folder (default
`.modelyard/history/<config file name>/` beside the config) with `index.json` listing them,
oldest first. Applying validates the new text first; the config file is replaced atomically.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.config.loader import parse
from modelyard.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class Entry:
    """One applied version."""

    seq: int
    version: str
    applied_at: float
    note: str
    file: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "seq": self.seq,
            "version": self.version,
            "applied_at": self.applied_at,
            "note": self.note,
            "file": self.file,
        }


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_text(text, encoding="utf-8")
    os.replace(temporary, path)


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

    def _save(self, entries: list[Entry]) -> None:
        _write_atomic(self._index, json.dumps([e.to_dict() for e in entries], indent=1))

    def record(self, text: str, note: str) -> Entry:
        """Keep `text` as the newest applied version (pruning beyond `keep`)."""
        version = parse(text, path=str(self.config)).version
        self.folder.mkdir(parents=True, exist_ok=True)
        entries = self.entries()
        seq = entries[-1].seq + 1 if entries else 1
        name = f"{seq:04d}-{version}.yaml"
        (self.folder / name).write_text(text, encoding="utf-8")
        entry = Entry(seq=seq, version=version, applied_at=time.time(), note=note, file=name)
        entries.append(entry)
        for old in entries[: -self.keep]:
            (self.folder / old.file).unlink(missing_ok=True)
        self._save(entries[-self.keep :])
        return entry

    def apply(self, text: str, note: str) -> Entry:
        """Validate `text`, make it the config file, and record it (the file's previous text is
        recorded first when the history is empty, so it can be rolled back to)."""
        parse(text, path=str(self.config))
        if not self.entries() and self.config.exists():
            self.record(self.config.read_text(encoding="utf-8"), "before the first apply")
        _write_atomic(self.config, text)
        return self.record(text, note)

    def rollback(self, steps: int = 1, version: str | None = None) -> Entry:
        """Re-apply an earlier version: `steps` back from the newest, or the one named."""
        entries = self.entries()
        if version is not None:
            matches = [e for e in entries if e.version.startswith(version)]
            if not matches:
                raise ConfigError(f"no applied version {version!r} in {self.folder}")
            target = matches[-1]
        else:
            if steps < 1 or steps >= len(entries):
                raise ConfigError(
                    f"cannot roll back {steps} step(s): {len(entries)} version(s) recorded "
                    f"in {self.folder}"
                )
            target = entries[-1 - steps]
        text = (self.folder / target.file).read_text(encoding="utf-8")
        _write_atomic(self.config, text)
        return self.record(text, f"rollback to {target.version} (#{target.seq})")
