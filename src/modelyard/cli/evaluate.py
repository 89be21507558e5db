"""eval, calibrate, compare, gate, history, rollback: the evidence commands."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from modelyard.cli.app import app, check_target, check_writable, console, errors, fail, guarded
from modelyard.errors import ConfigError
from modelyard.evaluation import html as reports
from modelyard.evaluation.calibrate import Calibration, Calibrator, Target
from modelyard.evaluation.compare import Row, compare
from modelyard.evaluation.dataset import (
    LABELLED,
    Item,
    holdout,
    load_items,
    select_split,
    unlabelled_warning,
)
from modelyard.evaluation.evaluate import evaluate
from modelyard.evaluation.gate import GateResult, Tolerances, judge
from modelyard.evaluation.history import ConfigHistory
from modelyard.evaluation.isolation import load_for_evaluation
from modelyard.evaluation.knobs import discover_knobs, parse_knob
from modelyard.evaluation.report import EvalReport
from modelyard.evaluation.runner import FAILED, ItemResult
from modelyard.evaluation.scorers import Scorer, make_scorer
from modelyard.yard import Yard

ConfigPath = Annotated[Path, typer.Argument(help="The YAML config file.", show_default=False)]
SystemName = Annotated[str, typer.Argument(help="A system or model name from the config.")]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data", help="Labelled set (.jsonl/.csv) or recordings (with --format); shared:PATH ok."
    ),
]
FormatOpt = Annotated[
    str,
    typer.Option(
        "--format",
        help="labelled, or a recording format: routellm-gsm8k, routellm-mmlu, "
        "routellm-mtbench, routerbench, routerdc, jsonl.",
    ),
]
ScorerOpt = Annotated[
    str | None,
    typer.Option(
        help="exact, choice, number, regex:PAT, json:FIELD, recorded, judge:MODEL, "
        "callable:mod:fn (default: recorded for recordings, else exact)."
    ),
]
SplitOpt = Annotated[str | None, typer.Option("--split", help="Only items of this split.")]
ConcurrencyOpt = Annotated[int, typer.Option(min=1, help="Items in flight at once.")]
LimitOpt = Annotated[int | None, typer.Option(min=1, help="Only the first N items.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]
HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Write an HTML report here.")]
HistoryOpt = Annotated[
    Path | None, typer.Option("--history", help="History folder (default .modelyard/history).")
]
KeepOpt = Annotated[int, typer.Option(min=2, help="Applied versions to keep.")]
ForceOpt = Annotated[
    bool,
    typer.Option(
        "--force",
        help="Replace the config file even when it was edited since modelyard last wrote it "
        "(the edited text is kept in history first).",
    ),
]


@contextmanager
def _progress(enabled: bool = True) -> Iterator[Callable[[str, int, int], None]]:
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


def _scorer_spec(scorer: str | None, fmt: str) -> str:
    return scorer or ("exact" if fmt == LABELLED else "recorded")


def _items(data: str, fmt: str, split: str | None, limit: int | None) -> list[Item]:
    items = select_split(load_items(data, fmt), split, source=data)
    return items[:limit] if limit else items


def _warn_unlabelled(items: Sequence[Item], scoring: Scorer, data: str, fmt: str) -> None:
    warning = unlabelled_warning(items, data, fmt) if scoring.needs_label else None
    if warning is not None:
        errors.print(f"[yellow]warning:[/] {escape(warning)}")


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


def _dump(value: Any) -> None:
    console.print_json(json.dumps(_finite(value), default=str, allow_nan=False))


def _check_html(path: Path | None) -> None:
    if path is not None:
        check_writable(path, "the HTML report")


def _write_html(path: Path | None, text: Callable[[], str]) -> None:
    if path is not None:
        path.write_text(text(), encoding="utf-8")
        errors.print(f"wrote {path}")


def _report_table(title: str, reports_: Sequence[EvalReport]) -> Table:
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
            _pct(r.accuracy),
            _pct(r.accuracy_scored),
            str(r.unparsed),
            str(r.unlabelled),
            str(r.failed),
            f"{r.cost_per_item:.6g}",
            f"{r.total_cost:.4f}",
            f"{r.latency_p50_ms:.1f}",
            f"{r.latency_p95_ms:.1f}",
        )
    return table


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def _print_nodes(report: EvalReport) -> None:
    for node, stats in report.nodes.items():
        line = f"[bold]{node}[/] [dim]{stats.kind}[/]"
        if stats.chosen:  # an embedder chooses nothing; it has only details
            line += " chose " + ", ".join(f"{k}: {v}" for k, v in stats.chosen.items())
        if stats.errors:
            line += f" [red]{stats.errors} failed[/]"
        if stats.details:
            line += " [dim]" + ", ".join(f"{k}≈{v:.3g}" for k, v in stats.details.items()) + "[/]"
        console.print(line)
    for text, count in report.drift.items():
        console.print(f"[yellow]drift:[/] {text} ({count} items)")


def _print_failures(results: Sequence[ItemResult]) -> None:
    """The first failed item's error: the count alone does not say whether the system or the
    data is at fault (e.g. recordings that do not hold the evaluated prompts)."""
    failed = [r for r in results if r.status == FAILED]
    if failed:
        unlabelled = sum(1 for r in failed if not r.labelled)
        counted = "counted as wrong in 'accuracy'" + (
            f", except {unlabelled} without a label, left out of it" if unlabelled else ""
        )
        console.print(
            f"[red]{len(failed)} items failed[/] ({counted}); the first, "
            f"item {escape(failed[0].id)}: {escape(failed[0].error or 'no error recorded')}"
        )


@app.command("eval")
def eval_command(
    config: ConfigPath,
    system: SystemName,
    data: DataOpt,
    fmt: FormatOpt = LABELLED,
    scorer: ScorerOpt = None,
    split: SplitOpt = None,
    concurrency: ConcurrencyOpt = 8,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
    html_path: HtmlOpt = None,
) -> None:
    """Run a system over a labelled set: accuracy, cost, latency, and how each node decided."""
    _check_html(html_path)

    def run() -> None:
        yard = load_for_evaluation(config)
        items = _items(data, fmt, split, limit)
        scoring = make_scorer(_scorer_spec(scorer, fmt), yard.models)
        _warn_unlabelled(items, scoring, data, fmt)

        async def go() -> Any:
            try:
                check_target(yard, system, config)
                with _progress() as tick:
                    done = [0]

                    def on_result(_: object) -> None:
                        done[0] += 1
                        tick(f"eval {system}", done[0], len(items))

                    return await evaluate(
                        yard, system, items, scoring, concurrency=concurrency, on_result=on_result
                    )
            finally:
                await yard.aclose()

        evaluation = asyncio.run(go())
        report = evaluation.report
        if as_json:
            _dump(
                {
                    "report": report.to_dict(),
                    "items": [r.to_dict() for r in evaluation.results],
                }
            )
        else:
            console.print(_report_table(f"{system} on {data}", [report]))
            if report.unparsed:
                console.print(
                    f"[yellow]{report.unparsed} answers could not be parsed by the "
                    f"{scoring.name} scorer; they count as wrong in 'accuracy'.[/]"
                )
            _print_nodes(report)
            _print_failures(evaluation.results)
        _write_html(html_path, lambda: reports.eval_html(report, evaluation.results))

    guarded(run)


def _calibration_splits(
    data: str,
    fmt: str,
    test_data: str | None,
    train_split: str | None,
    test_split: str | None,
    test_fraction: float,
    seed: int,
    limit: int | None,
) -> tuple[list[Item], list[Item], str]:
    items = load_items(data, fmt)
    if test_data is not None:
        train = select_split(items, train_split, source=data)
        test = select_split(load_items(test_data, fmt), test_split, source=test_data)
        how = f"train: {data}; test: {test_data}"
    elif train_split or test_split or {"train", "test"} <= {i.split for i in items}:
        train = select_split(items, train_split or "train", source=data)
        test = select_split(items, test_split or "test", source=data)
        how = f"splits {train_split or 'train'} / {test_split or 'test'} of {data}"
    else:
        train, test = holdout(items, test_fraction, seed)
        how = f"seeded hold-out of {data}: {test_fraction:.0%} test, seed {seed}"
    seen = {" ".join(i.prompt.split()) for i in train}
    overlap = [i for i in test if " ".join(i.prompt.split()) in seen]
    test = [i for i in test if " ".join(i.prompt.split()) not in seen]
    if overlap:
        how += f"; {len(overlap)} test items also in train were dropped"
    if not test:
        raise ConfigError("the test split is empty after removing prompts seen in training")
    if limit:
        train, test = train[:limit], test[:limit]
    return train, test, how


_SHOWN = 10
"""How many unbuildable settings, or broken and fixed item ids, are printed (all are in --json)."""


def _print_calibration(cal: Calibration, how: str, written: str) -> None:
    front = cal.frontier
    console.print(f"[dim]{how}[/]")
    console.print(
        f"target {cal.target}: {'[green]met[/]' if cal.met else '[red]not met[/]'} on "
        f"{cal.n_train} training items (needed {cal.required:.4g}"
        + (f", at {cal.confidence:.0%} confidence" if cal.confidence is not None else "")
        + "); "
        f"{len(cal.trials)} settings tried"
    )
    if cal.invalid:  # a typo in a sweep must not shrink the search without a word
        console.print(f"[yellow]{len(cal.invalid)} settings could not be built, not tried:[/]")
        for reason in cal.invalid[:_SHOWN]:
            console.print(f"  {escape(reason)}")
        if len(cal.invalid) > _SHOWN:
            console.print(f"  ... and {len(cal.invalid) - _SHOWN} more (all in --json)")
    console.print(f"chosen: {cal.chosen.values}")
    rows = [("calibrated (train)", cal.chosen.train), ("calibrated (test)", cal.chosen.test)]
    rows += [(f"{n} alone (test)", r) for n, r in cal.singles_test.items()]
    console.print(
        _report_table(
            "calibrated system and its models",
            [_renamed(r, label) for label, r in rows if r is not None],
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
            f"{curve.aiq:.4g}",
            _num(curve.apgr),
            _pct(curve.cpt50),
            _pct(curve.cpt80),
            _pct(front.saving(name)),
        )
    console.print(table)
    console.print(written)


def _renamed(report: EvalReport, name: str) -> EvalReport:
    from dataclasses import replace

    return replace(report, system=name)


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:.4g}"


@app.command()
def calibrate(
    config: ConfigPath,
    system: SystemName,
    data: DataOpt,
    target: Annotated[
        str, typer.Option(help="quality:F (F × best single model's accuracy) or budget:USD.")
    ] = "quality:0.95",
    knob: Annotated[
        list[str] | None,
        typer.Option(
            help="PATH=v1,v2 or PATH=start:stop:step (repeatable); list values in brackets: "
            "PATH=\\[a,b],\\[b,a]."  # escaped: Rich would read [a,b] as a style tag
        ),
    ] = None,
    fmt: FormatOpt = LABELLED,
    scorer: ScorerOpt = None,
    test_data: Annotated[str | None, typer.Option(help="A separate test set.")] = None,
    train_split: Annotated[str | None, typer.Option(help="Split to calibrate on.")] = None,
    test_split: Annotated[str | None, typer.Option(help="Split to report on.")] = None,
    test_fraction: Annotated[
        float, typer.Option(help="Hold-out share when there are no splits.")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the hold-out and of trial sampling.")] = 0,
    max_trials: Annotated[int, typer.Option(min=1, help="Most settings to try.")] = 200,
    confidence: Annotated[
        float | None,
        typer.Option(
            min=0.5,
            max=0.999,
            help="Meet a quality target at this one-sided confidence (paired with the best "
            "single model, item by item), not just on average over the training items.",
        ),
    ] = None,
    concurrency: ConcurrencyOpt = 8,
    limit: LimitOpt = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="Write the calibrated config here (default: CONFIG's name + .calibrated.yaml, "
            "which is never overwritten: pass --out to replace it)."
        ),
    ] = None,
    write: Annotated[
        bool,
        typer.Option(
            "--write",
            help="Apply it to CONFIG in place, only when the target is met (kept in history).",
        ),
    ] = False,
    history: HistoryOpt = None,
    keep: KeepOpt = 10,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    html_path: HtmlOpt = None,
) -> None:
    """Tune a system's knobs on a training split; report the frontier on a test split."""

    if write and out is not None:
        fail("--write applies the result to CONFIG, --out writes it to another file: pass one")
    written_to = out or config.with_name(f"{config.stem}.calibrated{config.suffix}")
    if not write and out is None and written_to.exists():
        fail(
            f"{written_to} exists (an earlier calibration?); pass --out {written_to} to replace "
            "it, or another --out"
        )
    if not write:
        check_writable(written_to, "the calibrated config")
    _check_html(html_path)

    def run() -> None:
        if write:  # before the run, so a hand edit does not waste it
            ConfigHistory(config, history, keep).require_unedited(force)
        goal = Target.parse(target)
        train, test, how = _calibration_splits(
            data, fmt, test_data, train_split, test_split, test_fraction, seed, limit
        )
        probe = load_for_evaluation(config)
        try:
            check_target(probe, system, config)
            knobs = [parse_knob(k) for k in knob] if knob else discover_knobs(probe.loaded, system)
            scoring = make_scorer(_scorer_spec(scorer, fmt), probe.models)
        finally:
            asyncio.run(probe.aclose())
        _warn_unlabelled([*train, *test], scoring, data, fmt)

        async def go() -> Calibration:
            with _progress() as tick:
                calibrator = Calibrator(
                    config, system, scoring, concurrency=concurrency, progress=tick
                )
                try:
                    return await calibrator.calibrate(
                        knobs,
                        goal,
                        train,
                        test,
                        max_trials=max_trials,
                        seed=seed,
                        confidence=confidence,
                    )
                finally:
                    await calibrator.resources.aclose()

        cal = asyncio.run(go())
        if write and not cal.met:  # as `gate --apply` applies only a candidate that passed
            written = f"target not met: {config} left unchanged, nothing recorded in history"
        elif write:
            entry = ConfigHistory(config, history, keep).apply(
                cal.chosen.text, f"calibrate {system} {goal}: {cal.chosen.values}", force=force
            )
            written = (
                f"applied to {config} (version {entry.version}; rollback with modelyard rollback)"
            )
        else:
            written_to.write_text(cal.chosen.text, encoding="utf-8")
            written = f"wrote {written_to}"
        if as_json:
            _dump({**cal.to_dict(), "splits": how, "written": written})
        else:
            _print_calibration(cal, how, written)
        _write_html(html_path, lambda: reports.calibration_html(cal))
        if not cal.met:
            raise typer.Exit(1)

    guarded(run)


@app.command("compare")
def compare_command(
    config: ConfigPath,
    system: Annotated[list[str], typer.Argument(help="One or more systems to compare.")],
    data: DataOpt,
    fmt: FormatOpt = LABELLED,
    scorer: ScorerOpt = None,
    split: SplitOpt = None,
    concurrency: ConcurrencyOpt = 8,
    limit: LimitOpt = None,
    as_json: JsonOpt = False,
    html_path: HtmlOpt = None,
) -> None:
    """The system against each of its models alone: accuracy, cost, cost per point, latency."""
    _check_html(html_path)

    def run() -> None:
        yard = load_for_evaluation(config)
        items = _items(data, fmt, split, limit)
        scoring = make_scorer(_scorer_spec(scorer, fmt), yard.models)
        _warn_unlabelled(items, scoring, data, fmt)

        async def go() -> list[Row]:
            try:
                for name in system:
                    check_target(yard, name, config)
                with _progress() as tick:
                    done = [0]

                    def on_done(_: str) -> None:
                        done[0] += 1
                        tick("contenders", done[0], done[0])

                    return await compare(
                        yard, system, items, scoring, concurrency=concurrency, on_done=on_done
                    )
            finally:
                await yard.aclose()

        rows = asyncio.run(go())
        if as_json:
            _dump([r.to_dict() for r in rows])
        else:
            table = Table(title=f"{', '.join(system)} vs their models on {len(items)} items")
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
                    _pct(r.report.accuracy),
                    f"{r.report.cost_per_item:.6g}",
                    _num(r.cost_per_point),
                    f"{r.report.latency_p50_ms:.1f}",
                    f"{r.report.latency_p95_ms:.1f}",
                    str(r.report.unparsed),
                    str(r.report.failed),
                )
            console.print(table)
        _write_html(html_path, lambda: reports.compare_html(rows, f"{', '.join(system)} vs models"))

    guarded(run)


def _only_system(yard: Yard, system: str | None, path: Path) -> str:
    if system is not None:
        return system
    if len(yard.systems) == 1:
        return next(iter(yard.systems))
    fail(f"{path}: pass --system; systems: {', '.join(sorted(yard.systems)) or 'none'}")


def _print_gate(result: GateResult) -> None:
    console.print(
        _report_table(
            "baseline vs candidate",
            [
                _renamed(result.baseline, "baseline"),
                _renamed(result.candidate, "candidate"),
            ],
        )
    )
    console.print(f"{len(result.broken)} items broken, {len(result.fixed)} fixed")
    for label, ids in (("broken", result.broken), ("fixed", result.fixed)):
        if ids:
            more = len(ids) - _SHOWN
            tail = f" ... and {more} more (all in --json)" if more > 0 else ""
            console.print(f"  {label}: {escape(', '.join(ids[:_SHOWN]))}{tail}")
    for change in result.model_changes:
        console.print(f"[yellow]model change:[/] {change}")
    if result.passed:
        console.print("[bold green]gate passed[/]")
    for violation in result.violations:
        console.print(f"[bold red]gate failed:[/] {violation}")


@app.command()
def gate(
    baseline: Annotated[Path, typer.Argument(help="The config in production.")],
    candidate: Annotated[Path, typer.Argument(help="The changed config.")],
    data: DataOpt,
    system: Annotated[
        str | None, typer.Option(help="System to compare (default: the only one).")
    ] = None,
    fmt: FormatOpt = LABELLED,
    scorer: ScorerOpt = None,
    split: SplitOpt = None,
    max_accuracy_drop: Annotated[float, typer.Option(help="Absolute, e.g. 0.01.")] = 0.0,
    max_cost_increase: Annotated[float, typer.Option(help="Relative, e.g. 0.05.")] = 0.05,
    max_latency_increase: Annotated[float, typer.Option(help="Relative p95.")] = 0.25,
    latency_slack_ms: Annotated[float, typer.Option(help="Absolute p95 slack.")] = 50.0,
    max_failure_increase: Annotated[float, typer.Option(help="Absolute failure rate.")] = 0.0,
    allow_drift: Annotated[
        bool,
        typer.Option(
            "--allow-drift",
            help="Pass even when the candidate's answers came from another model than it pins.",
        ),
    ] = False,
    concurrency: ConcurrencyOpt = 8,
    apply: Annotated[
        bool,
        typer.Option(
            "--apply", help="On pass, make CANDIDATE the BASELINE file (kept in history)."
        ),
    ] = False,
    history: HistoryOpt = None,
    keep: KeepOpt = 10,
    force: ForceOpt = False,
    as_json: JsonOpt = False,
    html_path: HtmlOpt = None,
) -> None:
    """Fail (exit 1) when the candidate config is worse than the baseline on a golden set, or
    drifts from the model ids it pins."""
    _check_html(html_path)

    def run() -> None:
        if apply:  # before the run, so a hand edit does not waste it
            ConfigHistory(baseline, history, keep).require_unedited(force)
        tolerances = Tolerances(
            accuracy_drop=max_accuracy_drop,
            cost_increase=max_cost_increase,
            latency_increase=max_latency_increase,
            latency_slack_ms=latency_slack_ms,
            failure_increase=max_failure_increase,
            allow_drift=allow_drift,
        )
        items = _items(data, fmt, split, None)
        base_yard, cand_yard = load_for_evaluation(baseline), load_for_evaluation(candidate)
        name = _only_system(base_yard, system, baseline)
        base_scorer = make_scorer(_scorer_spec(scorer, fmt), base_yard.models)
        cand_scorer = make_scorer(_scorer_spec(scorer, fmt), cand_yard.models)
        _warn_unlabelled(items, base_scorer, data, fmt)

        async def go() -> GateResult:
            try:
                check_target(base_yard, name, baseline)
                check_target(cand_yard, name, candidate)
                with _progress() as tick:
                    base = await evaluate(
                        base_yard, name, items, base_scorer, concurrency=concurrency
                    )
                    tick("baseline, candidate", 1, 2)
                    cand = await evaluate(
                        cand_yard, name, items, cand_scorer, concurrency=concurrency
                    )
                    tick("baseline, candidate", 2, 2)
            finally:
                await base_yard.aclose()
                await cand_yard.aclose()
            return judge(base.report, cand.report, base.results, cand.results, tolerances)

        result = asyncio.run(go())
        if as_json:
            _dump(result.to_dict())
        else:
            _print_gate(result)
        _write_html(html_path, lambda: reports.gate_html(result))
        if not result.passed:
            raise typer.Exit(1)
        if apply:
            entry = ConfigHistory(baseline, history, keep).apply(
                candidate.read_text(encoding="utf-8"), f"gate passed: {candidate}", force=force
            )
            console.print(f"applied {candidate} to {baseline} (version {entry.version})")

    guarded(run)


@app.command("history")
def history_command(config: ConfigPath, history: HistoryOpt = None) -> None:
    """List the applied versions of a config, newest last."""

    def run() -> None:
        import time as _time

        table = Table(title=f"applied versions of {config}")
        for column in ("#", "version", "applied", "note"):
            table.add_column(column)
        for e in ConfigHistory(config, history).entries():
            when = _time.strftime("%Y-%m-%d %H:%M:%S", _time.localtime(e.applied_at))
            table.add_row(str(e.seq), e.version, when, e.note)
        console.print(table)

    guarded(run)


@app.command()
def rollback(
    config: ConfigPath,
    steps: Annotated[
        int,
        typer.Option(
            min=1,
            help="How many versions back among those deployed before the current one "
            "(rollbacks undone are not counted: rolling back twice goes two versions back).",
        ),
    ] = 1,
    to: Annotated[str | None, typer.Option(help="A version (hash prefix) to restore.")] = None,
    history: HistoryOpt = None,
    keep: KeepOpt = 10,
    force: ForceOpt = False,
) -> None:
    """Restore an earlier applied version of a config file."""

    def run() -> None:
        entry = ConfigHistory(config, history, keep).rollback(steps, to, force=force)
        console.print(f"{config} is now version {entry.version} ({entry.note})")

    guarded(run)


@app.command("split")
def split_command(
    fmt: Annotated[str, typer.Argument(help="Recording format of DATA.")],
    data: Annotated[str, typer.Argument(help="Recordings (file or folder; shared:PATH ok).")],
    out: Annotated[Path, typer.Option("--out", help="Folder for train.jsonl and test.jsonl.")],
    test_fraction: Annotated[float, typer.Option(help="Share of prompts in the test file.")] = 0.5,
    seed: Annotated[int, typer.Option(help="Seed of the split.")] = 0,
) -> None:
    """Split recordings by prompt into train/test JSONL (for train, replay and calibrate)."""
    if out.exists() and not out.is_dir():
        fail(f"cannot write train.jsonl and test.jsonl into {out}: it is a file, not a folder")

    def run() -> None:
        from modelyard.evaluation.export import split_recordings
        from modelyard.evaluation.formats import load_recordings
        from modelyard.evaluation.recordings import resolve_data_path

        recordings = load_recordings(fmt, [resolve_data_path(data, Path.cwd())])
        counts = split_recordings(recordings, out, test_fraction, seed)
        console.print(
            f"wrote {out / 'train.jsonl'} ({counts['train_prompts']} prompts, {counts['train']} "
            f"rows) and {out / 'test.jsonl'} ({counts['test_prompts']} prompts, "
            f"{counts['test']} rows); seed {seed}"
        )

    guarded(run)
