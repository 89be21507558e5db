"""What stopped replicas left in a state folder, as an operator sees and settles it.

A replica stopped while its shared store was down leaves a spool file (`state.handover`): one
still `pending` is handed over by the next start; one `held` (first sent longer ago than the
store surely remembers: sent again it might count twice) or `corrupt` (it cannot be read) was
set aside by a start, for a person to settle. `modelyard handover list|apply|discard CONFIG`
shows them all, applies one on request (one that may count twice only when told so), or
moves one aside as `discarded`, never deleting it unseen.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

from modelyard.state.base import StateStore
from modelyard.state.handover import SPOOLED, Spool, describe, forgotten, read_spool, send

PATTERNS = {
    "pending": SPOOLED,
    "held": f"{SPOOLED}.held",
    "corrupt": f"{SPOOLED}.corrupt",
    "discarded": f"{SPOOLED}*.discarded",
}
"""The names of the spool files of each status."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SpoolFile:
    """One spool file in a state folder, as read at one time."""

    path: Path
    status: str
    """`pending`, `held`, `corrupt` or `discarded` (`PATTERNS`)."""
    written: float
    """When it was written (`time.time()`); the file's own time when it cannot be read."""
    spool: Spool | None
    """What it holds; None when it cannot be read."""
    error: str = ""
    """Why it cannot be read."""
    may_count_twice: bool = False
    """Whether the store may have forgotten a move of it that it applied: sent again, that
    move would count twice. Held files, and pending ones as old (no start set them aside)."""

    def counters(self) -> dict[str, float]:
        """What it adds to each counter (those whose window is still open)."""
        totals: dict[str, float] = {}
        for move in self.spool.moves if self.spool else ():
            for key, delta, _ in move.changes:
                totals[key] = totals.get(key, 0.0) + delta
        return totals

    def holds(self) -> str:
        """How much it holds, in a line, or why it cannot be read."""
        return describe(self.spool.moves) if self.spool else f"cannot be read: {self.error}"


def status(name: str) -> str | None:
    """The status of the file named `name`, or None when it is no spool file."""
    return next((what for what, glob in PATTERNS.items() if fnmatchcase(name, glob)), None)


def spool_files(folder: Path, *, now: float) -> list[SpoolFile]:
    """Every spool file in `folder` (none when it does not exist), oldest first."""
    if not folder.is_dir():
        return []
    found = [read(path, now=now) for path in folder.iterdir() if status(path.name)]
    return sorted(found, key=lambda file: (file.written, file.path.name))


def read(path: Path, *, now: float) -> SpoolFile:
    """The spool file at `path` (ValueError when its name is not one's; OSError when it
    cannot be opened at all)."""
    what = status(path.name)
    if what is None:
        raise ValueError(f"{path.name} is not a spool file ({SPOOLED}, then .held or .corrupt)")
    try:
        spool = read_spool(path, now=now)
    except ValueError as exc:
        return SpoolFile(
            path=path, status=what, written=path.stat().st_mtime, spool=None, error=str(exc)
        )
    twice = what == "held" or (what == "pending" and forgotten(spool, now))
    return SpoolFile(
        path=path, status=what, written=spool.written, spool=spool, may_count_twice=twice
    )


def refusal(file: SpoolFile, store: StateStore, *, same_store: bool = False) -> str | None:
    """Why `file` cannot be applied to `store`, or None. `same_store`: a person knows the
    location it names is `store`'s under another address (a host name for an IP, a proxy's
    port); its backend must still be `store`'s."""
    if file.spool is None:
        return f"{file.path.name} cannot be read ({file.error}): discard it"
    if file.status == "discarded":
        return f"{file.path.name} was discarded; rename it to apply it after all"
    if same_store and file.spool.backend == store.backend:
        return None
    return file.spool.refusal(store)


async def apply(file: SpoolFile, store: StateStore) -> None:
    """Send what `file` holds to `store`, each move under its own id (once while the store
    remembers it; `may_count_twice` says whether it may have forgotten), then delete the
    file. The caller has checked `refusal`."""
    assert file.spool is not None
    await send(store, file.spool.moves)
    await asyncio.to_thread(file.path.unlink, missing_ok=True)


def discard(file: SpoolFile) -> Path:
    """Move `file` aside, named `...discarded`, where no start hands it over; its new path."""
    aside = file.path.with_name(f"{file.path.name}.discarded")
    os.replace(file.path, aside)
    return aside
