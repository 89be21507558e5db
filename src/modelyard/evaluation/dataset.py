"""Labelled sets: the items an evaluation asks, with their gold answers and splits.

A labelled file is JSONL or CSV with a `prompt` (or, in JSONL, `messages`: a list of
`{"role", "content"}`), an optional `label` (or `answer`), `id` and `split`; other fields are
kept as metadata. Recordings (any format in `formats.py`) can serve as a labelled set too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError
from modelyard.evaluation.formats import FORMATS, load_recordings
from modelyard.evaluation.recordings import (
    Recordings,
    resolve_data_path,
    scalar_field,
    text_field,
)
from modelyard.evaluation.tabular import (
    read_csv,
    read_jsonl,
    refuse_other_format,
    require_columns,
)
from modelyard.suggest import did_you_mean
from modelyard.types import ChatRequest, Message, split_system

LABELLED = "labelled"

log = logging.getLogger("modelyard.evaluation")


@dataclass(frozen=True, slots=True, kw_only=True)
class Item:
    """One question of a labelled set. Only `prompt`/`messages` ever reach a Model."""

    id: str
    prompt: str
    label: str | None = None
    split: str | None = None
    messages: tuple[Message, ...] = ()
    meta: Mapping[str, str] = field(default_factory=dict)

    def request(self) -> ChatRequest:
        """The request the system under test receives: the prompt and nothing else (system
        messages become the request's system prompt, as the gateway makes them)."""
        system, turns = split_system(self.messages or (Message(role="user", content=self.prompt),))
        return ChatRequest(messages=turns, system=system)


def _messages(value: Any, path: Path, line: int) -> tuple[Message, ...]:
    if not isinstance(value, list) or not value:
        raise ConfigError("'messages' must be a non-empty list", path=str(path), line=line)
    out = []
    for message in value:
        # Content must be text: a null would reach the model as '', a list of parts as its
        # Python repr.
        if (
            not isinstance(message, dict)
            or message.get("role") not in ("system", "user", "assistant")
            or not isinstance(message.get("content"), str)
        ):
            raise ConfigError(
                "each message needs a role (system, user, assistant) and its content as a string",
                path=str(path),
                line=line,
            )
        out.append(Message(role=message["role"], content=message["content"]))
    if not any(m.role == "user" and m.text.strip() for m in out):
        raise ConfigError("'messages' has no user text to ask", path=str(path), line=line)
    return tuple(out)


def _item(row: Mapping[str, Any], number: int, path: Path, line: int) -> Item:
    messages: tuple[Message, ...] = ()
    if "messages" in row:
        messages = _messages(row["messages"], path, line)
        prompt = next((m.text for m in reversed(messages) if m.role == "user"), "")
    elif "prompt" in row or "text" in row:  # `text`: what ticket and support exports call it
        prompt = text_field(row, "prompt" if "prompt" in row else "text", str(path), line)
    else:
        raise ConfigError(
            "missing field 'prompt' (or 'text', or 'messages')", path=str(path), line=line
        )
    label = scalar_field(row, str(path), line, ("label", "answer"))
    known = {"prompt", "messages", "label", "answer", "id", "split"}
    if "prompt" not in row:
        known.add("text")  # it was the prompt; beside a prompt it is the row's own metadata
    return Item(
        id=scalar_field(row, str(path), line, ("id",)) or str(number),
        prompt=prompt,
        label=label if label != "" else None,
        split=scalar_field(row, str(path), line, ("split",)) or None,
        messages=messages,
        meta={k: str(v) for k, v in row.items() if k not in known},
    )


def load_labelled(path: Path) -> list[Item]:
    """A labelled JSONL or CSV file."""
    rows: Sequence[tuple[int, Mapping[str, Any]]]
    if path.suffix == ".csv":
        header, rows = read_csv(path)
        if "label" not in header and "answer" not in header:
            refuse_other_format(path, header, LABELLED)
        require_columns(path, header, ["text" if "text" in header else "prompt"])
    elif path.suffix in (".jsonl", ".ndjson"):
        rows = list(read_jsonl(path))
    else:
        raise ConfigError(
            "a labelled set must be .jsonl or .csv (or pass --format for recordings)",
            path=str(path),
        )
    items = [_item(row, n, path, line) for n, (line, row) in enumerate(rows)]
    _check_ids(items, [line for line, _ in rows], path)
    return items


def _check_ids(items: Sequence[Item], lines: Sequence[int], path: Path) -> None:
    first: dict[str, int] = {}
    for item, line in zip(items, lines, strict=True):
        seen_at = first.setdefault(item.id, line)
        if seen_at != line:
            raise ConfigError(
                f"item id {item.id!r} is also the id of line {seen_at}", path=str(path), line=line
            )
    # One question with two different labels caps any system's accuracy (one of them is
    # scored wrong whatever it says). Said loudly, not refused: captured traffic asks the same
    # question twice with differently worded answers, and is still worth replaying.
    labelled: dict[tuple[str, tuple[Message, ...]], Item] = {}
    clashes = 0
    for item in items:
        if item.label is None:
            continue
        earlier = labelled.setdefault((item.prompt, item.messages), item)
        if earlier.label != item.label:
            clashes += 1
            if clashes == 1:
                log.warning(
                    "%s: items %r and %r ask the same prompt with different labels (%r, %r); "
                    "one of them is scored wrong whatever the answer",
                    path,
                    earlier.id,
                    item.id,
                    earlier.label,
                    item.label,
                )
    if clashes > 1:
        log.warning("%s: %d prompts in all are asked again with another label", path, clashes)


def items_from_recordings(recordings: Recordings) -> list[Item]:
    """Recorded prompts as a labelled set (labels as each format derives them)."""
    return [
        Item(id=r.id, prompt=r.prompt, label=r.label, split=r.split, meta=dict(r.meta))
        for r in recordings.items
    ]


def load_items(value: str, fmt: str = LABELLED, base_dir: Path | None = None) -> list[Item]:
    """Items from a labelled file, or from recordings when `fmt` names a recording format.
    `value` may be `shared:<path>` (under the shared data root)."""
    path = resolve_data_path(value, base_dir or Path.cwd())
    if fmt == LABELLED:
        if not path.exists():
            raise ConfigError("data file not found", path=str(path))
        return load_labelled(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}{did_you_mean(fmt, [LABELLED, *FORMATS])}")
    recordings = load_recordings(fmt, [path])
    if recordings.duplicates:
        # Evaluated once, as replay answers it once; said, since the count of items then
        # differs from the count of rows (RouteLLM's MMLU files repeat 105 prompts).
        other = f"; {recordings.conflicting} of them recorded other outcomes than the row kept"
        log.warning(
            "%s: %d rows repeat the prompt of an earlier row and are left out (the first row "
            "of each prompt is evaluated%s)",
            path,
            recordings.duplicates,
            other if recordings.conflicting else "",
        )
    return items_from_recordings(recordings)


def select_split(items: Sequence[Item], split: str | None, source: str = "data") -> list[Item]:
    """The items of `split` (all when None); ConfigError when that leaves none."""
    if not items:
        raise ConfigError(f"{source}: the labelled set is empty")
    if split is None:
        return list(items)
    chosen = [i for i in items if i.split == split]
    if not chosen:
        present = sorted({i.split or "(none)" for i in items})
        raise ConfigError(
            f"{source}: split {split!r} is empty; splits present: {', '.join(present)}"
        )
    return chosen


def unlabelled_warning(items: Sequence[Item], source: str, fmt: str = LABELLED) -> str | None:
    """A warning when most items have no label, naming the other fields the items have (a
    misnamed label field leaves every item out of accuracy, which is then no evidence)."""
    missing = sum(1 for i in items if i.label is None)
    if missing * 2 <= len(items):
        return None
    where = "no 'label' or 'answer' field" if fmt == LABELLED else f"no label in {fmt} recordings"
    others = sorted({key for i in items for key in i.meta})
    seen = f"; other fields: {', '.join(others[:12])}" if others else ""
    return f"{source}: {missing} of {len(items)} items have {where}{seen}; accuracy leaves them out"


def holdout(
    items: Sequence[Item], test_fraction: float, seed: int
) -> tuple[list[Item], list[Item]]:
    """A seeded random split into (train, test) with round(n * test_fraction) test items."""
    if not 0 < test_fraction < 1:
        raise ConfigError(f"the test fraction must be between 0 and 1, got {test_fraction}")
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    cut = round(len(items) * test_fraction)
    test_ids = set(order[:cut])
    train = [item for n, item in enumerate(items) if n not in test_ids]
    test = [item for n, item in enumerate(items) if n in test_ids]
    if not train or not test:
        raise ConfigError(
            f"a {test_fraction:.0%} hold-out of {len(items)} items leaves an empty split"
        )
    return train, test
