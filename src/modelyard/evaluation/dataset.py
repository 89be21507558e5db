"""Labelled sets: the items an evaluation asks, with their gold answers and splits.

A labelled file is JSONL or CSV with a `prompt` (or, in JSONL, `messages`: a list of
`{"role", "content"}`), an optional `label` (or `answer`), `id` and `split`; other fields are
kept as metadata. Recordings (any format in `formats.py`) can serve as a labelled set too.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelyard.errors import ConfigError
from modelyard.evaluation.formats import FORMATS, load_recordings
from modelyard.evaluation.recordings import (
    Recordings,
    resolve_data_path,
    scalar_field,
    stable_hash,
    text_field,
)
from modelyard.evaluation.tabular import (
    iter_csv,
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
    """A labelled JSONL or CSV file, read whole."""
    return list(labelled_items(path))


def labelled_items(path: Path, *, notice: bool = True) -> Iterator[Item]:
    """The items of a labelled JSONL or CSV file as they are read. A bad row or an id seen on
    an earlier line stops the reading there (ConfigError): the ids seen are kept, not the
    items. `notice`: log prompts asked again with another label."""
    rows: Iterable[tuple[int, Mapping[str, Any]]]
    if path.suffix == ".csv":
        header, rows = iter_csv(path)
        if "label" not in header and "answer" not in header:
            refuse_other_format(path, header, LABELLED)
        require_columns(path, header, ["text" if "text" in header else "prompt"])
    elif path.suffix in (".jsonl", ".ndjson"):
        rows = read_jsonl(path)
    else:
        raise ConfigError(
            "a labelled set must be .jsonl or .csv (or pass --format for recordings)",
            path=str(path),
        )
    first: dict[str, int] = {}
    clashes = _LabelClashes(path, notice)
    for number, (line, row) in enumerate(rows):
        item = _item(row, number, path, line)
        seen_at = first.setdefault(item.id, line)
        if seen_at != line:
            raise ConfigError(
                f"item id {item.id!r} is also the id of line {seen_at}", path=str(path), line=line
            )
        clashes.see(item)
        yield item
    clashes.close()


class _LabelClashes:
    """Prompts asked again with another label, found by a digest of each prompt (a file's
    prompts are not kept).

    One question with two different labels caps any system's accuracy (one of them is scored
    wrong whatever it says). Said loudly, not refused: captured traffic asks the same question
    twice with differently worded answers, and is still worth replaying.
    """

    _SHOWN = 200
    """Characters of an earlier label kept to quote it (its digest tells labels apart)."""

    def __init__(self, path: Path, notice: bool) -> None:
        self.path = path
        self.notice = notice
        self.first: dict[int, tuple[str, int, str]] = {}
        self.count = 0

    def see(self, item: Item) -> None:
        """Note `item`, and warn at the first prompt asked again with another label."""
        if item.label is None:
            return
        label = item.label
        shown = label if len(label) <= self._SHOWN else label[: self._SHOWN] + "…"
        key, label_key = stable_hash(item.prompt, repr(item.messages)), stable_hash(label)
        earlier_id, earlier_key, earlier_label = self.first.setdefault(
            key, (item.id, label_key, shown)
        )
        if earlier_key == label_key:
            return
        self.count += 1
        if self.count == 1 and self.notice:
            log.warning(
                "%s: items %r and %r ask the same prompt with different labels (%r, %r); "
                "one of them is scored wrong whatever the answer",
                self.path,
                earlier_id,
                item.id,
                earlier_label,
                label,
            )

    def close(self) -> None:
        """Say how many prompts in all were asked again with another label."""
        if self.count > 1 and self.notice:
            log.warning(
                "%s: %d prompts in all are asked again with another label", self.path, self.count
            )


def items_from_recordings(recordings: Recordings) -> list[Item]:
    """Recorded prompts as a labelled set (labels as each format derives them)."""
    return list(_recorded(recordings))


def _recorded(recordings: Recordings) -> Iterator[Item]:
    for r in recordings.items:
        yield Item(id=r.id, prompt=r.prompt, label=r.label, split=r.split, meta=dict(r.meta))


def load_items(value: str, fmt: str = LABELLED, base_dir: Path | None = None) -> list[Item]:
    """Items from a labelled file, or from recordings when `fmt` names a recording format.
    `value` may be `shared:<path>` (under the shared data root)."""
    return list(iter_items(value, fmt, base_dir))


def iter_items(
    value: str, fmt: str = LABELLED, base_dir: Path | None = None, *, notice: bool = True
) -> Iterator[Item]:
    """`load_items`, item by item: a labelled file is read as the items are asked for
    (recordings are read whole first, as replay reads them). `notice`: log what is odd about
    the file (prompts asked again)."""
    path = resolve_data_path(value, base_dir or Path.cwd())
    if fmt == LABELLED:
        if not path.exists():
            raise ConfigError("data file not found", path=str(path))
        yield from labelled_items(path, notice=notice)
        return
    if fmt not in FORMATS:
        raise ConfigError(f"unknown data format {fmt!r}{did_you_mean(fmt, [LABELLED, *FORMATS])}")
    recordings = load_recordings(fmt, [path])
    if recordings.duplicates and notice:
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
    yield from _recorded(recordings)


def select_split(items: Iterable[Item], split: str | None, source: str = "data") -> list[Item]:
    """The items of `split` (all when None); ConfigError when that leaves none."""
    return list(chosen(items, split, None, source))


def chosen(
    items: Iterable[Item], split: str | None, limit: int | None, source: str = "data"
) -> Iterator[Item]:
    """The items of `split` (all when None), the first `limit` of them, as they are read. The
    rest are still read, so a bad row after them stops the reading as it would without a
    limit; ConfigError at the end when no item was chosen."""
    count = taken = 0
    present: set[str] = set()
    for item in items:
        count += 1
        if split is not None:
            present.add(item.split or "(none)")
            if item.split != split:
                continue
        if limit is None or taken < limit:
            taken += 1
            yield item
    if not count:
        raise ConfigError(f"{source}: the labelled set is empty")
    if not taken:
        raise ConfigError(
            f"{source}: split {split!r} is empty; splits present: {', '.join(sorted(present))}"
        )


class ItemSource:
    """The items of a labelled set or recordings (one split, the first `limit`), read from the
    file afresh on each pass and never held whole: iterate it once for each system asked.
    Every pass reads the whole file, so a bad row or a repeated id anywhere in it stops each
    pass as `load_items` would; what is odd about the file is logged on the first pass only.
    A file written to between or during passes stops the pass that finds it so (ConfigError):
    the systems compared would otherwise be scored on different items."""

    def __init__(
        self,
        value: str,
        fmt: str = LABELLED,
        split: str | None = None,
        limit: int | None = None,
        base_dir: Path | None = None,
    ) -> None:
        self.value = value
        self.fmt = fmt
        self.split = split
        self.limit = limit
        self.base_dir = base_dir
        self._noticed = False
        self._read_as: tuple[int, int] | None = None
        """The file's size and modification time when the first pass began."""

    def __iter__(self) -> Iterator[Item]:
        notice, self._noticed = not self._noticed, True
        path = resolve_data_path(self.value, self.base_dir or Path.cwd())
        self._unchanged(path)
        read = iter_items(self.value, self.fmt, self.base_dir, notice=notice)
        yield from chosen(read, self.split, self.limit, source=self.value)
        self._unchanged(path)

    def _unchanged(self, path: Path) -> None:
        """Refuse to go on when the file is not as the first pass found it."""
        try:
            stat = path.stat()
        except FileNotFoundError:
            if self._read_as is None:
                return  # the reading says so, with the path
            raise ConfigError("the data file was removed between passes", path=str(path)) from None
        now = (stat.st_size, stat.st_mtime_ns)
        if self._read_as is None:
            self._read_as = now
        elif now != self._read_as:
            raise ConfigError(
                "the data file changed while it was being read (it is read once for each "
                "system): the systems would be scored on different items; run again on a "
                "file nothing writes to meanwhile",
                path=str(path),
            )


def unlabelled_warning(
    missing: int, count: int, fields: Iterable[str], source: str, fmt: str = LABELLED
) -> str | None:
    """A warning when most of `count` items (`missing` of them) have no label, naming the
    other `fields` the items have (a misnamed label field leaves every item out of accuracy,
    which is then no evidence)."""
    if missing * 2 <= count:
        return None
    where = "no 'label' or 'answer' field" if fmt == LABELLED else f"no label in {fmt} recordings"
    others = sorted(fields)
    seen = f"; other fields: {', '.join(others[:12])}" if others else ""
    return f"{source}: {missing} of {count} items have {where}{seen}; accuracy leaves them out"


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
