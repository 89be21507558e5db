"""Recorded outcomes of real models: what each model answered to each prompt, whether it was
right, and what it cost. Loaders for each on-disk format (`formats.py`) produce `Recordings`;
the replay model (`replay.py`) answers from them and evaluation reads items from them.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from modelyard.config.loader import config_relative
from modelyard.errors import ConfigError

_SPACE = re.compile(r"\s+")
SHARED_PREFIX = "shared:"
"""A `data:` value starting with this is relative to the shared data root."""
DATA_ENV = "MODELYARD_DATA"


def normalize_prompt(text: str) -> str:
    """The lookup key of a prompt: whitespace runs collapsed to one space, ends stripped."""
    return _SPACE.sub(" ", text).strip()


@dataclass(frozen=True, slots=True, kw_only=True)
class Outcome:
    """One model's recorded answer to one prompt.

    `score` is the recorded correctness in [0, 1] (None when the recording has none);
    `cost` is recorded USD (None: compute from a price table); token counts are None when the
    recording has none (then estimated from the text). `synthetic` says the text was made up
    from the score because the recording kept none (see the format's docs).
    """

    text: str
    score: float | None = None
    cost: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    confidence: float | None = None
    latency_ms: float | None = None
    provider_model: str | None = None
    synthetic: bool = False


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordedItem:
    """A prompt with every recorded model's outcome, and its gold label when one is known."""

    id: str
    prompt: str
    outcomes: Mapping[str, Outcome]
    label: str | None = None
    split: str | None = None
    meta: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, weakref_slot=True)
class Recordings:
    """A loaded set of recordings, indexed by normalised prompt (the first occurrence wins)."""

    source: str
    format: str
    models: tuple[str, ...]
    items: tuple[RecordedItem, ...]
    index: Mapping[str, RecordedItem]
    duplicates: int
    """Rows dropped because an earlier row had the same normalised prompt."""
    conflicting: int = 0
    """Of those, rows that recorded other outcomes than the row kept (another answer or score
    of some model): the first row's decide the replay and the accuracy."""

    def lookup(self, prompt: str) -> RecordedItem | None:
        """The recorded item for `prompt` (matched after whitespace normalisation)."""
        return self.index.get(normalize_prompt(prompt))


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def unit_score(value: Any, what: str, path: str, line: int | None, scale: float = 1.0) -> float:
    """`value` / `scale` as a recorded score, when `value` is a finite number from 0 to `scale`;
    else ConfigError naming `path`:`line` and `what` (one NaN or out-of-range score skews every
    accuracy computed from the file)."""
    if not _finite(value) or not 0 <= value <= scale:
        raise ConfigError(
            f"{what} must be a finite number from 0 to {scale:g}, got {value!r}",
            path=path,
            line=line,
        )
    return float(value) / scale


def usd_cost(value: Any, what: str, path: str, line: int | None) -> float:
    """`value` as a recorded cost, when it is a finite, non-negative number of USD; else
    ConfigError naming `path`:`line` and `what`."""
    if not _finite(value) or value < 0:
        raise ConfigError(
            f"{what} must be a non-negative number of USD, got {value!r}", path=path, line=line
        )
    return float(value)


def recorded_score(row: Mapping[str, Any], path: str, line: int | None) -> float | None:
    """A JSONL outcome row's correctness: `score` (0 to 1), else `correct` (true/false) as 1
    or 0; None when the row has neither. The one check replay, eval and `train` all apply."""
    if row.get("score") is not None:
        return unit_score(row["score"], "field 'score'", path, line)
    correct = row.get("correct")
    if correct is None:
        return None
    if not isinstance(correct, bool):
        raise ConfigError(
            f"field 'correct' must be true or false, got {correct!r}", path=path, line=line
        )
    return 1.0 if correct else 0.0


def recorded_cost(row: Mapping[str, Any], path: str, line: int | None) -> float | None:
    """A JSONL outcome row's `cost` in USD (None when absent)."""
    cost = row.get("cost")
    return None if cost is None else usd_cost(cost, "field 'cost'", path, line)


def text_field(
    row: Mapping[str, Any], name: str, path: str, line: int | None, *, empty: bool = False
) -> str:
    """`row[name]` when it is a string (a non-empty one unless `empty`); else ConfigError naming
    `path`:`line` and the field: a null or numeric prompt would reach a model as the text
    'None' or '12345'."""
    kind = "string" if empty else "non-empty string"
    if name not in row:
        raise ConfigError(f"missing {name!r} (a {kind})", path=path, line=line)
    value = row[name]
    if not isinstance(value, str) or not (empty or value.strip()):
        raise ConfigError(f"field {name!r} must be a {kind}, got {value!r}", path=path, line=line)
    return value


def scalar_field(
    row: Mapping[str, Any], path: str, line: int | None, names: tuple[str, ...] = ("label",)
) -> str | None:
    """A row's field (the first of `names` present: a gold answer, an id, a split) as text: a
    string or a number; None when absent. A list or an object is an error, not its Python repr
    (a split of `["train"]` would be in no split)."""
    name = next((n for n in names if n in row), names[0])
    value = row.get(name)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, float) and not math.isfinite(value):
        # It would become the text 'nan', which no answer matches.
        raise ConfigError(
            f"field {name!r} must be a finite number, got {value!r}", path=path, line=line
        )
    if isinstance(value, bool | int | float):
        return str(value)
    raise ConfigError(
        f"field {name!r} must be a string or a number, got {value!r}", path=path, line=line
    )


def make_recordings(
    source: str, fmt: str, models: Sequence[str], rows: Sequence[RecordedItem]
) -> Recordings:
    """Index `rows` by normalised prompt, dropping later duplicates. A kept row whose id an
    earlier one has is renamed `id#2`, `id#3`...: results are paired by id (gate, the oracle),
    and RouterBench repeats sample ids on different prompts."""
    index: dict[str, RecordedItem] = {}
    kept: list[RecordedItem] = []
    ids: set[str] = set()
    conflicting = 0
    for row in rows:
        key = normalize_prompt(row.prompt)
        if key in index:
            conflicting += _answers(index[key]) != _answers(row)
            continue
        unique, count = row.id, 1
        while unique in ids:
            count += 1
            unique = f"{row.id}#{count}"
        ids.add(unique)
        row = row if unique == row.id else replace(row, id=unique)
        index[key] = row
        kept.append(row)
    return Recordings(
        source=source,
        format=fmt,
        models=tuple(models),
        items=tuple(kept),
        index=index,
        duplicates=len(rows) - len(kept),
        conflicting=conflicting,
    )


def _answers(row: RecordedItem) -> dict[str, tuple[str, float | None]]:
    return {model: (o.text, o.score) for model, o in row.outcomes.items()}


def stable_hash(*parts: str) -> int:
    """A hash that is the same in every process (Python's `hash` is salted per run)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def data_root(override: str | None = None) -> Path | None:
    """Where shared recordings live: `override`, else $MODELYARD_DATA, else the nearest
    `shared/data` folder above this source tree (the layout of a development checkout)."""
    value = override or os.environ.get(DATA_ENV)
    if value:
        return Path(value).expanduser()
    here = Path(__file__).resolve()
    for parent in list(here.parents)[2:6]:
        candidate = parent / "shared" / "data"
        if candidate.is_dir():
            return candidate
    return None


def resolve_data_path(value: str, base_dir: Path, root: str | None = None) -> Path:
    """A `data:` value as a path: `shared:<rel>` under the data root, else relative to
    `base_dir` (the config file's folder)."""
    if value.startswith(SHARED_PREFIX):
        found = data_root(root)
        if found is None:
            raise ConfigError(
                f"{value!r} refers to the shared data root, but none is set; set "
                f"${DATA_ENV} or the spec's data_root"
            )
        return found / value.removeprefix(SHARED_PREFIX).lstrip("/")
    return config_relative(value, base_dir)
