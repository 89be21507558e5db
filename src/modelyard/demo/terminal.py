"""The demo's summary on the terminal: a few tables and lines a person grasps at a glance."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from modelyard.demo.summary import Summary, percentile
from modelyard.topology import ordinal

SAMPLE_MODELS = 5
SAMPLE_CHARS = 110


def _money(value: float) -> str:
    return f"${value:,.4f}" if value >= 0.01 else f"${value:,.6f}"


def _seconds(value: float) -> str:
    if value < 0.001:
        return "<1 ms"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def routes_table(summary: Summary) -> Table:
    """Tickets per route: how many, how many rightly, who answered, how fast."""
    table = Table(title=f"Where the {summary.tickets} tickets went", title_justify="left")
    table.add_column("route", style="bold")
    table.add_column("tickets", justify="right")
    table.add_column("routed right", justify="right")
    table.add_column("answered by")
    table.add_column("p50", justify="right")
    for route, count in summary.routes.items():
        right = f"{count.correct}/{count.labelled}" if count.labelled else "-"
        who = ", ".join(f"{m} {n}" for m, n in count.answered_by.most_common(3))
        table.add_row(
            escape(route),
            str(count.tickets),
            right,
            escape(who),
            _seconds(percentile(count.latencies, 50)),
        )
    return table


def stages_table(summary: Summary) -> Table | None:
    """What each cascade stage did, or None when no request met a cascade."""
    if not summary.stages:
        return None
    table = Table(title="How the cascades escalated", title_justify="left")
    for column in ("cascade", "stage", "ran", "answered", "escalated", "failed", "skipped"):
        table.add_column(column, justify="left" if column in ("cascade", "stage") else "right")
    seen: dict[str, int] = {}
    for count in summary.stages:
        seen[count.cascade] = seen.get(count.cascade, 0) + 1
        table.add_row(
            escape(count.cascade),
            f"{ordinal(seen[count.cascade])} {escape(count.stage)}",
            str(count.reached or "-"),
            str(count.answered or "-"),
            str(count.escalated or "-"),
            str(count.failed or "-"),
            str(count.skipped or "-"),
        )
    return table


def fallbacks_table(summary: Summary) -> Table | None:
    """Which fallbacks were taken and how often, or None when none was."""
    if not summary.fallbacks:
        return None
    title = f"Fallbacks taken ({summary.fallback_requests} tickets)"
    table = Table(title=title, title_justify="left")
    table.add_column("fallback")
    table.add_column("times", justify="right")
    table.add_column("first reason")
    reasons: dict[str, str] = {}
    for item in summary.traces:
        for step in item.fallbacks:
            reasons.setdefault(step.label, step.why)
    for label, times in summary.fallbacks.most_common():
        table.add_row(escape(label), str(times), escape(_clip(reasons.get(label, ""), 70)))
    return table


def samples_table(summary: Summary) -> Table:
    """One answered ticket per answering model: what the system actually said."""
    table = Table(title="A few of the answers", title_justify="left", show_lines=True)
    table.add_column("ticket", max_width=38)
    table.add_column("answered by", style="bold")
    table.add_column("answer")
    shown: set[str] = set()
    for outcome in summary.outcomes:
        response = outcome.response
        if response is None or response.model in shown:
            continue
        shown.add(response.model)
        answer = response.text + (" …" if response.finish_reason == "length" else "")
        table.add_row(
            escape(_clip(outcome.ticket.text, 80)),
            escape(response.model),
            escape(_clip(answer, SAMPLE_CHARS)),
        )
        if len(shown) == SAMPLE_MODELS:
            break
    return table


def key_numbers(summary: Summary, *, concurrency: int) -> Table:
    """Accuracy, latency, cost and run time, one line each."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    accuracy = summary.accuracy
    if accuracy is not None:
        table.add_row(
            "Routing accuracy",
            f"[bold green]{accuracy:.1%}[/]  {summary.correct} of {summary.labelled} labelled "
            "tickets took the route of their label",
        )
    table.add_row(
        "Latency",
        f"p50 {_seconds(summary.latency_p50)} · p95 {_seconds(summary.latency_p95)}  "
        f"per ticket, {concurrency} in flight",
    )
    local = sum(1 for o in summary.outcomes if o.response is not None and o.response.cost == 0)
    table.add_row(
        "Cost",
        f"[bold green]{_money(summary.cost)}[/]  {local} of {summary.tickets} answers cost "
        "nothing: they came from models on this machine",
    )
    if summary.baseline_cost is not None and summary.baseline_model is not None:
        thousand = summary.baseline_cost * 1000 / max(summary.tickets, 1)
        table.add_row(
            "",
            f"{_money(summary.baseline_cost)}  had {escape(summary.baseline_model)} answered "
            f"every ticket (same tokens, list prices; {_money(thousand)} per 1,000 tickets)",
        )
    table.add_row(
        "Failures",
        f"{summary.errors} tickets unanswered"
        + ("" if summary.errors else " - every ticket got an answer"),
    )
    if summary.wall_time is not None:
        rate = summary.tickets / summary.wall_time if summary.wall_time else 0.0
        table.add_row(
            "Run time", f"{summary.wall_time:.1f} s for {summary.tickets} tickets ({rate:.1f}/s)"
        )
    return table


def summary_view(summary: Summary, *, concurrency: int) -> RenderableType:
    """Everything the demo prints after the run, in reading order."""
    parts: list[RenderableType] = [routes_table(summary)]
    for table in (stages_table(summary), fallbacks_table(summary)):
        if table is not None:
            parts.extend([Text(""), table])
    parts.extend(
        [Text(""), samples_table(summary), Text(""), key_numbers(summary, concurrency=concurrency)]
    )
    return Group(*parts)
