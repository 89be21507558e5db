"""The demo's HTML report: one self-contained file (plotly's script embedded, so it opens
offline) with the key numbers, the architecture diagram computed from the system's graph, charts
of routes, models, cascade stages, latency, cost and routing accuracy, and every ticket with its
answer and decision record."""

from __future__ import annotations

import datetime
from html import escape
from pathlib import Path
from typing import Any

from modelyard.demo.summary import Summary
from modelyard.types import Decision

COLOURS = ["#3f63c7", "#2e7d43", "#d9720b", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b"]
MARKS = {True: "<span class='ok'>✓</span>", False: "<span class='bad'>✗</span>"}
CSS = """
body{font-family:Inter,Segoe UI,Helvetica,Arial,sans-serif;margin:0;background:#f6f7fb;
color:#1d2433}
main{max-width:1280px;margin:0 auto;padding:28px}
h1{font-size:26px;margin:0 0 4px} h2{font-size:19px;margin:34px 0 10px}
.sub{color:#5f6b7a;margin:0 0 18px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:12px}
.card{background:#fff;border-radius:10px;padding:14px 16px;box-shadow:0 1px 3px #0001}
.card b{display:block;font-size:24px;margin-top:4px} .card span{color:#5f6b7a;font-size:13px}
.card small{color:#5f6b7a;display:block;margin-top:2px}
.panel{background:#fff;border-radius:10px;padding:12px;box-shadow:0 1px 3px #0001;overflow-x:auto}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:14px}
@media (max-width:900px){.grid{grid-template-columns:1fr}}
table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:6px 8px;border-bottom:1px solid #e6e8ee;vertical-align:top}
th{background:#f0f2f7;position:sticky;top:0}
.ok{color:#2e7d43;font-weight:600} .bad{color:#c0392b;font-weight:600}
details summary{cursor:pointer;color:#3f63c7} pre{white-space:pre-wrap;font-size:12px;margin:6px 0}
.notes li{margin:4px 0} code{background:#eef0f6;padding:1px 5px;border-radius:4px}
.diagram svg{max-width:100%;height:auto}
.intro{max-width:900px;line-height:1.5}
"""


INTRO = (
    "Each labelled ticket was sent to the system as one chat request, a few at a time, and "
    "everything below is read from the decision records the requests returned: the route a "
    "ticket took (compared with its label), the model that answered, what each cascade stage "
    "did, the fallbacks taken, latency and cost. The comparison prices the same tokens at the "
    "list prices of the dearest model in the config, as if it had answered every ticket."
)


def _money(value: float) -> str:
    return f"${value:,.4f}" if value >= 0.01 else f"${value:,.6f}"


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.1f} s"


def _cards(summary: Summary) -> str:
    answered = summary.tickets - summary.errors
    accuracy = summary.accuracy
    items = [
        ("Tickets answered", f"{answered} / {summary.tickets}", f"{summary.errors} failed"),
        (
            "Routing accuracy",
            f"{accuracy:.1%}" if accuracy is not None else "n/a",
            f"{summary.correct} of {summary.labelled} labelled tickets",
        ),
        (
            "Latency p50",
            _seconds(summary.latency_p50),
            f"p95 {_seconds(summary.latency_p95)}, queueing included",
        ),
        ("Cost of this run", _money(summary.cost), "every model ran on this machine"),
    ]
    if summary.baseline_cost is not None:
        items.append(
            (
                f"All on {summary.baseline_model}",
                _money(summary.baseline_cost),
                "same tokens at its list prices",
            )
        )
    items.append(
        (
            "Fallbacks taken",
            str(summary.fallback_requests),
            f"tickets; {sum(summary.fallbacks.values())} hand-overs",
        )
    )
    if summary.wall_time is not None:
        items.append(("Run time", f"{summary.wall_time:.1f} s", "all tickets, end to end"))
    return "".join(
        f"<div class='card'><span>{escape(a)}</span><b>{escape(b)}</b><small>{escape(c)}</small>"
        "</div>"
        for a, b, c in items
    )


def _figures(summary: Summary) -> list[Any]:
    import plotly.graph_objects as go

    layout = {
        "margin": {"l": 10, "r": 10, "t": 46, "b": 10},
        "height": 360,
        "font": {"family": "Inter,Segoe UI,Helvetica,Arial,sans-serif", "size": 12},
        "plot_bgcolor": "#ffffff",
        "paper_bgcolor": "#ffffff",
    }
    figures = []

    routes = list(summary.routes)
    right = [summary.routes[r].correct for r in routes]
    other = [summary.routes[r].tickets - summary.routes[r].correct for r in routes]
    fig = go.Figure(
        [
            go.Bar(y=routes, x=right, name="routed right", orientation="h", marker_color="#2e7d43"),
            go.Bar(y=routes, x=other, name="other", orientation="h", marker_color="#c9cfdb"),
        ]
    )
    fig.update_layout(title="Tickets per route", barmode="stack", **layout)
    fig.update_yaxes(autorange="reversed", automargin=True)
    figures.append(fig)

    models = [m for m, _ in summary.answered_by.most_common()]
    fig = go.Figure(
        go.Bar(
            x=models,
            y=[summary.answered_by[m] for m in models],
            marker_color=[COLOURS[i % len(COLOURS)] for i in range(len(models))],
        )
    )
    fig.update_layout(title="Which model answered", **layout)
    figures.append(fig)

    stages = [f"{s.cascade}: {s.stage}" for s in summary.stages]
    outcomes = ("answered", "escalated", "failed", "skipped")
    colours = ("#2e7d43", "#d9720b", "#c0392b", "#c9cfdb")
    fig = go.Figure(
        [
            go.Bar(x=stages, y=[getattr(s, o) for s in summary.stages], name=o, marker_color=c)
            for o, c in zip(outcomes, colours, strict=True)
        ]
    )
    fig.update_layout(title="Cascade stages: what each did", barmode="stack", **layout)
    figures.append(fig)

    fig = go.Figure()
    by_model: dict[str, list[float]] = {}
    for outcome in summary.outcomes:
        name = outcome.response.model if outcome.response is not None else "(failed)"
        by_model.setdefault(name, []).append(outcome.latency * 1000)
    for i, (name, values) in enumerate(sorted(by_model.items())):
        fig.add_trace(
            go.Box(
                x=values,
                name=name,
                boxpoints="all",
                jitter=0.4,
                marker_color=COLOURS[i % len(COLOURS)],
            )
        )
    title = "Latency by answering model (ms, log scale)"
    fig.update_layout(title=title, showlegend=False, **layout)
    fig.update_xaxes(type="log")
    fig.update_yaxes(automargin=True)
    figures.append(fig)

    if summary.baseline_cost is not None:
        per_thousand = 1000 / max(summary.tickets, 1)
        names = ["this system", f"{summary.baseline_model} for every ticket"]
        values = [summary.cost * per_thousand, summary.baseline_cost * per_thousand]
        fig = go.Figure(
            go.Bar(
                x=names,
                y=values,
                marker_color=["#2e7d43", "#d9720b"],
                text=[_money(v) for v in values],
                textposition="outside",
            )
        )
        fig.update_layout(title="Cost per 1,000 tickets (USD, list prices)", **layout)
        figures.append(fig)

    labels = list(summary.labels)
    columns = sorted({r for count in summary.labels.values() for r in count.routes})
    matrix = [[summary.labels[label].routes.get(c, 0) for c in columns] for label in labels]
    fig = go.Figure(
        go.Heatmap(
            z=matrix,
            x=columns,
            y=labels,
            colorscale="Blues",
            text=matrix,
            texttemplate="%{text}",
            showscale=False,
        )
    )
    fig.update_layout(title="Routing: label (rows) against route taken (columns)", **layout)
    fig.update_yaxes(autorange="reversed", automargin=True)
    figures.append(fig)
    return figures


def _decision_text(decision: Decision, depth: int = 0) -> list[str]:
    line = "  " * depth + f"{decision.node} [{decision.kind}]"
    if decision.chosen:
        line += f" -> {decision.chosen}"
    if decision.reason:
        line += f": {decision.reason}"
    line += f"  ({decision.latency_ms:.1f} ms)"
    if decision.error:
        line += f"  error: {decision.error}"
    lines = [line]
    for child in decision.children:
        lines.extend(_decision_text(child, depth + 1))
    return lines


def _tickets(summary: Summary) -> str:
    rows = []
    for i, outcome in enumerate(summary.outcomes):
        item = summary.traces[i]
        right = summary.is_correct(i)
        mark = "" if right is None else MARKS[right]
        if outcome.response is not None:
            answer = outcome.response.text
            if outcome.response.finish_reason == "length":
                answer += " …"
            model = outcome.response.model
        else:
            answer = f"error: {outcome.error}"
            model = "(failed)"
        decision = outcome.decision
        record = "\n".join(_decision_text(decision)) if decision is not None else "no record"
        path = " › ".join(item.routes) or "-"
        rows.append(
            f"<tr><td>{escape(outcome.ticket.id)}</td><td>{escape(outcome.ticket.text)}</td>"
            f"<td>{escape(outcome.ticket.label or '')}</td>"
            f"<td>{mark} {escape(item.route)}<br><small>{escape(path)}</small></td>"
            f"<td>{escape(model)}</td><td>{_seconds(outcome.latency)}</td>"
            f"<td>{escape(answer)}<details><summary>decision record</summary>"
            f"<pre>{escape(record)}</pre></details></td></tr>"
        )
    head = "".join(
        f"<th>{h}</th>"
        for h in ("ticket", "text", "label", "route", "answered by", "latency", "answer")
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def render(
    summary: Summary,
    *,
    title: str,
    subtitle: str,
    diagram_svg: str,
    notes: list[str],
) -> str:
    """The whole report as one HTML document."""
    figures = _figures(summary)
    charts = "".join(
        "<div class='panel'>"
        + fig.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displayModeBar": False})
        + "</div>"
        for i, fig in enumerate(figures)
    )
    notes_html = "".join(f"<li>{escape(n)}</li>" for n in notes) or "<li>none</li>"
    created = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}</title><style>{CSS}</style></head><body><main>"
        f"<h1>{escape(title)}</h1><p class='sub'>{escape(subtitle)} · {created}</p>"
        f"<p class='intro'>{INTRO}</p>"
        f"<div class='cards'>{_cards(summary)}</div>"
        "<h2>Architecture</h2><p class='sub'>Drawn from the system's model graph "
        "(hover over a node for its settings).</p>"
        f"<div class='panel diagram'>{diagram_svg}</div>"
        f"<h2>Notes from the build</h2><ul class='notes'>{notes_html}</ul>"
        f"<h2 id='charts'>Charts</h2><div class='grid'>{charts}</div>"
        f"<h2 id='tickets'>Every ticket</h2><div class='panel'>{_tickets(summary)}</div>"
        "</main></body></html>"
    )


def write_report(path: Path, html: str) -> Path:
    """Write the report, making its directory if needed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
