"""Folders for what a deployment keeps on disk."""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

log = logging.getLogger("modelyard")

PRIVATE = 0o700
"""Keys, spend, the request log (which quotes prompts) and config history: this user only."""

_WARNED: set[Path] = set()


def private_folder(folder: Path) -> None:
    """Create `folder` readable by this user only, and so its missing parents from `.modelyard`
    down (those above it as `mkdir` makes them). One that exists keeps its mode (someone may
    have opened it on purpose), but a `.modelyard` folder others can enter is named in a
    warning, once: one made before these folders were private is still open."""
    # One at a time: mkdir(parents=True) gives the parents it makes the umask's mode, and a
    # `.modelyard` made that way was open to everyone (and then warned of).
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        private = path == folder or ".modelyard" in path.parts
        path.mkdir(mode=PRIVATE if private else 0o777, exist_ok=True)
    if ".modelyard" not in folder.parts or folder in _WARNED:
        return
    mode = stat.S_IMODE(folder.stat().st_mode)
    if mode & 0o077:
        _WARNED.add(folder)
        log.warning(
            "%s can be read by other users (mode %o): it holds keys, spend and the request log, "
            "which quotes prompts; run `chmod 700 %s` unless that is on purpose",
            folder,
            mode,
            folder,
        )


def write_private(path: Path, text: str) -> None:
    """Write `text` as a new file at `path`, readable by this user only, whole or not at all:
    a temporary file beside it, flushed to disk, renamed over, and the rename flushed too (a
    crash or power cut leaves the file complete, or absent)."""
    temporary = path.with_name(f".{path.name}.tmp")
    created = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(created, 0o600)  # whatever the umask, or a temporary file left before
        with os.fdopen(created, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    folder = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)
