"""demo and diagram: a guided run of a system over labelled tickets, and a system's
architecture as SVG."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.status import Status

from modelyard.cli.app import app, check_writable, console, fail, guarded
from modelyard.config.loader import load_config
from modelyard.demo.loading import ReportingResources, local_models
from modelyard.demo.report import render, write_report
from modelyard.demo.summary import (
    Summary,
    cascade_stages,
    known_routes,
    largest_model,
    summarise,
    trace,
)
from modelyard.demo.terminal import summary_view
from modelyard.demo.workload import Outcome, Ticket, read_tickets, run_workload
from modelyard.diagram import system_svg
from modelyard.evaluation.isolation import build_for_evaluation
from modelyard.suggest import did_you_mean
from modelyard.topology import entry_points
from modelyard.yard import Yard, load

QUICKSTART = Path("examples/quickstart.yaml")
TICKETS = Path("data/acme/tickets-test.jsonl")
"""The demo's tickets, relative to the config file."""
EXAMPLE_QUESTION = "Where is my order ORD-731842?"


def _pick_system(yard: Yard, wanted: str | None) -> str:
    if wanted is not None:
        _check_system(yard, wanted)
        return wanted
    if "support" in yard.systems:
        return "support"
    return _only_entry_point(yard, "pick one with --system")


def _check_system(yard: Yard, name: str) -> None:
    if name not in yard.systems:
        fail(f"no system {name!r} in the config" + did_you_mean(name, sorted(yard.systems)))


def _only_entry_point(yard: Yard, pick: str) -> str:
    """The config's one system no other system contains; exit 2 naming them otherwise, and
    how to `pick` one."""
    roots = entry_points(yard.systems)
    if not roots:
        fail("the config has no systems: add one under systems:, then run this again")
    if len(roots) > 1:
        fail(f"the config has {len(roots)} entry points; {pick}: {', '.join(roots)}")
    return roots[0]


def _load(config: Path) -> tuple[Yard, float]:
    started = time.perf_counter()
    with Status("reading the config", console=console) as status:

        def heard(what: str, seconds: float | None) -> None:
            if seconds is None:
                status.update(f"loading {what} …")
            else:
                console.print(f"  [green]✓[/] {escape(what)} [dim]{seconds:.1f} s[/]")

        loaded = load_config(config)
        resources = ReportingResources(listener=heard, names=local_models(loaded.config))
        yard = build_for_evaluation(loaded, resources)  # the tickets are no client's spend
    return yard, time.perf_counter() - started


async def _run(
    yard: Yard, system: str, tickets: list[Ticket], concurrency: int
) -> tuple[list[Outcome], float]:
    columns = (
        SpinnerColumn(),
        TextColumn("answering"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("[dim]{task.fields[last]}"),
    )
    started = time.perf_counter()
    try:
        with Progress(*columns, console=console) as progress:
            task = progress.add_task("tickets", total=len(tickets), last="")

            def done(outcome: Outcome) -> None:
                route = trace(outcome.decision).route
                model = outcome.response.model if outcome.response is not None else "failed"
                last = f"{route} → {model} {outcome.latency:.2f}s"
                progress.update(task, advance=1, last=escape(last))

            outcomes = await run_workload(
                yard, system, tickets, concurrency=concurrency, on_done=done
            )
    finally:
        await yard.aclose()
    return outcomes, time.perf_counter() - started


def _serve_hint(yard: Yard, config: Path, system: str) -> None:
    gateway = yard.loaded.config.gateway
    url = f"http://{gateway.host}:{gateway.port}/v1"
    console.print("\n[bold]Serve the same system[/] to any OpenAI-compatible client:")
    console.print(f"  modelyard serve {escape(str(config))}", markup=True)
    console.print("then ask it with the official OpenAI SDK ([dim]pip install openai[/]):")
    lines = (
        "from openai import OpenAI",
        f'client = OpenAI(base_url="{url}", api_key="unused")',
        f'print(client.chat.completions.create(model="{system}", messages=[{{"role": "user", '
        f'"content": "{EXAMPLE_QUESTION}"}}]).choices[0].message.content)',
    )
    for line in lines:
        console.print("  " + line, markup=False, soft_wrap=True)


def _report(summary: Summary, yard: Yard, config: Path, system: str, path: Path) -> Path:
    html = render(
        summary,
        title=f"modelyard demo: {system}",
        subtitle=f"{config} (config version {yard.version}) · {summary.tickets} tickets",
        diagram_svg=system_svg(yard.systems[system]),
        notes=yard.notes,
    )
    return write_report(path, html)


@app.command()
def demo(
    config: Annotated[
        Path, typer.Argument(help="The config to run (default: the quickstart).")
    ] = QUICKSTART,
    system: Annotated[
        str | None, typer.Option(help="The system to ask (default: support).")
    ] = None,
    tickets: Annotated[
        Path | None,
        typer.Option(help=f"JSONL of tickets (default: {TICKETS} next to the config)."),
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, help="Tickets in flight at once.")] = 4,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N tickets.")] = None,
    report: Annotated[Path, typer.Option(help="Where to write the HTML report.")] = Path(
        "reports/demo.html"
    ),
) -> None:
    """Run labelled tickets through a system: routes, accuracy, cost, latency, HTML report.

    Prints where the tickets went, how well the system routed them, what they cost and how
    fast they were answered, and writes an HTML report with the architecture and charts.
    """

    def run() -> None:
        if not config.is_file():
            fail(f"no config at {config}; give the path of one (the quickstart is {QUICKSTART})")
        workload_path = tickets or config.parent / TICKETS
        if not workload_path.is_file():
            fail(f"no tickets at {workload_path}; give a JSONL file of tickets with --tickets")
        workload = read_tickets(workload_path)[:limit]
        check_writable(report, "the report", make_folder=True)  # before the run, not after
        console.print(f"[bold]modelyard demo[/] · {escape(str(config))}")
        yard, seconds = _load(config)
        name = _pick_system(yard, system)
        console.print(f"  [green]✓[/] system [bold]{escape(name)}[/] ready [dim]{seconds:.1f} s[/]")
        for note in yard.notes:
            console.print(f"[yellow]note:[/] {escape(note)}")
        console.print(
            f"\nAsking [bold]{escape(name)}[/] {len(workload)} tickets from "
            f"{escape(str(workload_path))}, {concurrency} at a time"
        )
        outcomes, wall = asyncio.run(_run(yard, name, workload, concurrency))
        model = yard.systems[name]
        summary = summarise(
            outcomes,
            routes=known_routes(model),
            stages=cascade_stages(model),
            baseline=largest_model(yard.models),
            wall_time=wall,
        )
        console.print()
        console.print(summary_view(summary, concurrency=concurrency))
        written = _report(summary, yard, config, name, report)
        console.print(
            f"\n[bold]Report:[/] {escape(str(written))}  [dim](open it in a browser: the "
            "architecture, charts, and every ticket with its decision record)[/]"
        )
        _serve_hint(yard, config, name)

    guarded(run)


@app.command()
def diagram(
    config: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
    system: Annotated[
        str | None, typer.Argument(help="The system to draw (default: the entry point).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the SVG to this file.")
    ] = None,
) -> None:
    """Draw a system's architecture, computed from its model graph, as SVG."""

    def run() -> None:
        yard = load(config)
        try:
            if system is not None:
                _check_system(yard, system)
            svg = system_svg(
                yard.systems[system or _only_entry_point(yard, "name one after the config")]
            )
        finally:
            asyncio.run(yard.aclose())
        if output is None:
            console.print(svg, markup=False, soft_wrap=True)
        else:
            output.parent.mkdir(parents=True, exist_ok=True)
            output.write_text(svg, encoding="utf-8")
            console.print(f"wrote {output}")

    guarded(run)
