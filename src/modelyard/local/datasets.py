"""Reading the data local models learn from: labelled examples (classifiers) and FAQ knowledge
bases (retrievers), from JSONL or CSV files. Every problem is a ConfigError naming the file and
line, so a bad row is found at load time, not as a wrong answer later."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from modelyard.errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class FaqEntry:
    """One knowledge-base entry: the ways a question is asked, and its answer."""

    id: str
    questions: tuple[str, ...]
    answer: str


def _rows(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    """(line, record) for every record of a JSONL or CSV file."""
    if not path.is_file():
        raise ConfigError("file not found", path=str(path))
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        yield from _jsonl(path)
    elif suffix == ".csv":
        yield from _csv(path)
    else:
        raise ConfigError(
            f"unsupported file type {suffix or '(none)'!r}; use .jsonl or .csv", path=str(path)
        )


def _jsonl(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise ConfigError(f"invalid JSON: {exc}", path=str(path), line=number) from None
            if not isinstance(record, dict):
                raise ConfigError(
                    f"expected a JSON object, got {type(record).__name__}",
                    path=str(path),
                    line=number,
                )
            yield number, record


def _csv(path: Path) -> Iterator[tuple[int, Mapping[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        for record in reader:
            yield reader.line_num, record


def _text(record: Mapping[str, Any], key: str, path: Path, line: int) -> str:
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        columns = ", ".join(sorted(str(k) for k in record)) or "none"
        raise ConfigError(
            f"missing or empty {key!r} (a non-empty string is needed; this row has: {columns})",
            path=str(path),
            line=line,
        )
    return value.strip()


def read_examples(path: Path) -> list[tuple[str, str]]:
    """(text, label) pairs from a JSONL file of `{"text", "label"}` objects or a CSV file
    with `text` and `label` columns (others are ignored)."""
    pairs = [(_text(r, "text", path, n), _text(r, "label", path, n)) for n, r in _rows(path)]
    if not pairs:
        raise ConfigError("no examples in the file", path=str(path))
    return pairs


def group_examples(pairs: Sequence[tuple[str, str]]) -> dict[str, list[str]]:
    """Examples by label, labels in order of first appearance."""
    grouped: dict[str, list[str]] = {}
    for text, label in pairs:
        grouped.setdefault(label, []).append(text)
    return grouped


def read_faq(path: Path) -> list[FaqEntry]:
    """Entries of a JSONL knowledge base: `question` (a string or a list of paraphrases),
    `answer`, and an optional `id` (default: the entry's line number)."""
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        raise ConfigError("a knowledge base must be a .jsonl file", path=str(path))
    entries: list[FaqEntry] = []
    seen: dict[str, int] = {}
    for line, record in _rows(path):
        raw = record.get("question")
        questions = [raw] if isinstance(raw, str) else raw
        if (
            not isinstance(questions, list)
            or not questions
            or not all(isinstance(q, str) and q.strip() for q in questions)
        ):
            raise ConfigError(
                "'question' must be a non-empty string or a list of them",
                path=str(path),
                line=line,
            )
        entry_id = str(record.get("id", f"line-{line}"))
        if entry_id in seen:
            raise ConfigError(
                f"id {entry_id!r} was already used on line {seen[entry_id]}",
                path=str(path),
                line=line,
            )
        seen[entry_id] = line
        answer = _text(record, "answer", path, line)
        entries.append(
            FaqEntry(id=entry_id, questions=tuple(q.strip() for q in questions), answer=answer)
        )
    if not entries:
        raise ConfigError("the knowledge base has no entries", path=str(path))
    return entries
