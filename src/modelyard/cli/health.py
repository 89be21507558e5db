"""health: every circuit breaker's state, optionally after probing each model."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.app import app, console, guarded
from modelyard.errors import ModelError
from modelyard.resilience.breaker import CircuitState
from modelyard.resilience.health import HealthReport
from modelyard.types import user
from modelyard.yard import Yard, load

_STYLE = {CircuitState.CLOSED: "green", CircuitState.HALF_OPEN: "yellow", CircuitState.OPEN: "red"}


async def _probe(yard: Yard) -> list[tuple[str, str, float]]:
    """One tiny request to each model; (model, outcome, seconds)."""
    results = []
    for name, model in sorted(yard.models.items()):
        started = time.perf_counter()
        try:
            response = await model.complete(user("ping", max_tokens=1).with_budget(30.0))
            outcome = f"answered by {response.model}"
        except ModelError as exc:
            outcome = f"{exc.kind}: {exc.message}"
        results.append((name, outcome, time.perf_counter() - started))
    return results


async def _check(yard: Yard, probe: bool) -> tuple[list[tuple[str, str, float]], HealthReport]:
    for note in yard.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    try:
        probes = await _probe(yard) if probe else []
        return probes, await yard.health()
    finally:
        await yard.aclose()


def _when(epoch: float | None) -> str:
    return datetime.fromtimestamp(epoch).strftime("%H:%M:%S") if epoch else ""


@app.command()
def health(
    config: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
    probe: Annotated[
        bool, typer.Option("--probe", help="Send one tiny request to each model first (costs).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show each circuit breaker: closed, open or half-open, failure rate, last error.

    State comes from the configured store, so a shared store (Redis) shows what the running
    replicas see; an in-memory one starts closed.
    """

    def run() -> tuple[list[tuple[str, str, float]], HealthReport, dict[str, str]]:
        yard = load(config)
        disabled = dict(yard.built.disabled)  # models that cannot answer: no circuit shows them
        return (*asyncio.run(_check(yard, probe)), disabled)

    probes, report, disabled = guarded(run)
    if as_json:
        out = {**report.to_dict(), "disabled": disabled}
        console.print(json.dumps(out, indent=2), markup=False)
    else:
        for name, outcome, seconds in probes:
            console.print(f"probe {name}: {outcome} ({seconds * 1000:.0f} ms)", markup=False)
        table = Table(title=f"circuits in {config}")
        for column in ("circuit", "state", "failure rate", "calls", "opened", "last error"):
            table.add_column(column)
        for c in report.circuits:
            table.add_row(
                c.scope,
                f"[{_STYLE[c.state]}]{c.state}[/]",
                f"{c.failure_rate:.0%}",
                str(c.calls),
                _when(c.opened_at),
                escape(c.last_error or ""),
            )
        console.print(table)
        for name, why in sorted(disabled.items()):
            console.print(f"[red]disabled[/] {escape(name)}: {escape(why)}")
        if not report.circuits:
            console.print(
                "no circuits: every hosted model is disabled (above)"
                if disabled
                else "no circuits: the config has no hosted models or configured breakers"
            )
    if not report.healthy:
        raise typer.Exit(1)
