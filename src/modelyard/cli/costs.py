"""costs, cache stats, cache clear: what was spent, what budgets have left, what the cache saved."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from modelyard.cli.app import app, console, fail, guarded
from modelyard.config.loader import LoadedConfig, load_config
from modelyard.cost import reports
from modelyard.cost.budget_book import BudgetBook
from modelyard.cost.budget_counters import Budget, key_budget
from modelyard.cost.budget_leases import LeaseKeeper, reclaimed_message
from modelyard.cost.ledger import LedgerFile, SqliteLedgerFile
from modelyard.cost.prices import usd
from modelyard.errors import UnavailableError
from modelyard.state.factory import make_store

if TYPE_CHECKING:
    from modelyard.gateway.keys import VirtualKey

ConfigPath = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]

cache_app = typer.Typer(help="Inspect or empty the response cache.", no_args_is_help=True)
app.add_typer(cache_app, name="cache")


def _ledger(loaded: LoadedConfig) -> LedgerFile | None:
    """The ledger the config writes, or None when a SQLite one has no file yet."""
    from modelyard.config.build_operations import ledger_file

    file = ledger_file(loaded.config.ledger, loaded.base_dir)
    if isinstance(file, SqliteLedgerFile) and not file.path.exists():
        return None
    return file


async def _keys(loaded: LoadedConfig) -> dict[str, VirtualKey]:
    """The gateway's virtual keys by id, revoked ones too ({} when it has made none): the
    names of the spend by key, and each key's own budget."""
    from modelyard.gateway.keys_postgres import key_store

    spec = loaded.config.gateway
    local = loaded.local_path(spec.keys_db)
    if spec.keys_url is None and not local.exists():
        return {}
    store = key_store(spec, local)
    try:
        return {key.id: key for key in await store.all()}
    except UnavailableError as exc:
        console.print(
            f"[yellow]keys not read ({exc.message}): spend by key shows ids only, and keys' "
            "own budgets are left out[/]"
        )
        return {}
    finally:
        await store.aclose()


def _named(key_id: str, keys: dict[str, VirtualKey]) -> str:
    """A key's id with the name it was made for, when known."""
    key = keys.get(key_id)
    return f"{key_id} ({key.name})" if key is not None else key_id


def _spend_table(title: str, lines: list[reports.SpendLine], accuracy: dict[str, float]) -> Table:
    table = Table(title=title)
    for column in ("name", "requests", "refused", "cost $", "per item $", "saved $", "errors"):
        table.add_column(column, justify="left" if column == "name" else "right")
    if accuracy:
        table.add_column("$ / accuracy pt", justify="right")
    for line in lines:
        row = [
            line.name,
            str(line.requests),
            str(line.refused),
            usd(line.cost),
            usd(line.per_item),
            usd(line.saved),
            str(line.errors),
        ]
        if accuracy:
            value = (
                reports.cost_per_accuracy_point(line.per_item, accuracy[line.name])
                if line.name in accuracy
                else None
            )
            row.append("" if value is None else f"{value:.8f}")
        table.add_row(*row)
    return table


async def _costs(loaded: LoadedConfig, days: int, accuracy: dict[str, float]) -> None:
    file = _ledger(loaded)
    store = make_store(loaded.config.state, loaded.base_dir)
    keeper = LeaseKeeper(store)  # the sweep's and the budget book's, closed before the store
    keys = await _keys(loaded)
    try:
        if file is None:
            console.print(f"[yellow]no spend recorded yet[/] (ledger {loaded.config.ledger.path})")
        else:
            shown = False
            for group in ("system", "model", "key", "tag", "day"):
                lines = await reports.spend_by(file, group, days=days)
                if group == "key":
                    lines = [replace(line, name=_named(line.name, keys)) for line in lines]
                if lines:
                    shown = True
                    title = f"spend by {group}, last {days} day(s)"
                    console.print(_spend_table(title, lines, accuracy if group == "system" else {}))
            if not shown:
                console.print(
                    f"[yellow]no spend in the last {days} day(s)[/] (--days to look further)"
                )
        budgets = [Budget.from_spec(spec) for spec in loaded.config.budgets]
        # Each key's own budget (`keys create --budget`) is kept with the configured ones.
        budgets += [
            key_budget(key.id, key.budget)
            for key in keys.values()
            if key.budget is not None and key.revoked is None
        ]
        if budgets:
            # What a process killed outright had reserved is given back first, as any
            # replica's sweep would, so `reserved` is only what requests in flight hold.
            reclaimed = await keeper.sweep(quiet=True)
            if reclaimed:
                console.print(f"[yellow]{reclaimed_message(reclaimed)}[/]")
            table = Table(title="budgets (current window)")
            for column in (
                "budget",
                "scope",
                "window",
                "spent $",
                "reserved $",
                "limit $",
                "used",
                "action",
            ):
                table.add_column(column)
            book = BudgetBook(store, leases=keeper)
            for line in await reports.budget_lines(book, budgets, file):
                budget = line.budget
                share = (line.spent + line.reserved) / budget.limit
                action = budget.action + (
                    f" -> {budget.downgrade_to}" if budget.downgrade_to else ""
                )
                subject = _named(line.subject, keys) if budget.scope == "key" else line.subject
                table.add_row(
                    budget.name,
                    f"{budget.scope} {subject}",
                    line.window,
                    usd(line.spent) + (" (ledger)" if line.source == "ledger" else ""),
                    usd(line.reserved),
                    f"{budget.limit:g}",
                    f"{share:.0%}",
                    action,
                )
            console.print(table)
        if file is not None:
            alerts = await reports.recent_alerts(file)
            if alerts:
                table = Table(title="recent alerts")
                for column in ("when (UTC)", "kind", "where", "what"):
                    table.add_column(column)
                for at, kind, where, message in alerts:
                    when = datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d %H:%M:%S")
                    table.add_row(when, kind, where, message)
                console.print(table)
    finally:
        await keeper.aclose()
        await store.aclose()
        if file is not None:
            await file.aclose()


@app.command()
def costs(
    config: ConfigPath,
    days: Annotated[int, typer.Option(min=1, help="How many days back (today included).")] = 7,
    evaluation: Annotated[
        Path | None,
        typer.Option("--eval", help="Evaluation results JSON: adds cost per accuracy point."),
    ] = None,
) -> None:
    """Spend by system, model, key, tag and day; budget status; recent alerts."""

    def run() -> None:
        loaded = load_config(config)
        accuracy = reports.load_accuracy(evaluation) if evaluation is not None else {}
        asyncio.run(_costs(loaded, days, accuracy))

    guarded(run)


async def _with_cache(loaded: LoadedConfig, clear: bool) -> None:
    from modelyard.config.build import BuildContext
    from modelyard.config.build_operations import response_cache
    from modelyard.config.resources import Resources

    spec = loaded.config.cache
    if spec is None:
        fail(f"{loaded.path} has no cache: section, so no cache to show or clear")
    if spec.backend == "memory":
        fail(
            f"{loaded.path} keeps its cache in memory, inside each process that serves it: "
            "this command can neither see nor empty it (a restart empties it); use backend "
            "sqlite or redis to inspect and clear it from here"
        )
    context = BuildContext(loaded=loaded, resources=Resources(), disabled_providers={})
    cache = response_cache(context, spec)
    try:
        if clear:
            count = await cache.backend.clear()
            console.print(f"cleared {count} entries from the {spec.backend} cache")
            return
        stats = await cache.backend.stats()
        lookups = stats.hits + stats.misses
        rate = f"{stats.hits / lookups:.1%}" if lookups else "n/a"
        console.print(
            f"{spec.backend} cache: {stats.entries} entries (max {spec.max_entries}), "
            f"{stats.hits} hits / {stats.misses} misses (hit rate {rate}), "
            f"saved ${usd(stats.saved)}"
        )
    finally:
        await cache.aclose()


@cache_app.command("stats")
def cache_stats(config: ConfigPath) -> None:
    """Entries, hits, misses and USD saved."""
    guarded(lambda: asyncio.run(_with_cache(load_config(config), clear=False)))


@cache_app.command("clear")
def cache_clear(config: ConfigPath) -> None:
    """Forget every cached response."""
    guarded(lambda: asyncio.run(_with_cache(load_config(config), clear=True)))
