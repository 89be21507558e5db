"""Fixtures for evaluation tests: small slices of the real recordings in the shared data folder.

Slices are cut at test time into a temporary folder (never committed); tests skip only when the
shared data folder is absent.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from modelyard.evaluation.recordings import data_root

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
