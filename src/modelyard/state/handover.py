"""What a replica counted alone, kept on disk when it stops with the shared store still down,
and handed to the store by the next one that starts.

`PolicyStore` under `on_unavailable: local` counts in its own memory while the backend is down
and moves those counts to it when it answers again (`Move`: a release of a lease of its own,
applied once however often it is sent, for `MOVE_MEMORY` seconds after its first time). A
replica stopped (SIGTERM, `aclose`) before that writes the moves it still owes to a file of its
own, `state-handover-<pid>-<random>.json` in the config's state folder (the folder of
`state.path`, `.modelyard/<config>/`): written whole or not at all (a temporary file, fsynced,
renamed), readable by its user alone. Each counter keeps the time its window ends, so a
per-minute window already over is not revived.

The file names the store it is owed to: its backend, and (since the field was added; a file
without it is checked by backend alone) its `location`, the server, database and prefix with
no credential in it. The next `PolicyStore` on that folder hands every such file written for
its own store to the backend at its first contact (`hand_over`), each move as a release under
its own id, then deletes the file; one written for another store (the config now names
another) is left as it is and logged, never sent where its counts do not belong. Two
replicas starting together, or one that crashed after sending and before deleting, send a move
twice and the backend applies it once. That holds while the backend remembers the id: a file
whose first sending is older than `MOVE_MEMORY` less `CLOCK_MARGIN` is set aside
(`.held`) and logged, as sending it again might count it twice; a person compares it with the
store (or the ledger) and decides. A file that cannot be read is set aside (`.corrupt`) and
logged; nothing here stops a process from starting. `modelyard handover` lists them all, and
applies or discards one (`state.spools`).

A process killed outright (SIGKILL, the OOM killer, a power cut) writes nothing: what it counted
alone since the backend went down is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.state.base import Change, Lease, StateStore
from modelyard.state.folders import private_folder, write_private

log = logging.getLogger("modelyard.state")

MOVE_MEMORY = 86400.0
"""Seconds the backend remembers a move of local counts (a release of a lease of its own): a
move whose answer was lost and that is sent again within that long is applied once."""

CLOCK_MARGIN = 3600.0
"""How much sooner than `MOVE_MEMORY` a spooled move stops being sent again: the backend dates
its memory by its own clock, the spool by this host's."""

SPOOLED = "state-handover-*.json"
"""The names of spool files in a state folder (temporary ones start with a dot)."""

_VERSION = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Move:
    """Counts owed to the backend, sent as one release of a lease of their own."""

    id: str
    changes: tuple[Change, ...]
    """(key, delta, seconds left in the counter's window, or None)."""
    sent: float | None = None
    """When it was first sent (`time.time()`), if ever: the backend remembers it from then."""

    @property
    def lease(self) -> Lease:
        """The lease whose release applies this move, once."""
        return Lease(id=self.id, seconds=MOVE_MEMORY)


@dataclass(frozen=True, slots=True, kw_only=True)
class Spool:
    """What a spool file holds."""

    backend: str
    location: str | None
    """The store's `StateStore.location`; None in a file written before it was recorded."""
    written: float
    moves: list[Move]

    def refusal(self, store: StateStore) -> str | None:
        """Why this file is not `store`'s to take (written for another store), or None."""
        if self.backend == store.backend and self.location in (None, store.location):
            return None
        return (
            f"it was written for the state store {store_name(self.backend, self.location)}, and "
            f"this config's is {store_name(store.backend, store.location)}"
        )


def store_name(backend: str, location: str | None) -> str:
    """A store, as messages name it: `redis at 127.0.0.1:6379/0, modelyard:*`."""
    return f"{backend} at {location}" if location else backend


def spool(
    folder: Path, backend: str, moves: Sequence[Move], *, now: float, location: str = ""
) -> Path:
    """Write `moves`, owed to the store `backend` at `location`, to a new spool file in
    `folder` (made private if missing); its path."""
    private_folder(folder)
    document = {
        "version": _VERSION,
        "backend": backend,
        "location": location,  # a field added: a release before ignores it
        "pid": os.getpid(),
        "written": now,
        "moves": [
            {
                "id": move.id,
                "sent": move.sent,
                "changes": [
                    [key, delta, None if ttl is None else now + ttl]
                    for key, delta, ttl in move.changes
                ],
            }
            for move in moves
        ],
    }
    path = folder / SPOOLED.replace("*", f"{os.getpid()}-{uuid.uuid4().hex[:8]}")
    write_private(path, json.dumps(document, indent=1))
    return path


async def keep(
    folder: Path | None,
    moves: Sequence[Move],
    *,
    backend: str,
    location: str = "",
    now: float,
    where: str,
) -> None:
    """At a close with the backend `where` down: `moves` written to a spool file in `folder`
    (off the event loop: fsync may take a while), and where it is logged; or what is lost."""
    if folder is None:
        log.error(
            "state store %s is still down at close, and this store keeps no spool: what this "
            "process counted alone is lost: %s",
            where,
            describe(moves),
        )
        return
    try:
        path = await asyncio.to_thread(spool, folder, backend, moves, now=now, location=location)
    except OSError as exc:
        log.error(
            "state store %s is still down at close, and what this process counted alone could "
            "not be kept in %s (%s): it is lost: %s",
            where,
            folder,
            exc,
            describe(moves),
        )
        return
    log.warning(
        "state store %s is still down at close: what this process counted alone is kept in %s, "
        "and handed to it by the next process to start on this config: %s",
        where,
        path,
        describe(moves),
    )


def read_spool(path: Path, *, now: float) -> Spool:
    """The spool file at `path`, each change's window counted from `now` (those whose window
    is over are left out). A move never sent is dated from when the file was written: the
    earliest a replica handing the file over may have sent it, and the backend remembered it
    from. ValueError when the file is not one."""
    try:
        document = json.loads(path.read_bytes())
        if document["version"] != _VERSION:
            raise ValueError(f"version {document['version']!r}, not {_VERSION}")
        written = document["written"]
        if not _finite(written):
            raise ValueError(f"its time of writing is malformed: {written!r}")
        backend, location = document["backend"], document.get("location")
        if not isinstance(backend, str) or not (location is None or isinstance(location, str)):
            raise ValueError(f"the store it is for is malformed: {backend!r}, {location!r}")
        moves = [_move(entry, written, now) for entry in document["moves"]]
    except (KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    # An empty location is a store that named none: checked by backend alone, as before.
    return Spool(backend=backend, location=location or None, written=written, moves=moves)


def first_sent(spool: Spool, now: float) -> float:
    """When the earliest move of `spool` may have been sent (`now` if it holds none)."""
    return min((m.sent for m in spool.moves if m.sent is not None), default=now)


def forgotten(spool: Spool, now: float) -> bool:
    """Whether the store may have forgotten a move of `spool` it applied: sent again, it
    might count twice."""
    return now - first_sent(spool, now) > MOVE_MEMORY - CLOCK_MARGIN


async def send(store: StateStore, moves: Sequence[Move]) -> None:
    """Each move to `store`, as a release of its own lease (applied once while the store
    remembers its id)."""
    for move in moves:
        if move.changes:
            await store.release(move.lease, move.changes)


def _move(entry: dict[str, Any], written: float, now: float) -> Move:
    sent = written if entry["sent"] is None else entry["sent"]
    if not isinstance(entry["id"], str) or not _finite(sent):
        raise ValueError(f"a move's id or time is malformed: {entry['id']!r}, {sent!r}")
    changes = []
    for key, delta, ends in entry["changes"]:
        if not isinstance(key, str) or not _finite(delta) or not (ends is None or _finite(ends)):
            raise ValueError(f"a change is malformed: {key!r}, {delta!r}, {ends!r}")
        if ends is None or ends > now:
            changes.append((key, float(delta), None if ends is None else ends - now))
    return Move(id=entry["id"], changes=tuple(changes), sent=sent)


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


async def hand_over(folder: Path, store: StateStore, *, now: float, where: str) -> int:
    """Send every spool file in `folder` to `store` and delete it; how many were. A file that
    cannot be read, or may have been applied longer ago than the store remembers, is set aside
    and logged; one written for another store is left as it is, and logged. UnavailableError
    (from `store`) leaves the file being sent, and the rest, for the next try."""
    handed = 0
    for path, moves in await asyncio.to_thread(_sendable, folder, store, now, where):
        await send(store, moves)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        handed += 1
        log.warning(
            "handed to the state store %s what a replica stopped while it was down had counted "
            "alone, from %s (each move applied once, whichever replica sends it): %s",
            where,
            path,
            describe(moves),
        )
    return handed


def _sendable(
    folder: Path, store: StateStore, now: float, where: str
) -> list[tuple[Path, list[Move]]]:
    """The spool files in `folder` for `store` and their moves, but those set aside (logged);
    those for another store are logged and left."""
    out = []
    for path in sorted(folder.glob(SPOOLED)):
        try:
            read = read_spool(path, now=now)
        except FileNotFoundError:  # another replica has handed it over meanwhile
            continue
        except (OSError, ValueError) as exc:
            _set_aside(path, ".corrupt")
            log.error(
                "state handover %s cannot be read (%s): set aside as %s.corrupt; what it held "
                "is not in the state store %s",
                path,
                exc,
                path.name,
                where,
            )
            continue
        moves = read.moves
        refusal = read.refusal(store)
        if refusal is not None:
            log.error(
                "state handover %s is not sent to the state store %s: %s. It is left as it "
                "is, for a config naming that store; `modelyard handover list` shows it, and "
                "`modelyard handover discard` moves it aside. It holds: %s",
                path,
                where,
                refusal,
                describe(moves),
            )
            continue
        if not forgotten(read, now):
            out.append((path, moves))
            continue
        oldest = first_sent(read, now)
        _set_aside(path, ".held")
        log.error(
            "state handover %s was first sent %.1f h ago, longer than the state store %s "
            "surely remembers (%.0f h): sent again it might count twice, so it is set aside "
            "as %s.held, not sent; compare it with the store, then `modelyard handover "
            "apply` or `discard` it: %s",
            path,
            (now - oldest) / 3600,
            where,
            (MOVE_MEMORY - CLOCK_MARGIN) / 3600,
            path.name,
            describe(moves),
        )
    return out


def describe(moves: Sequence[Move]) -> str:
    """How much `moves` hold: their counters, the budgets' spend named first."""
    totals: dict[str, float] = {}
    for move in moves:
        for key, delta, _ in move.changes:
            totals[key] = totals.get(key, 0.0) + delta
    if not totals:
        return "nothing left in a window still open"
    spent = sorted((k for k in totals if k.startswith("spent:")), key=lambda k: -totals[k])
    named = [f"{key} ${totals[key]:.6f}" for key in spent[:5]]
    more = len(totals) - len(named)
    return ", ".join(named) + (
        f"{', and ' if named else ''}{more} other counter(s)" if more else ""
    )


def _set_aside(path: Path, suffix: str) -> None:
    with contextlib.suppress(FileNotFoundError):  # another replica set it aside first
        os.replace(path, path.with_name(path.name + suffix))
