"""Reports a person opens: one self-contained HTML file each, with plotly charts embedded (the
plotly library is inlined once, so the file works offline)."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from modelyard.cost.prices import usd
from modelyard.evaluation.calibrate import Calibration
from modelyard.evaluation.compare import Row
from modelyard.evaluation.frontier import upper_hull
from modelyard.evaluation.gate import GateResult
from modelyard.evaluation.report import EvalReport, Tally

_STYLE = """body{font-family:system-ui,sans-serif;margin:2rem;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
.bad{color:#b00020}.good{color:#1b7a1b}"""


def _page(title: str, parts: Sequence[str]) -> str:
    body = "\n".join(parts)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )


class _Figures:
    """Renders figures; the first carries the plotly library, later ones reuse it."""

    def __init__(self) -> None:
        self.first = True

    def __call__(self, figure: go.Figure) -> str:
        text: str = figure.to_html(full_html=False, include_plotlyjs=self.first)
        self.first = False
        return text


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def report_rows(report: EvalReport) -> list[tuple[str, Any]]:
    """The headline figures of a report as (label, value) rows."""
    return [
        ("items", report.n),
        ("accuracy (unparsed and failed count as wrong)", _pct(report.accuracy)),
        ("accuracy over scored items", _pct(report.accuracy_scored)),
        (
            "scored / unparsed / unlabelled / failed",
            f"{report.scored} / {report.unparsed} / {report.unlabelled} / {report.failed}",
        ),
        ("total cost (USD)", usd(report.total_cost)),
        ("cost per item (USD)", usd(report.cost_per_item)),
        ("scorer cost (USD)", usd(report.scorer_cost)),
        ("latency p50 / p95 (ms)", f"{report.latency_p50_ms:.1f} / {report.latency_p95_ms:.1f}"),
    ]


def eval_html(report: EvalReport, tally: Tally) -> str:
    """The report of one evaluation."""
    figure = _Figures()
    parts = [_table(("figure", "value"), report_rows(report))]
    if report.answered_by:
        names = list(report.answered_by)
        parts.append(
            figure(
                go.Figure(
                    go.Bar(x=names, y=[report.answered_by[n] for n in names]),
                    layout={"title": "Which model answered"},
                )
            )
        )
    for node, stats in report.nodes.items():
        names = list(stats.chosen)
        parts.append(
            figure(
                go.Figure(
                    go.Bar(x=names, y=[stats.chosen[n] for n in names]),
                    layout={"title": f"{node} ({stats.kind}): choices"},
                )
            )
        )
        if stats.details:
            parts.append(_table(("decision detail", "mean"), list(stats.details.items())))
    parts.append(
        figure(
            go.Figure(
                go.Histogram(x=list(tally.latencies), nbinsx=50),
                layout={"title": "Latency per item (ms)"},
            )
        )
    )
    parts.append(
        figure(
            go.Figure(
                go.Histogram(x=list(tally.costs), nbinsx=50),
                layout={"title": "Cost per item (USD)"},
            )
        )
    )
    if report.drift:
        parts.append(_table(("model drift", "items"), list(report.drift.items())))
    return _page(f"Evaluation of {report.system}", parts)


def _hull_trace(name: str, points: Sequence[tuple[float, float]], **style: Any) -> go.Scatter:
    hull = upper_hull(points)
    return go.Scatter(
        x=[p[0] for p in hull], y=[p[1] for p in hull], mode="lines+markers", name=name, **style
    )


def calibration_html(cal: Calibration) -> str:
    """The calibration report: the test frontier against random, oracle and single models."""
    front = cal.frontier
    fig = go.Figure()
    fig.add_trace(
        _hull_trace("system (train-Pareto settings, test)", front.curves["system"].points)
    )
    fig.add_trace(
        _hull_trace("random router", front.curves["random"].points, line={"dash": "dash"})
    )
    fig.add_trace(_hull_trace("oracle", front.curves["oracle"].points, line={"dash": "dot"}))
    fig.add_trace(
        go.Scatter(
            x=[p[0] for p in front.singles.values()],
            y=[p[1] for p in front.singles.values()],
            mode="markers+text",
            text=list(front.singles),
            textposition="top center",
            name="single models",
            marker={"size": 10},
        )
    )
    chosen = cal.chosen.point("test")
    fig.add_trace(
        go.Scatter(
            x=[chosen[0]],
            y=[chosen[1]],
            mode="markers",
            name="calibrated",
            marker={"size": 16, "symbol": "star"},
        )
    )
    fig.update_layout(
        title=f"Cost-quality frontier on the test split ({front.n} items)",
        xaxis_title="cost per item (USD)",
        yaxis_title="accuracy",
    )
    rows = [
        (name, curve.aiq_text(), curve.apgr, curve.cpt50, curve.cpt80, _pct(front.saving(name)))
        for name, curve in front.curves.items()
    ]
    ceiling = "" if cal.ceiling is None else f" at ≤ ${cal.ceiling:.6g} an item"
    spent = "" if cal.ceiling is None else f" at ${cal.chosen.train.cost_per_item:.6g} an item"
    status = (
        "met"
        if cal.met
        else f"NOT met (needed {cal.required:.4g}{ceiling}, closest reached {cal.reached:.4g}"
        f"{spent})"
    )
    if cal.dominated_by is not None:
        status += f"; {html.escape(cal.dominated_by)} alone did better on the training split"
    summary = (
        f"<p>Target <b>{cal.target}</b> on {cal.n_train} training items: <b>{status}</b>; "
        f"chosen {html.escape(str(cal.chosen.values))}. Scored on {cal.n_test} test items. "
        f"Weak model {html.escape(front.weak)}, strong model {html.escape(front.strong)}.</p>"
    )
    metrics = _table(
        (
            "curve",
            "AIQ",
            "APGR",
            "CPT(50%)",
            "CPT(80%)",
            f"cost saved at {front.target_fraction:.0%} of strong",
        ),
        rows,
    )
    return _page(
        f"Calibration of {cal.system}", [summary, _figures_table(cal), _Figures()(fig), metrics]
    )


def _figures_table(cal: Calibration) -> str:
    """The chosen setting on both splits beside each model alone on the test split, as the
    command prints them."""
    runs = [("calibrated (train)", cal.chosen.train), ("calibrated (test)", cal.chosen.test)]
    runs += [(f"{name} alone (test)", report) for name, report in cal.singles_test.items()]
    shown = [(label, report_rows(report)) for label, report in runs if report is not None]
    columns = [[value for _, value in figures] for _, figures in shown]
    names = [name for name, _ in shown[0][1]]
    rows = [(name, *(column[i] for column in columns)) for i, name in enumerate(names)]
    return _table(("figure", *(label for label, _ in shown)), rows)


def compare_html(rows: Sequence[Row], title: str) -> str:
    """The system against its models on the cost-accuracy plane."""
    fig = go.Figure()
    for kind, symbol in (("system", "star"), ("model", "circle")):
        chosen = [r for r in rows if r.kind == kind]
        fig.add_trace(
            go.Scatter(
                x=[r.report.cost_per_item for r in chosen],
                y=[r.report.accuracy or 0.0 for r in chosen],
                text=[r.name for r in chosen],
                mode="markers+text",
                textposition="top center",
                name=f"{kind}s",
                marker={"size": 14, "symbol": symbol},
            )
        )
    fig.update_layout(xaxis_title="cost per item (USD)", yaxis_title="accuracy", title=title)
    table = _table(
        (
            "name",
            "kind",
            "accuracy",
            "cost/item (USD)",
            "USD per accuracy point",
            "p50 ms",
            "p95 ms",
            "unparsed",
            "failed",
        ),
        [
            (
                r.name,
                r.kind,
                _pct(r.report.accuracy),
                usd(r.report.cost_per_item),
                r.cost_per_point,
                r.report.latency_p50_ms,
                r.report.latency_p95_ms,
                r.report.unparsed,
                r.report.failed,
            )
            for r in rows
        ],
    )
    return _page(title, [table, _Figures()(fig)])


_PASS, _FAIL, _BASE = "#1b7a1b", "#b00020", "#666666"


def _gate_figure(result: GateResult) -> go.Figure:
    """Baseline and candidate on the cost-accuracy plane, with the region a candidate may land
    in shaded, and their p95 latencies against the latency limit."""
    titles = ("cost and accuracy", "p95 latency")
    fig = make_subplots(rows=1, cols=2, column_widths=[0.68, 0.32], subplot_titles=titles)
    _gate_plane(fig, result)
    _gate_latency(fig, result)
    verdict = "PASSED" if result.passed else "FAILED"
    fig.update_layout(
        title={
            "text": f"Gate {verdict} (shaded: where the candidate may land)",
            "font": {"color": _PASS if result.passed else _FAIL},
        }
    )
    return fig


def _gate_plane(fig: go.Figure, result: GateResult) -> None:
    """The left panel: both runs' (cost, accuracy) and the least accuracy and most cost
    allowed."""
    base, cand, limits = result.baseline, result.candidate, result.limits
    where = {"row": 1, "col": 1}
    top = max(1.0, base.accuracy or 0.0, cand.accuracy or 0.0)
    fig.add_shape(
        type="rect",
        x0=0,
        x1=limits.cost_per_item,
        y0=limits.accuracy,
        y1=top,
        fillcolor=_PASS,
        opacity=0.12,
        line={"width": 0},
        **where,
    )
    limit = {"dash": "dash", "color": _PASS}
    fig.add_hline(
        y=limits.accuracy,
        line=limit,
        annotation_text=f"least accuracy allowed {limits.accuracy:.2%}",
        **where,
    )
    fig.add_vline(
        x=limits.cost_per_item,
        line=limit,
        annotation_text=f"most cost allowed ${limits.cost_per_item:.3g}",
        **where,
    )
    candidate = _PASS if result.passed else _FAIL
    for name, report, colour, symbol in (
        ("baseline", base, _BASE, "circle"),
        ("candidate", cand, candidate, "star"),
    ):
        point = go.Scatter(
            x=[report.cost_per_item],
            y=[report.accuracy or 0.0],
            mode="markers+text",
            text=[name],
            textposition="top center",
            name=name,
            marker={"size": 16, "symbol": symbol, "color": colour},
        )
        fig.add_trace(point, **where)
    fig.update_xaxes(title_text="cost per item (USD)", rangemode="tozero", **where)
    fig.update_yaxes(title_text="accuracy", **where)


def _gate_latency(fig: go.Figure, result: GateResult) -> None:
    """The right panel: both runs' p95 latency and the most allowed."""
    base, cand, limits = result.baseline, result.candidate, result.limits
    where = {"row": 1, "col": 2}
    within = cand.latency_p95_ms <= limits.latency_p95_ms
    bars = go.Bar(
        x=["baseline", "candidate"],
        y=[base.latency_p95_ms, cand.latency_p95_ms],
        marker={"color": [_BASE, _PASS if within else _FAIL]},
        name="p95 latency (ms)",
        showlegend=False,
    )
    fig.add_trace(bars, **where)
    fig.add_hline(
        y=limits.latency_p95_ms,
        line={"dash": "dash", "color": _PASS},
        annotation_text=f"allowed {limits.latency_p95_ms:.0f} ms",
        **where,
    )
    fig.update_yaxes(title_text="ms", rangemode="tozero", **where)


def gate_html(result: GateResult) -> str:
    """The gate's verdict with both runs side by side, and the chart of both against the
    limits."""
    verdict = (
        "<p class='good'><b>PASSED</b></p>"
        if result.passed
        else "<p class='bad'><b>FAILED</b></p><ul>"
        + "".join(f"<li>{html.escape(v)}</li>" for v in result.violations)
        + "</ul>"
    )
    rows = [
        (label, base, cand)
        for (label, base), (_, cand) in zip(
            report_rows(result.baseline), report_rows(result.candidate), strict=True
        )
    ]
    parts = [verdict, _Figures()(_gate_figure(result))]
    parts.append(_table(("figure", "baseline", "candidate"), rows))
    parts.append(f"<p>{html.escape(result.broken_and_fixed)}.</p>")
    for label, ids in (("broken", result.broken), ("fixed", result.fixed)):
        if ids:  # all of them: a page has room the terminal's ten do not
            parts.append(_table((f"items {label}",), [(item,) for item in ids]))
    if result.model_changes:
        parts.append(_table(("model changes",), [(c,) for c in result.model_changes]))
    return _page("Golden-set gate", parts)
