"""What the evidence commands (eval, calibrate, compare, gate...) take: their shared options,
the items a set yields (and calibrate's train/test splits), its scorer, the system to run."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from modelyard.cli.app import errors, fail
from modelyard.errors import ConfigError
from modelyard.evaluation.dataset import (
    LABELLED,
    Item,
    ItemSource,
    holdout,
    load_items,
    select_split,
    unlabelled_warning,
)
from modelyard.evaluation.scorers import Scorer
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
    Path | None,
    typer.Option(
        "--history",
        help="Folder of this config's applied versions (default .modelyard/history/<file name> "
        "beside it).",
    ),
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


def scorer_spec(scorer: str | None, fmt: str) -> str:
    """The scorer named, else the default for the format: recorded for recordings, else exact."""
    return scorer or ("exact" if fmt == LABELLED else "recorded")


def read_items(data: str, fmt: str, split: str | None, limit: int | None) -> ItemSource:
    """The items of `data` (of one split, the first `limit`), read from the file on each pass
    over them."""
    return ItemSource(data, fmt, split, limit)


def warn_unlabelled(items: Iterable[Item], scoring: Scorer, data: str, fmt: str) -> int:
    """Read `items` once, before any model is asked, and count them: a bad row, a repeated id
    or an empty split anywhere in the file stops the command here, not after a run. Warn on
    stderr when the scorer needs labels that most items lack, or cannot read the labels of
    some."""
    count = missing = unreadable = 0
    fields: set[str] = set()
    first: Item | None = None
    for item in items:
        count += 1
        fields.update(item.meta)
        if item.label is None:
            missing += 1
        elif not scoring.labelled(item):  # numbers read as choice letters, say
            unreadable += 1
            first = first or item
    if scoring.needs_label:
        warning = unlabelled_warning(missing, count, fields, data, fmt)
        if warning is not None:
            errors.print(f"[yellow]warning:[/] {escape(warning)}")
    if first is not None:  # left out of accuracy
        errors.print(
            f"[yellow]warning:[/] {escape(data)}: the {scoring.name} scorer cannot read the label "
            f"of {unreadable} of {count} items (the first, item {escape(first.id)}: "
            f"{escape(repr((first.label or '')[:40]))}); accuracy leaves them out"
        )
    return count


def calibration_splits(
    data: str,
    fmt: str,
    test_data: str | None,
    train_split: str | None,
    test_split: str | None,
    test_fraction: float,
    seed: int,
    limit: int | None,
) -> tuple[list[Item], list[Item], str]:
    """The train and test items, and how they were split (a separate test set, named splits or
    a seeded hold-out); test prompts also in training are dropped."""
    items = select_split(load_items(data, fmt), None, source=data)
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
    if not test:
        raise ConfigError(
            f"the test split is empty: all {len(overlap)} test prompts are in training ({how})"
        )
    if overlap:
        how += f"; {len(overlap)} test items also in train were dropped"
    if limit:
        train, test = train[:limit], test[:limit]
    return train, test, how


def only_system(yard: Yard, system: str | None, path: Path) -> str:
    """`system`, else the config's only system; exit 2 when there are several."""
    if system is not None:
        return system
    if len(yard.systems) == 1:
        return next(iter(yard.systems))
    fail(f"{path}: pass --system; systems: {', '.join(sorted(yard.systems)) or 'none'}")
