"""eval, calibrate, compare, gate, history, rollback, split: the evidence commands.

What they take is `evidence_input.py`, how they print `evidence_output.py`."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from modelyard.cli.app import (
    app,
    check_target,
    check_writable,
    console,
    errors,
    fail,
    guarded,
)
from modelyard.cli.evidence_input import (
    ConcurrencyOpt,
    ConfigPath,
    DataOpt,
    ForceOpt,
    FormatOpt,
    HistoryOpt,
    HtmlOpt,
    JsonOpt,
    KeepOpt,
    LimitOpt,
    ScorerOpt,
    SplitOpt,
    SystemName,
    calibration_splits,
    only_system,
    read_items,
    scorer_spec,
    warn_unlabelled,
)
from modelyard.cli.evidence_output import (
    check_html,
    dump,
    dump_with_items,
    item_spill,
    print_calibration,
    print_comparison,
    print_evaluation,
    print_gate,
    progress,
    write_html,
)
from modelyard.config.loader import load_config
from modelyard.evaluation import html as reports
from modelyard.evaluation.calibrate import Calibration, Calibrator, Target
from modelyard.evaluation.compare import Row, compare
from modelyard.evaluation.dataset import LABELLED
from modelyard.evaluation.evaluate import evaluate
from modelyard.evaluation.gate import GateResult, Tolerances, judge
from modelyard.evaluation.history import ConfigHistory, write_atomic
from modelyard.evaluation.isolation import build_for_evaluation, load_for_evaluation
from modelyard.evaluation.knobs import discover_knobs, parse_knob
from modelyard.evaluation.runner import ItemResult
from modelyard.evaluation.scorers import make_scorer


def moved(source: Path, written: Path) -> str:
    """A note when a config's text is written to another folder than its own: its relative
    paths (recordings, artifacts, also in `${VAR:-default}`) then read other files."""
    if written.resolve().parent == source.resolve().parent:
        return ""
    return f"; relative paths in it are read from {written.parent}, not from {source.parent}"


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
    check_html(html_path)

    def run() -> None:
        yard = load_for_evaluation(config)
        items = read_items(data, fmt, split, limit)
        scoring = make_scorer(scorer_spec(scorer, fmt), yard.models)
        count = warn_unlabelled(items, scoring, data, fmt)
        with item_spill() as spill:

            async def go() -> Any:
                try:
                    check_target(yard, system, config)
                    with progress() as tick:
                        done = [0]

                        def on_result(result: ItemResult) -> None:
                            done[0] += 1
                            tick(f"eval {system}", done[0], count)
                            if as_json:
                                spill.add(result.to_dict())

                        return await evaluate(
                            yard,
                            system,
                            items,
                            scoring,
                            concurrency=concurrency,
                            on_result=on_result,
                        )
                finally:
                    await yard.aclose()

            evaluation = asyncio.run(go())
            report = evaluation.report
            if as_json:
                dump_with_items({"report": report.to_dict()}, "items", spill)
            else:
                print_evaluation(f"{system} on {data}", evaluation, scoring.name)
        write_html(html_path, lambda: reports.eval_html(report, evaluation.tally))
        if report.n and report.failed == report.n:  # a 0 % that measured nothing: not a pass
            fail(f"{system} answered none of the {report.n} items (why: above)", code=1)

    guarded(run)


@app.command()
def calibrate(
    config: ConfigPath,
    system: SystemName,
    data: DataOpt,
    target: Annotated[
        str,
        typer.Option(
            help="quality:F (F × best single model's accuracy), budget:USD, or a quality with "
            "a cost ceiling: quality:F,cost:S (S × the best single model's cost per item) or "
            "quality:F,budget:USD."
        ),
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
    check_html(html_path)

    def run() -> None:
        if write:  # before the run, so a hand edit does not waste it
            ConfigHistory(config, history, keep).require_unedited(force)
        goal = Target.parse(target)
        train, test, how = calibration_splits(
            data, fmt, test_data, train_split, test_split, test_fraction, seed, limit
        )
        loaded = load_config(config)
        base = build_for_evaluation(loaded)  # the calibrator runs it too: built once
        try:
            check_target(base, system, config)
            knobs = [parse_knob(k) for k in knob] if knob else discover_knobs(base.loaded, system)
            scoring = make_scorer(scorer_spec(scorer, fmt), base.models)
            warn_unlabelled([*train, *test], scoring, data, fmt)
        except BaseException:
            asyncio.run(base.aclose())
            raise

        async def go() -> Calibration:
            with progress() as tick:
                calibrator = Calibrator(
                    loaded, system, scoring, concurrency=concurrency, progress=tick, base=base
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
                    await calibrator.aclose()

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
            write_atomic(written_to, cal.chosen.text, mode_of=config)
            written = f"wrote {written_to}{moved(config, written_to)}"
        if as_json:
            dump({**cal.to_dict(), "splits": how, "written": written})
        else:
            print_calibration(cal, how, written)
        write_html(html_path, lambda: reports.calibration_html(cal))
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
    check_html(html_path)

    def run() -> None:
        yard = load_for_evaluation(config)
        items = read_items(data, fmt, split, limit)
        scoring = make_scorer(scorer_spec(scorer, fmt), yard.models)
        count = warn_unlabelled(items, scoring, data, fmt)

        async def go() -> list[Row]:
            try:
                for name in system:
                    check_target(yard, name, config)
                with progress() as tick:
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
            dump([r.to_dict() for r in rows])
        else:
            print_comparison(f"{', '.join(system)} vs their models on {count} items", rows)
        write_html(html_path, lambda: reports.compare_html(rows, f"{', '.join(system)} vs models"))
        silent = [r for r in rows if r.answered_none]
        if silent:  # as eval: a row of 0 % that measured nothing must not pass a CI step
            first = silent[0].first_failure or "no error recorded"
            fail(
                f"{', '.join(r.name for r in silent)} answered none of the {count} items; "
                f"the first failure, {first}",
                code=1,
            )

    guarded(run)


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
    check_html(html_path)

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
        items = read_items(data, fmt, split, None)
        base_yard, cand_yard = load_for_evaluation(baseline), load_for_evaluation(candidate)
        # A pin the change removes: the scores can be equal (the alias answers as the pinned id
        # today) and nothing drifts yet, but the candidate's answers may change under it later.
        unpinned = [w for w in cand_yard.built.warnings if w not in base_yard.built.warnings]
        name = only_system(base_yard, system, baseline)
        base_scorer = make_scorer(scorer_spec(scorer, fmt), base_yard.models)
        cand_scorer = make_scorer(scorer_spec(scorer, fmt), cand_yard.models)
        warn_unlabelled(items, base_scorer, data, fmt)

        async def go() -> GateResult:
            try:
                check_target(base_yard, name, baseline)
                check_target(cand_yard, name, candidate)
                with progress() as tick:
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
            return judge(base.report, cand.report, base.tally, cand.tally, tolerances)

        result = asyncio.run(go())
        if as_json:
            dump(result.to_dict())
        else:
            print_gate(result)
        for warning in unpinned:
            errors.print(f"[yellow]warning:[/] candidate: {escape(warning)}")
        write_html(html_path, lambda: reports.gate_html(result))
        if not result.passed:
            raise typer.Exit(1)
        if apply:
            entry = ConfigHistory(baseline, history, keep).apply(
                candidate.read_text(encoding="utf-8"), f"gate passed: {candidate}", force=force
            )
            console.print(
                f"applied {candidate} to {baseline} (version {entry.version})"
                + moved(candidate, baseline)
            )

    guarded(run)


@app.command("history")
def history_command(config: ConfigPath, history: HistoryOpt = None) -> None:
    """List the applied versions of a config, newest last."""

    def run() -> None:
        import time as _time

        entries = ConfigHistory(config, history).entries()
        if not entries:
            console.print(
                f"no version of {config} recorded yet: gate --apply, calibrate --write and "
                "rollback record the versions they write"
            )
            return
        table = Table(title=f"applied versions of {config}")
        for column in ("#", "version", "applied", "note"):
            table.add_column(column)
        for e in entries:
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
    fmt: Annotated[
        str,
        typer.Argument(
            help="Recording format of DATA: routellm-gsm8k, routellm-mmlu, routellm-mtbench, "
            "routerbench, routerdc, jsonl."
        ),
    ],
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
