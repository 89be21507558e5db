"""Fixtures for evaluation tests: small slices of the real recordings in the shared data folder,
and a tiny inline recording in the project's own JSONL format.

Slices are cut at test time into a temporary folder (never committed); tests skip only when the
shared data folder is absent.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

from modelyard.evaluation.recordings import data_root
from modelyard.evaluation.runner import ItemResult

ROOT = data_root()


@pytest.fixture
def data() -> Path:
    """The shared data folder."""
    if ROOT is None or not ROOT.is_dir():
        pytest.skip("the shared data folder is absent")
    return ROOT


def csv_slice(source: Path, target: Path, rows: int) -> Path:
    """The header and first `rows` rows of a CSV file, written to `target`."""
    with source.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        kept = [next(reader) for _ in range(rows + 1)]
    with target.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(kept)
    return target


@pytest.fixture
def sliced(data: Path, tmp_path: Path) -> Callable[[str, int], Path]:
    """Cut the first N rows (CSV) or items (JSON list) of a shared data file into tmp_path."""

    def cut(relative: str, rows: int) -> Path:
        source = data / relative
        target = tmp_path / source.name
        if source.suffix == ".json":
            items = json.loads(source.read_text(encoding="utf-8"))[:rows]
            target.write_text(json.dumps(items), encoding="utf-8")
            return target
        return csv_slice(source, target, rows)

    return cut


OWN_CONFIG = """
models:
  weak: {{local: {{type: replay, data: "{data}", format: jsonl, model: weak}}}}
  strong: {{local: {{type: replay, data: "{data}", format: jsonl, model: strong}}}}
systems:
  main: {{type: fallback, chain: [{chain}]}}
"""
"""A config replaying `own_rows` (format with the data path and the fallback chain)."""


def own_rows() -> list[dict[str, Any]]:
    """Four prompts in the JSONL recording format: `weak` right on two, `strong` on all four;
    `strong` costs ten times as much."""
    rows = []
    for n in range(4):
        for model, right, cost in (("weak", n < 2, 0.001), ("strong", True, 0.01)):
            answer = 2 * n if right else 2 * n + 1
            rows.append(
                {
                    "id": f"q{n}",
                    "prompt": f"What is {n} + {n}?",
                    "model": model,
                    "response": f"#### {answer}",
                    "correct": right,
                    "cost": cost,
                    "label": str(2 * n),
                }
            )
    return rows


def write_jsonl(path: Path, rows: Sequence[Mapping[str, object]]) -> Path:
    """`rows` as a JSONL file at `path` (NaN written as JSON's non-standard NaN)."""
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


@pytest.fixture
def own(tmp_path: Path) -> Callable[..., Path]:
    """Write `own_rows()` (or the given rows) to recordings and a config replaying them,
    with the fallback `chain`; returns the config path."""

    def write(
        rows: list[dict[str, Any]] | None = None,
        chain: str = "weak, strong",
        name: str = "own.yaml",
    ) -> Path:
        data = write_jsonl(tmp_path / f"{Path(name).stem}.jsonl", rows or own_rows())
        config = tmp_path / name
        config.write_text(OWN_CONFIG.format(data=data, chain=chain), encoding="utf-8")
        return config

    return write


def scored(item: str, *, score: float = 1.0, cost: float = 0.001) -> ItemResult:
    """An item answered and scored (`score` 1 right, 0 wrong) by model `mini`, pinned and not
    drifting, in 10 ms."""
    return ItemResult(
        id=item,
        split=None,
        label="A",
        status="scored",
        score=score,
        answer="A" if score else "B",
        parsed="A" if score else "B",
        cost=cost,
        scorer_cost=0.0,
        latency_ms=10.0,
        model="mini",
        provider_model="gpt-4o-mini-2024-07-18",
        drift=None,
        error=None,
        decision=None,
    )
