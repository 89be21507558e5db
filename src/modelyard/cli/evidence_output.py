"""How the evidence commands print: progress bars, report tables, what a calibration and a gate
found, JSON for machines and HTML reports."""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.app import check_writable, console, errors
from modelyard.cost.prices import usd
from modelyard.evaluation.calibrate import Calibration
from modelyard.evaluation.compare import Row
from modelyard.evaluation.evaluate import Evaluation
from modelyard.evaluation.gate import GateResult
from modelyard.evaluation.report import EvalReport, NodeStats, Tally
from modelyard.evaluation.runner import FAILED


@contextmanager
def progress(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
    """A Rich progress bar on stderr, driven by (phase, done, total) calls."""
    bars = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=errors,
        disable=not enabled,
        transient=False,
    )
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bars.add_task(phase, total=total)
        bars.update(tasks[phase], completed=done, total=total)

    with bars:
        yield update


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: bare NaN is not JSON, and strict parsers
    reject the whole document."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _json(value: Any) -> str:
    return json.dumps(_finite(value), default=str, allow_nan=False, indent=2, ensure_ascii=False)


def dump(value: Any) -> None:
    """Print `value` as JSON, NaN and infinities as null. Written as plain text: Rich's JSON
    renderable highlights the whole document first (eval --json of 70,000 items: 3 min and
    4.7 GB, against 46 s and 0.7 GB for the run itself)."""
    console.file.write(_json(value) + "\n")


class ItemSpill:
    """Each item's JSON, written to a file as the results come, to be printed after the report
    (which needs every item first) by `dump_with_items`: items are never held in memory, and
    nothing is printed of a run that stops half way."""

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.count = 0

    def add(self, item: dict[str, Any]) -> None:
        """Write one item, indented as it stands in the printed list."""
        if self.count:
            self.file.write(",\n")
        # Every line break of the JSON text is its own (those in strings are escaped).
        self.file.write(_ITEM_INDENT + _json(item).replace("\n", "\n" + _ITEM_INDENT))
        self.count += 1


_ITEM_INDENT = "    "
"""How deep an item of a top-level list stands in `dump`'s JSON."""


@contextmanager
def item_spill() -> Iterator[ItemSpill]:
    """An `ItemSpill` on a temporary file, removed on leaving."""
    with tempfile.TemporaryFile("w+", encoding="utf-8") as file:
        yield ItemSpill(file)


def dump_with_items(head: dict[str, Any], key: str, spill: ItemSpill) -> None:
    """Print `head` with `key` holding the spilled items, as `dump` prints that dict."""
    text = _json({**head, key: []})
    empty = "[]\n}"
    if not spill.count or not text.endswith(empty):  # no items: as dump prints it
        console.file.write(text + "\n")
        return
    out = console.file
    out.write(text[: -len(empty)] + "[\n")
    spill.file.seek(0)
    shutil.copyfileobj(spill.file, out)
    out.write("\n  ]\n}\n")


def check_html(path: Path | None) -> None:
    """Exit 2 unless the HTML report, if asked for, can be written."""
    if path is not None:
        check_writable(path, "the HTML report")


def write_html(path: Path | None, text: Callable[[], str]) -> None:
    """Write the HTML report, if asked for."""
    if path is not None:
        path.write_text(text(), encoding="utf-8")
        errors.print(f"wrote {path}")


def report_table(title: str, reports_: Sequence[EvalReport]) -> Table:
    """One row per report: accuracy, failures, cost and latency."""
    table = Table(title=title)
    for column in (
        "system",
        "items",
        "accuracy",
        "scored acc",
        "unparsed",
        "unlabelled",
        "failed",
        "$/item",
        "total $",
        "p50 ms",
        "p95 ms",
    ):
        table.add_column(column)
    for r in reports_:
        table.add_row(
            r.system,
            str(r.n),
            pct(r.accuracy),
            pct(r.accuracy_scored),
            str(r.unparsed),
            str(r.unlabelled),
            str(r.failed),
            usd(r.cost_per_item),
            usd(r.total_cost),
            f"{r.latency_p50_ms:.1f}",
            f"{r.latency_p95_ms:.1f}",
        )
    return table


def pct(value: float | None) -> str:
    """A share as a percentage, a dash for none."""
    return "—" if value is None else f"{value:.2%}"


def renamed(report: EvalReport, name: str) -> EvalReport:
    """`report` under another name (a row label)."""
    return replace(report, system=name)


def num(value: float | None) -> str:
    """A figure to four significant digits, a dash for none."""
    return "—" if value is None else f"{value:.4g}"


def print_evaluation(title: str, evaluation: Evaluation, scorer: str) -> None:
    """A system's report on a set: the table, what could not be parsed, how each node decided
    and the first failure."""
    report = evaluation.report
    console.print(report_table(title, [report]))
    if report.unparsed:
        # The scorer's note says why (e.g. a recording's empty correctness cell).
        noted = evaluation.tally.first_unparsed
        why = f" The first, item {escape(noted[0])}: {escape(noted[1])}." if noted else ""
        console.print(
            f"[yellow]{report.unparsed} answers could not be parsed by the "
            f"{scorer} scorer; they count as wrong in 'accuracy'.[/]{why}"
        )
    _print_nodes(report)
    _print_failures(evaluation.tally)


def print_comparison(title: str, rows: Sequence[Row]) -> None:
    """Each contender's accuracy, cost, cost per point and latency."""
    table = Table(title=title)
    for column in (
        "name",
        "kind",
        "accuracy",
        "$/item",
        "$ per acc. point",
        "p50 ms",
        "p95 ms",
        "unparsed",
        "failed",
    ):
        table.add_column(column)
    for r in rows:
        table.add_row(
            r.name,
            r.kind,
            pct(r.report.accuracy),
            usd(r.report.cost_per_item),
            num(r.cost_per_point),
            f"{r.report.latency_p50_ms:.1f}",
            f"{r.report.latency_p95_ms:.1f}",
            str(r.report.unparsed),
            str(r.report.failed),
        )
    console.print(table)


def _decided(stats: NodeStats) -> str:
    """What a node chose over the set, and how many of its calls failed."""
    line = ""
    if stats.chosen:
        line += " chose " + ", ".join(f"{k}: {v}" for k, v in stats.chosen.items())
    elif stats.kind != "embedder" and not stats.errors:
        # A stage unsure on every item ran and chose nothing (an embedder never chooses; it
        # has only details): a bare name would read as a line cut off.
        line += " chose nothing"
    if stats.errors:
        line += f" [red]{stats.errors} failed[/]"
    return line


def _print_nodes(report: EvalReport) -> None:
    """How each node decided, and the model drift seen."""
    for node, stats in report.nodes.items():
        line = f"[bold]{node}[/] [dim]{stats.kind}[/]" + _decided(stats)
        if stats.details:
            line += " [dim]" + ", ".join(f"{k}≈{v:.3g}" for k, v in stats.details.items()) + "[/]"
        console.print(line)
    for text, count in report.drift.items():
        console.print(f"[yellow]drift:[/] {text} ({count} items)")


def _print_failures(tally: Tally) -> None:
    """The first failed item's error: the count alone does not say whether the system or the
    data is at fault (e.g. recordings that do not hold the evaluated prompts)."""
    if tally.first_failure is not None:
        unlabelled = tally.failed_unlabelled
        counted = "counted as wrong in 'accuracy'" + (
            f", except {unlabelled} without a label, left out of it" if unlabelled else ""
        )
        first, error = tally.first_failure
        console.print(
            f"[red]{tally.statuses[FAILED]} items failed[/] ({counted}); the first, "
            f"item {escape(first)}: {escape(error)}"
        )


_SHOWN = 10
"""How many unbuildable settings, or broken and fixed item ids, are printed (all are in --json)."""


def _print_out_of_fold(train: EvalReport) -> None:
    """How much of the training split each cross-fitted embedder predicted out of fold. When
    calibrating on an artifact's own training data this must be 100 %: a text that differs
    from the one trained on, even in whitespace, gets the full fit's in-sample prediction,
    and the choice then rests on optimistic predictions without a word."""
    for node, stats in train.nodes.items():
        share = stats.details.get("out_of_fold")
        if share is None:
            continue
        line = f"{escape(node)}: {share:.0%} of the training split predicted out of fold"
        if share < 1:
            line = (
                f"[yellow]{line}[/] (the rest in-sample: if its artifact was cross-fitted on "
                "these items, their texts differ from those it was trained on)"
            )
        console.print(line)


def _reached(cal: Calibration) -> str:
    """What the chosen setting reached, with its cost when the target has a ceiling."""
    if cal.ceiling is None:
        return f"{cal.reached:.4g}"
    return f"{cal.reached:.4g} at ${cal.chosen.train.cost_per_item:.6g} an item"


def print_calibration(cal: Calibration, how: str, written: str) -> None:
    """The calibration: target, settings tried, the chosen one and the frontier."""
    front = cal.frontier
    console.print(f"[dim]{how}[/]")
    console.print(
        f"target {cal.target}: {'[green]met[/]' if cal.met else '[red]not met[/]'} on "
        f"{cal.n_train} training items (needed {cal.required:.4g}"
        + (f" at ≤ ${cal.ceiling:.6g} an item" if cal.ceiling is not None else "")
        + (f", at {cal.confidence:.0%} confidence" if cal.confidence is not None else "")
        + ("" if cal.met else f", closest reached {_reached(cal)}")
        + "); "
        f"{len(cal.trials)} settings tried"
    )
    if cal.invalid:  # a typo in a sweep must not shrink the search without a word
        console.print(f"[yellow]{len(cal.invalid)} settings could not be built, not tried:[/]")
        for reason in cal.invalid[:_SHOWN]:
            console.print(f"  {escape(reason)}")
        if len(cal.invalid) > _SHOWN:
            console.print(f"  ... and {len(cal.invalid) - _SHOWN} more (all in --json)")
    closest = "" if cal.met else " (closest to the target, which it does not meet)"
    console.print(f"chosen{closest}: {cal.chosen.values}")
    if cal.dominated_by is not None:
        single = cal.singles_train[cal.dominated_by]
        console.print(
            f"[yellow]{cal.dominated_by} alone did better on the training split "
            f"({pct(single.accuracy)} at ${single.cost_per_item:.6g} an item, against "
            f"{pct(cal.chosen.train.accuracy)} at ${cal.chosen.train.cost_per_item:.6g}): "
            "the system buys nothing over it at this setting[/]"
        )
    _print_out_of_fold(cal.chosen.train)
    rows = [("calibrated (train)", cal.chosen.train), ("calibrated (test)", cal.chosen.test)]
    rows += [(f"{n} alone (test)", r) for n, r in cal.singles_test.items()]
    console.print(
        report_table(
            "calibrated system and its models",
            [renamed(r, label) for label, r in rows if r is not None],
        )
    )
    table = Table(
        title=f"frontier on {front.n} test items (weak {front.weak}, strong {front.strong})"
    )
    for column in (
        "curve",
        "AIQ",
        "APGR",
        "CPT(50%)",
        "CPT(80%)",
        f"$ saved at {front.target_fraction:.0%} of strong",
    ):
        table.add_column(column)
    for name, curve in front.curves.items():
        table.add_row(
            name,
            curve.aiq_text(),
            num(curve.apgr),
            pct(curve.cpt50),
            pct(curve.cpt80),
            pct(front.saving(name)),
        )
    console.print(table)
    console.print(written)


def _print_node_changes(base: dict[str, NodeStats], cand: dict[str, NodeStats]) -> None:
    """Each node that chose otherwise, or failed more or less often, in the candidate: a
    fallback or a cascade answers for a part that fails, so neither the accuracy nor the
    failed items show a candidate whose first model can no longer answer."""
    for node in dict.fromkeys([*base, *cand]):
        before, after = base.get(node), cand.get(node)
        if before and after and (before.chosen, before.errors) == (after.chosen, after.errors):
            continue
        was = _decided(before) if before else " absent"
        now = _decided(after) if after else " absent"
        console.print(f"[yellow]{escape(node)}[/] baseline{was}; candidate{now}")


def print_gate(result: GateResult) -> None:
    """Baseline against candidate, the items broken and fixed, and the verdict."""
    console.print(
        report_table(
            "baseline vs candidate",
            [
                renamed(result.baseline, "baseline"),
                renamed(result.candidate, "candidate"),
            ],
        )
    )
    console.print(result.broken_and_fixed)
    for label, ids in (("broken", result.broken), ("fixed", result.fixed)):
        if ids:
            more = len(ids) - _SHOWN
            tail = f" ... and {more} more (all in --json)" if more > 0 else ""
            console.print(f"  {label}: {escape(', '.join(ids[:_SHOWN]))}{tail}")
    _print_node_changes(result.baseline.nodes, result.candidate.nodes)
    for change in result.model_changes:
        console.print(f"[yellow]model change:[/] {change}")
    if result.passed:
        console.print("[bold green]gate passed[/]")
    for violation in result.violations:
        console.print(f"[bold red]gate failed:[/] {violation}")
