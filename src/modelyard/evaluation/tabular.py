"""Reading CSV and JSONL files into rows, with errors that name the file, line and column. A
UTF-8 byte order mark (as spreadsheet programs write) is skipped, not read into the first column."""

from __future__ import annotations

import csv
import json
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError


def read_csv(path: Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """The header and rows of a CSV file (`iter_csv`, read whole)."""
    header, rows = iter_csv(path)
    return header, list(rows)


def iter_csv(path: Path) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    """The header of a CSV file, and its rows as they are read, each with the line it starts on
    (a quoted cell may span lines, so the row's index alone does not say where it is). A row
    with more or fewer cells than the header is an error: its cells would land in the wrong
    columns. Line breaks inside cells are read as `\n`, so a file saved with Windows line
    endings holds the same texts (a response's `\r\n` would change what a check or an
    embedding reads). A leading byte-order mark (Excel's "CSV UTF-8") is not part of the first
    column's name."""
    with _csv_errors(path), path.open(newline="", encoding="utf-8-sig") as handle:
        header = next(csv.reader(handle), [])
    _refuse_repeated(header, path)
    return header, _csv_rows(path, header)


def _csv_rows(path: Path, header: list[str]) -> Iterator[tuple[int, dict[str, str]]]:
    with _csv_errors(path), path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle)
        next(reader, None)  # the header, read by iter_csv
        end = reader.line_num
        for cells in reader:
            line, end = end + 1, reader.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                raise ConfigError(
                    f"row has {len(cells)} cells, header has {len(header)}",
                    path=str(path),
                    line=line,
                )
            cells = [cell.replace("\r\n", "\n") for cell in cells]
            yield line, dict(zip(header, cells, strict=True))


@contextmanager
def _csv_errors(path: Path) -> Iterator[None]:
    """CSV reading errors as ConfigErrors naming the file."""
    try:
        yield
    except FileNotFoundError:
        raise ConfigError("data file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except csv.Error as exc:
        raise ConfigError(f"cannot read CSV: {exc}", path=str(path)) from None


_PICKLE = re.compile(rb"\x80[\x02-\x05]")
"""How a Python pickle of protocol 2 to 5 starts (pandas' `to_pickle` writes one)."""


def _undecodable(path: Path, number: int, raw: bytes, exc: UnicodeDecodeError) -> ConfigError:
    if number == 1 and _PICKLE.match(raw):
        # RouterBench ships its outcomes as a pandas pickle (routerbench_0shot.pkl).
        return ConfigError(
            "a Python pickle, not text: pickles are not read (loading one runs the code it "
            "holds, and a DataFrame's needs pandas); convert it once with pandas, e.g. "
            f"python -c \"import pandas as pd; pd.read_pickle('{path.name}')"
            f".to_csv('{path.with_suffix('.csv').name}')\", and point at the CSV",
            path=str(path),
        )
    column = len(raw[: exc.start].decode("utf-8", "replace")) + 1
    return ConfigError(
        f"not UTF-8 text: byte {raw[exc.start]:#04x} at column {column}; save the file as "
        "UTF-8 (a spreadsheet's \"CSV UTF-8\", an editor's encoding setting)",
        path=str(path),
        line=number,
    )


def not_utf8(path: Path) -> ConfigError:
    """The error for a file that is not UTF-8 text (saved as Latin-1 or Windows-1252, say),
    naming the first line and column that is not: a text decoder reads in chunks, so its own
    error says neither."""
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                return _undecodable(path, number, raw, exc)
    return ConfigError("not UTF-8 text", path=str(path))


def _refuse_repeated(header: Sequence[str], path: Path) -> None:
    """ConfigError when the header names a column twice: a row's cells are read by name, so
    the later column would silently stand for both."""
    named = [name for name in header if not index_column(name)]
    for name, count in Counter(named).items():
        if count > 1:
            raise ConfigError(
                f"column {name!r} is named twice in the header", path=str(path), line=1
            )


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line of a JSONL file as (line number, object)."""
    try:
        handle = path.open("rb")  # decoded line by line, so an error can name its line
    except FileNotFoundError:
        raise ConfigError("data file not found", path=str(path)) from None
    with handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise _undecodable(path, number, raw, exc) from None
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"invalid JSON: {exc.msg}", path=str(path), line=number) from None
            if not isinstance(value, dict):
                raise ConfigError("each line must be a JSON object", path=str(path), line=number)
            yield number, value


def read_json(path: Path) -> Any:
    """A whole JSON file."""
    try:
        with path.open(encoding="utf-8-sig") as handle:
            return json.load(handle)
    except FileNotFoundError:
        raise ConfigError("data file not found", path=str(path)) from None
    except UnicodeDecodeError:
        raise not_utf8(path) from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None


_PANDAS_INDEX = re.compile(r"(?:Unnamed: \d+(?:\.\d+)?)?")
"""The header pandas gives a DataFrame's index when writing a CSV (empty), and the one it
gives that column when the file is read back and written again (`Unnamed: 0`)."""


def index_column(name: str) -> bool:
    """Whether `name` is the header of a pandas index column: row numbers, no data."""
    return _PANDAS_INDEX.fullmatch(name) is not None


def require_columns(path: Path, header: Iterable[str], needed: Sequence[str]) -> None:
    """ConfigError naming the file and the first missing column, with the columns present."""
    columns = [name for name in header if not index_column(name)]  # row numbers say nothing
    present = set(columns)
    for column in needed:
        if column not in present:
            more = f" and {len(columns) - 12} more" if len(columns) > 12 else ""
            shown = ", ".join(repr(name) for name in columns[:12]) + more
            raise ConfigError(
                f"missing column {column!r}; the file has: {shown or 'no columns'}",
                path=str(path),
            )


_TELLTALE_COLUMNS = (("routerbench", "|model_response"), ("routellm-gsm8k", "_response"))
"""Columns only one recording format has, in the order to test them (RouterBench's also end
in `_response`)."""


def refuse_other_format(path: Path, header: Sequence[str], fmt: str) -> None:
    """ConfigError when a CSV header has another recording format's telltale columns: read as
    `fmt`, the file would fail on a column it never meant to have, or be asked unlabelled."""
    for found, suffix in _TELLTALE_COLUMNS:
        if any(column.endswith(suffix) for column in header):
            if found != fmt:
                raise ConfigError(
                    f"its columns are those of {found} recordings ('<model>{suffix}'), not of "
                    f"format {fmt}: read it with --format {found} "
                    f"(or `format: {found}` in a config)",
                    path=str(path),
                )
            return


def files_in(path: Path, suffix: str) -> list[Path]:
    """`path` itself, or the files with `suffix` in the folder `path`, sorted."""
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix == suffix)
        if not found:
            raise ConfigError(f"no {suffix} files in this folder", path=str(path))
        return found
    if not path.exists():
        raise ConfigError("data file not found", path=str(path))
    return [path]


def parse_bool(value: str, path: Path, line: int, column: str) -> float | None:
    """A True/False/1/0 cell as 1.0/0.0; empty or NaN as None; anything else is an error."""
    text = value.strip().lower()
    if text in ("true", "1", "1.0", "yes"):
        return 1.0
    if text in ("false", "0", "0.0", "no"):
        return 0.0
    if text in ("", "nan", "none", "null"):
        return None
    raise ConfigError(
        f"column {column!r}: expected True/False, got {value[:20]!r}", path=str(path), line=line
    )


def parse_float(value: str, path: Path, line: int, column: str) -> float | None:
    """A numeric cell; empty or NaN as None."""
    text = value.strip()
    if text.lower() in ("", "nan", "none", "null"):
        return None
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(
            f"column {column!r}: expected a number, got {value[:20]!r}", path=str(path), line=line
        ) from None
    return None if number != number else number
