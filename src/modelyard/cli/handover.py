"""handover list, apply, discard: what replicas stopped while the shared store was down left."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from rich.markup import escape

from modelyard.cli.app import app, console, errors, fail, guarded
from modelyard.cli.basic import ConfigPath
from modelyard.config.loader import LoadedConfig, load_config
from modelyard.state import spools
from modelyard.state.base import StateStore
from modelyard.state.factory import shared_backend, spool_folder
from modelyard.state.handover import CLOCK_MARGIN, MOVE_MEMORY, store_name

T = TypeVar("T")

handover_app = typer.Typer(
    help="List, apply or discard what replicas stopped while the shared state store was down "
    "left in the config's state folder (state-handover-*.json).",
    no_args_is_help=True,
)
app.add_typer(handover_app, name="handover")

FileName = Annotated[
    str,
    typer.Argument(help="The spool file's name, as `handover list` shows it.", show_default=False),
]


def _folder(loaded: LoadedConfig) -> Path:
    return spool_folder(loaded.config.state, loaded.base_dir)


def _with_store(loaded: LoadedConfig, work: Callable[[StateStore], Awaitable[T]]) -> T:
    """`work` on the config's shared store itself: no local counting when it is down, and no
    hand-over of the folder as a start would do."""
    spec = loaded.config.state
    if spec.backend not in ("redis", "postgres"):
        fail(
            f"{loaded.path} keeps its state in {spec.backend}: spool files are owed to a redis "
            "or postgres store, so there is none to apply them to; `handover discard` moves "
            "one aside"
        )

    async def run() -> T:
        store = shared_backend(spec)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


def _file(loaded: LoadedConfig, name: str) -> spools.SpoolFile:
    """The spool file `name` in the config's state folder, read (exit 2 when there is none)."""
    folder = _folder(loaded)
    given = Path(name)
    if given.parent != Path() and given.resolve().parent != folder.resolve():
        fail(f"{name} is not in the state folder of {loaded.path}, {folder}")
    path = folder / given.name
    if spools.status(path.name) is None or not path.is_file():
        fail(
            f"no spool file {given.name} in {folder}; "
            f"`modelyard handover list {loaded.path}` shows them"
        )
    return spools.read(path, now=time.time())


def _age(seconds: float) -> str:
    hours = max(seconds, 0.0) / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


@handover_app.command("list")
def handover_list(
    config: ConfigPath,
    as_json: Annotated[bool, typer.Option("--json", help="Print them as JSON.")] = False,
) -> None:
    """Every spool file: pending (the next start hands it over), held (may have been applied
    already: sent again it might count twice), corrupt (cannot be read) or discarded; its age,
    the store it is owed to, and what it holds."""

    def run() -> None:
        loaded = load_config(config)
        folder, now = _folder(loaded), time.time()
        found = spools.spool_files(folder, now=now)
        theirs = _theirs(loaded, found)
        if as_json:
            out = [
                {
                    "file": f.path.name,
                    "status": f.status,
                    "written": f.written,
                    "age_seconds": now - f.written,
                    "backend": f.spool.backend if f.spool else None,
                    "location": f.spool.location if f.spool else None,
                    "for_this_config": f.spool is not None and f.path.name not in theirs,
                    "may_count_twice": f.may_count_twice,
                    "counters": f.counters(),
                    "error": f.error or None,
                }
                for f in found
            ]
            console.print(json.dumps({"folder": str(folder), "files": out}, indent=2), markup=False)
            return
        counts = {what: sum(f.status == what for f in found) for what in spools.PATTERNS}
        console.print(
            f"{folder}: " + ", ".join(f"{n} {what}" for what, n in counts.items()), markup=False
        )
        for f in found:  # two lines each: a table would wrap what a file holds
            state = f.status + (" [yellow](may count twice)[/]" if f.may_count_twice else "")
            line = f"{escape(f.path.name)}  {state}  written {_age(now - f.written)} ago"
            if f.spool is not None:
                line += f"  for {escape(store_name(f.spool.backend, f.spool.location))}"
            if (ours := theirs.get(f.path.name)) is not None:
                line += f"  [red]not this config's store ({escape(ours)})[/]"
            console.print(line)
            console.print(f"    {escape(f.holds())}")

    guarded(run)


def _theirs(loaded: LoadedConfig, found: list[spools.SpoolFile]) -> dict[str, str]:
    """This config's store, by the name of each readable file written for another."""
    spec = loaded.config.state
    if spec.backend not in ("redis", "postgres"):
        return {f.path.name: spec.backend for f in found if f.spool}
    store = shared_backend(spec)  # never reached: its backend and location are enough
    ours = store_name(store.backend, store.location)
    return {f.path.name: ours for f in found if f.spool and f.spool.refusal(store)}


@handover_app.command("apply")
def handover_apply(
    config: ConfigPath,
    name: FileName,
    yes: Annotated[
        bool,
        typer.Option(
            "--yes",
            help="Apply a file that may count twice (held, or as old) without asking.",
        ),
    ] = False,
    same_store: Annotated[
        bool,
        typer.Option(
            "--same-store",
            help="The file names this config's store at another address (a host name for its "
            "IP, another port to the same server): apply it all the same. Never across backends.",
        ),
    ] = False,
) -> None:
    """Send what a spool file holds to the config's state store now, then delete it. A pending
    or held file's moves are applied once while the store remembers them (a day); a held one
    may be older than that, and what it holds counted twice: compare it with the store (or the
    ledger) first."""

    def run() -> None:
        loaded = load_config(config)
        file = _file(loaded, name)

        async def apply(store: StateStore) -> None:
            why = spools.refusal(file, store, same_store=same_store)
            if why is not None:
                elsewhere = file.status != "discarded" and file.spool is not None
                if elsewhere and file.spool and file.spool.backend == store.backend:
                    why += " (--same-store applies it if that is this store at another address)"
                fail(f"not applied: {why}")
            if file.may_count_twice:
                hours = (MOVE_MEMORY - CLOCK_MARGIN) / 3600
                errors.print(
                    f"[bold yellow]warning:[/] {escape(file.path.name)} was first sent longer "
                    f"ago than the store surely remembers ({hours:.0f} h): if a replica applied "
                    "it then, applying it again COUNTS IT TWICE: "
                    f"{escape(file.holds())}"
                )
                if not yes and not typer.confirm("Apply it anyway?", default=False, err=True):
                    raise typer.Exit(1)
            await spools.apply(file, store)

        _with_store(loaded, apply)
        assert file.spool is not None
        where = store_name(file.spool.backend, file.spool.location)
        console.print(
            f"applied {file.path.name} to the state store {where}, and deleted it: {file.holds()}",
            markup=False,
        )

    guarded(run)


@handover_app.command("discard")
def handover_discard(config: ConfigPath, name: FileName) -> None:
    """Move a spool file aside (renamed `...discarded`, kept for the record): no start hands
    it over, and what it holds never reaches the store."""

    def run() -> None:
        loaded = load_config(config)
        file = _file(loaded, name)
        if file.status == "discarded":
            fail(f"{file.path.name} is discarded already")
        aside = spools.discard(file)
        console.print(
            f"discarded {file.path.name}: moved aside as {aside.name}; what it held is not in "
            f"the state store: {file.holds()}",
            markup=False,
        )

    guarded(run)
