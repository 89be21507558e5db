"""load: a system under a steady request rate, its latency and errors, and what that traffic
would cost a day against the config's budgets."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.app import app, check_target, console, errors, fail, guarded
from modelyard.cli.evidence_input import ConfigPath, DataOpt, FormatOpt, SplitOpt, SystemName
from modelyard.config.loader import load_config
from modelyard.cost.bounds import cost_bound, leaves
from modelyard.evaluation.dataset import LABELLED, load_items, select_split
from modelyard.evaluation.isolation import build_for_evaluation
from modelyard.providers.local_basic import DisabledModel
from modelyard.resilience.load import LoadReport, project, run_load

LATE_NOTE_MS = 10.0
"""Sends this late (p99) are pointed out: the load, not only the system, fell behind."""


def _usd(value: float) -> str:
    """Dollars with the digits a small amount needs (a share of a small budget is not $0.00)."""
    return f"{value:,.2f}" if value >= 1 or value == 0 else f"{value:.6f}"


def _share(share: float) -> str:
    style = "red" if share > 1 else "yellow" if share > 0.8 else "green"
    return f"[{style}]{share:.0%}[/]"


def _print(report: LoadReport, daily: int) -> None:
    console.print(
        f"[bold]{escape(report.system)}[/]: {report.sent} requests at {report.rate:g}/s "
        f"(stopped by {report.stopped}) in {report.seconds:.1f} s, "
        f"{report.throughput:.1f}/s answered"
    )
    if report.shed:
        console.print(f"[yellow]{report.shed} not sent: --max-in-flight were already waiting[/]")
    failed = sum(report.errors.values())
    console.print(
        f"latency ms, from each request's scheduled time: p50 {report.latency(50):.1f}, "
        f"p90 {report.latency(90):.1f}, p99 {report.latency(99):.1f}, max {report.latency(100):.1f}"
    )
    if report.late(99) > LATE_NOTE_MS:
        console.print(
            f"[yellow]sent late: p99 {report.late(99):.1f} ms, max {report.late(100):.1f} ms "
            "after the scheduled time; this process could not keep to --rate, and the latency "
            "above includes that wait[/]"
        )
    if failed:
        kinds = ", ".join(f"{kind} x{n}" for kind, n in report.errors.most_common())
        console.print(f"[red]{failed} failed[/] ({escape(kinds)})")
    by = ", ".join(f"{name} x{n}" for name, n in report.answered_by.most_common())
    console.print(f"answered by: {escape(by) or '-'}")
    if not report.answered_by:
        console.print(
            "[yellow]nothing was answered: the cost and the budget projections below count no "
            "answer, only what the failures cost[/]"
        )
    each = report.cost_per_request
    table = Table(title=f"cost: ${report.cost:.6f} in all, ${each:.8f} a request")
    for column in ("model", "USD in the run", "USD a request", f"USD a day at {daily:,}/day"):
        table.add_column(column, justify="right" if column != "model" else "left")
    for model, spent in sorted(report.billed.items(), key=lambda kv: -kv[1]):
        each = spent / report.sent
        table.add_row(escape(model), f"{spent:.6f}", f"{each:.8f}", _usd(each * daily))
    table.add_row(
        "[bold]all[/]",
        f"{report.cost:.6f}",
        f"{report.cost_per_request:.8f}",
        _usd(report.cost_per_request * daily),
    )
    console.print(table)
    for p in report.projections:
        window = f"an {p.window}" if p.window == "hour" else f"a {p.window}"
        line = (
            f"budget {escape(p.budget)} (${p.limit:g} {window}): this traffic at {daily:,}/day "
            f"spends ${_usd(p.projected)} {window}, {_share(p.share)}"
        )
        if p.at_rate is not None and p.share_at_rate is not None:
            line += (
                f"; at the tested {report.rate:g}/s, ${_usd(p.at_rate)}, {_share(p.share_at_rate)}"
            )
        console.print(line)


@app.command("load")
def load_command(
    config: ConfigPath,
    system: SystemName,
    data: DataOpt,
    fmt: FormatOpt = LABELLED,
    split: SplitOpt = None,
    rate: Annotated[float, typer.Option(min=0.001, help="Requests a second (open loop).")] = 5.0,
    requests: Annotated[
        int | None, typer.Option(min=1, help="Send this many (default: 100 unless --duration).")
    ] = None,
    duration: Annotated[
        float | None, typer.Option(min=0.001, help="Send for this many seconds.")
    ] = None,
    max_cost: Annotated[
        float | None,
        typer.Option(
            help="Spend at most this many USD: near it, sending waits for answers, and stops "
            "when the next request could pass it (a request counts at what its prompt cost "
            "when last answered, else at its worst case). Required when the system reaches a "
            "hosted provider.",
        ),
    ] = None,
    daily: Annotated[
        int, typer.Option(min=1, help="Requests a day to project the cost and budgets to.")
    ] = 10_000,
    max_in_flight: Annotated[
        int, typer.Option(min=1, help="Requests waiting at once before more are not sent.")
    ] = 1000,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Load and cost test: send prompts at a steady rate; latency, errors, cost a day.

    Prompts cycle through --data. Requests leave on schedule whether or not earlier ones have
    answered, so a system that cannot keep up shows it. Runs off production's ledger, budgets,
    alerts and cache, as eval does; the config's budgets are projected, not charged.
    """
    if requests is not None and duration is not None:
        fail("give --requests or --duration, not both")
    if max_cost is not None and max_cost <= 0:
        fail("--max-cost must be more than 0: at 0 nothing would be sent")
    if requests is None and duration is None:
        requests = 100

    def run() -> LoadReport:
        items = select_split(load_items(data, fmt), split, source=data)
        loaded = load_config(config)  # read once: the budgets and the yard come from one text
        budgets = loaded.config.budgets  # evaluation's copy has none: projected
        yard = build_for_evaluation(loaded)

        async def go() -> LoadReport:
            try:
                check_target(yard, system, config)
                target = yard.get(system)
                specs = yard.loaded.config.models
                hosted = sorted(
                    {
                        f"{spec.provider}: {m.name}"
                        for m in leaves(target)
                        if (spec := specs.get(m.name)) is not None
                        and spec.provider is not None
                        and not isinstance(m, DisabledModel)
                    }
                )
                if hosted and max_cost is None:
                    fail(
                        f"{system} reaches hosted models ({', '.join(hosted)}), so a load test "
                        "spends real money: give --max-cost USD to cap it"
                    )
                for note in yard.notes:
                    errors.print(f"[yellow]note:[/] {escape(note)}")
                report = await run_load(
                    target,
                    [item.request() for item in items],
                    rate=rate,
                    total=requests,
                    duration=duration,
                    max_cost=max_cost,
                    max_in_flight=max_in_flight,
                    deadline=yard.loaded.config.default_deadline,
                )
            finally:
                await yard.aclose()
            if not report.sent and report.stopped == "max_cost":
                first = items[0].request().with_budget(yard.loaded.config.default_deadline)
                fail(
                    f"--max-cost {max_cost:g} does not cover one request: the first prompt may "
                    f"cost up to ${cost_bound(target, first):.6f} on {system} (its input and "
                    "the longest answer its models may give, their max_output_tokens, at the "
                    "config's prices), and a run never passes its cap; raise --max-cost to at "
                    "least that"
                )
            report.projections = project(report, budgets, daily)
            return report

        return asyncio.run(go())

    report = guarded(run)
    if as_json:
        console.print(json.dumps({**report.to_dict(), "daily": daily}, indent=2), markup=False)
    else:
        _print(report, daily)
    if report.sent and not report.answered_by:
        # A script gating on a load test must not read a run that measured nothing as a pass.
        raise typer.Exit(1)
