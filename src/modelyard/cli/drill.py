"""drill: a failover drill against stand-in providers; exits non-zero when a fault is not
survived."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.cli.app import app, console, fail, guarded
from modelyard.resilience.drill import FAULTS, DrillReport, FaultResult, Workload, run_drill
from modelyard.suggest import did_you_mean

_STYLE = {"survived": "green", "degraded": "yellow", "failed": "bold red"}


def _seconds(value: float) -> str:
    # Below 10 ms is scheduling noise at the default time scale, not added latency.
    return f"+{value:.2f}s" if value >= 0.01 else "0s"


def _line(result: FaultResult, width: int, max_latency: float | None) -> str:
    total = len(result.outcomes)
    answered = sum(o.answered for o in result.outcomes)
    interrupted = sum(o.interrupted for o in result.outcomes)
    count = f"{answered}/{total}" + (f" ({interrupted} cut)" if interrupted else "")
    by = ", ".join(f"{name} x{n}" for name, n in result.answered_by.most_common()) or "-"
    verdict = f"[{_STYLE[result.verdict]}]{result.verdict:<9}[/]"
    return (
        f"  {result.provider:<{width}} {result.fault:<13}{verdict} {count:<12}"
        f"added {_seconds(result.added_latency):<8} worst {result.worst_latency:6.2f}s"
        + (" [bold red](too slow)[/]" if result.too_slow(max_latency) else "")
        + f"  by {by}"
    )


def _print(report: DrillReport, max_latency: float | None) -> None:
    console.print(
        f"drill of {report.config}: stand-in providers, time x{report.time_scale:g} "
        "(latencies as they would be at full speed; durations quoted in errors, such as a "
        "Retry-After, run at the drill's pace)"
    )
    for note in report.notes:
        console.print(f"[yellow]note:[/] {escape(note)}")
    width = max((len(r.provider) for r in report.results), default=8)
    for target, baseline in report.baselines.items():
        answered = sum(o.answered for o in baseline)
        console.print(f"\n[bold]{target}[/]: healthy baseline {answered}/{len(baseline)} answered")
        results = [r for r in report.results if r.target == target]
        for result in results:
            console.print(_line(result, width, max_latency), soft_wrap=True)
        for result in results:
            if result.verdict == "survived":
                continue
            console.print(f"  [dim]{result.provider} {result.fault}, what failed:[/]")
            for error, count in result.errors.most_common():
                console.print(f"    {count} x {error}", markup=False, soft_wrap=True)


def _as_json(report: DrillReport, *, strict: bool, max_latency: float | None) -> dict[str, object]:
    return {
        "config": report.config,
        "ok": report.ok(strict=strict, max_latency=max_latency),
        "max_latency_s": max_latency,
        "results": [
            {
                "target": r.target,
                "provider": r.provider,
                "fault": r.fault,
                "verdict": r.verdict,
                "answered": sum(o.answered for o in r.outcomes),
                "requests": len(r.outcomes),
                "answered_by": dict(r.answered_by),
                "baseline_latency_s": round(r.baseline, 3),
                "added_latency_s": round(r.added_latency, 3),
                "worst_latency_s": round(r.worst_latency, 3),
                "too_slow": r.too_slow(max_latency),
                "errors": dict(r.errors),
            }
            for r in report.results
        ],
    }


@app.command()
def drill(
    config: Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)],
    targets: Annotated[
        list[str] | None,
        typer.Argument(help="Systems (or models) to drill; default: every system."),
    ] = None,
    fault: Annotated[
        list[str] | None,
        typer.Option("--fault", help=f"Faults to inject (default all): {', '.join(FAULTS)}."),
    ] = None,
    requests: Annotated[int, typer.Option(help="Requests per fault (half streamed).")] = 8,
    concurrency: Annotated[int, typer.Option(help="Requests in flight at once.")] = 4,
    time_scale: Annotated[
        float,
        typer.Option(
            help="Every wait, timeout and deadline runs at this fraction of its length "
            "(0.01: 100x faster); latencies are reported at full length."
        ),
    ] = 0.01,
    strict: Annotated[
        bool, typer.Option("--strict", help="Also fail on streams cut after their first byte.")
    ] = False,
    max_latency: Annotated[
        float | None,
        typer.Option(
            "--max-latency",
            help="Also fail a fault whose slowest request took longer than this many seconds "
            "(at full speed): the latency clients accept during an outage.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Failover drill: fault each provider in turn and check the system still answers.

    Each provider is replaced in turn by a faulty stand-in (down, slow, 429 storm, 5xx, cut
    streams); no real provider is contacted. Exits 1 when a fault is not survived (or, with
    --max-latency, survived too slowly).
    """
    faults = fault or list(FAULTS)
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        fail(
            f"unknown fault {unknown[0]!r}"
            + did_you_mean(unknown[0], FAULTS, listed="expected one of")
        )
    if requests < 1 or concurrency < 1 or not 0 < time_scale <= 1:
        fail("--requests and --concurrency must be at least 1, --time-scale in (0, 1]")
    if max_latency is not None and max_latency <= 0:
        fail(f"--max-latency must be above 0 seconds, not {max_latency:g}")
    workload = Workload(requests=requests, concurrency=concurrency)

    def run() -> DrillReport:
        return asyncio.run(
            run_drill(
                config, targets or (), faults=faults, workload=workload, time_scale=time_scale
            )
        )

    report = guarded(run)
    if as_json:
        document = _as_json(report, strict=strict, max_latency=max_latency)
        console.print(json.dumps(document, indent=2), markup=False)
    else:
        _print(report, max_latency)
    if not report.ok(strict=strict, max_latency=max_latency):
        raise typer.Exit(1)
